//! Resource subscriptions on the handshake revisions: `resources/subscribe`
//! on context, summary and an agent's handoffs; the server sends
//! `notifications/resources/updated` when they change, and stops after
//! `resources/unsubscribe`. Driven over raw stdio so the notifications can
//! be read as they arrive.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

struct Raw {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    /// Notifications seen while waiting for replies.
    seen: Vec<Value>,
}

impl Raw {
    async fn start(db: &common::DbDir) -> Raw {
        let mut child = Command::new(env!("CARGO_BIN_EXE_handoff"))
            .arg("serve")
            .env("HANDOFF_DATABASE_URL", db.url())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut r = Raw {
            _child: child,
            stdin,
            lines,
            next_id: 0,
            seen: Vec::new(),
        };
        let init = r
            .request(
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "subs", "version": "0"}}),
            )
            .await;
        assert_eq!(
            init["result"]["capabilities"]["resources"]["subscribe"], true,
            "{init}"
        );
        r.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        r
    }

    async fn send(&mut self, v: Value) {
        let mut line = v.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
    }

    async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
                .await
                .expect("reply in time")
                .unwrap()
                .expect("server alive");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                return v;
            }
            self.seen.push(v);
        }
    }

    async fn call(&mut self, name: &str, args: Value) -> Value {
        let r = self
            .request("tools/call", json!({"name": name, "arguments": args}))
            .await;
        assert_eq!(r["result"]["isError"], false, "{r}");
        r["result"]["structuredContent"].clone()
    }

    /// Read until a resources/updated notice for each of `want` has
    /// arrived; returns every resources/updated URI seen until then
    /// (drained), sorted. The server publishes a change before it replies,
    /// and one connection's notices keep their order, so a notice caused
    /// before the last of `want` cannot arrive after it: the caller proves
    /// an absence by waiting for a later change it does watch.
    async fn updated_until(&mut self, want: &[&str]) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut got: Vec<String> = self
                .seen
                .iter()
                .filter(|v| v["method"] == "notifications/resources/updated")
                .map(|v| v["params"]["uri"].as_str().unwrap().to_string())
                .collect();
            if want.iter().all(|w| got.iter().any(|g| g == w)) {
                self.seen.clear();
                got.sort();
                return got;
            }
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no notice for {want:?} in time; saw {got:?}"))
                .unwrap()
                .expect("server alive");
            self.seen.push(serde_json::from_str(&line).unwrap());
        }
    }
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn subscribe_notify_unsubscribe() {
    let db = common::DbDir::new();
    let mut r = Raw::start(&db).await;
    r.call(
        "register_session",
        json!({"session_key": "watched", "agent_from": "a"}),
    )
    .await;
    r.call(
        "register_session",
        json!({"session_key": "other", "agent_from": "a"}),
    )
    .await;
    for uri in [
        "handoff://context/watched",
        "handoff://summary/watched",
        "handoff://agents/bob/handoffs",
    ] {
        let ok = r.request("resources/subscribe", json!({"uri": uri})).await;
        assert!(ok.get("result").is_some(), "{ok}");
    }
    // Something that cannot be watched is refused.
    let bad = r
        .request("resources/subscribe", json!({"uri": "handoff://sessions"}))
        .await;
    assert!(bad.get("error").is_some(), "{bad}");

    const CONTEXT: &str = "handoff://context/watched";
    const SUMMARY: &str = "handoff://summary/watched";
    const BOB: &str = "handoff://agents/bob/handoffs";
    let write =
        |key: &'static str| json!({"session_key": key, "context_type": "message", "content": "x"});
    r.call("update_context", write("watched")).await;
    assert_eq!(
        r.updated_until(&[CONTEXT, SUMMARY]).await,
        sorted(&[CONTEXT, SUMMARY])
    );

    // An unwatched session's change: nothing before the next watched one.
    r.call("update_context", write("other")).await;
    r.call("update_context", write("watched")).await;
    assert_eq!(
        r.updated_until(&[CONTEXT, SUMMARY]).await,
        sorted(&[CONTEXT, SUMMARY]),
        "no notice for an unwatched session"
    );

    r.call(
        "request_handoff",
        json!({"session_key": "other", "target_agent": "bob"}),
    )
    .await;
    assert_eq!(r.updated_until(&[BOB]).await, [BOB]);

    // After unsubscribing the context: only the summary's notice, and
    // nothing else before the next handoff's.
    r.request("resources/unsubscribe", json!({"uri": CONTEXT}))
        .await;
    r.call("update_context", write("watched")).await;
    r.call(
        "request_handoff",
        json!({"session_key": "other", "target_agent": "bob"}),
    )
    .await;
    assert_eq!(
        r.updated_until(&[SUMMARY, BOB]).await,
        sorted(&[SUMMARY, BOB])
    );
}

mod common;

/// The 2026-07-28 revision: `subscriptions/listen` with rmcp's client on a
/// session opened with `server/discover` (no initialize).
#[tokio::test]
async fn listen_on_the_newest_revision() {
    use rmcp::model::{ProtocolVersion, ServerNotification, SubscriptionFilter};
    use rmcp::{serve_client_with_lifecycle, ClientLifecycleMode};

    let db = common::DbDir::new();
    let mut child = Command::new(common::BIN)
        .arg("serve")
        .env("HANDOFF_DATABASE_URL", db.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let io = (child.stdout.take().unwrap(), child.stdin.take().unwrap());
    let client = serve_client_with_lifecycle(
        (),
        io,
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
    )
    .await
    .expect("discover handshake");
    let s = common::Server::from_parts(child, client);
    s.call(
        "register_session",
        json!({"session_key": "w", "agent_from": "a"}),
    )
    .await
    .ok();
    let uri = "handoff://summary/w";
    let filter = SubscriptionFilter::builder()
        .resource_subscription(uri)
        .resource_subscription("handoff://sessions")
        .build();
    let mut sub = match s.client.peer().listen(filter).await {
        Ok(sub) => sub,
        Err(e) => panic!("subscriptions/listen refused: {e}"),
    };
    // Only the watchable URI is acknowledged.
    assert_eq!(
        sub.acknowledged().resource_subscriptions.as_deref(),
        Some(&[uri.to_string()][..])
    );
    s.call(
        "update_context",
        json!({"session_key": "w", "context_type": "message", "content": "x"}),
    )
    .await
    .ok();
    let n = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a notification in time")
        .unwrap()
        .expect("subscription open");
    match n {
        ServerNotification::ResourceUpdatedNotification(u) => assert_eq!(u.params.uri, uri),
        other => panic!("unexpected {other:?}"),
    }
}

/// A connection holds a bounded number of subscriptions: the one past the
/// limit is refused, re-subscribing a held URI still works, and freeing one
/// makes room.
#[tokio::test]
async fn subscriptions_per_connection_are_bounded() {
    let db = common::DbDir::new();
    let mut r = Raw::start(&db).await;
    for i in 0..1000 {
        let uri = format!("handoff://context/s{i}");
        let ok = r.request("resources/subscribe", json!({"uri": uri})).await;
        assert!(ok.get("result").is_some(), "{ok}");
    }
    let over = r
        .request(
            "resources/subscribe",
            json!({"uri": "handoff://summary/one-more"}),
        )
        .await;
    assert_eq!(
        over["error"]["data"]["error_code"], "VALIDATION_ERROR",
        "{over}"
    );
    let again = r
        .request(
            "resources/subscribe",
            json!({"uri": "handoff://context/s1"}),
        )
        .await;
    assert!(again.get("result").is_some(), "{again}");
    r.request(
        "resources/unsubscribe",
        json!({"uri": "handoff://context/s0"}),
    )
    .await;
    let room = r
        .request(
            "resources/subscribe",
            json!({"uri": "handoff://summary/one-more"}),
        )
        .await;
    assert!(room.get("result").is_some(), "{room}");
}
