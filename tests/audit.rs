//! Tamper evidence of the audit log and the configuration backups, against
//! someone who can write the database but does not hold the audit key: the
//! log refuses UPDATE and DELETE, and `handoff audit verify` catches a row
//! edited and rehashed with unkeyed blake3, a row deleted (later rows
//! renumbered and rehashed), and the newest rows deleted; a backup whose body
//! and checksum were rewritten is not restored. On either backend
//! (`HANDOFF_TEST_BACKEND`); the role grants are in tests/roles.rs.

mod common;

use std::process::{Command, Stdio};

use common::{DbDir, Server};
use serde_json::{json, Value};

/// A key in each format the setting takes.
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const OTHER_KEY_B64: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

fn handoff(db: &DbDir, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(common::BIN);
    cmd.args(args)
        .env("HANDOFF_DATABASE_URL", db.url())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run handoff")
}

/// `handoff audit verify`: (passed, stdout).
fn verify(db: &DbDir, env: &[(&str, &str)]) -> (bool, String) {
    let out = handoff(db, &["audit", "verify"], env);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), stdout)
}

/// Run SQL as the database's owner (SQLite: the file's owner), keeping the
/// error instead of failing.
async fn try_sql(db: &DbDir, sql: &str) -> Result<(), String> {
    if db.pg_name().is_some() {
        let out = Command::new("psql")
            .arg(db.url())
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    } else {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&db.url()).await.unwrap();
        let r = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut c)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        c.close().await.ok();
        r
    }
}

/// One audit row as stored.
#[derive(Debug, Clone)]
struct Row {
    seq: i64,
    ts: String,
    tenant: String,
    action: String,
    actor: Option<String>,
    subject_hash: Option<String>,
    details: String,
    prev_hash: String,
    hash: String,
}

async fn audit_rows(db: &DbDir) -> Vec<Row> {
    common::sql_rows(
        db,
        "SELECT seq, ts, tenant, action, actor, subject_hash, details, prev_hash, hash \
         FROM audit_log ORDER BY seq",
    )
    .await
    .into_iter()
    .map(|r| Row {
        seq: r[0].as_deref().unwrap().parse().unwrap(),
        ts: r[1].clone().unwrap(),
        tenant: r[2].clone().unwrap(),
        action: r[3].clone().unwrap(),
        actor: r[4].clone(),
        subject_hash: r[5].clone(),
        details: r[6].clone().unwrap(),
        prev_hash: r[7].clone().unwrap(),
        hash: r[8].clone().unwrap(),
    })
    .collect()
}

/// What anyone can compute: plain blake3 over the row's fields, each
/// length-prefixed (the chain's link before it was keyed).
fn unkeyed_hash(r: &Row) -> String {
    let mut h = blake3::Hasher::new();
    let seq = r.seq.to_string();
    for f in [
        r.prev_hash.as_str(),
        &seq,
        &r.ts,
        &r.tenant,
        &r.action,
        r.actor.as_deref().unwrap_or(""),
        r.subject_hash.as_deref().unwrap_or(""),
        &r.details,
    ] {
        h.update(&(f.len() as u64).to_le_bytes());
        h.update(f.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// The attacker's best move without the key: relink every row from index
/// `from` on and recompute its hash with unkeyed blake3, in the format the
/// stored hashes have (`k1:{key id}:` kept when there is one).
fn rehash_without_key(rows: &mut [Row], from: usize) {
    for i in from..rows.len() {
        if i > 0 {
            rows[i].prev_hash = rows[i - 1].hash.clone();
        }
        let forged = unkeyed_hash(&rows[i]);
        rows[i].hash = match rows[i].hash.rsplit_once(':') {
            Some((prefix, _)) => format!("{prefix}:{forged}"),
            None => forged,
        };
    }
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Out of the way first: the append-only triggers (the owner may drop them).
const DISABLE_GUARD_SQLITE: &str =
    "DROP TRIGGER IF EXISTS audit_log_no_update; DROP TRIGGER IF EXISTS audit_log_no_delete;";
const DISABLE_GUARD_PG: &str = "ALTER TABLE audit_log DISABLE TRIGGER USER;";

fn disable_guard(db: &DbDir) -> &'static str {
    if db.pg_name().is_some() {
        DISABLE_GUARD_PG
    } else {
        DISABLE_GUARD_SQLITE
    }
}

/// Write `rows` back over the rows whose sequence numbers were `old_seqs`,
/// in order (renumbering downwards stays clear of the primary key).
async fn write_back(db: &DbDir, old_seqs: &[i64], rows: &[Row]) {
    let mut sql = disable_guard(db).to_string();
    for (old, r) in old_seqs.iter().zip(rows) {
        sql.push_str(&format!(
            " UPDATE audit_log SET seq = {}, details = {}, prev_hash = {}, hash = {} WHERE seq = {old};",
            r.seq,
            lit(&r.details),
            lit(&r.prev_hash),
            lit(&r.hash)
        ));
    }
    try_sql(db, &sql).await.unwrap();
}

/// A log of eight rows (four registrations, four handoffs), verified intact.
async fn fresh_log(env: &[(&str, &str)]) -> DbDir {
    let db = DbDir::new();
    let s = Server::start(&db, env).await;
    for i in 0..4 {
        let key = format!("audited-{i}");
        s.call(
            "register_session",
            json!({"session_key": key, "agent_from": "a"}),
        )
        .await
        .ok();
        s.call(
            "request_handoff",
            json!({"session_key": key, "target_agent": "b"}),
        )
        .await
        .ok();
    }
    assert!(s.close().await.success());
    let (ok, out) = verify(&db, env);
    assert!(ok && out.contains("audit chain intact: 8 rows"), "{out}");
    db
}

#[tokio::test]
async fn an_edited_row_rehashed_without_the_key_is_caught() {
    let env = [("HANDOFF_AUDIT_KEY", KEY_HEX)];
    let db = fresh_log(&env).await;
    let mut rows = audit_rows(&db).await;
    let mut details: Value = serde_json::from_str(&rows[2].details).unwrap();
    details["agent"] = json!("mallory");
    rows[2].details = details.to_string();
    rehash_without_key(&mut rows, 2);
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    write_back(&db, &seqs[2..], &rows[2..]).await;

    let (ok, out) = verify(&db, &env);
    assert!(!ok, "tampering not caught: {out}");
    assert!(out.contains("BROKEN at row 3"), "{out}");
    // With another key, or none, the log is not taken as intact either.
    let (ok, out) = verify(&db, &[("HANDOFF_AUDIT_KEY", OTHER_KEY_B64)]);
    assert!(!ok && out.contains("BROKEN at row 1"), "{out}");
    let (ok, out) = verify(&db, &[]);
    assert!(!ok && out.contains("NOT CHECKED from row 1"), "{out}");
}

#[tokio::test]
async fn a_deleted_row_is_caught_even_with_the_rest_renumbered_and_rehashed() {
    let db = fresh_log(&[]).await;
    let mut rows = audit_rows(&db).await;
    let old: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    try_sql(
        &db,
        &format!("{} DELETE FROM audit_log WHERE seq = 4", disable_guard(&db)),
    )
    .await
    .unwrap();
    rows.remove(3);
    for r in rows.iter_mut().skip(3) {
        r.seq -= 1;
    }
    rehash_without_key(&mut rows, 3);
    write_back(&db, &old[4..], &rows[3..]).await;
    assert_eq!(audit_rows(&db).await.len(), 7);

    let (ok, out) = verify(&db, &[]);
    assert!(!ok, "deletion not caught: {out}");
    assert!(out.contains("BROKEN at row 4"), "{out}");
}

#[tokio::test]
async fn the_newest_rows_deleted_are_caught_by_the_anchor() {
    let db = fresh_log(&[]).await;
    // What is left is a valid chain; only the anchor outside the database
    // knows it once went further.
    try_sql(
        &db,
        &format!("{} DELETE FROM audit_log WHERE seq > 6", disable_guard(&db)),
    )
    .await
    .unwrap();
    let (ok, out) = verify(&db, &[]);
    assert!(!ok, "truncation not caught: {out}");
    assert!(
        out.contains("BROKEN at row 8") && out.contains("ends at row 6"),
        "{out}"
    );

    // A server started on the truncated log says so and keeps the
    // evidence: verify still fails after it wrote more rows.
    let s = Server::start(&db, &[("HANDOFF_STDIO__ADMIN", "true")]).await;
    for i in 0..3 {
        s.call(
            "register_session",
            json!({"session_key": format!("after-{i}"), "agent_from": "a"}),
        )
        .await
        .ok();
    }
    // And its metrics, for the alert (ops/prometheus/alerts.yml).
    let metrics = s.read_text("handoff://metrics").await.unwrap();
    assert_eq!(
        common::prometheus_value(&metrics, "handoff_audit_anchor_ok", &[]),
        Some(0.0)
    );
    assert!(s.close().await.success());
    let log = std::fs::read_to_string(db.stderr_log()).unwrap();
    assert!(log.contains("does not reach its anchor"), "{log}");
    let (ok, out) = verify(&db, &[]);
    assert!(!ok && out.contains("BROKEN at row 8"), "{out}");
}

#[tokio::test]
async fn the_log_refuses_updates_and_deletes() {
    let db = fresh_log(&[]).await;
    for sql in [
        "UPDATE audit_log SET details = '{}' WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = 8",
        "DELETE FROM audit_log",
    ] {
        let e = try_sql(&db, sql).await.expect_err(sql);
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
    if db.pg_name().is_some() {
        let e = try_sql(&db, "TRUNCATE audit_log").await.unwrap_err();
        assert!(e.contains("append-only"), "{e}");
    }
    assert_eq!(audit_rows(&db).await.len(), 8);
    assert!(verify(&db, &[]).0);
}

#[tokio::test]
async fn rows_from_before_keying_are_sealed_by_the_first_keyed_row() {
    // A log as an older version wrote it: unkeyed links from row 1.
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    assert!(s.close().await.success());
    assert!(audit_rows(&db).await.is_empty());
    let mut prev = "0".repeat(64);
    for seq in 1..=3 {
        let mut r = Row {
            seq,
            ts: "2026-11-01T00:00:00.000000Z".into(),
            tenant: "local".into(),
            action: "session.registered".into(),
            actor: Some("a".into()),
            subject_hash: Some(format!("{seq:016x}")),
            details: "{}".into(),
            prev_hash: prev.clone(),
            hash: String::new(),
        };
        r.hash = unkeyed_hash(&r);
        prev = r.hash.clone();
        try_sql(
            &db,
            &format!(
                "INSERT INTO audit_log (seq, ts, tenant, action, actor, subject_hash, details, prev_hash, hash) \
                 VALUES ({seq}, {}, 'local', 'session.registered', 'a', {}, '{{}}', {}, {})",
                lit(&r.ts),
                lit(r.subject_hash.as_deref().unwrap()),
                lit(&r.prev_hash),
                lit(&r.hash)
            ),
        )
        .await
        .unwrap();
    }
    // Unkeyed only: consistent, but proves nothing.
    let (ok, out) = verify(&db, &[]);
    assert!(!ok && out.contains("NOT SEALED"), "{out}");

    // The server seals them with a keyed row at start-up.
    let s = Server::start(&db, &[]).await;
    assert!(s.close().await.success());
    let rows = audit_rows(&db).await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows[3].action, "audit.keyed");
    let details: Value = serde_json::from_str(&rows[3].details).unwrap();
    assert_eq!(details["unkeyed_rows"], 3);
    let (ok, out) = verify(&db, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("the first 3 written before keying"), "{out}");

    // Now an unkeyed row cannot change unnoticed either.
    let mut rows = rows;
    rows[1].details = "{\"rewritten\":true}".into();
    rehash_without_key(&mut rows[..3], 1);
    write_back(&db, &[2, 3], &rows[1..3]).await;
    let (ok, out) = verify(&db, &[]);
    assert!(!ok && out.contains("BROKEN at row 4"), "{out}");
}

#[tokio::test]
async fn the_audit_key_is_validated_kept_and_required() {
    // A malformed key stops start-up, naming the setting, not the value.
    let db = DbDir::new();
    let out = handoff(
        &db,
        &["serve"],
        &[("HANDOFF_AUDIT_KEY", "hunter2-not-32-bytes")],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HANDOFF_AUDIT_KEY"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the key was echoed: {stderr}");

    // Unset: a key file, mode 0600, beside the SQLite file (PostgreSQL: in
    // the data directory).
    let db = fresh_log(&[]).await;
    if db.pg_name().is_none() {
        use std::os::unix::fs::PermissionsExt;
        let file = db.path().join("handoff.db.audit-key");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = std::fs::read_to_string(&file).unwrap();
        assert_eq!(key.trim().len(), 64);
        let log = std::fs::read_to_string(db.stderr_log()).unwrap();
        assert!(!log.contains(key.trim()), "the key was logged");
    }

    // A log another key wrote: the server refuses to extend it.
    let out = handoff(&db, &["serve"], &[("HANDOFF_AUDIT_KEY", OTHER_KEY_B64)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("audit key") && stderr.contains("HANDOFF_AUDIT_KEY"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(OTHER_KEY_B64),
        "the key was echoed: {stderr}"
    );
}

#[tokio::test]
async fn a_backup_rewritten_with_an_unkeyed_checksum_is_not_restored() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    let c = s
        .call(
            "manage_configuration_backup",
            json!({"action": "create", "backup_name": "keyed"}),
        )
        .await
        .ok()
        .clone();
    let id = c["backup"]["id"].as_str().unwrap().to_string();

    // The attacker rewrites the body (a purge after one day) and gives it
    // the checksum an unkeyed blake3 would.
    let body = common::sql_rows(
        &db,
        &format!("SELECT body FROM configuration_backups WHERE CAST(id AS TEXT) = '{id}'"),
    )
    .await[0][0]
        .clone()
        .unwrap();
    let mut forged: Value = serde_json::from_str(&body).unwrap();
    forged["retention"]["purge_after"] = json!("400d");
    let forged = serde_json::to_string(&forged).unwrap();
    let checksum = blake3::hash(forged.as_bytes()).to_hex().to_string();
    try_sql(
        &db,
        &format!(
            "UPDATE configuration_backups SET body = {}, checksum = {} WHERE CAST(id AS TEXT) = '{id}'",
            lit(&forged),
            lit(&checksum)
        ),
    )
    .await
    .unwrap();
    let e = s
        .call(
            "manage_configuration_backup",
            json!({"action": "restore", "backup_id": id}),
        )
        .await;
    let err = e.err("VALIDATION_ERROR");
    assert_eq!(err["details"]["reason"], "unkeyed_checksum", "{err}");
    let conf = s.call("get_configuration", json!({})).await.ok().clone();
    assert_eq!(
        conf["configuration"]["retention"]["purge_after"], "365d",
        "{conf}"
    );

    // The same with the keyed format kept around an unkeyed hash; and the
    // error never tells what the checksum should be.
    let keyed_form = c["backup"]["checksum"].as_str().unwrap();
    let (prefix, _) = keyed_form.rsplit_once(':').unwrap();
    try_sql(
        &db,
        &format!(
            "UPDATE configuration_backups SET checksum = {} WHERE CAST(id AS TEXT) = '{id}'",
            lit(&format!("{prefix}:{checksum}"))
        ),
    )
    .await
    .unwrap();
    let e = s
        .call(
            "manage_configuration_backup",
            json!({"action": "restore", "backup_id": id}),
        )
        .await;
    let err = e.err("VALIDATION_ERROR").clone();
    assert_eq!(err["details"]["reason"], "checksum_mismatch", "{err}");
    assert!(!err.to_string().contains(prefix), "{err}");

    // An intact backup restores; create, restore and delete are audited with
    // the caller the transport established.
    let good = s
        .call(
            "manage_configuration_backup",
            json!({"action": "create", "backup_name": "good"}),
        )
        .await
        .ok()["backup"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.call(
        "manage_configuration_backup",
        json!({"action": "restore", "backup_id": good}),
    )
    .await
    .ok();
    s.call(
        "manage_configuration_backup",
        json!({"action": "delete", "backup_id": good}),
    )
    .await
    .ok();
    assert!(s.close().await.success());
    let rows = common::sql_rows(
        &db,
        "SELECT action, actor FROM audit_log WHERE action LIKE 'configuration.%' ORDER BY seq",
    )
    .await;
    let rows: Vec<(String, String)> = rows
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap_or_default()))
        .collect();
    let stdio = |a: &str| (a.to_string(), "stdio".to_string());
    assert_eq!(
        rows,
        [
            stdio("configuration.backup_created"),
            stdio("configuration.backup_created"),
            stdio("configuration.restored"),
            stdio("configuration.backup_deleted"),
        ]
    );
    assert!(verify(&db, &[]).0);
}
