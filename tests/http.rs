//! The network daemon: `serve --http` (MCP Streamable HTTP on /mcp) and
//! `--admin` (/health, /ready, /metrics), driven over real sockets: the
//! official TypeScript SDK's HTTP client (tests/clients.rs) and raw HTTP
//! here for what a client library would never send.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::daemon::{post, Daemon};
use common::DbDir;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// One HTTP/1.1 exchange on a fresh connection: (status, head, body).
async fn http(addr: &str, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("an answer in time")
        .unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, head, out[split + 4..].to_vec())
}

async fn get(addr: &str, path: &str) -> (u16, String, Vec<u8>) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    http(addr, req.as_bytes()).await
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw-http", "version": "0"}}})
}

#[tokio::test]
async fn admin_listener_health_ready_metrics() {
    let db = DbDir::new();
    let d = Daemon::start(&db, &[]).await;
    let (status, head, body) = get(&d.admin, "/health").await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"status": "ok"})
    );
    let (status, _, body) = get(&d.admin, "/ready").await;
    let ready: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["ready"], true);
    let database = ready["health"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "database")
        .cloned()
        .unwrap();
    assert_eq!(database["status"], "ok", "{ready}");
    let (status, head, body) = get(&d.admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("handoff_actors_live"), "{text:.400}");
    // Not MCP: the admin listener has no /mcp, and /mcp has no /metrics.
    assert_eq!(get(&d.admin, "/mcp").await.0, 404);
    assert_eq!(get(&d.mcp, "/metrics").await.0, 404);
    assert!(d.stop().await.success());
}

#[tokio::test]
async fn refuses_a_non_loopback_address_without_insecure() {
    let db = DbDir::new();
    let out = Command::new(common::BIN)
        .args(["serve", "--http", "0.0.0.0:0"])
        .env("HANDOFF_DATABASE_URL", db.url())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to serve MCP on 0.0.0.0"),
        "{stderr}"
    );
}

#[tokio::test]
async fn dns_rebinding_and_foreign_origins_are_refused_own_origin_served() {
    let db = DbDir::new();
    let d = Daemon::start(&db, &[]).await;
    // A loopback Host and no Origin (any non-browser client): served.
    let (status, head, _) = post(&d.mcp, &initialize(), &[]).await.unwrap();
    assert_eq!(status, 200, "{head}");
    // A page on another site driving the local daemon from a browser.
    let (status, head, _) = post(&d.mcp, &initialize(), &[("Origin", "https://evil.example")])
        .await
        .unwrap();
    assert_eq!(status, 403, "{head}");
    // The daemon's own origin, under any loopback name (the conformance
    // suite's dns-rebinding-protection sends it with its Host): served.
    let port = d.mcp.rsplit(':').next().unwrap();
    for origin in [
        format!("http://{}", d.mcp),
        format!("http://localhost:{port}"),
    ] {
        let (status, head, _) = post(&d.mcp, &initialize(), &[("Origin", &origin)])
            .await
            .unwrap();
        assert_eq!(status, 200, "{origin}: {head}");
    }
    // Another local site (another port) is another origin.
    let other = if port == "1" { "2" } else { "1" };
    let (status, head, _) = post(
        &d.mcp,
        &initialize(),
        &[("Origin", &format!("http://127.0.0.1:{other}"))],
    )
    .await
    .unwrap();
    assert_eq!(status, 403, "{head}");
    // DNS rebinding: the browser sends the attacker's name as Host.
    let body = initialize().to_string();
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: rebind.evil.example\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, head, _) = http(&d.mcp, req.as_bytes()).await;
    assert_eq!(status, 403, "{head}");
    assert!(d.stop().await.success());
}

#[tokio::test]
async fn an_oversized_body_is_refused_before_it_is_read() {
    let db = DbDir::new();
    let d = Daemon::start(&db, &[]).await;
    // Announce 16 MiB and send only the head: the answer must not wait for
    // (or buffer) the body.
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{{",
        d.mcp,
        16 * 1024 * 1024
    );
    let (status, head, _) = http(&d.mcp, req.as_bytes()).await;
    assert_eq!(status, 413, "{head}");
    assert!(d.stop().await.success());
}

/// SIGTERM while writers are busy: the daemon exits 0, and every write it
/// acknowledged is stored, once, in order (read back over stdio).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_keeps_every_acknowledged_write() {
    use common::daemon::McpHttp;
    let db = DbDir::new();
    let d = Daemon::start(&db, &[]).await;
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..6 {
        let (addr, acked) = (d.mcp.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut c = McpHttp::open(&addr, None).await;
            let key = format!("term-{w}");
            c.call(
                "register_session",
                json!({"session_key": key, "agent_from": "w"}),
            )
            .await;
            let mut acks = Vec::new();
            for i in 0.. {
                let content = format!("w{w}-{i}");
                let args =
                    json!({"session_key": key, "context_type": "message", "content": content});
                let Some(r) = c
                    .try_rpc(
                        "tools/call",
                        json!({"name": "update_context", "arguments": args}),
                    )
                    .await
                else {
                    break;
                };
                let body = &r["result"]["structuredContent"];
                if body["success"] != true {
                    break;
                }
                acks.push((
                    content,
                    body["context_entry"]["sequence_number"].as_i64().unwrap(),
                ));
                acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            (key, acks)
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked.load(std::sync::atomic::Ordering::Relaxed) < 60 {
        assert!(
            std::time::Instant::now() < deadline,
            "writes did not get going"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = d.stop().await;
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let mut all = Vec::new();
    for w in writers {
        all.push(w.await.unwrap());
    }
    let s = common::Server::start(&db, &[]).await;
    for (key, acks) in &all {
        let entries = common::all_entries(&s, key).await;
        common::assert_gap_free(key, &entries);
        for (content, seq) in acks {
            assert_eq!(
                entries[(*seq - 1) as usize]["content"],
                content.as_str(),
                "{key}: acknowledged {content} at {seq}"
            );
        }
    }
    let total: usize = all.iter().map(|(_, a)| a.len()).sum();
    eprintln!("{total} acknowledged writes before SIGTERM, all present");
    assert!(s.close().await.success());
}

/// A client trickling its request head is dropped at the header timeout;
/// connections past the cap are closed on accept, and the daemon still
/// serves once they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_too_many_connections_are_dropped() {
    let db = DbDir::new();
    let d = Daemon::start_env(
        &db,
        &[],
        &[
            ("HANDOFF_HTTP__AUTH", "none"),
            ("HANDOFF_HTTP__HEADER_TIMEOUT", "1s"),
            ("HANDOFF_HTTP__MAX_CONNECTIONS", "2"),
        ],
    )
    .await;
    // One byte a second: dropped within the timeout (plus slack).
    let mut slow = tokio::net::TcpStream::connect(&d.mcp).await.unwrap();
    let started = std::time::Instant::now();
    let head = format!("POST /mcp HTTP/1.1\r\nHost: {}\r\n", d.mcp);
    let mut closed = false;
    for b in head.bytes().cycle().take(30) {
        if slow.write_all(&[b]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    let took = started.elapsed();
    assert!(closed, "a trickling client was not dropped in {took:?}");
    assert!(took < Duration::from_secs(5), "dropped only after {took:?}");

    // Two idle connections fill the cap; a third is closed at once.
    let _a = tokio::net::TcpStream::connect(&d.mcp).await.unwrap();
    let _b = tokio::net::TcpStream::connect(&d.mcp).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = tokio::net::TcpStream::connect(&d.mcp).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf))
        .await
        .expect("the third connection was closed at once");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    drop((_a, _b));
    // The header timeout frees the slots of idle connections too; then
    // the daemon serves again.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        // While the slots are still held, a connection is closed unanswered.
        let r = post(&d.mcp, &initialize(), &[]).await;
        if matches!(r, Ok((200, _, _))) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not serving after the cap freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(d.stop().await.success());
}
