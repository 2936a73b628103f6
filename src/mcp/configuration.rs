//! The runtime configuration service behind `get_configuration`,
//! `update_configuration`, `manage_configuration_backup` and the
//! `handoff://configuration` resources: loading the stored overrides at
//! start-up, rendering snapshots, committing changes (database first, then
//! the live cell) and auditing them.

use std::collections::BTreeMap;
use std::sync::Arc;

use handoff_actors::audit::AuditEvent;
use handoff_actors::model::{now, rfc3339};
use handoff_actors::HandoffError;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::context::Ctx;
use crate::config::{env_name, Config};
use crate::settings::{applies_live, Effective, Override, Problem, Section, Settings};
use crate::storage::{ConfigBackupInfo, ConfigOverride, Database};

/// Fill the live cell at start-up: the start-up sections overlaid with the
/// overrides stored in the database. A database that cannot store
/// overrides, or stored overrides that no longer fit the start-up values
/// (the file or environment changed meanwhile), leave the start-up values in
/// force, with a warning: refusing to start would leave no way to fix them
/// with `update_configuration`.
pub async fn init(cfg: &Config, db: &Arc<dyn Database>) {
    let startup = cfg.settings();
    let fallback = || Effective::overlay(startup.clone(), BTreeMap::new()).unwrap_or_default();
    let effective = match db.config_overrides().await {
        Ok(rows) => {
            let overrides = rows
                .into_iter()
                .map(|r| {
                    (
                        format!("{}.{}", r.section, r.key),
                        Override {
                            value: r.value,
                            updated_at: r.updated_at,
                            updated_by: r.updated_by,
                        },
                    )
                })
                .collect();
            match Effective::overlay(startup.clone(), overrides) {
                Ok(e) => e,
                Err(problems) => {
                    tracing::warn!(
                        problems = ?problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>(),
                        "stored configuration overrides are invalid with the start-up configuration; running with the start-up values"
                    );
                    fallback()
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %crate::logging::redact(&e.to_string()), "cannot read stored configuration overrides; running with the start-up values");
            fallback()
        }
    };
    cfg.live.set(effective);
}

/// The VALIDATION_ERROR for a list of problems: every one in
/// `details.problems`, and in the message.
pub fn invalid(problems: Vec<Problem>) -> HandoffError {
    let text = problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.message))
        .collect::<Vec<_>>()
        .join("; ");
    let fields: Vec<String> = problems.iter().map(|p| p.field.clone()).collect();
    HandoffError::validation(format!(
        "invalid configuration ({} problem{}): {text}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    ))
    .detail(
        "problems",
        serde_json::to_value(&problems).unwrap_or_default(),
    )
    .detail("fields", fields)
}

/// The sections `only` selects (all when `None`), as `{section: {...}}`.
pub fn sections_json(s: &Settings, only: Option<Section>) -> Map<String, Value> {
    s.to_json()
        .into_iter()
        .filter(|(k, _)| only.is_none_or(|o| o.as_str() == k))
        .collect()
}

/// Per key: where its value comes from and when it takes effect.
pub fn metadata(e: &Effective, only: Option<Section>) -> Map<String, Value> {
    let defaults: BTreeMap<String, Value> = Settings::default().flatten().into_iter().collect();
    let startup: BTreeMap<String, Value> = e.startup.flatten().into_iter().collect();
    let pending = e.pending_restart();
    e.settings
        .flatten()
        .into_iter()
        .filter(|(k, _)| only.is_none_or(|o| k.starts_with(&format!("{}.", o.as_str()))))
        .map(|(k, v)| {
            let ov = e.overrides.get(&k);
            let source = if ov.is_some() {
                "runtime"
            } else if startup.get(&k) != defaults.get(&k) {
                "startup"
            } else {
                "default"
            };
            let meta = json!({
                "value": v,
                "default": defaults.get(&k),
                "startup_value": startup.get(&k),
                "source": source,
                "applies": if applies_live(&k) { "live" } else { "restart" },
                "pending_restart": pending.contains(&k),
                "env": env_name(&k),
                "updated_at": ov.map(|o| o.updated_at.clone()),
                "updated_by": ov.and_then(|o| o.updated_by.clone()),
            });
            (k, meta)
        })
        .collect()
}

/// One changed setting.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Change {
    /// `section.key`.
    pub key: String,
    pub old_value: Value,
    pub new_value: Value,
    /// `live` (in force now) or `restart` (in force after a restart).
    pub applies: String,
}

/// The settings that differ between `old` and `new`.
pub fn diff(old: &Settings, new: &Settings) -> Vec<Change> {
    let before: BTreeMap<String, Value> = old.flatten().into_iter().collect();
    new.flatten()
        .into_iter()
        .filter_map(|(k, v)| {
            let o = before.get(&k).cloned().unwrap_or(Value::Null);
            (o != v).then(|| Change {
                applies: if applies_live(&k) { "live" } else { "restart" }.into(),
                key: k,
                old_value: o,
                new_value: v,
            })
        })
        .collect()
}

pub fn restart_required(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .filter(|c| c.applies == "restart")
        .map(|c| c.key.clone())
        .collect()
}

/// Store `overrides` (all of them, replacing what is stored) and make
/// `settings` effective. The caller holds `cfg.live.writer`.
pub async fn commit(
    ctx: &Ctx,
    current: &Effective,
    overrides: BTreeMap<String, Override>,
    settings: Settings,
) -> Result<Effective, HandoffError> {
    let rows: Vec<ConfigOverride> = overrides
        .iter()
        .filter_map(|(k, o)| {
            let (section, key) = k.split_once('.')?;
            Some(ConfigOverride {
                section: section.into(),
                key: key.into(),
                value: o.value.clone(),
                updated_at: o.updated_at.clone(),
                updated_by: o.updated_by.clone(),
            })
        })
        .collect();
    ctx.storage
        .run(ctx.storage.db.replace_config_overrides(&rows))
        .await?;
    let next = Effective {
        startup: current.startup.clone(),
        overrides,
        settings,
        at_start: current.at_start.clone(),
    };
    ctx.cfg.live.set(next.clone());
    Ok(next)
}

/// The overrides after `changes`, stamped with who and when.
pub fn overrides_after(
    current: &BTreeMap<String, Override>,
    changes: &[Change],
    updated_by: Option<&str>,
    at: &str,
) -> BTreeMap<String, Override> {
    let mut out = current.clone();
    for c in changes {
        out.insert(
            c.key.clone(),
            Override {
                value: c.new_value.clone(),
                updated_at: at.to_string(),
                updated_by: updated_by.map(str::to_string),
            },
        );
    }
    out
}

/// Append to the hash-chained audit log (no secrets: the runtime-managed
/// sections hold none). The actor is the caller the transport established;
/// the name a client gave itself (`updated_by`) is kept beside it as
/// `claimed_by`, since anyone can type any name there.
pub fn audit(ctx: &Ctx, action: &'static str, claimed_by: Option<&str>, mut details: Value) {
    if let Value::Object(m) = &mut details {
        m.insert("claimed_by".into(), claimed_by.into());
    }
    ctx.core.audit().record(AuditEvent {
        action,
        tenant: ctx.tenant.to_string(),
        actor: Some(ctx.caller.principal.to_string()),
        subject_hash: None,
        details,
    });
}

/// A backup as listings show it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BackupView {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: String,
    /// Keyed blake3 of the backup's id and canonical JSON, `k1:{key id}:{hex}`.
    pub checksum: String,
    pub size_bytes: i64,
}

impl From<ConfigBackupInfo> for BackupView {
    fn from(b: ConfigBackupInfo) -> Self {
        BackupView {
            id: b.id,
            name: b.name,
            description: b.description,
            created_at: b.created_at,
            checksum: b.checksum,
            size_bytes: b.size_bytes,
        }
    }
}

/// The `handoff://configuration` payload.
pub fn resource(ctx: &Ctx) -> Value {
    let e = ctx.cfg.live.get();
    json!({
        "configuration": sections_json(&e.settings, None),
        "metadata": metadata(&e, None),
        "pending_restart": e.pending_restart(),
        "generated_at": rfc3339(&now()),
    })
}

/// The `handoff://configuration/backups` payload.
pub async fn backups_resource(ctx: &Ctx) -> Result<Value, HandoffError> {
    let list = ctx.storage.run(ctx.storage.db.config_backups()).await?;
    Ok(Value::Array(
        list.into_iter()
            .map(|b| {
                json!({"id": b.id, "name": b.name, "created_at": b.created_at,
                       "checksum": b.checksum, "size_bytes": b.size_bytes})
            })
            .collect(),
    ))
}
