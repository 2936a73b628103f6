//! The operator commands and start-up behaviour: `audit verify` on a real
//! audit log (intact, then tampered with), invalid configuration, and the
//! zero-setup embedded default.

mod common;

use std::process::{Command, Stdio};

use common::{DbDir, Server};
use serde_json::json;
use sqlx::Connection;

fn handoff(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(common::BIN);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run handoff")
}

#[tokio::test]
async fn audit_chain_verifies_and_detects_tampering() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    s.call(
        "register_session",
        json!({"session_key": "secret-key-1", "agent_from": "a"}),
    )
    .await
    .ok();
    s.call(
        "request_handoff",
        json!({"session_key": "secret-key-1", "target_agent": "b"}),
    )
    .await
    .ok();
    s.call(
        "delete_session",
        json!({"session_key": "secret-key-1", "requested_by": "alice"}),
    )
    .await
    .ok();
    assert!(s.close().await.success());

    let url = db.url();
    let out = handoff(&["audit", "verify"], &[("HANDOFF_DATABASE_URL", &url)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("audit chain intact"), "{stdout}");

    // Read and then tamper with the audit log behind the server's back, on
    // whichever database the suite runs on.
    // The append-only trigger first: whoever tampers owns the database.
    macro_rules! inspect_then_tamper {
        ($conn:expr, $disable_trigger:expr) => {{
            let mut conn = $conn;
            let rows: Vec<(i64, String, Option<String>, Option<String>, String)> = sqlx::query_as(
                "SELECT seq, action, actor, subject_hash, details FROM audit_log ORDER BY seq",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            let actions: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
            for a in ["session.registered", "handoff.requested", "session.deleted"] {
                assert!(actions.contains(&a), "{a} missing from {actions:?}");
            }
            let deleted = rows.iter().find(|r| r.1 == "session.deleted").unwrap();
            assert_eq!(deleted.2.as_deref(), Some("alice"), "who asked is kept");
            for r in &rows {
                // Only the key's hash, never the key.
                assert!(!r.4.contains("secret-key-1") && r.3.as_deref() != Some("secret-key-1"));
            }
            // The erased session left nothing behind.
            let left: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM sessions) + (SELECT count(*) FROM context_entries) + (SELECT count(*) FROM handoffs)",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            assert_eq!(left, 0);

            sqlx::query($disable_trigger).execute(&mut conn).await.unwrap();
            sqlx::query("UPDATE audit_log SET details = '{}' WHERE seq = 2")
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }};
    }
    if common::postgres_backend() {
        inspect_then_tamper!(
            sqlx::PgConnection::connect(&url).await.unwrap(),
            "ALTER TABLE audit_log DISABLE TRIGGER USER"
        );
    } else {
        inspect_then_tamper!(
            sqlx::SqliteConnection::connect(&url).await.unwrap(),
            "DROP TRIGGER audit_log_no_update"
        );
    }
    let out = handoff(&["audit", "verify"], &[("HANDOFF_DATABASE_URL", &url)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("BROKEN at row 2"), "{stdout}");
}

#[test]
fn invalid_configuration_stops_start_up_naming_the_setting() {
    let db = DbDir::new();
    let url = db.url();
    let out = handoff(
        &["serve"],
        &[
            ("HANDOFF_DATABASE_URL", &url),
            ("HANDOFF_SESSION_IDLE", "soon"),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.to_ascii_uppercase().contains("SESSION_IDLE"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing on the protocol channel");

    let toml = db.path().join("bad.toml");
    std::fs::write(&toml, "page_size_default = 5000\n").unwrap();
    let out = handoff(
        &["--config", toml.to_str().unwrap(), "serve"],
        &[("HANDOFF_DATABASE_URL", &url)],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("page_size_default"));
}

#[tokio::test]
async fn embedded_default_needs_no_setup() {
    // The embedded default is SQLite whatever HANDOFF_TEST_BACKEND says.
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    // No HANDOFF_DATABASE_URL: the file goes to the platform data directory.
    let mut child = tokio::process::Command::new(common::BIN)
        .arg("serve")
        .env_remove("HANDOFF_DATABASE_URL")
        // The suite's own variable: the server would warn about it.
        .env_remove("HANDOFF_TEST_BACKEND")
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", &data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take()); // EOF at once: start, then shut down cleanly.
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = data.join("handoff").join("handoff.db");
    assert!(
        stderr.contains(&expected.display().to_string()),
        "path not printed: {stderr}"
    );
    assert!(expected.exists(), "database file created");
    for line in stderr.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("non-JSON log line: {line}"));
        assert!(v["level"].is_string());
        // Leaving before the handshake is normal, and logged as such.
        assert!(
            !["ERROR", "WARN"].contains(&v["level"].as_str().unwrap()),
            "{line}"
        );
    }
    assert!(
        stderr.contains("the client closed stdin before the MCP handshake"),
        "{stderr}"
    );
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["audit", "verify", "--help"],
        vec!["sessions", "list", "--help"],
        vec!["context", "show", "--help"],
        vec!["config", "show", "--help"],
        vec!["export", "--help"],
        vec!["import", "--help"],
    ] {
        let out = handoff(&args, &[]);
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[tokio::test]
async fn sessions_list_context_show_and_config_show() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;
    s.call(
        "register_session",
        json!({"session_key": "cli-1", "agent_from": "a"}),
    )
    .await
    .ok();
    s.call(
        "update_context",
        json!({"session_key": "cli-1", "context_type": "message", "content": "hello cli"}),
    )
    .await
    .ok();
    assert!(s.close().await.success());
    let url = db.url();
    let env = [("HANDOFF_DATABASE_URL", url.as_str())];

    let out = handoff(&["sessions", "list"], &env);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["session_key"], "cli-1");

    let out = handoff(&["context", "show", "cli-1"], &env);
    assert!(out.status.success());
    let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["content"], "hello cli");
    assert_eq!(entries[1]["sequence_number"], 2);

    let out = handoff(&["context", "show", "missing"], &env);
    assert!(!out.status.success());

    let out = handoff(&["config", "show"], &env);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["settings"]["retention"].is_object(), "{v}");
}
