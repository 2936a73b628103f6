"""Drive `handoff serve` with the official MCP Python SDK (2.x) over stdio.

Usage: client_check.py <handoff binary> <database url> <session key>

Prints one JSON object on stdout describing what the server answered; the
Rust test (tests/clients.rs) asserts on it. Any failure inside the script is
reported as {"ok": false, "error": ...} with exit code 1.
"""

import asyncio
import json
import sys
import traceback

import mcp
from mcp import Client, StdioServerParameters


def tool_body(result):
    """The JSON object a handoff tool returns (text content and structured)."""
    text = None
    for item in result.content:
        if getattr(item, "type", None) == "text":
            text = item.text
            break
    parsed = json.loads(text) if text is not None else None
    return {
        "is_error": bool(result.is_error),
        "structured": result.structured_content,
        "text": parsed,
    }


def resource_json(result):
    for item in result.contents:
        text = getattr(item, "text", None)
        if text is not None:
            return json.loads(text)
    raise RuntimeError(f"no text contents in {result!r}")


async def run(binary, db_url, key):
    params = StdioServerParameters(
        command=binary,
        args=["serve"],
        env={"HANDOFF_DATABASE_URL": db_url, "HANDOFF_LOG": "warn"},
    )
    out = {"ok": True, "sdk_version": None}
    try:
        from importlib.metadata import version

        out["sdk_version"] = version("mcp")
    except Exception:  # pragma: no cover - informative only
        pass
    async with Client(params, mode="auto") as client:
        out["protocol_version"] = client.protocol_version
        info = client.server_info
        out["server_name"] = info.name if info is not None else None

        tools = await client.list_tools()
        out["tools"] = sorted(t.name for t in tools.tools)

        calls = {}
        calls["register"] = tool_body(
            await client.call_tool(
                "register_session", {"session_key": key, "agent_from": "py-agent"}
            )
        )
        appends = []
        appends.append(
            tool_body(
                await client.call_tool(
                    "update_context",
                    {
                        "session_key": key,
                        "context_type": "message",
                        "content": "py entry 1",
                    },
                )
            )
        )
        # camelCase spelling, as the original server's code used.
        appends.append(
            tool_body(
                await client.call_tool(
                    "update_context",
                    {
                        "sessionKey": key,
                        "contextType": "tool_call",
                        "content": "py entry 2",
                        "metadata": {"via": "camelCase"},
                    },
                )
            )
        )
        appends.append(
            tool_body(
                await client.call_tool(
                    "update_context",
                    {
                        "session_key": key,
                        "context_type": "file",
                        "content": "py entry 3",
                    },
                )
            )
        )
        calls["appends"] = appends

        # Resources: bypass the client cache so the reads reflect the writes.
        out["context"] = resource_json(
            await client.read_resource(f"handoff://context/{key}", cache_mode="bypass")
            if "bypass" in _cache_modes()
            else await client.read_resource(f"handoff://context/{key}")
        )
        out["summary"] = resource_json(
            await client.read_resource(f"handoff://summary/{key}", cache_mode="bypass")
            if "bypass" in _cache_modes()
            else await client.read_resource(f"handoff://summary/{key}")
        )
        calls["handoff"] = tool_body(
            await client.call_tool(
                "request_handoff",
                {
                    "session_key": key,
                    "target_agent": "py-target",
                    "request_data": {"instructions": "carry on", "priority": "high"},
                },
            )
        )
        out["calls"] = calls
    return out


def _cache_modes():
    try:
        from typing import get_args

        from mcp.client.caching import CacheMode

        return set(get_args(CacheMode))
    except Exception:
        return set()


def main():
    binary, db_url, key = sys.argv[1], sys.argv[2], sys.argv[3]
    try:
        out = asyncio.run(run(binary, db_url, key))
    except BaseException as e:  # report, don't hide: the test prints it
        print(
            json.dumps(
                {
                    "ok": False,
                    "error": repr(e),
                    "traceback": traceback.format_exc(),
                }
            )
        )
        sys.exit(1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
