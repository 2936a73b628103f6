//! What the daemon holds per caller and per address: the allowlist and
//! `X-Forwarded-For` from trusted proxies, caps on requests in flight and
//! on open streams, and the request id and log line of every request.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::daemon::{create_key, header, post, try_message, Daemon, McpHttp};
use common::DbDir;

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "caps-test", "version": "0"}}})
}

#[tokio::test]
async fn allowlist_and_forwarded_for_from_trusted_proxies_only() {
    let db = DbDir::new();
    // Only 10.1.2.3 may call; the test connects from 127.0.0.1.
    let strict = Daemon::start_env(
        &db,
        &[],
        &[
            ("HANDOFF_HTTP__AUTH", "none"),
            ("HANDOFF_HTTP__ALLOW_IPS", "[10.0.0.0/8]"),
        ],
    )
    .await;
    let (status, head, body) = post(&strict.mcp, &initialize(), &[]).await.unwrap();
    assert_eq!(status, 403, "{head}");
    assert_eq!(body, r#"{"error":"forbidden"}"#);
    // Without a trusted proxy, X-Forwarded-For proves nothing.
    let (status, ..) = post(
        &strict.mcp,
        &initialize(),
        &[("X-Forwarded-For", "10.1.2.3")],
    )
    .await
    .unwrap();
    assert_eq!(status, 403);
    assert!(strict.stop().await.success());

    // 127.0.0.1 as a trusted proxy: the address it forwards counts.
    let proxied = Daemon::start_env(
        &db,
        &[],
        &[
            ("HANDOFF_HTTP__AUTH", "none"),
            ("HANDOFF_HTTP__ALLOW_IPS", "[10.1.2.3]"),
            ("HANDOFF_HTTP__TRUSTED_PROXIES", "[127.0.0.1/32]"),
        ],
    )
    .await;
    let (status, head, _) = post(
        &proxied.mcp,
        &initialize(),
        &[("X-Forwarded-For", "10.1.2.3")],
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{head}");
    // The right-most untrusted address is the client: what a client
    // writes to the left of the proxy's entry is not believed.
    let (status, ..) = post(
        &proxied.mcp,
        &initialize(),
        &[("X-Forwarded-For", "10.1.2.3, 192.0.2.66")],
    )
    .await
    .unwrap();
    assert_eq!(status, 403);
    let (status, ..) = post(&proxied.mcp, &initialize(), &[]).await.unwrap();
    assert_eq!(status, 403, "the proxy itself is not allowed");
    let log = proxied.stderr.clone();
    assert!(proxied.stop().await.success());
    let log = log.lock().unwrap().join("\n");
    assert!(log.contains(r#""remote":"10.1.2.3""#), "{log}");
    assert!(log.contains(r#""remote":"192.0.2.66""#), "{log}");
}

/// A POST whose announced body has not all arrived: in flight until it has.
async fn held_post(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: 200\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s
}

/// A standalone SSE stream of a new session, open until dropped.
async fn held_stream(addr: &str) -> (TcpStream, String) {
    let c = McpHttp::open(addr, None).await;
    let session = c.session.clone().unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "GET /mcp HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\
             Mcp-Session-Id: {session}\r\nMcp-Protocol-Version: 2025-06-18\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    (s, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_and_streams_are_capped_per_caller() {
    let db = DbDir::new();
    let d = Daemon::start_env(
        &db,
        &[],
        &[
            ("HANDOFF_HTTP__AUTH", "none"),
            ("HANDOFF_HTTP__MAX_IN_FLIGHT_PER_KEY", "2"),
            ("HANDOFF_HTTP__MAX_STREAMS_PER_KEY", "2"),
        ],
    )
    .await;
    // Two requests in flight fill the cap; the third is refused at once.
    let a = held_post(&d.mcp).await;
    let b = held_post(&d.mcp).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, head, body) = post(&d.mcp, &initialize(), &[]).await.unwrap();
    assert_eq!(status, 429, "{head}");
    assert_eq!(header(&head, "retry-after"), Some("1"));
    assert!(body.contains("too_many_requests_in_flight"), "{body}");
    // One of them gone: room again.
    drop(a);
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, ..) = post(&d.mcp, &initialize(), &[]).await.unwrap();
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "still {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(b);

    // Streams have their own cap, apart from requests.
    let (s1, h1) = held_stream(&d.mcp).await;
    let (_s2, h2) = held_stream(&d.mcp).await;
    assert!(
        h1.starts_with("HTTP/1.1 200") && h2.starts_with("HTTP/1.1 200"),
        "{h1}\n{h2}"
    );
    let (_s3, h3) = held_stream(&d.mcp).await;
    assert!(h3.starts_with("HTTP/1.1 429"), "{h3}");
    assert!(h3.contains("too_many_streams"), "{h3}");
    // Calls still pass while the streams are open.
    let (status, ..) = post(&d.mcp, &initialize(), &[]).await.unwrap();
    assert_eq!(status, 200);
    drop(s1);
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_s, h) = held_stream(&d.mcp).await;
        if h.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "{h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(d.stop().await.success());
}

#[tokio::test]
async fn every_request_has_an_id_and_a_log_line_without_secrets() {
    let db = DbDir::new();
    let d = Daemon::start_with_keys(&db).await;
    let key = create_key(&db, "acme", "agent", &[]);
    let auth = format!("Bearer {key}");
    let (status, head, _) = post(&d.mcp, &initialize(), &[("Authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(status, 200, "{head}");
    let session = header(&head, "mcp-session-id").unwrap().to_string();
    let with = [
        ("Authorization", auth.as_str()),
        ("Mcp-Session-Id", session.as_str()),
        ("Mcp-Protocol-Version", "2025-06-18"),
    ];
    let (status, ..) = post(
        &d.mcp,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        &with,
    )
    .await
    .unwrap();
    assert_eq!(status, 202);
    // A tool error: its request_id is the HTTP request's id.
    let (status, head, body) = post(
        &d.mcp,
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "get_context", "arguments": {"session_key": "nowhere"}}}),
        &with,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{head}");
    let id = header(&head, "x-request-id")
        .expect("x-request-id")
        .to_string();
    // A lone reply comes as one JSON object, not an event stream.
    assert_eq!(
        header(&head, "content-type"),
        Some("application/json"),
        "{head}"
    );
    let reply = try_message(&body, 2).unwrap();
    let error = &reply["result"]["structuredContent"];
    assert_eq!(error["error_code"], "SESSION_NOT_FOUND", "{reply}");
    assert_eq!(error["request_id"], id.as_str(), "{reply}");
    // A refusal has an id too.
    let (status, head, _) = post(&d.mcp, &initialize(), &[("Authorization", "Bearer nope")])
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert!(header(&head, "x-request-id").is_some(), "{head}");

    let log = d.stderr.clone();
    assert!(d.stop().await.success());
    let log = log.lock().unwrap().join("\n");
    let line: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "http request" && v["request_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no log line for {id}: {log}"));
    assert_eq!(line["tenant"], "acme", "{line}");
    assert_eq!(line["key_id"], &key[4..36], "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["method"], "POST", "{line}");
    assert!(line["duration_ms"].is_number(), "{line}");
    assert_eq!(line["remote"], "127.0.0.1", "{line}");
    assert!(!log.contains(&key[37..]), "the key's secret in the log");
    assert!(
        !log.contains("nowhere"),
        "a session key in clear in the log"
    );
}

mod common;
