//! The session lifecycle driven by the jobs (contract §5): active → dormant
//! → expired → archived → purged with the rules each state brings, the
//! handoff://sessions/lifecycle resource and the audit log; a busy session
//! is never made dormant; retention purges and analytics roll-ups.
//!
//! Thresholds are tiny (environment) and the jobs run by `run_job_now`, so
//! no test waits more than a few seconds.

mod common;

use std::time::{Duration, Instant};

use common::{audit_verify, register, DbDir, Server};
use serde_json::{json, Value};
use sqlx::Connection;

/// Below production's floors: only with the operator's test hooks. Three
/// seconds between the steps leave room for a loaded machine: each step
/// is polled from its threshold on, and must be seen before the next.
const STEPS: [(&str, &str); 5] = [
    ("HANDOFF_TEST_HOOKS", "true"),
    ("HANDOFF_RETENTION__DORMANT_AFTER", "1s"),
    ("HANDOFF_RETENTION__EXPIRE_AFTER", "4s"),
    ("HANDOFF_RETENTION__ARCHIVE_AFTER", "7s"),
    ("HANDOFF_RETENTION__PURGE_AFTER", "10s"),
];

async fn audit_rows(db: &DbDir) -> Vec<(String, Option<String>, String)> {
    let url = db.url();
    let sql = "SELECT action, subject_hash, details FROM audit_log ORDER BY seq";
    if common::postgres_backend() {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
    } else {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
    }
}

async fn run(s: &Server, job: &str) -> Value {
    let r = s.call("run_job_now", json!({"job_name": job})).await;
    let r = r.ok();
    assert_eq!(r["run"]["outcome"], "success", "{r}");
    r["run"]["report"].clone()
}

async fn append(s: &Server, key: &str) -> common::ToolOut {
    s.call(
        "update_context",
        json!({"session_key": key, "context_type": "message", "content": "work"}),
    )
    .await
}

async fn status(s: &Server, key: &str) -> String {
    let r = s
        .read(&format!("handoff://summary/{key}"))
        .await
        .expect("summary");
    r["status"].as_str().unwrap().to_string()
}

/// From `at` after `t0` on, run `job` until the counts of its reports,
/// summed, reach `want` for `step` (5 s at most); returns the sums.
async fn run_until(
    s: &Server,
    job: &str,
    t0: Instant,
    at: Duration,
    step: &str,
    want: u64,
) -> Value {
    if let Some(d) = at.checked_sub(t0.elapsed()) {
        tokio::time::sleep(d).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut sums = serde_json::Map::new();
    loop {
        let r = run(s, job).await;
        for (k, v) in r.as_object().into_iter().flatten() {
            if let Some(n) = v.as_u64() {
                let total = sums.get(k).and_then(Value::as_u64).unwrap_or(0) + n;
                sums.insert(k.clone(), json!(total));
            }
        }
        if sums.get(step).and_then(Value::as_u64).unwrap_or(0) >= want {
            return Value::Object(sums);
        }
        assert!(
            Instant::now() < deadline,
            "{job}: {step} never reached {want}: {sums:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sessions_move_through_every_state() {
    let db = DbDir::new();
    let s = Server::start(&db, &STEPS).await;
    let t0 = Instant::now();
    register(&s, "life").await;
    append(&s, "life").await.ok();
    register(&s, "wakes").await;

    // active → dormant; a dormant session wakes on activity.
    let r = run_until(&s, "lifecycle", t0, Duration::from_secs(1), "dormant", 2).await;
    assert_eq!(r["dormant"], 2, "{r}");
    assert_eq!(r["expired"], 0, "{r}");
    assert_eq!(status(&s, "life").await, "dormant");
    let listed = s.read("handoff://sessions").await.unwrap();
    assert!(listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["status"] == "dormant"));
    let w = append(&s, "wakes").await.ok().clone();
    assert_eq!(w["session"]["status"], "active");
    assert_eq!(status(&s, "wakes").await, "active");
    let ev = s.read("handoff://sessions/lifecycle").await.unwrap();
    let newest = &ev["events"][0];
    assert_eq!(
        (&newest["session_key"], &newest["from"], &newest["to"]),
        (&json!("wakes"), &json!("dormant"), &json!("active")),
        "{ev}"
    );

    // dormant → expired: no more writes, details say why.
    let r = run_until(&s, "lifecycle", t0, Duration::from_secs(4), "expired", 1).await;
    assert_eq!(r["expired"], 1, "{r}");
    assert_eq!(status(&s, "life").await, "expired");
    let e = append(&s, "life").await.err("SESSION_NOT_ACTIVE").clone();
    assert_eq!(e["details"]["current_status"], "expired");
    s.call(
        "register_session",
        json!({"session_key": "life", "agent_from": "agent-b"}),
    )
    .await
    .err("SESSION_EXISTS");

    // expired → archived: read-only, still readable.
    let r = run_until(&s, "lifecycle", t0, Duration::from_secs(7), "archived", 1).await;
    assert_eq!(r["archived"], 1, "{r}");
    assert_eq!(status(&s, "life").await, "archived");
    let e = append(&s, "life").await.err("SESSION_NOT_ACTIVE").clone();
    assert_eq!(e["details"]["current_status"], "archived");
    s.call(
        "request_handoff",
        json!({"session_key": "life", "target_agent": "agent-b"}),
    )
    .await
    .err("SESSION_NOT_ACTIVE");
    let ctx = s
        .call("get_context", json!({"session_key": "life"}))
        .await
        .ok()
        .clone();
    assert_eq!(ctx["entries"].as_array().unwrap().len(), 2);
    let c = s.read("handoff://context/life").await.unwrap();
    assert_eq!(c["entries"].as_array().unwrap().len(), 2);

    // The lifecycle resource, newest first.
    let ev = s.read("handoff://sessions/lifecycle").await.unwrap();
    let life: Vec<(Value, Value)> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["session_key"] == "life")
        .map(|e| (e["from"].clone(), e["to"].clone()))
        .collect();
    assert_eq!(
        life,
        [
            (json!("expired"), json!("archived")),
            (json!("dormant"), json!("expired")),
            (json!("active"), json!("dormant")),
        ],
        "{ev}"
    );

    // archived → purged: gone, like delete_session, and its key with it.
    let r = run_until(&s, "lifecycle", t0, Duration::from_secs(10), "purged", 1).await;
    assert_eq!(r["purged"], 1, "{r}");
    s.call("get_context", json!({"session_key": "life"}))
        .await
        .err("SESSION_NOT_FOUND");
    let ev = s.read("handoff://sessions/lifecycle").await.unwrap();
    let ev = ev["events"].as_array().unwrap().clone();
    assert!(ev.iter().all(|e| e["session_key"] != "life"), "{ev:?}");
    let purge = &ev[0];
    assert_eq!(purge["to"], "purged", "{ev:?}");
    assert_eq!(purge["from"], "archived");
    assert!(purge["session_key"].is_null());
    assert!(purge["reason"]
        .as_str()
        .unwrap()
        .contains("retention.purge_after"));
    assert!(purge["at"].as_str().unwrap().ends_with('Z'));
    assert!(ev
        .iter()
        .any(|e| e["session_key"] == "wakes" && e["to"] == "dormant"));
    let limited = s
        .read("handoff://sessions/lifecycle?limit=1")
        .await
        .unwrap();
    assert_eq!(limited["events"].as_array().unwrap().len(), 1);
    s.close().await;

    // Audit: one row per transition, hashed key only, chain intact.
    let rows = audit_rows(&db).await;
    let moves: Vec<Value> = rows
        .iter()
        .filter(|r| r.0 == "session.lifecycle" || r.0 == "session.purged")
        .map(|r| serde_json::from_str(&r.2).unwrap())
        .collect();
    assert!(moves.len() >= 5, "{moves:?}");
    assert!(rows.iter().any(|r| r.0 == "session.purged"));
    for r in &rows {
        assert!(!r.2.contains("\"life\""), "{r:?}");
        if r.0.starts_with("session.") {
            assert!(r.1.as_deref().is_some_and(|h| h.len() == 16), "{r:?}");
        }
    }
    audit_verify(&db);
}

#[tokio::test]
async fn a_busy_session_is_never_made_dormant() {
    let db = DbDir::new();
    let s = Server::start(&db, &STEPS).await;
    register(&s, "busy").await;
    register(&s, "idle").await;
    // Appends only: the stored row (its last_activity_at) is not rewritten
    // for fewer than 64 entries, so the job's query sees a stale time and
    // the session's actor must turn it down.
    let t0 = Instant::now();
    let mut skipped = 0;
    while t0.elapsed() < Duration::from_millis(2500) {
        append(&s, "busy").await.ok();
        if t0.elapsed() > Duration::from_millis(1200) {
            let r = run(&s, "lifecycle").await;
            skipped += r["skipped"].as_u64().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(skipped >= 1, "the stale candidate was considered");
    assert_eq!(status(&s, "busy").await, "active");
    assert_eq!(status(&s, "idle").await, "dormant");
    let ev = s.read("handoff://sessions/lifecycle").await.unwrap();
    let keys: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["session_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["idle"]);
    s.close().await;
}

#[tokio::test]
async fn retention_purges_and_rollups_count() {
    let db = DbDir::new();
    let s = Server::start(
        &db,
        &[
            ("HANDOFF_TEST_HOOKS", "true"),
            ("HANDOFF_RETENTION__DORMANT_AFTER", "100ms"),
            ("HANDOFF_RETENTION__EXPIRE_AFTER", "200ms"),
            ("HANDOFF_RETENTION__ARCHIVE_AFTER", "300ms"),
            ("HANDOFF_RETENTION__PURGE_AFTER", "400ms"),
        ],
    )
    .await;
    register(&s, "r1").await;
    append(&s, "r1").await.ok();
    register(&s, "r2").await;
    s.call(
        "request_handoff",
        json!({"session_key": "r2", "target_agent": "agent-b", "request_type": "full_handoff"}),
    )
    .await
    .ok();

    let r = run(&s, "analytics_rollup").await;
    assert_eq!(r["sessions"]["total"], 2, "{r}");
    assert_eq!(r["sessions"]["by_status"]["active"], 1, "{r}");
    assert_eq!(r["sessions"]["by_status"]["completed"], 1, "{r}");
    assert_eq!(r["context_entries"]["by_type"]["message"], 1, "{r}");
    assert_eq!(r["context_entries"]["total"], 4, "{r}");
    assert_eq!(r["handoffs"]["by_type"]["full_handoff"], 1, "{r}");
    assert_eq!(r["handoffs"]["by_status"]["pending"], 1, "{r}");
    let cm = run(&s, "cache_maintenance").await;
    assert!(cm["storage"].is_object(), "{cm}");

    // Retention purges whatever the status (the lifecycle job never ran).
    let t0 = Instant::now();
    let r = run_until(
        &s,
        "retention",
        t0,
        Duration::from_millis(400),
        "sessions_purged",
        2,
    )
    .await;
    assert_eq!(r["sessions_purged"], 2, "{r}");
    for k in ["r1", "r2"] {
        s.call("get_context", json!({"session_key": k}))
            .await
            .err("SESSION_NOT_FOUND");
    }
    let r = run(&s, "analytics_rollup").await;
    assert_eq!(r["sessions"]["total"], 0, "{r}");
    assert_eq!(r["handoffs"]["total"], 0, "{r}");

    // One lifecycle run takes a long-idle session through every step.
    register(&s, "r3").await;
    // Time must pass here (not an event): past every threshold, so that
    // one run takes the session through all steps.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = run(&s, "lifecycle").await;
    for step in ["dormant", "expired", "archived", "purged"] {
        assert_eq!(r[step], 1, "{step}: {r}");
    }
    let ev = s.read("handoff://sessions/lifecycle").await.unwrap();
    let tos: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to"].as_str().unwrap())
        .collect();
    assert_eq!(tos, ["purged", "purged", "purged"], "older events erased");
    s.close().await;
    audit_verify(&db);
}
