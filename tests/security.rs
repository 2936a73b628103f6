//! Regression tests for what an adversarial review of the stdio server
//! found (issue 15): a client that may be an agent steered by a prompt
//! injection must not purge, cross tenants, learn where the database is, or
//! get past the runtime configuration's floors and ceilings.

mod common;

use std::process::{Command, Stdio};

use common::{register, DbDir, Server};
use serde_json::{json, Value};
use sqlx::Connection;

async fn audit_rows(db: &DbDir) -> Vec<(String, Option<String>, String)> {
    let url = db.url();
    let sql = "SELECT action, actor, details FROM audit_log ORDER BY seq";
    if common::postgres_backend() {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
    } else {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
    }
}

async fn execute(db: &DbDir, statements: &[&str]) {
    let url = db.url();
    if common::postgres_backend() {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        for s in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(s.to_string()))
                .execute(&mut c)
                .await
                .unwrap();
        }
    } else {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        for s in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(s.to_string()))
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
}

/// Finding 1: without the admin capability (the stdio default) no client
/// can change the configuration or run the jobs; with it, no value below
/// the floors is accepted, so the reproduction purges nothing; the change
/// that is made is audited with who made it.
#[tokio::test]
async fn no_client_can_purge_every_session() {
    let db = DbDir::new();
    let s = Server::start(&db, &[("HANDOFF_STDIO__ADMIN", "false")]).await;
    register(&s, "keep-me").await;
    let tiny = json!({"config_section": "retention", "retention_policy": {
        "dormant_after": "1ns", "expire_after": "2ns", "archive_after": "3ns", "purge_after": "4ns"}});
    let denied = [
        ("update_configuration", tiny.clone()),
        ("run_job_now", json!({"job_name": "retention"})),
        (
            "update_job_config",
            json!({"job_name": "retention", "config": {"enabled": false}}),
        ),
        (
            "manage_configuration_backup",
            json!({"action": "create", "backup_name": "b"}),
        ),
        (
            "manage_configuration_backup",
            json!({"action": "delete", "backup_id": "0190d7a2-5b1e-7c3a-9a51-2f0e4b8c1d23"}),
        ),
    ];
    for (tool, args) in denied {
        let r = s.call(tool, args).await;
        let e = r.err("FORBIDDEN");
        assert_eq!(e["details"]["required_capability"], "admin", "{tool}: {e}");
    }
    // Reading stays open; process-wide resources do not.
    s.call("get_configuration", json!({})).await.ok();
    s.call("manage_configuration_backup", json!({"action": "list"}))
        .await
        .ok();
    for uri in [
        "handoff://metrics",
        "handoff://analytics/performance",
        "handoff://analytics/resources",
    ] {
        let e = s.read(uri).await.expect_err(uri);
        assert!(format!("{e:?}").contains("FORBIDDEN"), "{uri}: {e:?}");
    }
    s.close().await;

    // With admin: the floors hold, and the retention job purges nothing.
    let s = Server::start(&db, &[]).await;
    let e = s.call("update_configuration", tiny).await;
    let e = e.err("VALIDATION_ERROR");
    let fields: Vec<&str> = e["details"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    for k in [
        "dormant_after",
        "expire_after",
        "archive_after",
        "purge_after",
    ] {
        assert!(fields.contains(&format!("retention.{k}").as_str()), "{e}");
    }
    let r = s
        .call("run_job_now", json!({"job_name": "retention"}))
        .await;
    assert_eq!(r.ok()["run"]["report"]["sessions_purged"], 0);
    let listed = s.read("handoff://sessions").await.unwrap();
    assert_eq!(listed["total"], 1, "{listed}");
    // A realistic change is made, and audited with the transport's
    // principal beside the name the client claimed.
    s.call(
        "update_configuration",
        json!({"config_section": "retention", "retention_policy": {"dormant_after": "2d"},
               "updated_by": "root-admin-trust-me"}),
    )
    .await
    .ok();
    s.close().await;
    let rows = audit_rows(&db).await;
    let (_, actor, details) = rows
        .iter()
        .rev()
        .find(|(a, _, _)| a.starts_with("configuration."))
        .expect("the change is audited");
    assert_eq!(actor.as_deref(), Some("stdio"));
    let details: Value = serde_json::from_str(details).unwrap();
    assert_eq!(details["claimed_by"], "root-admin-trust-me", "{details}");
}

/// Finding 6 and the ceilings: a million-year duration is refused by the
/// tools and by start-up (it used to be accepted and panic the retention
/// job on every run).
#[tokio::test]
async fn durations_have_ceilings() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    for (section, payload) in [
        (
            "retention",
            json!({"retention_policy": {"purge_after": "1000000years"}}),
        ),
        (
            "monitoring",
            json!({"monitoring_config": {"slow_call_threshold": "1ns"}}),
        ),
        (
            "analytics",
            json!({"analytics_config": {"rollup_interval": "1ms"}}),
        ),
    ] {
        let mut args = payload;
        args["config_section"] = json!(section);
        s.call("update_configuration", args)
            .await
            .err("VALIDATION_ERROR");
    }
    for config in [
        json!({"interval": "1ms"}),
        json!({"interval": "100years"}),
        json!({"retry_delay_ms": 86_400_000u64}),
        json!({"max_retries": 11}),
    ] {
        s.call(
            "update_job_config",
            json!({"job_name": "retention", "config": config}),
        )
        .await
        .err("VALIDATION_ERROR");
    }
    let r = s
        .call("run_job_now", json!({"job_name": "retention"}))
        .await;
    assert_eq!(r.ok()["run"]["outcome"], "success");
    s.close().await;
    let out = Command::new(common::BIN)
        .arg("serve")
        .env("HANDOFF_DATABASE_URL", db.url())
        .env("HANDOFF_RETENTION__PURGE_AFTER", "1000000years")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("retention.purge_after") && err.contains("HANDOFF_RETENTION__PURGE_AFTER"),
        "{err}"
    );
}

/// Finding 2: tenant ids are refused where they enter (the CLI, an export
/// file's header) unless they match the strict charset, so `local/evil`
/// cannot exist; names built from (tenant, key) are length-prefixed (unit
/// tests in `handoff_actors::model` and `cache::redis`).
#[tokio::test]
async fn tenants_with_separators_cannot_be_made() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    register(&s, "x").await;
    s.close().await;
    let run = |args: &[&str], db: &DbDir, stdin: Option<&[u8]>| {
        use std::io::Write;
        let mut child = Command::new(common::BIN)
            .args(args)
            .env("HANDOFF_DATABASE_URL", db.url())
            .env("HANDOFF_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(b) = stdin {
            // A refused import may exit before reading it all.
            let _ = input.write_all(b);
        }
        drop(input);
        child.wait_with_output().unwrap()
    };
    let export = run(&["export"], &db, None);
    assert!(export.status.success(), "{export:?}");
    let target = DbDir::new();
    for bad in ["local/evil", "Local", "", "a b", "-x", &"a".repeat(64)] {
        let out = run(
            &["import", "-", "--tenant", bad],
            &target,
            Some(&export.stdout),
        );
        assert!(!out.status.success(), "tenant {bad:?} was accepted");
        for cmd in [
            &["export", "--tenant", bad][..],
            &["sessions", "list", "--tenant", bad],
        ] {
            assert!(!run(cmd, &db, None).status.success(), "{cmd:?}");
        }
    }
    // A header naming a bad tenant is refused too.
    let text = String::from_utf8(export.stdout.clone()).unwrap();
    let forged = text.replacen("\"tenant\":\"local\"", "\"tenant\":\"local/evil\"", 1);
    assert_ne!(forged, text, "the header names the tenant");
    let out = run(&["import", "-"], &target, Some(forged.as_bytes()));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid tenant id"));
    // An import keeps the tools' limits: an invisible character in a key
    // or an entry over the content limit stops it.
    let forged = text.replace("\"session_key\":\"x\"", "\"session_key\":\"x\\u202e\"");
    assert_ne!(forged, text);
    let out = run(&["import", "-"], &target, Some(forged.as_bytes()));
    assert!(!out.status.success(), "a key with U+202E was imported");
    let forged: Vec<String> = text
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if v["kind"] == "entry" {
                v["content"] = json!("y".repeat(1024 * 1024 + 1));
            }
            v.to_string()
        })
        .collect();
    assert!(
        forged.iter().any(|l| l.len() > 1024 * 1024),
        "no entry line"
    );
    let out = run(
        &["import", "-"],
        &target,
        Some(forged.join("\n").as_bytes()),
    );
    assert!(
        !out.status.success(),
        "an entry over the content limit was imported"
    );
    // Nothing was imported by any of it.
    let s = Server::start(&target, &[]).await;
    assert_eq!(s.read("handoff://sessions").await.unwrap()["total"], 0);
    s.close().await;
}

/// Finding 7: a database's own message never reaches the client; it is in
/// the log under the reply's request_id. Health and analytics name the
/// backend's kind, never its path, host or user.
#[tokio::test]
async fn internal_details_stay_in_the_log() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    register(&s, "k").await;
    let secret = "secret-detail-at-/var/lib/handoff/db";
    if common::postgres_backend() {
        execute(&db, &[
            &format!("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{secret}'; END $$"),
            "CREATE TRIGGER refuse BEFORE INSERT ON context_entries FOR EACH ROW EXECUTE FUNCTION refuse()",
        ]).await;
    } else {
        execute(
            &db,
            &[&format!(
                "CREATE TRIGGER refuse BEFORE INSERT ON context_entries BEGIN SELECT RAISE(ABORT, '{secret}'); END"
            )],
        )
        .await;
    }
    let r = s
        .call(
            "update_context",
            json!({"session_key": "k", "context_type": "message", "content": "hello"}),
        )
        .await;
    assert!(r.is_error, "{}", r.body);
    let text = r.body.to_string();
    assert!(!text.contains("secret-detail"), "{text}");
    assert!(r.body["details"].get("cause").is_none(), "{text}");
    let request_id = r.body["request_id"].as_str().unwrap().to_string();

    let where_it_is = [
        db.path().to_string_lossy().to_string(),
        "127.0.0.1".to_string(),
        "postgres@".to_string(),
        "handoff.db".to_string(),
    ];
    for uri in ["handoff://health", "handoff://analytics/resources"] {
        let body = s.read_text(uri).await.unwrap();
        for w in &where_it_is {
            assert!(!body.contains(w.as_str()), "{uri} shows {w}: {body}");
        }
        assert!(
            body.contains("sqlite") || body.contains("postgresql"),
            "{body}"
        );
    }
    s.close().await;
    let log = std::fs::read_to_string(db.stderr_log()).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains(&request_id) && l.contains("secret-detail")),
        "the cause is not logged under {request_id}"
    );
}

/// Low: `monitoring.metrics_enabled = false` hides the metrics resource,
/// at once.
#[tokio::test]
async fn metrics_can_be_switched_off() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    assert!(s.read_text("handoff://metrics").await.is_ok());
    s.call(
        "update_configuration",
        json!({"config_section": "monitoring", "monitoring_config": {"metrics_enabled": false}}),
    )
    .await
    .ok();
    let e = s
        .read_text("handoff://metrics")
        .await
        .expect_err("metrics are off");
    assert!(format!("{e:?}").contains("NOT_FOUND"), "{e:?}");
    s.close().await;
}

/// Finding 3: requests of a hostile shape are refused before any query and
/// never count against the database breaker, so they cannot open it for
/// everyone; a repeated type is harmless.
#[tokio::test]
async fn hostile_list_shapes_cannot_open_the_breaker() {
    let db = DbDir::new();
    let s = Server::start(&db, &[("HANDOFF_BREAKER_FAILURES", "2")]).await;
    register(&s, "k").await;
    for _ in 0..10 {
        s.call(
            "get_context",
            json!({"session_key": "k", "context_types": vec!["message"; 40_000]}),
        )
        .await
        .err("VALIDATION_ERROR");
    }
    let r = s
        .call(
            "get_context",
            json!({"session_key": "k", "context_types": ["system", "system", "message"]}),
        )
        .await;
    assert_eq!(r.ok()["entries"].as_array().unwrap().len(), 1);
    let b = common::health_component(&s, "breaker.database").await;
    assert_eq!(b["details"]["state"], "closed", "{b}");
    s.call(
        "register_session",
        json!({"session_key": "unrelated", "agent_from": "b"}),
    )
    .await
    .ok();
    s.close().await;
}

/// The peak resident memory of a process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// Finding 4: a page of large entries is read up to its byte budget, not
/// as `limit + 1` whole rows: reading 40 entries of ~1 MiB with
/// `limit: 1000` returns the first four (the 4 MiB budget) without the
/// server's peak memory growing by the other 36.
#[tokio::test]
async fn large_pages_stop_at_the_byte_budget_while_reading() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    register(&s, "big").await;
    let content = "m".repeat(1_000_000);
    for _ in 0..100 {
        common::append(&s, "big", &content).await;
    }
    // Settle: the writes' buffers are the baseline.
    let before = peak_kib(s.pid());
    let r = s
        .call(
            "get_context",
            json!({"session_key": "big", "after_sequence": 1, "limit": 1000}),
        )
        .await;
    let body = r.ok();
    let n = body["entries"].as_array().unwrap().len();
    assert!((1..=4).contains(&n), "{n} entries in one 4 MiB page");
    assert_eq!(body["has_more"], true);
    assert_eq!(body["next_after_sequence"], 1 + n as i64);
    let after = peak_kib(s.pid());
    eprintln!("peak RSS before the read {before} KiB, after {after} KiB");
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "reading one page raised the peak from {before} KiB to {after} KiB"
    );
    // Every entry is still reachable page by page, in order.
    let all = common::all_entries(&s, "big").await;
    assert_eq!(all.len(), 101);
    assert!(all
        .windows(2)
        .all(|w| w[0]["sequence_number"].as_i64() < w[1]["sequence_number"].as_i64()));
    s.close().await;
}

/// Finding 5: what a handoff stores and returns does not grow with the
/// handoffs before it: 300 collaboration handoffs to distinct agents keep
/// the last reply and the last stored snapshot as small as the early ones;
/// the summary names the first 32 participants and counts them all.
#[tokio::test]
async fn handoff_rows_stay_bounded() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    register(&s, "team").await;
    let mut sizes = Vec::new();
    for i in 0..300 {
        let r = s
            .call(
                "request_handoff",
                json!({"session_key": "team", "target_agent": format!("agent-{i:03}-{}", "x".repeat(80)),
                       "request_type": "collaboration"}),
            )
            .await;
        sizes.push(r.ok().to_string().len());
    }
    let early = sizes[40];
    let last = *sizes.last().unwrap();
    assert!(
        last <= early + 256,
        "replies grew from {early} to {last} bytes"
    );
    assert!(last < 20 * 1024, "a reply of {last} bytes");
    let summary = s.read("handoff://summary/team").await.unwrap();
    assert_eq!(summary["participants"].as_array().unwrap().len(), 32);
    assert_eq!(summary["participant_count"], 301, "{summary}");
    let page = s
        .call(
            "list_handoffs",
            json!({"target_agent": format!("agent-299-{}", "x".repeat(80))}),
        )
        .await;
    let listed = page.ok()["handoffs"][0]["context_summary"]
        .to_string()
        .len();
    assert!(listed < 16 * 1024, "a stored snapshot of {listed} bytes");
    s.close().await;
    let rows = common::sql_rows(
        &db,
        "SELECT CAST(length(CAST(context_summary AS TEXT)) AS TEXT) FROM handoffs",
    )
    .await;
    let max = rows
        .iter()
        .map(|r| r[0].as_deref().unwrap().parse::<usize>().unwrap())
        .max()
        .unwrap();
    assert!(max < 16 * 1024, "a stored context_summary of {max} bytes");
}

/// Finding 8: a client's text reaches the log cut and redacted: an unknown
/// tool name of 100 KB full of secret shapes leaves none of them, and no
/// long line, in the log.
#[tokio::test]
async fn client_text_reaches_the_log_cut_and_redacted() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    let secrets = [
        "ghp_0123456789abcdefghijABCDEFGHIJ012345",
        "hunter2hunter2",
        "AKIAIOSFODNN7EXAMPLE",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp",
    ];
    let name = format!(
        "{} password={} {} {}{}",
        secrets[0],
        secrets[1],
        secrets[2],
        secrets[3],
        "x".repeat(100_000)
    );
    let err = s
        .try_call(&name, json!({}))
        .await
        .expect_err("an unknown tool is a protocol error");
    assert!(
        format!("{err:?}").len() < 8 * 1024,
        "the reply echoes the whole name"
    );
    s.close().await;
    let log = std::fs::read_to_string(db.stderr_log()).unwrap();
    assert!(log.contains("unknown tool"), "{log}");
    for secret in secrets {
        assert!(!log.contains(secret), "{secret} reached the log");
    }
    assert!(
        log.lines().all(|l| l.len() < 4096),
        "a log line of a client's 100 KB"
    );
}
