//! The operators' view of a running daemon: `/metrics` under load (the
//! series that show the supervision tree at work move, `promtool check
//! metrics` accepts the scrape, no label carries a tenant, agent or session
//! key) and `handoff status` (the tree, and its exit codes ready / not
//! ready / unreachable).

mod common;

use std::time::Duration;

use common::daemon::{create_key, Daemon, McpHttp};
use common::{prometheus_value, DbDir};
use serde_json::json;

/// Every user-chosen name in the load carries this, so a label that leaks
/// one is found.
const MARK: &str = "zqmark";

async fn scrape(d: &Daemon) -> String {
    reqwest::get(format!("http://{}/metrics", d.admin))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap()
}

fn value(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    prometheus_value(text, metric, labels).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_under_load_pass_promtool_and_carry_no_user_names() {
    let db = DbDir::new();
    let d = Daemon::start_env(&db, &[], &[("HANDOFF_HTTP__RATE_LIMIT", "0")]).await;
    let tenant = format!("tenant-{MARK}");
    let key = create_key(&db, &tenant, "agent", &["--name", &format!("label-{MARK}")]);
    let before = scrape(&d).await;

    // A load: 4 sessions, 25 appends each from 4 clients at once, a
    // handoff each; one refused key.
    let mut tasks = Vec::new();
    for s in 0..4 {
        let (addr, key) = (d.mcp.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = McpHttp::open(&addr, Some(&key)).await;
            let session = format!("sess-{MARK}-{s}");
            let agent = format!("agent-{MARK}-{s}");
            let r = c
                .call(
                    "register_session",
                    json!({"session_key": session, "agent_from": agent}),
                )
                .await;
            assert_eq!(r["success"], true, "{r}");
            for i in 0..25 {
                let r = c
                    .call(
                        "update_context",
                        json!({"session_key": session, "context_type": "message",
                                                   "content": format!("entry {i} {MARK}")}),
                    )
                    .await;
                assert_eq!(r["success"], true, "{r}");
            }
            let r = c
                .call(
                    "request_handoff",
                    json!({"session_key": session,
                                                "target_agent": format!("target-{MARK}")}),
                )
                .await;
            assert_eq!(r["success"], true, "{r}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let bad = format!("hnd_{}_{}", "0".repeat(32), "A".repeat(43));
    let (status, _, _) = common::daemon::post(
        &d.mcp,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        &[("Authorization", &format!("Bearer {bad}"))],
    )
    .await
    .unwrap();
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = scrape(&d).await;

    // The series move.
    let grew = |metric: &str, labels: &[(&str, &str)], by: f64| {
        let (a, b) = (
            value(&before, metric, labels),
            value(&after, metric, labels),
        );
        assert!(b - a >= by, "{metric}{labels:?}: {a} -> {b}");
    };
    grew(
        "handoff_actor_messages_total",
        &[("kind", "session")],
        100.0,
    );
    grew(
        "handoff_actor_messages_total",
        &[("kind", "persistence")],
        100.0,
    );
    grew(
        "handoff_persistence_batch_size_count",
        &[("kind", "units")],
        1.0,
    );
    grew(
        "handoff_persistence_commit_seconds_count",
        &[("outcome", "ok")],
        1.0,
    );
    grew("handoff_persistence_queue_seconds_count", &[], 100.0);
    grew(
        "handoff_tool_calls_total",
        &[("tool", "update_context"), ("outcome", "ok")],
        100.0,
    );
    grew(
        "handoff_created_total",
        &[("what", "context_entries")],
        100.0,
    );
    grew("handoff_created_total", &[("what", "handoffs")], 4.0);
    grew(
        "handoff_http_requests_total",
        &[("route", "mcp"), ("status", "200")],
        100.0,
    );
    grew(
        "handoff_auth_failures_total",
        &[("method", "api_key"), ("reason", "unknown_key")],
        1.0,
    );
    // Present, with their states and sizes.
    for (metric, labels) in [
        ("handoff_breaker_state", vec![("dependency", "database")]),
        ("handoff_breaker_state", vec![("dependency", "cache")]),
        ("handoff_actors_live", vec![("kind", "persistence")]),
        ("handoff_mailbox_backlog", vec![("kind", "persistence")]),
        ("handoff_rate_limited_total", vec![("limit", "rate")]),
    ] {
        assert!(
            prometheus_value(&after, metric, &labels).is_some(),
            "{metric}{labels:?} missing"
        );
    }
    assert_eq!(
        value(
            &after,
            "handoff_breaker_state",
            &[("dependency", "database")]
        ),
        0.0
    );
    assert!(value(&after, "handoff_process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&after, "handoff_process_open_fds", &[]) > 0.0);

    // promtool accepts the scrape.
    let (ok, said) = common::promtool(&["check", "metrics"], None, Some(&after));
    assert!(ok, "promtool check metrics: {said}");

    // No label value names the tenant, an agent, a session or the key.
    let id = &key[4..36];
    for line in after.lines().filter(|l| !l.starts_with('#')) {
        if let Some((_, labels)) = line.split_once('{') {
            assert!(!labels.contains(MARK), "user data in a label: {line}");
            assert!(!labels.contains(id), "a key id in a label: {line}");
        }
    }
    assert!(d.stop().await.success());
}

fn status(admin: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new(common::BIN)
        .args(["status", "--admin", admin])
        .env_remove("HANDOFF_HTTP__ADMIN")
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The database is cut off through a proxy, so this runs on PostgreSQL
/// whatever the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_the_tree_and_exits_by_readiness() {
    let db = DbDir::postgres();
    let proxy = common::Proxy::start(common::pg_server_addr()).await;
    let url = common::pg_url_via(&proxy.addr(), db.pg_name().unwrap());
    let d = Daemon::start_env(
        &db,
        &[],
        &[
            ("HANDOFF_HTTP__AUTH", "none"),
            ("HANDOFF_DATABASE_URL", &url),
            ("HANDOFF_DB_TIMEOUT", "1s"),
        ],
    )
    .await;
    let (code, out) = status(&d.admin);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("handoff: ready (ok)\nroot\n"), "{out}");
    for line in [
        "├── audit ",
        "├── persistence ",
        "├── sessions ",
        "│   └── session actors: ",
        "│   └── job actors: 4 live",
        "└── transport.http ",
        "  database           closed",
        "  database           ok       postgres",
    ] {
        assert!(out.contains(line), "{line:?} not in\n{out}");
    }
    // The JSON form, as a probe reads it.
    let doc: serde_json::Value = reqwest::get(format!("http://{}/status", d.admin))
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(doc["ready"], true, "{doc}");
    assert!(doc["actors"].as_array().unwrap().len() >= 6, "{doc}");

    proxy.cut();
    let until = std::time::Instant::now() + Duration::from_secs(15);
    let (code, out) = loop {
        let (code, out) = status(&d.admin);
        if code != Some(0) || std::time::Instant::now() > until {
            break (code, out);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("handoff: NOT READY"), "{out}");
    proxy.restore();
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while status(&d.admin).0 != Some(0) {
        assert!(
            std::time::Instant::now() < until,
            "not ready again after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let admin = d.admin.clone();
    assert!(d.stop().await.success());
    // Nothing listening: unreachable.
    let (code, out) = status(&admin);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("cannot reach"), "{out}");
}
