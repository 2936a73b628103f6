//! The isolation matrix: two tenants with the same session keys and the
//! same agent names, on one daemon. Every tool, resource, resource
//! template, analytics type, subscription and the export: tenant B reads
//! nothing of A's (A's marker never appears in anything B is sent), A's
//! writes change nothing B reads, and B's writes to the same keys make B's
//! own sessions, leaving A's as they were. Deployment-wide things
//! (configuration, backups, jobs, health, metrics) follow the table in
//! docs/security.md: an agent key may not change them, and what they show
//! an agent key carries no tenant's data.
//!
//! The matrix fails when the daemon offers a tool, a resource or a
//! template it does not exercise, so a new one cannot slip by.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::daemon::{create_key, header, post, try_message, Daemon, McpHttp as Client};
use common::oauth::Provider;
use common::DbDir;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const A: &str = "tenant-a";
const B: &str = "tenant-b";
/// Each tenant's marker: in its contents, metadata, keys, agent names,
/// file names and instructions. Single words, so search finds them.
const MARK_A: &str = "qxzamark";
const MARK_B: &str = "qxzbmark";
/// The same in both tenants.
const SHARED: &str = "shared";
const DOOMED: &str = "doomed";
const OWNER: &str = "alice";
const TARGET: &str = "bob";

/// One tenant's two clients: an admin key and an (unbound) agent key.
struct Tenant {
    name: &'static str,
    mark: &'static str,
    admin: Client,
    agent: Client,
}

/// What the matrix exercised, checked against what the daemon offers.
#[derive(Default)]
struct Covered {
    tools: BTreeSet<String>,
    /// Static URIs and templates (`handoff://context/{session_key}`).
    resources: BTreeSet<String>,
    analytics: BTreeSet<String>,
}

/// A read: its label, whether it is tenant data (compared before and
/// after the other tenant's writes) and what was answered.
struct Read {
    label: String,
    tenant_scoped: bool,
    body: Value,
    /// The other tenant's name this read asked for (a probe), which the
    /// reply may echo (`query`, `target_agent`, `agent_id`, `uri`).
    echo: Option<String>,
}

fn only(mark: &str) -> String {
    format!("only-{mark}")
}

/// One request's reply. A token without the admin scope gets HTTP 403
/// `insufficient_scope` for an admin call where an API key gets the
/// FORBIDDEN error: `None` then (and only for a token).
async fn rpc(c: &mut Client, method: &str, params: Value) -> Option<Value> {
    let (status, head, body) = c.exchange(method, params).await;
    if status == 403 {
        assert!(
            header(&head, "www-authenticate").is_some_and(|h| h.contains("insufficient_scope")),
            "{method}: {head}"
        );
        assert!(
            !c.key.as_deref().unwrap_or_default().starts_with("hnd_"),
            "an API key got 403 for {method}: {head}"
        );
        return None;
    }
    assert_eq!(status, 200, "{method}: {head}");
    Some(try_message(&body, c.next).unwrap_or_else(|| panic!("{method}: no reply in {body}")))
}

/// The FORBIDDEN body an admin call gets, or its equivalent for a token.
fn forbidden() -> Value {
    json!({"error_code": "FORBIDDEN", "details": {"required_capability": "admin"}})
}

async fn call(c: &mut Client, cov: &Arc<Mutex<Covered>>, tool: &str, args: Value) -> Value {
    cov.lock().unwrap().tools.insert(tool.to_string());
    match rpc(c, "tools/call", json!({"name": tool, "arguments": args})).await {
        Some(r) => r["result"]["structuredContent"].clone(),
        None => forbidden(),
    }
}

fn ok(label: &str, v: &Value) {
    assert_eq!(v["success"], true, "{label}: {v}");
}

fn err(label: &str, v: &Value, code: &str) {
    assert_eq!(v["error_code"], code, "{label}: {v}");
}

/// A resource read: the payload (parsed when JSON), or the error object.
async fn read(c: &mut Client, cov: &Arc<Mutex<Covered>>, pattern: &str, uri: &str) -> Value {
    cov.lock().unwrap().resources.insert(pattern.to_string());
    let Some(r) = rpc(c, "resources/read", json!({"uri": uri})).await else {
        return json!({"error": {"data": forbidden()}});
    };
    if let Some(e) = r.get("error") {
        return json!({"error": e});
    }
    let text = r["result"]["contents"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{uri}: {r}"));
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn assert_absent(label: &str, v: &Value, mark: &str, echo: Option<&str>) {
    let mut text = v.to_string().to_lowercase();
    if let Some(echo) = echo {
        text = text.replace(echo, "");
    }
    assert!(
        !text.contains(mark),
        "{label}: another tenant's marker {mark} in {v}"
    );
}

/// Drop what changes with time alone (timestamps, request ids, uptime).
fn stable(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !(k.ends_with("_at") || *k == "timestamp" || *k == "request_id"))
                .map(|(k, v)| (k.clone(), stable(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(stable).collect()),
        v => v.clone(),
    }
}

/// Everything tenant `t`'s tenant data and the deployment show `t`; the
/// other tenant's names (`other`) are probed too, and must find nothing.
async fn reads(t: &mut Tenant, other: &str, cov: &Arc<Mutex<Covered>>) -> Vec<Read> {
    let mut out = Vec::new();
    let mut push = |label: String, tenant_scoped: bool, body: Value| {
        // A probe of the other tenant's names: the reply may echo the name
        // asked for (`query`, `target_agent`, `agent_id`, `uri`).
        let echo = [
            format!("\"query\":\"{other}\""),
            only(other),
            format!("agent-{other}"),
            format!("target-{other}"),
        ]
        .into_iter()
        .find(|name| {
            label.contains(name.as_str())
                || (name.starts_with('"') && label.contains("other marker"))
        });
        out.push(Read {
            label,
            tenant_scoped,
            body,
            echo,
        })
    };
    let c = &mut t.agent;
    // Tools.
    for key in [SHARED, DOOMED] {
        let r = call(c, cov, "get_context", json!({"session_key": key})).await;
        push(format!("get_context {key}"), true, r);
    }
    for (label, args) in [
        ("own marker", json!({"query": t.mark})),
        ("other marker", json!({"query": other})),
        ("common words", json!({"query": "first words"})),
        (
            "in shared",
            json!({"query": "words", "session_key": SHARED}),
        ),
        ("as alice", json!({"query": "words", "agent": OWNER})),
        ("as bob", json!({"query": "words", "agent": TARGET})),
        (
            "other's key",
            json!({"query": "words", "session_key": only(other)}),
        ),
        (
            "other's agent",
            json!({"query": "words", "agent": format!("agent-{other}")}),
        ),
    ] {
        let probe = args["session_key"]
            .as_str()
            .or(args["agent"].as_str())
            .filter(|n| n.contains(other))
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let mut r = call(c, cov, "search_context", args).await;
        // bm25 (SQLite) ranks with the statistics of the whole index: the
        // score is compared within one reply only (docs/tools.md), so it is
        // left out of the comparison; the hits themselves are compared.
        for hit in r["results"].as_array_mut().into_iter().flatten() {
            hit.as_object_mut().unwrap().remove("score");
        }
        push(format!("search_context {label}{probe}"), true, r);
    }
    for (label, args) in [
        ("bob", json!({"target_agent": TARGET})),
        (
            "bob pending",
            json!({"target_agent": TARGET, "status": "pending"}),
        ),
        (
            "bob accepted",
            json!({"target_agent": TARGET, "status": "accepted"}),
        ),
        ("alice", json!({"target_agent": OWNER})),
        (
            "other's target",
            json!({"target_agent": format!("target-{other}")}),
        ),
    ] {
        let probe = args["target_agent"]
            .as_str()
            .filter(|n| n.contains(other))
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let r = call(c, cov, "list_handoffs", args).await;
        push(format!("list_handoffs {label}{probe}"), true, r);
    }
    // The other tenant's session key: not found, whatever the path.
    let r = call(c, cov, "get_context", json!({"session_key": only(other)})).await;
    err("get_context other's key", &r, "SESSION_NOT_FOUND");
    push(format!("get_context {}", only(other)), true, r);

    // Resources of the tenant.
    for (pattern, uri) in [
        ("handoff://sessions", "handoff://sessions".to_string()),
        (
            "handoff://sessions/lifecycle",
            "handoff://sessions/lifecycle".to_string(),
        ),
        (
            "handoff://context/{session_key}",
            format!("handoff://context/{SHARED}"),
        ),
        (
            "handoff://context/{session_key}",
            format!("handoff://context/{DOOMED}"),
        ),
        (
            "handoff://context/{session_key}",
            format!("handoff://context/{}", only(other)),
        ),
        (
            "handoff://summary/{session_key}",
            format!("handoff://summary/{SHARED}"),
        ),
        (
            "handoff://summary/{session_key}",
            format!("handoff://summary/{}", only(other)),
        ),
        (
            "handoff://agents/{agent_id}/sessions",
            format!("handoff://agents/{OWNER}/sessions"),
        ),
        (
            "handoff://agents/{agent_id}/sessions",
            format!("handoff://agents/{TARGET}/sessions"),
        ),
        (
            "handoff://agents/{agent_id}/sessions",
            format!("handoff://agents/agent-{other}/sessions"),
        ),
        (
            "handoff://agents/{agent_id}/handoffs",
            format!("handoff://agents/{TARGET}/handoffs"),
        ),
        (
            "handoff://agents/{agent_id}/handoffs",
            format!("handoff://agents/{OWNER}/handoffs"),
        ),
        (
            "handoff://agents/{agent_id}/handoffs",
            format!("handoff://agents/target-{other}/handoffs"),
        ),
    ] {
        let r = read(c, cov, pattern, &uri).await;
        push(uri, true, r);
    }
    // Analytics: the tenant's types with an agent key, the process's with
    // the admin key (an agent key is refused them).
    for kind in handoff::mcp::analytics::TYPES {
        cov.lock().unwrap().analytics.insert(kind.to_string());
        let uri = format!("handoff://analytics/{kind}");
        let r = read(c, cov, "handoff://analytics/{type}", &uri).await;
        if matches!(kind, "performance" | "resources") {
            assert_eq!(r["error"]["data"]["error_code"], "FORBIDDEN", "{uri}: {r}");
            let r = read(&mut t.admin, cov, "handoff://analytics/{type}", &uri).await;
            assert!(r.get("error").is_none(), "{uri}: {r}");
            push(uri, false, r);
        } else {
            assert!(r.get("error").is_none(), "{uri}: {r}");
            push(uri, true, r);
        }
    }
    let r = read(
        c,
        cov,
        "handoff://analytics/{type}",
        "handoff://analytics/nope",
    )
    .await;
    assert_eq!(r["error"]["data"]["error_code"], "NOT_FOUND", "{r}");

    // The deployment's, as the agent key sees them.
    for (pattern, uri) in [
        ("handoff://configuration", "handoff://configuration"),
        (
            "handoff://configuration/backups",
            "handoff://configuration/backups",
        ),
        ("handoff://jobs", "handoff://jobs"),
        (
            "handoff://jobs/{job_name}",
            "handoff://jobs/analytics_rollup",
        ),
        ("handoff://jobs/{job_name}", "handoff://jobs/lifecycle"),
        ("handoff://health", "handoff://health"),
    ] {
        let r = read(c, cov, pattern, uri).await;
        assert!(r.get("error").is_none(), "{uri}: {r}");
        if uri == "handoff://health" {
            // How many sessions are live counts every tenant's.
            assert!(!r.to_string().contains("live_session_actors"), "{r}");
        }
        push(uri.to_string(), false, r);
    }
    let r = read(c, cov, "handoff://metrics", "handoff://metrics").await;
    assert_eq!(r["error"]["data"]["error_code"], "FORBIDDEN", "{r}");
    let r = read(&mut t.admin, cov, "handoff://metrics", "handoff://metrics").await;
    push("handoff://metrics (admin)".into(), false, r);
    let r = call(
        c,
        cov,
        "get_configuration",
        json!({"include_metadata": true}),
    )
    .await;
    ok("get_configuration", &r);
    push("get_configuration".into(), false, r);
    let r = call(
        c,
        cov,
        "manage_configuration_backup",
        json!({"action": "list"}),
    )
    .await;
    ok("backups list", &r);
    push("manage_configuration_backup list".into(), false, r);
    let r = call(c, cov, "get_job_status", json!({})).await;
    ok("get_job_status", &r);
    push("get_job_status".into(), false, r);
    out
}

/// Tenant `t` writes its data: the same keys and agent names as the other
/// tenant, and its marker everywhere a client can put text.
async fn writes(t: &mut Tenant, cov: &Arc<Mutex<Covered>>) {
    let m = t.mark;
    let c = &mut t.agent;
    for (key, agent) in [
        (SHARED.to_string(), OWNER.to_string()),
        (DOOMED.to_string(), OWNER.to_string()),
        (only(m), format!("agent-{m}")),
    ] {
        let r = call(
            c,
            cov,
            "register_session",
            json!({"session_key": key, "agent_from": agent, "metadata": {"note": m}}),
        )
        .await;
        ok("register_session", &r);
        let r = call(
            c,
            cov,
            "update_context",
            json!({"session_key": key, "context_type": "message",
                   "content": format!("{m} first words of {key}"), "metadata": {"by": m}}),
        )
        .await;
        ok("update_context", &r);
    }
    let r = call(
        c,
        cov,
        "update_context",
        json!({"session_key": SHARED, "entries": [
            {"type": "file", "content": format!("src/{m}.rs words")},
            {"type": "tool_call", "content": format!("cargo test {m} words")}]}),
    )
    .await;
    ok("update_context batch", &r);
    let r = call(
        c,
        cov,
        "analyze_codebase",
        json!({"session_key": SHARED, "file_paths": [format!("{m}.rs")]}),
    )
    .await;
    ok("analyze_codebase", &r);
    assert_eq!(r["files"][0]["status"], "analyzed", "{r}");
    let r = call(
        c,
        cov,
        "request_handoff",
        json!({"session_key": SHARED, "target_agent": TARGET, "request_type": "collaboration",
               "request_data": {"instructions": format!("{m} carry on"), "ticket": m}}),
    )
    .await;
    ok("request_handoff", &r);
    let id = r["handoff"]["id"].as_str().unwrap().to_string();
    let r = call(
        c,
        cov,
        "accept_handoff",
        json!({"handoff_id": id, "agent": TARGET}),
    )
    .await;
    ok("accept_handoff", &r);
    let r = call(
        c,
        cov,
        "request_handoff",
        json!({"session_key": only(m), "target_agent": format!("target-{m}")}),
    )
    .await;
    ok("request_handoff (pending)", &r);
}

/// The deployment-wide tools: an agent key is refused every change; an
/// admin key (of either tenant: admin is the deployment's operator) makes
/// them.
async fn deployment(t: &mut Tenant, cov: &Arc<Mutex<Covered>>) {
    let changes = [
        (
            "update_configuration",
            json!({"config_section": "monitoring",
                   "monitoring_config": {"slow_call_threshold": "750ms"}}),
        ),
        (
            "update_job_config",
            json!({"job_name": "cache_maintenance", "config": {"max_retries": 2}}),
        ),
        ("run_job_now", json!({"job_name": "analytics_rollup"})),
        (
            "manage_configuration_backup",
            json!({"action": "create", "backup_name": "iso", "description": "matrix"}),
        ),
    ];
    for (tool, args) in &changes {
        let r = call(&mut t.agent, cov, tool, args.clone()).await;
        err(&format!("{} agent {tool}", t.name), &r, "FORBIDDEN");
        assert_eq!(r["details"]["required_capability"], "admin", "{r}");
    }
    let mut backup = None;
    for (tool, args) in changes {
        let r = call(&mut t.admin, cov, tool, args).await;
        ok(&format!("{} admin {tool}", t.name), &r);
        if tool == "manage_configuration_backup" {
            backup = r["backup"]["id"].as_str().map(str::to_string);
        }
    }
    let backup = backup.unwrap();
    for action in ["restore", "delete"] {
        let args = json!({"action": action, "backup_id": backup});
        let r = call(
            &mut t.agent,
            cov,
            "manage_configuration_backup",
            args.clone(),
        )
        .await;
        err(&format!("agent backup {action}"), &r, "FORBIDDEN");
        let r = call(&mut t.admin, cov, "manage_configuration_backup", args).await;
        ok(&format!("admin backup {action}"), &r);
    }
    // A run's report counts every tenant's rows: the admin sees it, an
    // agent key gets the run without it.
    let r = call(
        &mut t.admin,
        cov,
        "get_job_status",
        json!({"job_name": "analytics_rollup"}),
    )
    .await;
    assert!(r["job"]["last_run"]["report"].is_object(), "{r}");
    let r = call(
        &mut t.agent,
        cov,
        "get_job_status",
        json!({"job_name": "analytics_rollup"}),
    )
    .await;
    assert!(r["job"]["last_run"].is_object(), "{r}");
    assert!(r["job"]["last_run"]["report"].is_null(), "{r}");
    for h in r["job"]["history"].as_array().unwrap() {
        assert!(h["report"].is_null(), "{r}");
    }
}

/// The standalone SSE stream of an MCP session (where subscription
/// notices go): its status, and the text it sends, as it arrives.
async fn sse(c: &Client, key: &str, session: &str) -> (u16, Arc<Mutex<String>>) {
    let req = format!(
        "GET /mcp HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\
         Authorization: Bearer {key}\r\nMcp-Session-Id: {session}\r\n\
         Mcp-Protocol-Version: 2025-06-18\r\n\r\n",
        c.addr
    );
    let mut s = tokio::net::TcpStream::connect(&c.addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let text = Arc::new(Mutex::new(String::new()));
    let mut buf = vec![0u8; 8192];
    // The head first.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer to GET /mcp")
            .unwrap();
        assert!(n > 0, "GET /mcp: closed without a head");
        text.lock()
            .unwrap()
            .push_str(&String::from_utf8_lossy(&buf[..n]));
        if text.lock().unwrap().contains("\r\n\r\n") {
            break;
        }
    }
    let status = text
        .lock()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let sink = text.clone();
    tokio::spawn(async move {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                return;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (status, text)
}

/// The URIs of the `notifications/resources/updated` seen on a stream.
fn updated(text: &Mutex<String>) -> Vec<String> {
    text.lock()
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim().strip_prefix("data:")?.trim()).ok())
        .filter(|v| v["method"] == "notifications/resources/updated")
        .map(|v| v["params"]["uri"].as_str().unwrap().to_string())
        .collect()
}

fn export(db: &DbDir, tenant: &str) -> String {
    let out = std::process::Command::new(common::BIN)
        .args(["export", "--tenant", tenant, "-o", "-"])
        .env("HANDOFF_DATABASE_URL", db.url())
        .output()
        .expect("handoff export");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_nothing_of_each_other() {
    matrix(None).await;
}

/// The same matrix with tenants, scopes and agents from OAuth tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_from_tokens_see_nothing_of_each_other() {
    let p = Provider::start().await;
    matrix(Some(&p)).await;
}

async fn matrix(tokens: Option<&Provider>) {
    let db = DbDir::new();
    let ws = tempfile::tempdir().unwrap();
    for m in [MARK_A, MARK_B] {
        std::fs::write(
            ws.path().join(format!("{m}.rs")),
            format!("use {m}_crate::thing;\npub fn {m}_fn() {{}}\n"),
        )
        .unwrap();
    }
    let mut env = vec![(
        "HANDOFF_WORKSPACE_ROOT",
        ws.path().to_str().unwrap().to_string(),
    )];
    env.extend(tokens.map(Provider::env).unwrap_or_default());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let d = Daemon::start_env(&db, &[], &env).await;
    let mut tenants = Vec::new();
    for (name, mark) in [(A, MARK_A), (B, MARK_B)] {
        let (admin, agent) = match tokens {
            None => (
                create_key(&db, name, "admin", &[]),
                create_key(&db, name, "agent", &[]),
            ),
            Some(p) => (
                p.token(
                    name,
                    "handoff:admin",
                    json!({"sub": format!("admin-of-{name}")}),
                )
                .await,
                p.token(name, "handoff:agent", json!({})).await,
            ),
        };
        tenants.push(Tenant {
            name,
            mark,
            admin: Client::open(&d.mcp, Some(&admin)).await,
            agent: Client::open(&d.mcp, Some(&agent)).await,
        });
    }
    let (mut a, mut b) = {
        let b = tenants.pop().unwrap();
        (tenants.pop().unwrap(), b)
    };
    let cov = Arc::new(Mutex::new(Covered::default()));

    // B watches the shared names before A writes anything.
    let watched = [
        format!("handoff://context/{SHARED}"),
        format!("handoff://summary/{SHARED}"),
        format!("handoff://agents/{TARGET}/handoffs"),
    ];
    for uri in &watched {
        let r = b
            .agent
            .rpc("resources/subscribe", json!({"uri": uri}))
            .await;
        assert!(r["result"].is_object(), "subscribe {uri}: {r}");
    }
    let b_key = b.agent.key.clone().unwrap();
    let (status, b_stream) = sse(&b.agent, &b_key, b.agent.session.as_deref().unwrap()).await;
    assert_eq!(status, 200, "{}", b_stream.lock().unwrap());
    // A subscribes too (its own stream proves notices flow at all).
    for uri in &watched {
        a.agent
            .rpc("resources/subscribe", json!({"uri": uri}))
            .await;
    }
    let a_key = a.agent.key.clone().unwrap();
    let (_, a_stream) = sse(&a.agent, &a_key, a.agent.session.as_deref().unwrap()).await;

    // A writes; B saw no notice of it, A did.
    writes(&mut a, &cov).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while updated(&a_stream).len() < 3 {
        assert!(
            tokio::time::Instant::now() < until,
            "A's own notices: {}",
            a_stream.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        updated(&b_stream),
        Vec::<String>::new(),
        "B was told of A's writes"
    );
    // B's key on A's MCP session: refused, so A's notices (and A's
    // session) stay A's.
    let (status, text) = sse(&b.agent, &b_key, a.agent.session.as_deref().unwrap()).await;
    assert_eq!(status, 403, "{}", text.lock().unwrap());
    let (status, head, _) = post(
        &d.mcp,
        &json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"}),
        &[
            ("Authorization", &format!("Bearer {b_key}")),
            ("Mcp-Session-Id", a.agent.session.as_deref().unwrap()),
            ("Mcp-Protocol-Version", "2025-06-18"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status, 403, "{head}");

    let a1 = reads(&mut a, MARK_B, &cov).await;
    // The reads show A's data to A (so their emptiness for B means
    // something).
    for label in [
        "get_context shared",
        "search_context own marker",
        "list_handoffs bob",
        "list_handoffs other's target (target-qxzbmark)",
        "handoff://sessions",
        "handoff://summary/shared",
        "handoff://agents/alice/sessions",
        "handoff://agents/bob/handoffs",
        "handoff://analytics/sessions",
        "handoff://analytics/handoffs",
        "handoff://analytics/context",
    ] {
        let r = a1.iter().find(|r| r.label == label).unwrap();
        if label.starts_with("list_handoffs other's target") {
            // `target-{B's marker}`: nobody in A.
            assert_eq!(r.body["handoffs"], json!([]), "{label}: {}", r.body);
        } else if label.starts_with("handoff://analytics") {
            let n = r.body["total"]
                .as_i64()
                .or(r.body["total_entries"].as_i64());
            assert!(n.unwrap_or(0) > 0, "{label}: {}", r.body);
        } else {
            assert!(
                r.body.to_string().contains(MARK_A) || r.body.to_string().contains(SHARED),
                "{label} shows A nothing of A's: {}",
                r.body
            );
        }
    }

    // B, before its own writes: nothing of A's anywhere.
    let b0 = reads(&mut b, MARK_A, &cov).await;
    for r in &b0 {
        assert_absent(&r.label, &r.body, MARK_A, r.echo.as_deref());
    }
    for label in ["get_context shared", "get_context doomed"] {
        let r = b0.iter().find(|r| r.label == label).unwrap();
        err(label, &r.body, "SESSION_NOT_FOUND");
    }
    let sessions = &b0
        .iter()
        .find(|r| r.label == "handoff://sessions")
        .unwrap()
        .body;
    assert_eq!(sessions["total"], 0, "{sessions}");

    // B's writes by A's ids and keys reach nothing of A's.
    let a_handoff = a1
        .iter()
        .find(|r| r.label == "list_handoffs bob")
        .unwrap()
        .body["handoffs"][0]["id"]
        .clone();
    let r = call(
        &mut b.agent,
        &cov,
        "accept_handoff",
        json!({"handoff_id": a_handoff, "agent": TARGET}),
    )
    .await;
    err("B accepts A's handoff", &r, "HANDOFF_NOT_FOUND");
    for (tool, args) in [
        (
            "update_context",
            json!({"session_key": only(MARK_A), "context_type": "message", "content": "x"}),
        ),
        (
            "request_handoff",
            json!({"session_key": only(MARK_A), "target_agent": TARGET}),
        ),
        ("delete_session", json!({"session_key": only(MARK_A)})),
        (
            "analyze_codebase",
            json!({"session_key": only(MARK_A), "file_paths": [format!("{MARK_B}.rs")]}),
        ),
    ] {
        let r = call(&mut b.agent, &cov, tool, args).await;
        err(&format!("B {tool} on A's key"), &r, "SESSION_NOT_FOUND");
    }

    // B writes the same keys and agent names: its own sessions.
    writes(&mut b, &cov).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while updated(&b_stream).len() < 3 {
        assert!(
            tokio::time::Instant::now() < until,
            "B's own notices: {}",
            b_stream.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b1 = reads(&mut b, MARK_A, &cov).await;
    for r in &b1 {
        assert_absent(&r.label, &r.body, MARK_A, r.echo.as_deref());
    }
    let r = &b1
        .iter()
        .find(|r| r.label == "get_context shared")
        .unwrap()
        .body;
    assert!(r.to_string().contains(MARK_B), "{r}");

    // A reads what it read before B wrote; nothing of B's.
    let a2 = reads(&mut a, MARK_B, &cov).await;
    compare("A after B's writes", &a1, &a2, MARK_B);

    // The deployment-wide tools, as each tenant; then A deletes its
    // `doomed` and writes more: B reads the same as before.
    deployment(&mut a, &cov).await;
    deployment(&mut b, &cov).await;
    let b_notices = updated(&b_stream).len();
    let r = call(
        &mut a.agent,
        &cov,
        "delete_session",
        json!({"session_key": DOOMED}),
    )
    .await;
    ok("A deletes doomed", &r);
    let r = call(
        &mut a.agent,
        &cov,
        "update_context",
        json!({"session_key": SHARED, "context_type": "message", "content": format!("{MARK_A} later")}),
    )
    .await;
    ok("A writes more", &r);
    let r = call(
        &mut a.agent,
        &cov,
        "request_handoff",
        json!({"session_key": SHARED, "target_agent": TARGET}),
    )
    .await;
    ok("A hands off again", &r);
    let b2 = reads(&mut b, MARK_A, &cov).await;
    compare("B after A's later writes", &b1, &b2, MARK_A);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        updated(&b_stream).len(),
        b_notices,
        "B was told of A's later writes: {:?}",
        updated(&b_stream)
    );
    let r = &b2
        .iter()
        .find(|r| r.label == "get_context doomed")
        .unwrap()
        .body;
    assert!(
        r.to_string().contains(MARK_B),
        "B's doomed went with A's: {r}"
    );

    // The export of one tenant holds that tenant's data only.
    let ex_a = export(&db, A);
    let ex_b = export(&db, B);
    assert!(ex_a.contains(MARK_A) && !ex_a.contains(MARK_B), "{ex_a}");
    assert!(ex_b.contains(MARK_B) && !ex_b.contains(MARK_A), "{ex_b}");

    // Coverage: every tool, resource and template the daemon offers was
    // exercised, as every analytics type.
    let listed = b.agent.rpc("tools/list", json!({})).await;
    let tools: BTreeSet<String> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    let listed = b.agent.rpc("resources/list", json!({})).await;
    let mut resources: BTreeSet<String> = listed["result"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["uri"].as_str().unwrap().to_string())
        .collect();
    let listed = b.agent.rpc("resources/templates/list", json!({})).await;
    let templates: Vec<String> = listed["result"]["resourceTemplates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["uriTemplate"].as_str().unwrap().to_string())
        .collect();
    let (n_resources, n_templates) = (resources.len(), templates.len());
    resources.extend(templates);
    let cov = std::mem::take(&mut *cov.lock().unwrap());
    let missing: Vec<_> = tools.difference(&cov.tools).collect();
    assert!(
        missing.is_empty(),
        "tools the matrix does not cover: {missing:?}"
    );
    let missing: Vec<_> = resources.difference(&cov.resources).collect();
    assert!(
        missing.is_empty(),
        "resources the matrix does not cover: {missing:?}"
    );
    assert_eq!(cov.analytics.len(), handoff::mcp::analytics::TYPES.len());
    eprintln!(
        "isolation matrix: {} tools, {n_resources} resources, {n_templates} templates, {} analytics types",
        tools.len(),
        cov.analytics.len()
    );
    assert!(d.stop().await.success());
}

/// The tenant-scoped reads of `after` equal those of `before` (but for
/// what time alone changes), and none shows `mark`.
fn compare(what: &str, before: &[Read], after: &[Read], mark: &str) {
    assert_eq!(before.len(), after.len());
    for (x, y) in before.iter().zip(after) {
        assert_eq!(x.label, y.label);
        assert_absent(
            &format!("{what}: {}", y.label),
            &y.body,
            mark,
            y.echo.as_deref(),
        );
        if x.tenant_scoped {
            assert_eq!(
                stable(&x.body),
                stable(&y.body),
                "{what}: {} changed",
                x.label
            );
        }
    }
}
