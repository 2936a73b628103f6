"""Drive `handoff serve` with the official MCP Python SDK over stdio.

Usage: client_check.py <handoff binary> <database url> <session key>
       client_check.py <http://host:port/mcp> - <session key>   (Streamable HTTP)

Written for SDK 2.x (`mcp.Client`, which probes protocol 2026-07-28 with
`server/discover` and falls back to `initialize`); falls back to the 1.x
`ClientSession` API when that is what is installed.

Prints one JSON object on stdout describing what the server answered; the
Rust test (tests/clients.rs) asserts on it. A failure inside the script is
printed as {"ok": false, "error": ..., "traceback": ...} with exit code 1.
"""

import asyncio
import contextlib
import json
import sys
import traceback
from importlib.metadata import version

import mcp
from mcp import StdioServerParameters


def _attr(obj, *names):
    for n in names:
        if hasattr(obj, n):
            return getattr(obj, n)
    return None


def tool_body(result):
    """A handoff tool's JSON object, from both the text and structured content."""
    text = None
    for item in result.content:
        if getattr(item, "type", None) == "text":
            text = item.text
            break
    return {
        "is_error": bool(_attr(result, "is_error", "isError")),
        "structured": _attr(result, "structured_content", "structuredContent"),
        "text": json.loads(text) if text is not None else None,
    }


def resource_json(result):
    for item in result.contents:
        text = getattr(item, "text", None)
        if text is not None:
            return json.loads(text)
    raise RuntimeError(f"no text contents in {result!r}")


class Conn:
    """The calls this script needs, over whichever SDK API is installed."""

    def __init__(self, client, session, protocol_version, server_name, modern):
        self.client = client
        self.session = session
        self.protocol_version = protocol_version
        self.server_name = server_name
        self.modern = modern

    async def call(self, name, args):
        target = self.client if self.modern else self.session
        return tool_body(await target.call_tool(name, args))

    async def read(self, uri):
        if self.modern:
            # Bypass the client's response cache: reads follow writes here.
            return resource_json(await self.client.read_resource(uri, cache_mode="bypass"))
        return resource_json(await self.session.read_resource(uri))

    async def tools(self):
        target = self.client if self.modern else self.session
        return sorted(t.name for t in (await target.list_tools()).tools)


@contextlib.asynccontextmanager
async def connect(params):
    if hasattr(mcp, "Client"):  # SDK 2.x
        async with mcp.Client(params, mode="auto") as client:
            info = client.server_info
            yield Conn(client, None, client.protocol_version, info.name if info else None, True)
    else:  # SDK 1.x
        from mcp import ClientSession
        from mcp.client.stdio import stdio_client

        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                yield Conn(None, session, init.protocolVersion, init.serverInfo.name, False)


async def run(binary, db_url, key):
    if binary.startswith("http://") or binary.startswith("https://"):
        params = binary  # SDK 2.x: a URL string is a Streamable HTTP server
    else:
        params = StdioServerParameters(
            command=binary,
            args=["serve"],
            env={"HANDOFF_DATABASE_URL": db_url, "HANDOFF_LOG": "warn"},
        )
    out = {"ok": True, "sdk_version": version("mcp")}
    async with connect(params) as c:
        out["protocol_version"] = c.protocol_version
        out["server_name"] = c.server_name
        out["tools"] = await c.tools()
        calls = {}
        calls["register"] = await c.call(
            "register_session", {"session_key": key, "agent_from": "py-agent"}
        )
        calls["appends"] = [
            await c.call(
                "update_context",
                {"session_key": key, "context_type": "message", "content": "py entry 1"},
            ),
            # camelCase spelling, as the original server's code used.
            await c.call(
                "update_context",
                {
                    "sessionKey": key,
                    "contextType": "tool_call",
                    "content": "py entry 2",
                    "metadata": {"via": "camelCase"},
                },
            ),
            await c.call(
                "update_context",
                {"session_key": key, "context_type": "file", "content": "py entry 3"},
            ),
        ]
        out["context"] = await c.read(f"handoff://context/{key}")
        out["summary"] = await c.read(f"handoff://summary/{key}")
        calls["handoff"] = await c.call(
            "request_handoff",
            {
                "session_key": key,
                "target_agent": "py-target",
                "request_data": {"instructions": "carry on", "priority": "high"},
            },
        )
        out["calls"] = calls
    return out


def main():
    binary, db_url, key = sys.argv[1], sys.argv[2], sys.argv[3]
    try:
        out = asyncio.run(run(binary, db_url, key))
    except BaseException as e:  # report, don't hide: the Rust test prints it
        print(json.dumps({"ok": False, "error": repr(e), "traceback": traceback.format_exc()}))
        sys.exit(1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
