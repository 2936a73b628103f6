//! API keys on the daemon: every way a bearer can be wrong gets a bare
//! 401 (and an audit row), revocation and expiry take effect within the
//! stated bound, rotation keeps the old key for its grace only, scopes and
//! agent bindings are enforced by the tools, and tenants see nothing of
//! each other. Raw HTTP, so each status and header is checked as sent.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{create_key, key_id, keys, Daemon};
use common::DbDir;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One POST to /mcp: (status, head, body).
async fn post(addr: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, String, String) {
    let body = body.to_string();
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The JSON-RPC message with `id` in a JSON or SSE (possibly chunked) body.
fn message(body: &str, id: i64) -> Value {
    body.lines()
        .filter_map(|l| {
            let l = l.trim();
            let json = l.strip_prefix("data:").map(str::trim).unwrap_or(l);
            serde_json::from_str::<Value>(json).ok()
        })
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("no reply with id {id} in {body}"))
}

/// An MCP session over raw HTTP with one bearer key.
struct Client {
    addr: String,
    key: String,
    session: Option<String>,
    next: i64,
}

impl Client {
    async fn open(addr: &str, key: &str) -> Client {
        let mut c = Client {
            addr: addr.to_string(),
            key: key.to_string(),
            session: None,
            next: 0,
        };
        let init = c
            .rpc(
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "auth-test", "version": "0"}}),
            )
            .await;
        assert_eq!(init["result"]["serverInfo"]["name"], "handoff", "{init}");
        let auth = format!("Bearer {}", c.key);
        let session = c.session.clone().unwrap();
        let (status, head, _) = post(
            &c.addr,
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            &[
                ("Authorization", &auth),
                ("Mcp-Session-Id", &session),
                ("Mcp-Protocol-Version", "2025-06-18"),
            ],
        )
        .await;
        assert_eq!(status, 202, "{head}");
        c
    }

    async fn rpc(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let auth = format!("Bearer {}", self.key);
        let mut headers = vec![("Authorization", auth.as_str())];
        let session = self.session.clone();
        if let Some(s) = &session {
            headers.push(("Mcp-Session-Id", s));
            headers.push(("Mcp-Protocol-Version", "2025-06-18"));
        }
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let (status, head, body) = post(&self.addr, &body, &headers).await;
        assert_eq!(status, 200, "{method}: {head}\n{body}");
        if let Some(s) = header(&head, "mcp-session-id") {
            self.session = Some(s.to_string());
        }
        message(&body, id)
    }

    /// A tool's result body (structuredContent, or the error body).
    async fn call(&mut self, tool: &str, args: Value) -> Value {
        let r = self
            .rpc("tools/call", json!({"name": tool, "arguments": args}))
            .await;
        r["result"]["structuredContent"].clone()
    }

    async fn read(&mut self, uri: &str) -> Value {
        self.rpc("resources/read", json!({"uri": uri})).await
    }
}

/// Status of an `initialize` sent with this `Authorization` value.
async fn init_status(addr: &str, authorization: Option<&str>) -> (u16, String, String) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "auth-test", "version": "0"}}});
    match authorization {
        Some(a) => post(addr, &body, &[("Authorization", a)]).await,
        None => post(addr, &body, &[]).await,
    }
}

/// Poll until a key's `initialize` gets `want` (5 s at most); how long.
async fn until_status(addr: &str, key: &str, want: u16) -> Duration {
    let started = Instant::now();
    let auth = format!("Bearer {key}");
    loop {
        let (status, head, _) = init_status(addr, Some(&auth)).await;
        if status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still {status}, not {want}: {head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_unauthorized((status, head, body): (u16, String, String)) {
    assert_eq!(status, 401, "{head}");
    assert_eq!(header(&head, "www-authenticate"), Some("Bearer"), "{head}");
    assert_eq!(body.trim(), r#"{"error":"unauthorized"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_bearer_is_a_bare_401_and_audited() {
    let db = DbDir::new();
    let d = Daemon::start_with_keys(&db).await;
    let good = create_key(&db, "acme", "agent", &[]);
    assert_eq!(
        init_status(&d.mcp, Some(&format!("Bearer {good}"))).await.0,
        200
    );

    let unknown = format!("hnd_{}_{}", "0".repeat(32), "A".repeat(43));
    let wrong_secret = format!("{}{}", &good[..37], "B".repeat(43));
    for auth in [
        None,
        Some("Basic dXNlcjpwYXNz".to_string()),
        Some("Bearer".to_string()),
        Some("Bearer not-a-key".to_string()),
        Some(format!("Bearer {unknown}")),
        Some(format!("Bearer {wrong_secret}")),
        Some(format!("bearer {good}")),
    ] {
        assert_unauthorized(init_status(&d.mcp, auth.as_deref()).await);
    }
    assert!(d.stop().await.success());

    // Each refusal is in the audit log, with its reason and never the key.
    let rows = common::sql_rows(
        &db,
        "SELECT actor, details FROM audit_log WHERE action = 'auth.failed' ORDER BY seq",
    )
    .await;
    let reasons: Vec<String> = rows
        .iter()
        .map(|r| {
            let d: Value = serde_json::from_str(r[1].as_deref().unwrap()).unwrap();
            assert!(
                !r[1].as_deref().unwrap().contains(&good[37..]),
                "a secret in the audit log"
            );
            d["reason"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "missing",
            "malformed",
            "malformed",
            "malformed",
            "unknown_key",
            "unknown_key",
            "malformed"
        ],
        "{rows:?}"
    );
    assert_eq!(
        rows[5][0].as_deref(),
        Some(format!("key:{}", key_id(&good)).as_str())
    );
    common::audit_verify(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_expiry_and_rotation_take_effect_in_time() {
    let db = DbDir::new();
    let d = Daemon::start_with_keys(&db).await;
    let a = create_key(&db, "acme", "agent", &["--name", "laptop"]);
    let short = create_key(&db, "acme", "agent", &["--expires", "1s"]);
    let b = create_key(&db, "acme", "agent", &[]);
    for k in [&a, &b] {
        assert_eq!(
            init_status(&d.mcp, Some(&format!("Bearer {k}"))).await.0,
            200
        );
    }

    // Revoked: refused within the bound (1 s cache; polled).
    let (ok, _, err) = keys(&db, &["revoke", key_id(&a)]);
    assert!(ok, "{err}");
    let took = until_status(&d.mcp, &a, 401).await;
    assert!(took <= Duration::from_secs(2), "revocation took {took:?}");

    // Expired.
    until_status(&d.mcp, &short, 401).await;

    // Rotated with a grace: both work, then only the new one.
    let (ok, new, err) = keys(&db, &["rotate", key_id(&b), "--grace", "1s"]);
    assert!(ok && new.starts_with("hnd_"), "{err}");
    assert_eq!(
        init_status(&d.mcp, Some(&format!("Bearer {new}"))).await.0,
        200
    );
    assert_eq!(
        init_status(&d.mcp, Some(&format!("Bearer {b}"))).await.0,
        200,
        "inside the grace"
    );
    until_status(&d.mcp, &b, 401).await;
    assert_eq!(
        init_status(&d.mcp, Some(&format!("Bearer {new}"))).await.0,
        200
    );

    // The listing: states, never a key or its hash.
    let (ok, list, _) = keys(&db, &["list"]);
    assert!(ok);
    assert!(!list.contains(&a[37..]) && !list.contains("k1:"), "{list}");
    let states: Vec<(String, String)> = list
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let state = |k: &str| {
        states
            .iter()
            .find(|(id, _)| id == key_id(k))
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(state(&a), "revoked");
    assert_eq!(state(&short), "expired");
    assert_eq!(state(&b), "expired");
    assert_eq!(state(&new), "active");
    assert!(d.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_agent_bindings_and_tenants() {
    let db = DbDir::new();
    let d = Daemon::start_with_keys(&db).await;
    let admin = create_key(&db, "acme", "admin", &[]);
    let alice = create_key(&db, "acme", "agent", &["--agent", "alice"]);
    let bob = create_key(&db, "acme", "agent", &["--agent", "bob"]);
    let other = create_key(&db, "globex", "agent", &[]);

    // An agent key: no admin tools or process-wide resources.
    let mut a = Client::open(&d.mcp, &alice).await;
    let r = a
        .call("run_job_now", json!({"job_name": "lifecycle"}))
        .await;
    assert_eq!(r["error_code"], "FORBIDDEN", "{r}");
    let r = a.read("handoff://metrics").await;
    assert_eq!(r["error"]["data"]["error_code"], "FORBIDDEN", "{r}");
    let mut adm = Client::open(&d.mcp, &admin).await;
    let r = adm
        .call("get_job_status", json!({"job_name": "lifecycle"}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let r = adm
        .call("run_job_now", json!({"job_name": "lifecycle"}))
        .await;
    assert_eq!(r["success"], true, "{r}");

    // Bound to alice: registers as alice only.
    let r = a
        .call(
            "register_session",
            json!({"session_key": "k", "agent_from": "mallory"}),
        )
        .await;
    assert_eq!(r["error_code"], "FORBIDDEN", "{r}");
    let r = a
        .call(
            "register_session",
            json!({"session_key": "k", "agent_from": "alice"}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let r = a
        .call(
            "request_handoff",
            json!({"session_key": "k", "target_agent": "bob"}),
        )
        .await;
    let id = r["handoff"]["id"].as_str().unwrap().to_string();
    // Alice cannot accept (or list) as bob; bob can.
    let r = a
        .call("accept_handoff", json!({"handoff_id": id, "agent": "bob"}))
        .await;
    assert_eq!(r["error_code"], "FORBIDDEN", "{r}");
    let r = a
        .call("list_handoffs", json!({"target_agent": "bob"}))
        .await;
    assert_eq!(r["error_code"], "FORBIDDEN", "{r}");
    let mut b = Client::open(&d.mcp, &bob).await;
    let r = b
        .call("list_handoffs", json!({"target_agent": "bob"}))
        .await;
    assert_eq!(r["handoffs"][0]["id"], id.as_str(), "{r}");
    let r = b
        .call("accept_handoff", json!({"handoff_id": id, "agent": "bob"}))
        .await;
    assert_eq!(r["handoff"]["status"], "accepted", "{r}");

    // Another tenant with the same session key: its own session, and
    // nothing of acme's.
    let mut g = Client::open(&d.mcp, &other).await;
    let r = g.call("get_context", json!({"session_key": "k"})).await;
    assert_eq!(r["error_code"], "SESSION_NOT_FOUND", "{r}");
    let r = g.read("handoff://summary/k").await;
    assert!(r["error"].is_object(), "{r}");
    let r = g.read("handoff://sessions").await;
    let listed: Value =
        serde_json::from_str(r["result"]["contents"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(listed["sessions"], json!([]), "{listed}");
    let r = g
        .call("search_context", json!({"query": "registered"}))
        .await;
    assert_eq!(r["results"], json!([]), "{r}");
    let r = g
        .call(
            "register_session",
            json!({"session_key": "k", "agent_from": "gina"}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let r = a.call("get_context", json!({"session_key": "k"})).await;
    let agents: Vec<&str> = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"].as_str().unwrap())
        .collect();
    assert!(agents.iter().all(|c| !c.contains("gina")), "{agents:?}");

    // A session id is not a credential across tenants.
    let mut stolen = Client {
        addr: d.mcp.clone(),
        key: other.clone(),
        session: a.session.clone(),
        next: 100,
    };
    let r = stolen
        .call("get_context", json!({"session_key": "k"}))
        .await;
    assert_eq!(r["error_code"], "FORBIDDEN", "{r}");
    assert!(d.stop().await.success());
}
