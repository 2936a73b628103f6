//! Two daemons on one PostgreSQL, as two replicas behind a balancer with no
//! affinity: a client whose requests alternate between them sees one
//! session. On the handshake revisions through the shared session store
//! (the replica that did not open a session takes it over); on 2026-07-28
//! every request stands alone anyway.

use serde_json::{json, Value};

use common::daemon::{create_key, post, try_message, Daemon, McpHttp};
use common::DbDir;

/// The context entries' contents of `key`, read through `c`.
async fn contents(c: &mut McpHttp, key: &str) -> Vec<String> {
    let r = c
        .call("get_context", json!({"session_key": key, "limit": 100}))
        .await;
    r["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("entries: {r}"))
        .iter()
        .filter(|e| e["context_type"] == "message")
        .map(|e| e["content"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_between_replicas() {
    let db = DbDir::postgres();
    let acme = create_key(&db, "acme", "agent", &[]);
    let other = create_key(&db, "other", "agent", &[]);
    let (a, b) = (
        Daemon::start_with_keys(&db).await,
        Daemon::start_with_keys(&db).await,
    );

    // Opened on A; every other request goes to B, which has never seen it.
    let mut c = McpHttp::open(&a.mcp, Some(&acme)).await;
    let session = c.session.clone().expect("a session id");
    c.call(
        "register_session",
        json!({"session_key": "rr", "agent_from": "alice"}),
    )
    .await;
    for i in 0..10 {
        c.addr = if i % 2 == 0 {
            b.mcp.clone()
        } else {
            a.mcp.clone()
        };
        let r = c
            .call(
                "update_context",
                json!({"session_key": "rr", "context_type": "message", "content": format!("m{i}")}),
            )
            .await;
        assert_eq!(r["success"], true, "write {i} via {}: {r}", c.addr);
        assert_eq!(c.session.as_deref(), Some(session.as_str()));
    }
    let want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    for addr in [&a.mcp, &b.mcp] {
        c.addr = addr.clone();
        assert_eq!(contents(&mut c, "rr").await, want, "read via {addr}");
    }

    // The session is acme's on both replicas: another tenant's key with its
    // id is refused on each, the one that took it over included.
    for addr in [&a.mcp, &b.mcp] {
        let mut thief = McpHttp {
            addr: addr.clone(),
            key: Some(other.clone()),
            session: Some(session.clone()),
            next: 100,
        };
        assert!(
            thief.try_rpc("tools/list", json!({})).await.is_none(),
            "another tenant on {addr}"
        );
        let (status, head, _) = post(
            addr,
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
            &[
                ("Authorization", &format!("Bearer {other}")),
                ("Mcp-Session-Id", &session),
                ("Mcp-Protocol-Version", "2025-06-18"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(status, 403, "{head}");
    }
    // A session id nobody opened is unknown on both.
    for addr in [&a.mcp, &b.mcp] {
        let (status, head, _) = post(
            addr,
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
            &[
                ("Authorization", &format!("Bearer {acme}")),
                ("Mcp-Session-Id", "made-up"),
                ("Mcp-Protocol-Version", "2025-06-18"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(status, 404, "{head}");
    }

    // 2026-07-28: no session at all; alternate per request.
    let stateless = |id: i64, name: &str, args: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": name, "arguments": args, "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "replica-test", "version": "0"}}}})
    };
    let auth = format!("Bearer {acme}");
    let headers = |tool: &'static str| {
        [
            ("Authorization", auth.clone()),
            ("Mcp-Protocol-Version", "2026-07-28".to_string()),
            ("Mcp-Method", "tools/call".to_string()),
            ("Mcp-Name", tool.to_string()),
        ]
    };
    let send = |addr: String, body: Value, tool: &'static str| {
        let h = headers(tool);
        async move {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post(&addr, &body, &h).await.unwrap()
        }
    };
    for i in 0..6 {
        let addr = if i % 2 == 0 { &a.mcp } else { &b.mcp };
        let body = stateless(
            i,
            "update_context",
            json!({"session_key": "rr", "context_type": "message", "content": format!("s{i}")}),
        );
        let (status, head, text) = send(addr.clone(), body, "update_context").await;
        assert_eq!(status, 200, "{head}\n{text}");
        let reply = try_message(&text, i).unwrap_or_else(|| panic!("{text}"));
        assert_eq!(
            reply["result"]["structuredContent"]["success"], true,
            "{reply}"
        );
    }
    let (_, _, text) = send(
        a.mcp.clone(),
        stateless(
            99,
            "get_context",
            json!({"session_key": "rr", "limit": 100}),
        ),
        "get_context",
    )
    .await;
    let reply = try_message(&text, 99).unwrap();
    let got: Vec<&str> = reply["result"]["structuredContent"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["context_type"] == "message")
        .map(|e| e["content"].as_str().unwrap())
        .collect();
    let mut want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    want.extend((0..6).map(|i| format!("s{i}")));
    assert_eq!(got, want);

    assert!(a.stop().await.success());
    assert!(b.stop().await.success());
}

mod common;
