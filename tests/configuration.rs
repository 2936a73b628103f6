//! The configuration surface: get_configuration, update_configuration,
//! manage_configuration_backup, the handoff://configuration resources, the
//! audit rows they leave, persistence across restarts, and nested
//! environment overrides at start-up.
//!
//! They run on SQLite, and on PostgreSQL with `HANDOFF_TEST_BACKEND=postgres`.

mod common;

use std::process::{Command, Stdio};

use common::{DbDir, Server};
use serde_json::{json, Value};

async fn get(s: &Server) -> Value {
    s.call("get_configuration", json!({})).await.ok()["configuration"].clone()
}

#[tokio::test]
async fn get_configuration_shapes() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;

    let body = s.call("get_configuration", json!({})).await.ok().clone();
    assert_eq!(body["config_section"], "all");
    assert_eq!(body["format"], "json");
    let c = &body["configuration"];
    assert_eq!(c["retention"]["dormant_after"], "7d");
    assert_eq!(c["retention"]["expire_after"], "30d");
    assert_eq!(c["retention"]["archive_after"], "90d");
    assert_eq!(c["retention"]["purge_after"], "365d");
    assert_eq!(c["monitoring"]["metrics_enabled"], true);
    assert_eq!(c["analytics"]["enabled"], true);
    assert_eq!(c["backups"]["max_backups"], 20);
    assert!(body.get("metadata").is_none());
    assert_eq!(body["pending_restart"], json!([]));

    // One section, camelCase arguments, metadata and YAML.
    let body = s
        .call(
            "get_configuration",
            json!({"configSection": "retention", "includeMetadata": true, "format": "yaml"}),
        )
        .await
        .ok()
        .clone();
    let c = body["configuration"].as_object().unwrap();
    assert_eq!(c.keys().collect::<Vec<_>>(), vec!["retention"]);
    let m = &body["metadata"]["retention.dormant_after"];
    assert_eq!(m["value"], "7d");
    assert_eq!(m["default"], "7d");
    assert_eq!(m["source"], "default");
    assert_eq!(m["applies"], "live");
    assert_eq!(m["env"], "HANDOFF_RETENTION__DORMANT_AFTER");
    assert!(body["metadata"].get("monitoring.metrics_enabled").is_none());
    let yaml = body["yaml"].as_str().unwrap();
    assert!(yaml.starts_with("configuration:\n  retention:\n"), "{yaml}");
    assert!(yaml.contains("\n    dormant_after: \"7d\"\n"), "{yaml}");

    // Bad arguments.
    s.call("get_configuration", json!({"config_section": "nope"}))
        .await
        .err("VALIDATION_ERROR");
    s.call("get_configuration", json!({"format": "xml"}))
        .await
        .err("VALIDATION_ERROR");

    // The resource: the same effective values, with metadata.
    let r = s.read("handoff://configuration").await.unwrap();
    assert_eq!(r["configuration"]["retention"]["dormant_after"], "7d");
    assert_eq!(
        r["metadata"]["analytics.rollup_interval"]["applies"],
        "restart"
    );
    let listed = s.client.list_all_resources().await.unwrap();
    for uri in ["handoff://configuration", "handoff://configuration/backups"] {
        assert!(listed.iter().any(|r| r.uri == uri), "{uri} not listed");
    }
    s.close().await;
}

#[tokio::test]
async fn update_validates_applies_persists_and_audits() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;

    // Every problem listed, nothing changed.
    let e = s
        .call(
            "update_configuration",
            json!({"config_section": "retention", "retention_policy": {
                "dormant_after": "40d",          // not below expire_after (30d)
                "purge_after": "banana",         // not a duration
                "bogus": "1d",                   // no such setting
            }, "monitoring_config": {"metrics_enabled": false}}),
        )
        .await;
    let body = e.err("VALIDATION_ERROR").clone();
    let fields: Vec<&str> = body["details"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    for f in [
        "retention.purge_after",
        "retention.bogus",
        "retention.expire_after",
        "monitoring_config",
    ] {
        assert!(fields.contains(&f), "{f} missing from {body}");
    }
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("retention.purge_after") && msg.contains("retention.bogus"));
    assert_eq!(get(&s).await["retention"]["dormant_after"], "7d");

    // Missing payload, zero duration, wrong type.
    s.call(
        "update_configuration",
        json!({"config_section": "retention"}),
    )
    .await
    .err("VALIDATION_ERROR");
    let body = s
        .call(
            "update_configuration",
            json!({"configSection": "all",
                   "monitoringConfig": {"slowCallThreshold": "0s", "metrics_enabled": "yes"},
                   "backups_config": {"max_backups": 0}}),
        )
        .await
        .err("VALIDATION_ERROR")
        .clone();
    let n = body["details"]["problems"].as_array().unwrap().len();
    assert_eq!(n, 3, "{body}");

    // validate_only: the reply says what would change; nothing does.
    let v = s
        .call(
            "update_configuration",
            json!({"configSection": "retention", "retentionPolicy": {"dormantAfter": "3d"},
                   "validateOnly": true}),
        )
        .await
        .ok()
        .clone();
    assert_eq!(v["validate_only"], true);
    assert_eq!(v["changes"][0]["key"], "retention.dormant_after");
    assert_eq!(v["changes"][0]["new_value"], "3d");
    assert_eq!(get(&s).await["retention"]["dormant_after"], "7d");

    // A real update: live keys and restart keys reported.
    let u = s
        .call(
            "update_configuration",
            json!({"config_section": "all", "updated_by": "ops-bot",
                   "retention_policy": {"dormant_after": "3d", "purge_after": "400d"},
                   "analytics_config": {"rollup_interval": "2h"}}),
        )
        .await
        .ok()
        .clone();
    assert_eq!(u["validate_only"], false);
    assert_eq!(u["changes"].as_array().unwrap().len(), 3, "{u}");
    assert_eq!(u["restart_required"], json!(["analytics.rollup_interval"]));
    assert_eq!(
        u["applied_live"],
        json!(["retention.dormant_after", "retention.purge_after"])
    );
    assert_eq!(u["configuration"]["retention"]["dormant_after"], "3d");

    // Visible in the tool and the resource at once.
    let c = get(&s).await;
    assert_eq!(c["retention"]["dormant_after"], "3d");
    assert_eq!(c["retention"]["purge_after"], "400d");
    assert_eq!(c["analytics"]["rollup_interval"], "2h");
    let r = s.read("handoff://configuration").await.unwrap();
    assert_eq!(r["configuration"]["retention"]["dormant_after"], "3d");
    let m = &r["metadata"]["retention.dormant_after"];
    assert_eq!(m["source"], "runtime");
    assert_eq!(m["updated_by"], "ops-bot");
    assert_eq!(r["pending_restart"], json!(["analytics.rollup_interval"]));
    assert!(s.close().await.success());

    // Persisted: a restarted server runs with the update (and the restart
    // key is no longer pending).
    let s = Server::start(&db, &[]).await;
    let body = s
        .call("get_configuration", json!({"include_metadata": true}))
        .await
        .ok()
        .clone();
    assert_eq!(body["configuration"]["retention"]["dormant_after"], "3d");
    assert_eq!(body["configuration"]["analytics"]["rollup_interval"], "2h");
    assert_eq!(body["pending_restart"], json!([]));
    assert_eq!(
        body["metadata"]["retention.purge_after"]["updated_by"],
        "ops-bot"
    );
    assert!(s.close().await.success());

    // Audited: one row for the update, no secrets, chain intact.
    let rows = common::sql_rows(
        &db,
        "SELECT action, actor, details FROM audit_log WHERE action LIKE 'configuration.%' ORDER BY seq",
    )
    .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0].as_deref(), Some("configuration.updated"));
    // The actor is who the transport says called; the name the client gave
    // (`updated_by`) is kept as what it claimed.
    assert_eq!(rows[0][1].as_deref(), Some("stdio"));
    let details: Value = serde_json::from_str(rows[0][2].as_deref().unwrap()).unwrap();
    assert_eq!(details["claimed_by"], "ops-bot");
    assert_eq!(details["changes"].as_array().unwrap().len(), 3);
    assert_eq!(
        details["restart_required"],
        json!(["analytics.rollup_interval"])
    );
    let out = Command::new(common::BIN)
        .args(["audit", "verify"])
        .env("HANDOFF_DATABASE_URL", db.url())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn backup_restore_round_trip_and_errors() {
    let db = DbDir::new();
    let s = Server::start(&db, &[]).await;

    let c = s
        .call(
            "manage_configuration_backup",
            json!({"action": "create", "backup_name": "before", "description": "defaults"}),
        )
        .await
        .ok()
        .clone();
    let b = &c["backup"];
    let id = b["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36);
    assert_eq!(b["name"], "before");
    assert_eq!(b["description"], "defaults");
    // Keyed blake3 under the audit key: `k1:{key id}:{64 hex}`.
    assert!(b["checksum"].as_str().unwrap().starts_with("k1:"));
    assert!(b["size_bytes"].as_i64().unwrap() > 0);
    assert_eq!(c["configuration"]["retention"]["dormant_after"], "7d");

    // `operation` is an alias of `action`; list and the resource agree.
    let l = s
        .call("manage_configuration_backup", json!({"operation": "list"}))
        .await
        .ok()
        .clone();
    assert_eq!(l["backups"].as_array().unwrap().len(), 1);
    assert_eq!(l["backups"][0]["id"], id);
    let r = s.read("handoff://configuration/backups").await.unwrap();
    assert_eq!(
        r,
        json!([{"id": id, "name": "before", "created_at": b["created_at"],
                "checksum": b["checksum"], "size_bytes": b["size_bytes"]}])
    );
    s.call(
        "manage_configuration_backup",
        json!({"action": "list", "operation": "list"}),
    )
    .await
    .err("VALIDATION_ERROR");

    // Change, then restore: the old values come back.
    s.call(
        "update_configuration",
        json!({"config_section": "retention", "retention_policy": {"expire_after": "20d", "dormant_after": "1d"}}),
    )
    .await
    .ok();
    assert_eq!(get(&s).await["retention"]["expire_after"], "20d");
    let restored = s
        .call(
            "manage_configuration_backup",
            json!({"action": "restore", "backupId": id}),
        )
        .await
        .ok()
        .clone();
    assert_eq!(
        restored["changes"].as_array().unwrap().len(),
        2,
        "{restored}"
    );
    assert_eq!(restored["restart_required"], json!([]));
    let c = get(&s).await;
    assert_eq!(c["retention"]["expire_after"], "30d");
    assert_eq!(c["retention"]["dormant_after"], "7d");

    // Unknown backup, missing id.
    let unknown = "01900000-0000-7000-8000-000000000000";
    for action in ["restore", "delete"] {
        let e = s
            .call(
                "manage_configuration_backup",
                json!({"action": action, "backup_id": unknown}),
            )
            .await;
        assert_eq!(e.err("NOT_FOUND")["details"]["backup_id"], unknown);
    }
    s.call("manage_configuration_backup", json!({"action": "restore"}))
        .await
        .err("VALIDATION_ERROR");
    s.call("manage_configuration_backup", json!({"action": "explode"}))
        .await
        .err("VALIDATION_ERROR");

    // Tamper with the stored backup: restore refuses, nothing changes.
    s.call(
        "update_configuration",
        json!({"config_section": "retention", "retention_policy": {"dormant_after": "2d"}}),
    )
    .await
    .ok();
    {
        let id = id.as_str();
        let changed = common::sql_rows(
            &db,
            &format!(
                "UPDATE configuration_backups SET body = replace(body, '\"7d\"', '\"6d\"') \
                 WHERE CAST(id AS TEXT) = '{id}' RETURNING id"
            ),
        )
        .await;
        assert_eq!(changed.len(), 1);
    }
    let e = s
        .call(
            "manage_configuration_backup",
            json!({"action": "restore", "backup_id": id}),
        )
        .await;
    let body = e.err("VALIDATION_ERROR");
    assert_eq!(body["details"]["reason"], "checksum_mismatch");
    assert_eq!(get(&s).await["retention"]["dormant_after"], "2d");

    // Delete.
    let d = s
        .call(
            "manage_configuration_backup",
            json!({"action": "delete", "backup_id": id}),
        )
        .await
        .ok()
        .clone();
    assert_eq!(d["backup"]["id"], id);
    assert_eq!(
        s.read("handoff://configuration/backups").await.unwrap(),
        json!([])
    );
    assert!(s.close().await.success());

    // Audited: create, update, restore, update, delete (the refused restore
    // changed nothing and left no row).
    let actions: Vec<String> = common::sql_rows(
        &db,
        "SELECT action FROM audit_log WHERE action LIKE 'configuration.%' ORDER BY seq",
    )
    .await
    .into_iter()
    .map(|r| r[0].clone().unwrap())
    .collect();
    assert_eq!(
        actions,
        [
            "configuration.backup_created",
            "configuration.updated",
            "configuration.restored",
            "configuration.updated",
            "configuration.backup_deleted"
        ]
    );
}

#[tokio::test]
async fn max_backups_prunes_the_oldest() {
    let db = DbDir::new();
    let s = Server::start(&db, &[("HANDOFF_BACKUPS__MAX_BACKUPS", "2")]).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let c = s
            .call(
                "manage_configuration_backup",
                json!({"action": "create", "backup_name": format!("b{i}")}),
            )
            .await
            .ok()
            .clone();
        ids.push(c["backup"]["id"].as_str().unwrap().to_string());
        if i == 2 {
            assert_eq!(c["pruned"], json!([ids[0]]));
        }
    }
    let list = s.read("handoff://configuration/backups").await.unwrap();
    let listed: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[2].as_str(), ids[1].as_str()]);
    s.close().await;
}

#[tokio::test]
async fn nested_env_overrides_at_start_up() {
    let db = DbDir::new();
    let s = Server::start(
        &db,
        &[
            ("HANDOFF_RETENTION__DORMANT_AFTER", "2d"),
            ("HANDOFF_MONITORING__METRICS_ENABLED", "false"),
            ("HANDOFF_RETENTION__BOGUS", "1d"),
        ],
    )
    .await;
    let body = s
        .call("get_configuration", json!({"include_metadata": true}))
        .await
        .ok()
        .clone();
    assert_eq!(body["configuration"]["retention"]["dormant_after"], "2d");
    assert_eq!(
        body["configuration"]["monitoring"]["metrics_enabled"],
        false
    );
    assert_eq!(
        body["metadata"]["retention.dormant_after"]["source"],
        "startup"
    );
    // Flat variables keep working beside the nested ones (HANDOFF_LOG and
    // HANDOFF_DATABASE_URL are set by the harness).
    s.call(
        "register_session",
        json!({"session_key": "k", "agent_from": "a"}),
    )
    .await
    .ok();
    s.close().await;
    let log = std::fs::read_to_string(db.stderr_log()).unwrap();
    assert!(
        log.contains("HANDOFF_RETENTION__BOGUS"),
        "unknown nested variable not reported: {log}"
    );

    // An invalid nested value stops start-up, naming the setting.
    let out = Command::new(common::BIN)
        .arg("migrate")
        .env("HANDOFF_DATABASE_URL", db.url())
        .env("HANDOFF_RETENTION__DORMANT_AFTER", "60d")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("retention.expire_after") && err.contains("HANDOFF_RETENTION__EXPIRE_AFTER"),
        "{err}"
    );
    let out = Command::new(common::BIN)
        .arg("migrate")
        .env("HANDOFF_DATABASE_URL", db.url())
        .env("HANDOFF_RETENTION__PURGE_AFTER", "soon")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_ascii_lowercase()
            .contains("retention.purge_after"),
        "{out:?}"
    );
}
