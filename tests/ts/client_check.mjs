#!/usr/bin/env node
// Drives `handoff` with the official MCP TypeScript SDK client and prints one
// JSON report on stdout; tests/clients.rs asserts on it.
//
//   node client_check.mjs --cmd <handoff binary> [--env K=V ...] [--arg-style camel|snake]
//   node client_check.mjs --url http://127.0.0.1:PORT/mcp [--header "K: V" ...]
//
// What it does, all through the SDK (which also checks every successful tool
// result against the tool's published outputSchema):
//   1. lists the tools;
//   2. registers SESSIONS sessions and has WORKERS concurrent writers append
//      PER_WORKER entries each, recording every acknowledged (key, content, seq);
//   3. reads every session back through handoff://context/{key} (following
//      pages) and counts lost, duplicated, misordered and unacknowledged entries;
//   4. subscribes to one session's context and waits for the update notice;
//   5. runs the handoff loop (request, list as the target, accept) and reads
//      the summary;
//   6. makes one call that must fail and reports its error body.
// A failure inside the script prints {"ok": false, "error": ...} and exits 1.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ResourceUpdatedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';

const SESSIONS = 4;
const WORKERS = 8;
const PER_WORKER = 12;

function parseArgs(argv) {
  const o = { env: {}, headers: {}, argStyle: 'camel', prefix: 'ts' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--cmd') o.cmd = next();
    else if (a === '--url') o.url = next();
    else if (a === '--arg-style') o.argStyle = next();
    else if (a === '--prefix') o.prefix = next();
    else if (a === '--env') {
      const [k, ...v] = next().split('=');
      o.env[k] = v.join('=');
    } else if (a === '--header') {
      const [k, ...v] = next().split(':');
      o.headers[k.trim()] = v.join(':').trim();
    } else throw new Error(`unknown argument ${a}`);
  }
  if (!o.cmd === !o.url) throw new Error('give exactly one of --cmd and --url');
  if (!['camel', 'snake'].includes(o.argStyle)) throw new Error('--arg-style camel|snake');
  return o;
}

// The argument spellings both styles of client use.
function args(style, snake) {
  if (style === 'snake') return snake;
  const camel = {};
  for (const [k, v] of Object.entries(snake)) {
    camel[k.replace(/_([a-z])/g, (_, c) => c.toUpperCase())] = v;
  }
  return camel;
}

// JSON with object keys sorted: equal values give equal text whatever the
// order their keys were written in.
function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

function toolBody(result) {
  const text = result.content?.find((c) => c.type === 'text')?.text;
  return {
    is_error: result.isError === true,
    structured: result.structuredContent ?? null,
    text: text === undefined ? null : JSON.parse(text),
  };
}

async function readJson(client, uri) {
  const r = await client.readResource({ uri });
  const text = r.contents.find((c) => typeof c.text === 'string')?.text;
  if (text === undefined) throw new Error(`no text contents for ${uri}`);
  return JSON.parse(text);
}

async function connect(o) {
  const client = new Client({ name: 'handoff-ts-check', version: '0.0.0' });
  let transport;
  if (o.cmd) {
    // Only the variables the test gives: the server refuses unknown
    // HANDOFF_* variables, and the test's own environment has some.
    const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...o.env };
    transport = new StdioClientTransport({ command: o.cmd, args: ['serve'], env, stderr: 'inherit' });
  } else {
    transport = new StreamableHTTPClientTransport(new URL(o.url), {
      requestInit: { headers: o.headers },
    });
  }
  await client.connect(transport);
  return { client, transport };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const { client, transport } = await connect(o);
  const report = { ok: false, arg_style: o.argStyle };
  try {
    report.server_info = client.getServerVersion();
    report.protocol_version = transport.protocolVersion ?? null;
    const tools = (await client.listTools()).tools;
    report.tools = tools.map((t) => t.name).sort();
    report.tools_without_output_schema = tools.filter((t) => !t.outputSchema).map((t) => t.name);

    const call = async (name, a) => toolBody(await client.callTool({ name, arguments: a }));
    const keys = Array.from({ length: SESSIONS }, (_, i) => `${o.prefix}-${o.argStyle}-${i}`);
    report.register = [];
    for (const key of keys) {
      report.register.push(
        await call('register_session', args(o.argStyle, { session_key: key, agent_from: 'ts-agent' })),
      );
    }

    // Concurrent writers; every acknowledgement is recorded.
    const acks = [];
    const failures = [];
    await Promise.all(
      Array.from({ length: WORKERS }, async (_, w) => {
        for (let i = 0; i < PER_WORKER; i++) {
          const key = keys[(w + i) % keys.length];
          const content = `w${w}-${i}`;
          const r = await call(
            'update_context',
            args(o.argStyle, { session_key: key, context_type: 'message', content, metadata: { w, i } }),
          );
          const seq = r.structured?.context_entry?.sequence_number;
          if (r.is_error || typeof seq !== 'number') failures.push(r);
          else acks.push({ key, content, seq, text_matches: canonical(r.text) === canonical(r.structured) });
        }
      }),
    );
    report.writes = { attempted: WORKERS * PER_WORKER, acked: acks.length, failures: failures.slice(0, 3) };
    report.text_mismatches = acks.filter((a) => !a.text_matches).length;

    // Read back through the resource, following pages.
    const v = { checked: acks.length, found: 0, lost: 0, duplicated: 0, misordered: 0, unacknowledged: 0, pages: 0 };
    for (const key of keys) {
      const entries = [];
      let after = 0;
      for (;;) {
        const page = await readJson(client, `handoff://context/${encodeURIComponent(key)}?after=${after}&limit=7`);
        v.pages++;
        entries.push(...page.entries);
        if (!page.has_more) break;
        after = page.next_after_sequence;
      }
      entries.forEach((e, i) => {
        if (e.sequence_number !== i + 1) v.misordered++;
      });
      const mine = acks.filter((a) => a.key === key);
      for (const a of mine) {
        const at = entries.filter((e) => e.content === a.content);
        if (at.length === 0) v.lost++;
        else if (at.length > 1) v.duplicated++;
        else if (at[0].sequence_number !== a.seq) v.misordered++;
        else v.found++;
      }
      // Entry 1 is the registration note; every other entry was acknowledged.
      const acked = new Set(mine.map((a) => a.content));
      v.unacknowledged += entries.filter((e) => e.sequence_number > 1 && !acked.has(e.content)).length;
    }
    report.verification = v;

    // A subscription: the update notice arrives after a write.
    const watched = `handoff://context/${encodeURIComponent(keys[0])}`;
    const notice = new Promise((resolve) => {
      client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => {
        if (n.params.uri === watched) resolve(n.params.uri);
      });
    });
    await client.subscribeResource({ uri: watched });
    await call('update_context', args(o.argStyle, { session_key: keys[0], context_type: 'system', content: 'watched' }));
    report.subscription_notice = await Promise.race([
      notice,
      new Promise((resolve) => setTimeout(() => resolve(null), 10_000)),
    ]);
    await client.unsubscribeResource({ uri: watched });

    // The handoff loop.
    const handoff = await call(
      'request_handoff',
      args(o.argStyle, { session_key: keys[1], target_agent: 'ts-target', request_type: 'context_transfer' }),
    );
    const id = handoff.structured?.handoff?.id;
    const listed = await call('list_handoffs', args(o.argStyle, { target_agent: 'ts-target', status: 'pending' }));
    const accepted = await call('accept_handoff', args(o.argStyle, { handoff_id: id, agent: 'ts-target' }));
    report.handoff = { request: handoff, listed, accepted };
    report.summary = await readJson(client, `handoff://summary/${encodeURIComponent(keys[1])}`);

    // An error result: the contract's error body.
    report.error_call = await call(
      'update_context',
      args(o.argStyle, { session_key: `${o.prefix}-missing`, context_type: 'message', content: 'x' }),
    );
    report.ok = true;
  } finally {
    await client.close();
  }
  return report;
}

main().then(
  (report) => {
    process.stdout.write(JSON.stringify(report) + '\n');
    process.exit(report.ok ? 0 : 1);
  },
  (e) => {
    process.stdout.write(JSON.stringify({ ok: false, error: String(e?.stack ?? e) }) + '\n');
    process.exit(1);
  },
);
