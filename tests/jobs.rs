//! The job tools and resources: get_job_status, run_job_now,
//! update_job_config (shapes, camelCase, every error code), the
//! handoff://jobs resources, a job's panic contained by its supervisor, and
//! config overrides that take effect and survive a restart.

mod common;

use std::time::Duration;

use common::{audit_verify, DbDir, Server};
use serde_json::{json, Value};
use sqlx::Connection;

const JOBS: [&str; 4] = [
    "lifecycle",
    "retention",
    "cache_maintenance",
    "analytics_rollup",
];

/// The audit log's actions, in order.
async fn audit_actions(db: &DbDir) -> Vec<(String, String)> {
    let url = db.url();
    let sql = "SELECT action, details FROM audit_log ORDER BY seq";
    if common::postgres_backend() {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
    } else {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
    }
}

#[tokio::test]
async fn status_shapes_and_resources() {
    let db = DbDir::new();
    let s = Server::start(&db, &[("HANDOFF_JOBS__LIFECYCLE_INTERVAL", "45m")]).await;

    let all = s.call("get_job_status", json!({})).await.ok().clone();
    let jobs = all["jobs"].as_array().unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, JOBS);
    for j in jobs {
        assert_eq!(j["state"], "idle", "{j}");
        assert_eq!(j["success_count"], 0);
        assert_eq!(j["failure_count"], 0);
        assert!(j["next_run_at"].is_string(), "{j}");
        assert!(j["last_run_started_at"].is_null());
        assert_eq!(j["history"], json!([]));
        assert_eq!(j["config"]["enabled"], true);
        assert_eq!(j["config"]["max_retries"], 3);
        assert_eq!(j["config"]["retry_delay_ms"], 1000);
    }
    assert_eq!(jobs[0]["config"]["interval"], "45m");
    assert_eq!(jobs[0]["config"]["interval_ms"], 45 * 60 * 1000);
    assert_eq!(
        jobs[3]["config"]["interval"], "1h",
        "analytics.rollup_interval"
    );

    // One job, camelCase.
    let one = s
        .call("get_job_status", json!({"jobName": "retention"}))
        .await
        .ok()
        .clone();
    assert_eq!(one["job"]["name"], "retention");
    assert!(one.get("jobs").is_none());

    // Errors: unknown job, both spellings, unknown field.
    let e = s
        .call("get_job_status", json!({"job_name": "nope"}))
        .await
        .err("NOT_FOUND")
        .clone();
    assert_eq!(e["details"]["job_name"], "nope");
    s.call(
        "get_job_status",
        json!({"job_name": "retention", "jobName": "retention"}),
    )
    .await
    .err("VALIDATION_ERROR");
    s.call("get_job_status", json!({"bogus": 1}))
        .await
        .err("VALIDATION_ERROR");

    // Every job runs on demand and reports counts.
    for name in JOBS {
        let r = s
            .call("run_job_now", json!({"job_name": name}))
            .await
            .ok()
            .clone();
        assert_eq!(r["job_name"], name);
        assert_eq!(r["run"]["outcome"], "success", "{r}");
        assert_eq!(r["run"]["trigger"], "manual");
        assert_eq!(r["run"]["attempts"], 1);
        assert!(r["run"]["report"].is_object(), "{r}");
        assert_eq!(r["job"]["success_count"], 1);
        assert_eq!(r["job"]["state"], "idle");
        assert!(r["job"]["last_run_finished_at"].is_string());
    }
    s.call("run_job_now", json!({"jobName": "nope"}))
        .await
        .err("NOT_FOUND");
    s.call("run_job_now", json!({}))
        .await
        .err("VALIDATION_ERROR");

    // The resources.
    let r = s.read("handoff://jobs").await.unwrap();
    assert_eq!(r["jobs"].as_array().unwrap().len(), 4);
    let j = s.read("handoff://jobs/analytics_rollup").await.unwrap();
    assert_eq!(j["name"], "analytics_rollup");
    assert_eq!(j["success_count"], 1);
    let h = &j["history"][0];
    assert_eq!(h["outcome"], "success");
    assert_eq!(h["report"]["sessions"]["total"], 0);
    assert!(h["duration_ms"].is_u64());
    let e = s.read("handoff://jobs/nope").await.unwrap_err();
    assert!(e.to_string().contains("no resource"), "{e}");
    let listed = s.client.list_all_resources().await.unwrap();
    for uri in ["handoff://jobs", "handoff://sessions/lifecycle"] {
        assert!(listed.iter().any(|r| r.uri == uri), "{uri} not listed");
    }
    let templates = s.client.list_all_resource_templates().await.unwrap();
    assert!(templates
        .iter()
        .any(|t| t.uri_template == "handoff://jobs/{job_name}"));
    s.close().await;
}

#[tokio::test]
async fn update_job_config_validates_applies_persists_and_audits() {
    let db = DbDir::new();
    // Test floors: a 300 ms interval below (production's floor is 1s,
    // tests/security.rs).
    let s = Server::start(&db, &[("HANDOFF_TEST_HOOKS", "true")]).await;

    // Every problem listed, both spellings of one key named.
    let e = s
        .call(
            "update_job_config",
            json!({"job_name": "lifecycle", "config": {
                "interval": "banana",
                "intervalMs": 5000,
                "max_retries": 99,
                "retryDelayMs": -1,
                "enabled": "yes",
                "colour": "blue",
            }}),
        )
        .await
        .err("VALIDATION_ERROR")
        .clone();
    let fields: Vec<&str> = e["details"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    for f in [
        "config.interval",
        "config.interval_ms",
        "config.max_retries",
        "config.retry_delay_ms",
        "config.enabled",
        "config.colour",
    ] {
        assert!(fields.contains(&f), "{f} not in {fields:?}");
    }
    let e = s
        .call(
            "update_job_config",
            json!({"job_name": "lifecycle", "config": {"interval_ms": 0, "maxRetries": 1}}),
        )
        .await
        .err("VALIDATION_ERROR")
        .clone();
    assert!(e["error"].as_str().unwrap().contains("1ms–30d"), "{e}");
    s.call(
        "update_job_config",
        json!({"job_name": "lifecycle", "config": {}}),
    )
    .await
    .err("VALIDATION_ERROR");
    s.call(
        "update_job_config",
        json!({"job_name": "lifecycle", "jobName": "lifecycle", "config": {"enabled": false}}),
    )
    .await
    .err("VALIDATION_ERROR");
    s.call(
        "update_job_config",
        json!({"job_name": "nope", "config": {"enabled": false}}),
    )
    .await
    .err("NOT_FOUND");
    // Nothing changed by the failures.
    let j = s.read("handoff://jobs/lifecycle").await.unwrap();
    assert_eq!(j["config"]["interval"], "1h");
    assert_eq!(j["config"]["max_retries"], 3);

    // camelCase throughout; a short interval takes effect at once.
    let r = s
        .call(
            "update_job_config",
            json!({"jobName": "cache_maintenance", "config": {"intervalMs": 300, "maxRetries": 0, "retryDelayMs": 10}, "updatedBy": "ops"}),
        )
        .await
        .ok()
        .clone();
    let keys: Vec<&str> = r["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["interval_ms", "max_retries", "retry_delay_ms"]);
    assert_eq!(r["job"]["config"]["interval"], "300ms");
    assert_eq!(r["updated_by"], "ops");
    let j = wait_job(&s, "cache_maintenance", "two scheduled runs", |j| {
        j["success_count"].as_u64().unwrap() >= 2
    })
    .await;
    assert_eq!(j["history"][0]["trigger"], "schedule");
    assert_eq!(j["config"]["interval_ms"], 300);
    assert!(j["next_run_at"].is_string());

    // Disabled: no more scheduled runs, state says so; a manual run works.
    let r = s
        .call(
            "update_job_config",
            // Only `enabled`: the 300 ms interval stays, so runs stopping
            // below is the flag's doing, not a longer interval's.
            json!({"job_name": "cache_maintenance", "config": {"enabled": false}}),
        )
        .await
        .ok()
        .clone();
    // A scheduled run (every 300 ms until now) may be in progress: the
    // state says `running` until it ends, then `disabled`.
    assert!(
        r["job"]["state"] == "disabled" || r["job"]["state"] == "running",
        "{r}"
    );
    assert!(r["job"]["next_run_at"].is_null());
    let j = wait_job(&s, "cache_maintenance", "disabled", |j| {
        j["state"] == "disabled"
    })
    .await;
    let before = j["success_count"].as_u64().unwrap();
    // Proving an absence takes a wait: over two intervals of the 300 ms
    // schedule, no run.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = s.read("handoff://jobs/cache_maintenance").await.unwrap();
    assert_eq!(after["success_count"].as_u64().unwrap(), before, "{after}");
    let r = s
        .call("run_job_now", json!({"job_name": "cache_maintenance"}))
        .await
        .ok()
        .clone();
    assert_eq!(r["run"]["outcome"], "success");
    assert_eq!(r["job"]["state"], "disabled");
    s.call(
        "update_job_config",
        json!({"job_name": "cache_maintenance", "config": {"interval": "2h"}}),
    )
    .await
    .ok();
    s.close().await;

    // The overrides survive a restart; the changes are in the audit log.
    let s = Server::start(&db, &[]).await;
    let j = s.read("handoff://jobs/cache_maintenance").await.unwrap();
    assert_eq!(j["config"]["enabled"], false, "{j}");
    assert_eq!(j["config"]["interval"], "2h");
    assert_eq!(j["config"]["max_retries"], 0);
    assert_eq!(j["config"]["retry_delay_ms"], 10);
    assert_eq!(j["success_count"], 0, "history is per process");
    s.close().await;
    let updates: Vec<Value> = audit_actions(&db)
        .await
        .into_iter()
        .filter(|(a, _)| a == "job.config_updated")
        .map(|(_, d)| serde_json::from_str(&d).unwrap())
        .collect();
    assert_eq!(updates.len(), 3, "{updates:?}");
    assert_eq!(updates[0]["job"], "cache_maintenance");
    audit_verify(&db);
}

/// Poll `handoff://jobs/{job}` until `done` holds (10 s at most).
async fn wait_job(s: &Server, job: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let j = s.read(&format!("handoff://jobs/{job}")).await.unwrap();
        if done(&j) {
            return j;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{job}: not {what} in time: {j}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_panicking_job_is_restarted_and_recorded() {
    let db = DbDir::new();
    let s = Server::start(&db, &[("HANDOFF_TEST_HOOKS", "true")]).await;
    s.call("debug_panic_job", json!({"job_name": "nope"}))
        .await
        .err("NOT_FOUND");
    s.call("debug_panic_job", json!({"jobName": "retention"}))
        .await
        .ok();
    let r = s
        .call("run_job_now", json!({"job_name": "retention"}))
        .await
        .ok()
        .clone();
    assert_eq!(r["run"]["outcome"], "panic", "{r}");
    assert!(r["run"]["error"]
        .as_str()
        .unwrap()
        .contains("panic requested"));
    assert_eq!(r["job"]["failure_count"], 1);

    // The supervisor starts it again; the next run works.
    let mut j = Value::Null;
    for _ in 0..100 {
        j = s.read("handoff://jobs/retention").await.unwrap();
        if j["restarts"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(j["restarts"], 1, "{j}");
    assert_eq!(j["state"], "failed");
    assert!(j["last_error"].as_str().unwrap().contains("panic"));
    assert_eq!(j["history"][0]["outcome"], "panic");
    let r = s
        .call("run_job_now", json!({"job_name": "retention"}))
        .await
        .ok()
        .clone();
    assert_eq!(r["run"]["outcome"], "success", "{r}");
    assert_eq!(r["job"]["state"], "idle");
    assert_eq!(r["job"]["success_count"], 1);
    assert_eq!(r["job"]["failure_count"], 1);
    let health = common::health_component(&s, "actor.jobs").await;
    assert_eq!(health["status"], "ok", "{health}");
    s.close().await;

    let actions: Vec<String> = audit_actions(&db)
        .await
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    for a in ["job.panicked", "job.restarted"] {
        assert!(actions.iter().any(|x| x == a), "{a} not in {actions:?}");
    }
    audit_verify(&db);
}

#[tokio::test]
async fn a_failed_attempt_is_retried_then_the_run_fails() {
    let db = DbDir::new();
    let s = Server::start(
        &db,
        &[
            ("HANDOFF_TEST_HOOKS", "true"),
            ("HANDOFF_JOBS__RETRY_DELAY", "10ms"),
            ("HANDOFF_JOBS__MAX_RETRIES", "2"),
        ],
    )
    .await;
    // Two failures, then success on the third attempt (max_retries 2).
    s.call(
        "debug_panic_job",
        json!({"job_name": "cache_maintenance", "failAttempts": 2}),
    )
    .await
    .ok();
    let r = s
        .call("run_job_now", json!({"job_name": "cache_maintenance"}))
        .await
        .ok()
        .clone();
    assert_eq!(r["run"]["outcome"], "success", "{r}");
    assert_eq!(r["run"]["attempts"], 3);

    // Three failures: retries exhausted, the run fails.
    s.call(
        "debug_panic_job",
        json!({"job_name": "cache_maintenance", "fail_attempts": 3}),
    )
    .await
    .ok();
    let r = s
        .call("run_job_now", json!({"job_name": "cache_maintenance"}))
        .await
        .ok()
        .clone();
    assert_eq!(r["run"]["outcome"], "failure", "{r}");
    assert_eq!(r["run"]["attempts"], 3);
    assert!(r["run"]["error"]
        .as_str()
        .unwrap()
        .contains("failure requested"));
    assert_eq!(r["job"]["state"], "failed");
    assert_eq!(r["job"]["failure_count"], 1);
    assert_eq!(r["job"]["success_count"], 1);
    assert_eq!(r["job"]["restarts"], 0, "a failure is not a crash");
    s.close().await;
    let actions: Vec<String> = audit_actions(&db)
        .await
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert!(actions.iter().any(|a| a == "job.failed"), "{actions:?}");
    audit_verify(&db);
}
