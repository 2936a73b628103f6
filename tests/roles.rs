//! Least privilege on PostgreSQL (`ops/postgres/roles.sql`): the migration
//! role owns the schema; the server runs as a role that can only read and
//! write rows (and only append to the audit log, only read the migration
//! history), and refuses to start on a database that is not migrated.

mod common;

use std::process::{Command, Stdio};

use common::{all_entries, DbDir, Server, BIN};
use serde_json::json;

fn psql(url: &str, args: &[&str]) -> std::process::Output {
    Command::new("psql")
        .arg(url)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("psql")
}

/// Two roles unique to this test, dropped after the database is.
struct Roles {
    migrator: String,
    app: String,
}

impl Drop for Roles {
    fn drop(&mut self) {
        let sql = format!(
            "DROP ROLE IF EXISTS {}; DROP ROLE IF EXISTS {}",
            self.app, self.migrator
        );
        let _ = psql(
            &format!("{}/postgres", common::pg_server_url()),
            &["-c", &sql],
        );
    }
}

/// Run ops/postgres/roles.sql on the database `name`.
fn apply_roles_sql(name: &str, roles: &Roles) {
    let out = psql(
        &format!("{}/{name}", common::pg_server_url()),
        &[
            "-v",
            &format!("migrator={}", roles.migrator),
            "-v",
            &format!("app={}", roles.app),
            "-v",
            "migrator_password='m-secret'",
            "-v",
            "app_password='a-secret'",
            "-f",
            concat!(env!("CARGO_MANIFEST_DIR"), "/ops/postgres/roles.sql"),
        ],
    );
    assert!(
        out.status.success(),
        "roles.sql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The app role may read the audit log and the migration history, append to
/// the log, and nothing more: every other statement is a permission error.
fn assert_append_only(app_url: &str) {
    for ok in [
        "SELECT count(*) FROM audit_log",
        "SELECT count(*) FROM _sqlx_migrations",
    ] {
        let out = psql(app_url, &["-c", ok]);
        assert!(
            out.status.success(),
            "{ok}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for refused in [
        "UPDATE audit_log SET details = '{}'",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)",
        "TRUNCATE audit_log",
        "UPDATE _sqlx_migrations SET success = false",
        "DELETE FROM _sqlx_migrations",
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'x', true, '\\x00', 0)",
    ] {
        let out = psql(app_url, &["-c", refused]);
        assert!(!out.status.success(), "the app role could run {refused}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("permission denied"), "{refused}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_with_dml_rights_only() {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let roles = Roles {
        migrator: format!("handoff_mig_{tag}"),
        app: format!("handoff_app_{tag}"),
    };
    let db = DbDir::postgres();
    let name = db.pg_name().unwrap().to_string();
    apply_roles_sql(&name, &roles);
    // The roles' own URLs, on the configured server.
    let server = common::pg_server_addr();
    let as_migrator = format!("postgres://{}:m-secret@{server}/{name}", roles.migrator);
    let as_app = format!("postgres://{}:a-secret@{server}/{name}", roles.app);

    // Not migrated yet: the app role refuses to start, and says why.
    let out = Command::new(BIN)
        .arg("serve")
        .env("HANDOFF_DATABASE_URL", &as_app)
        .env("HANDOFF_MIGRATE_ON_START", "false")
        .stdin(Stdio::null())
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("handoff migrate"), "{err}");
    assert!(!err.contains("a-secret"), "password in the log: {err}");

    let out = Command::new(BIN)
        .arg("migrate")
        .env("HANDOFF_DATABASE_URL", &as_migrator)
        .output()
        .expect("migrate");
    assert!(
        out.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The whole tool surface works as the app role.
    let s = Server::start(
        &db,
        &[
            ("HANDOFF_DATABASE_URL", as_app.as_str()),
            ("HANDOFF_MIGRATE_ON_START", "false"),
        ],
    )
    .await;
    s.call(
        "register_session",
        json!({"session_key": "lp", "agent_from": "a"}),
    )
    .await
    .ok();
    s.call(
        "update_context",
        json!({"session_key": "lp", "context_type": "message", "content": "hello"}),
    )
    .await
    .ok();
    let h = s
        .call(
            "request_handoff",
            json!({"session_key": "lp", "target_agent": "b"}),
        )
        .await;
    let id = h.ok()["handoff"]["id"].as_str().unwrap().to_string();
    s.call("accept_handoff", json!({"handoff_id": id, "agent": "b"}))
        .await
        .ok();
    assert_eq!(all_entries(&s, "lp").await.len(), 4);
    s.call("delete_session", json!({"session_key": "lp"}))
        .await
        .ok();
    let health = s.read("handoff://health").await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert!(s.close().await.success());

    // And it cannot change the schema.
    let app_url = as_app.clone();
    for ddl in [
        "CREATE TABLE intruder (i int)",
        "DROP TABLE context_entries",
        "ALTER TABLE sessions ADD COLUMN x int",
        "TRUNCATE audit_log",
    ] {
        let out = psql(&app_url, &["-c", ddl]);
        assert!(!out.status.success(), "the app role could run {ddl}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("permission denied") || err.contains("must be owner"),
            "{ddl}: {err}"
        );
    }

    // The audit log only grows: the rows the tool calls left stay as they
    // are, also after roles.sql runs again (as after an upgrade), and the
    // chain verifies as the app role.
    assert_append_only(&app_url);
    apply_roles_sql(&name, &roles);
    assert_append_only(&app_url);
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .env("HANDOFF_DATABASE_URL", &as_app)
        .env("HANDOFF_MIGRATE_ON_START", "false")
        .stdin(Stdio::null())
        .output()
        .expect("audit verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("audit chain intact"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(db);
    drop(roles);
}
