//! API keys on the daemon: every way a bearer can be wrong gets a bare
//! 401 (and an audit row), revocation and expiry take effect within the
//! stated bound, rotation keeps the old key for its grace only, scopes and
//! agent bindings are enforced by the tools, and tenants see nothing of
//! each other. Raw HTTP, so each status and header is checked as sent.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{create_key, header, key_id, keys, post, Daemon, McpHttp as Client};
use common::DbDir;
use serde_json::{json, Value};

/// Status of an `initialize` sent with this `Authorization` value.
async fn init_status(addr: &str, authorization: Option<&str>) -> (u16, String, String) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "auth-test", "version": "0"}}});
    match authorization {
        Some(a) => post(addr, &body, &[("Authorization", a)]).await,
        None => post(addr, &body, &[]).await,
    }
    .expect("an answer")
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
        Some(format!("Bearer  {good} trailing")),
    ] {
        assert_unauthorized(init_status(&d.mcp, auth.as_deref()).await);
    }
    // The scheme is case-insensitive (RFC 7235 §2.1).
    assert_eq!(
        init_status(&d.mcp, Some(&format!("bearer {good}"))).await.0,
        200
    );
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
    // A second replica on the same database.
    let other = Daemon::start_with_keys(&db).await;
    let a = create_key(&db, "acme", "agent", &["--name", "laptop"]);
    let short = create_key(&db, "acme", "agent", &["--expires", "1s"]);
    let b = create_key(&db, "acme", "agent", &[]);
    for k in [&a, &b] {
        for replica in [&d, &other] {
            assert_eq!(
                init_status(&replica.mcp, Some(&format!("Bearer {k}")))
                    .await
                    .0,
                200
            );
        }
    }

    // Revoked: refused on both replicas within the bound (each remembers a
    // verified key 1 s; polled from the revocation on).
    let (ok, _, err) = keys(&db, &["revoke", key_id(&a)]);
    assert!(ok, "{err}");
    let (here, there) = tokio::join!(
        until_status(&d.mcp, &a, 401),
        until_status(&other.mcp, &a, 401)
    );
    for took in [here, there] {
        assert!(took <= Duration::from_secs(2), "revocation took {took:?}");
    }
    assert!(other.stop().await.success());

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
    let mut a = Client::open(&d.mcp, Some(&alice)).await;
    let r = a
        .call("run_job_now", json!({"job_name": "lifecycle"}))
        .await;
    assert_eq!(r["error_code"], "FORBIDDEN", "{r}");
    let r = a.read("handoff://metrics").await;
    assert_eq!(r["error"]["data"]["error_code"], "FORBIDDEN", "{r}");
    let mut adm = Client::open(&d.mcp, Some(&admin)).await;
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
    // Its handoffs come from the session's registering agent: bob (a key
    // bound to bob) cannot hand alice's session on as alice.
    let mut b = Client::open(&d.mcp, Some(&bob)).await;
    let r = b
        .call(
            "request_handoff",
            json!({"session_key": "k", "target_agent": "bob"}),
        )
        .await;
    assert_eq!(r["error_code"], "FORBIDDEN", "{r}");
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
    let r = a.read("handoff://agents/bob/handoffs").await;
    assert_eq!(r["error"]["data"]["error_code"], "FORBIDDEN", "{r}");
    let r = a.read("handoff://agents/alice/sessions").await;
    assert!(r["result"].is_object(), "{r}");
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
    let mut g = Client::open(&d.mcp, Some(&other)).await;
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

    // A session id is not a credential across tenants: refused before
    // the MCP server sees the request (tests/isolation.rs does the same
    // for the SSE stream).
    let (status, head, _) = post(
        &d.mcp,
        &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "get_context", "arguments": {"session_key": "k"}}}),
        &[
            ("Authorization", &format!("Bearer {other}")),
            ("Mcp-Session-Id", a.session.as_deref().unwrap()),
            ("Mcp-Protocol-Version", "2025-06-18"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status, 403, "{head}");
    assert!(d.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_per_key_with_retry_after() {
    let db = DbDir::new();
    let d = Daemon::start_env(
        &db,
        &[],
        &[
            ("HANDOFF_HTTP__RATE_LIMIT", "2"),
            ("HANDOFF_HTTP__RATE_BURST", "3"),
        ],
    )
    .await;
    let noisy = create_key(&db, "acme", "agent", &[]);
    let quiet = create_key(&db, "acme", "agent", &[]);
    let auth = format!("Bearer {noisy}");
    // The burst passes, then 429 with a Retry-After in whole seconds.
    let mut limited = None;
    for _ in 0..10 {
        let (status, head, body) = init_status(&d.mcp, Some(&auth)).await;
        if status == 429 {
            limited = Some((head, body));
            break;
        }
        assert_eq!(status, 200, "{head}");
    }
    let (head, body) = limited.expect("no 429 after 10 requests at a limit of 2/s, burst 3");
    assert_eq!(body.trim(), r#"{"error":"rate_limited"}"#);
    let retry: u64 = header(&head, "retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {head}"));
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // Another key is not held back by it.
    assert_eq!(
        init_status(&d.mcp, Some(&format!("Bearer {quiet}")))
            .await
            .0,
        200
    );
    // After the wait it says, the limited key is served again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(init_status(&d.mcp, Some(&auth)).await.0, 200);
    assert!(d.stop().await.success());
}

/// A key that cannot be looked up (the database is away) is not the
/// client's fault: 503 with a Retry-After, never 401; served again once
/// the database answers. Only a database over the network can be cut
/// here, so this runs on PostgreSQL (through a proxy) whatever the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_key_lookup_is_503_with_retry_after() {
    let db = DbDir::postgres();
    let proxy = common::Proxy::start(common::pg_server_addr()).await;
    let url = common::pg_url_via(&proxy.addr(), db.pg_name().unwrap());
    // Keys are hashed with the audit key, whose file is named after the
    // database's address: the daemon, behind the proxy, is given the one
    // `keys create` made for the direct address.
    let warm = create_key(&db, "acme", "agent", &[]);
    let file = handoff::audit::files(&db.url()).unwrap().key;
    let audit_key = std::fs::read_to_string(&file).unwrap();
    let d = Daemon::start_env(
        &db,
        &[],
        &[
            ("HANDOFF_DATABASE_URL", &url),
            ("HANDOFF_DB_TIMEOUT", "1s"),
            // Key lookups go through the database breaker: once the store
            // is back, keys verify again when the breaker half-opens.
            ("HANDOFF_BREAKER_OPEN_FOR", "1s"),
            ("HANDOFF_AUDIT_KEY", audit_key.trim()),
        ],
    )
    .await;
    assert_eq!(
        init_status(&d.mcp, Some(&format!("Bearer {warm}"))).await.0,
        200
    );
    // Created behind the daemon's back and never used: not in its key
    // cache, so verifying it needs the database.
    let cold = create_key(&db, "acme", "agent", &[]);
    proxy.cut();
    let (status, head, body) = init_status(&d.mcp, Some(&format!("Bearer {cold}"))).await;
    assert_eq!(status, 503, "{head}\n{body}");
    assert_eq!(header(&head, "retry-after"), Some("1"), "{head}");
    assert!(body.contains("unavailable"), "{body}");
    proxy.restore();
    until_status(&d.mcp, &cold, 200).await;
    assert!(d.stop().await.success());
}

/// A POST with this key whose announced body has not all arrived: in
/// flight (past the key check) until it has.
async fn held_post(addr: &str, key: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
             Content-Length: 200\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s
}

/// The in-flight cap counts per key: one key at its cap is refused with
/// 429 while another key from the same address is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_cap_is_per_key() {
    let db = DbDir::new();
    let d = Daemon::start_env(&db, &[], &[("HANDOFF_HTTP__MAX_IN_FLIGHT_PER_KEY", "2")]).await;
    let busy = create_key(&db, "acme", "agent", &[]);
    let other = create_key(&db, "acme", "agent", &[]);
    let (first, second) = (
        held_post(&d.mcp, &busy).await,
        held_post(&d.mcp, &busy).await,
    );
    // Counted once past the key check; a request sent now could overtake
    // one of them there and take its place.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, head, body) = init_status(&d.mcp, Some(&format!("Bearer {busy}"))).await;
    assert_eq!(status, 429, "{head}");
    assert_eq!(header(&head, "retry-after"), Some("1"), "{head}");
    assert!(body.contains("too_many_requests_in_flight"), "{body}");
    // Another key, same address: not held back.
    assert_eq!(
        init_status(&d.mcp, Some(&format!("Bearer {other}")))
            .await
            .0,
        200
    );
    // One held request gone: the busy key is served again.
    drop(first);
    until_status(&d.mcp, &busy, 200).await;
    drop(second);
    assert!(d.stop().await.success());
}
