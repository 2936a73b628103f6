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

/// The daemon's resident set, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// A client that announces 16 MiB and then sends them: 413 at once, and
/// the daemon's memory does not grow by anything near the body's size
/// (it is not buffered); the daemon serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_oversized_body_is_not_buffered() {
    const BODY: usize = 16 * 1024 * 1024;
    let db = DbDir::new();
    let d = Daemon::start(&db, &[]).await;
    // Warm up (the first requests allocate the server's own state).
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "rss-test", "version": "0"}}});
    for _ in 0..3 {
        assert_eq!(post(&d.mcp, &init, &[]).await.unwrap().0, 200);
    }
    let before = rss_bytes(d.pid());

    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {BODY}\r\n\
         Connection: close\r\n\r\n",
        d.mcp
    );
    let s = tokio::net::TcpStream::connect(&d.mcp).await.unwrap();
    let (mut rx, mut tx) = s.into_split();
    tx.write_all(head.as_bytes()).await.unwrap();
    // Stream the whole body while the answer is read; the daemon may stop
    // reading (and close) at any point, which ends the stream early.
    let writer = tokio::spawn(async move {
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < BODY {
            if tx.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, rx.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            other => panic!("no complete answer: {other:?} {answer:?}"),
        }
    }
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let sent = tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("the body was taken or refused in time")
        .unwrap();
    let after = rss_bytes(d.pid());
    let grew = after.saturating_sub(before);
    eprintln!("sent {sent} of {BODY} bytes; RSS {before} -> {after}");
    assert!(
        grew < 4 * 1024 * 1024,
        "RSS grew by {grew} bytes ({before} -> {after}) while {sent} bytes of a refused body were sent"
    );
    // And the daemon serves on.
    assert_eq!(post(&d.mcp, &init, &[]).await.unwrap().0, 200);
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
    // Writers whose session is open: SIGTERM comes when all six write.
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..6 {
        let (addr, acked, ready) = (d.mcp.clone(), acked.clone(), ready.clone());
        writers.push(tokio::spawn(async move {
            let mut c = McpHttp::open(&addr, None).await;
            let key = format!("term-{w}");
            c.call(
                "register_session",
                json!({"session_key": key, "agent_from": "w"}),
            )
            .await;
            ready.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
                    std::time::Instant::now(),
                ));
                acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            (key, acks)
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked.load(std::sync::atomic::Ordering::Relaxed) < 60
        || ready.load(std::sync::atomic::Ordering::Relaxed) < 6
    {
        assert!(
            std::time::Instant::now() < deadline,
            "writes did not get going"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let term_at = std::time::Instant::now();
    let log = d.stderr.clone();
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
        for (content, seq, _) in acks {
            assert_eq!(
                entries[(*seq - 1) as usize]["content"],
                content.as_str(),
                "{key}: acknowledged {content} at {seq}"
            );
        }
    }
    let total: usize = all.iter().map(|(_, a)| a.len()).sum();
    // The calls in flight at SIGTERM were let finish (the drain), not cut
    // off: with six writers busy, some replies arrive after it.
    let after: usize = all
        .iter()
        .map(|(_, a)| a.iter().filter(|(_, _, at)| *at > term_at).count())
        .sum();
    eprintln!("{total} acknowledged writes, {after} of them answered after SIGTERM; all present");
    assert!(after >= 1, "no call in flight at SIGTERM was answered");
    let log = log.lock().unwrap().join("\n");
    assert!(!log.contains("still in flight"), "{log}");
    assert!(s.close().await.success());
}

/// A client trickling its request head is dropped at the header timeout,
/// and so is an idle keep-alive connection; connections past the cap are closed on accept, and the daemon still
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

    // A keep-alive connection idle after its answer: closed at the same
    // timeout (the idle timeout is the header timeout).
    let mut idle = tokio::net::TcpStream::connect(&d.mcp).await.unwrap();
    idle.write_all(format!("GET /mcp HTTP/1.1\r\nHost: {}\r\n\r\n", d.mcp).as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 "), "an answer first");
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("an idle keep-alive connection is closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

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

/// A SIGTERM the moment the daemon has printed its address is a clean
/// stop: the handlers are in place before any listener is (CI once saw a
/// daemon killed by the default action, exit status not 0).
#[tokio::test]
async fn sigterm_right_after_start_is_a_clean_stop() {
    let db = DbDir::new();
    for _ in 0..5 {
        let d = Daemon::start(&db, &[]).await;
        let stderr = d.stderr.clone();
        let status = d.stop().await;
        assert!(status.success(), "{status:?}: {:?}", stderr.lock().unwrap());
    }
}
