//! `manage_configuration_backup`: create, list, restore and delete backups
//! of the runtime configuration. A backup is the canonical JSON of every
//! runtime-managed section with its checksum, keyed blake3 under the audit
//! key (`crate::audit::backup_checksum`), which the database role cannot
//! read; restore verifies the checksum and the schema before it changes
//! anything.

use handoff_actors::audit::Mismatch;
use handoff_actors::model::{now, rfc3339};
use handoff_actors::{ErrorCode, HandoffError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::mcp::args::{self, ToolArgs};
use crate::mcp::configuration::{self, BackupView, Change};
use crate::mcp::context::Ctx;
use crate::settings::Settings;
use crate::storage::{ConfigBackup, ConfigBackupInfo};

pub const NAME: &str = "manage_configuration_backup";
pub const DESCRIPTION: &str =
    "Back up and restore the runtime configuration. action (alias operation): create \
(backup_name?, description?), list, restore (backup_id, or backup_name for the newest backup \
of that name) or delete (backup_id). Restore verifies the backup's keyed blake3 checksum and \
the configuration schema first; a tampered or invalid backup changes nothing. Unknown backup: \
NOT_FOUND.";

const MAX_DESCRIPTION_BYTES: usize = 1000;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    List,
    Restore,
    Delete,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// create | list | restore | delete (also accepted as `operation`).
    pub action: Action,
    /// The backup to restore or delete.
    pub backup_id: Option<String>,
    /// A name for a new backup (default: `backup-<time>`); for restore and
    /// delete without backup_id, the newest backup of this name.
    pub backup_name: Option<String>,
    /// A note kept with a new backup.
    pub description: Option<String>,
}

impl ToolArgs for Args {
    const ALIASES: &'static [(&'static str, &'static str)] = &[("operation", "action")];
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
    pub action: Action,
    pub message: String,
    /// The backup created, restored or deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupView>,
    /// list: every backup, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backups: Option<Vec<BackupView>>,
    /// create: older backups deleted to stay within backups.max_backups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned: Option<Vec<String>>,
    /// restore: the settings the restore changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<Change>>,
    /// restore: changed keys that take effect after a restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_required: Option<Vec<String>>,
    /// create and restore: the configuration the backup holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configuration: Option<Map<String, Value>>,
}

impl Out {
    fn new(action: Action, message: String) -> Self {
        Out {
            success: true,
            action,
            message,
            backup: None,
            backups: None,
            pruned: None,
            changes: None,
            restart_required: None,
            configuration: None,
        }
    }
}

fn not_found(id: &str) -> HandoffError {
    HandoffError::new(ErrorCode::NotFound, format!("no configuration backup {id}"))
        .detail("backup_id", id)
}

/// The backup `backup_id` names, or the newest one named `backup_name`.
async fn find(ctx: &Ctx, a: &Args) -> Result<ConfigBackupInfo, HandoffError> {
    let list = ctx.storage.run(ctx.storage.db.config_backups()).await?;
    match (&a.backup_id, &a.backup_name) {
        (Some(id), _) => list
            .into_iter()
            .find(|b| &b.id == id)
            .ok_or_else(|| not_found(id)),
        (None, Some(name)) => list.into_iter().find(|b| &b.name == name).ok_or_else(|| {
            HandoffError::new(
                ErrorCode::NotFound,
                format!("no configuration backup named {name}"),
            )
            .detail("backup_name", name.as_str())
        }),
        (None, None) => Err(HandoffError::validation(format!(
            "backup_id is required for {}",
            if a.action == Action::Restore {
                "restore"
            } else {
                "delete"
            }
        ))
        .detail("field", "backup_id")),
    }
}

async fn create(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    let created_at = rfc3339(&now());
    let name = a
        .backup_name
        .clone()
        .unwrap_or_else(|| format!("backup-{created_at}"));
    args::agent_id(&ctx.cfg, "backup_name", &name)?;
    if let Some(d) = &a.description {
        if d.len() > MAX_DESCRIPTION_BYTES || d.chars().any(|c| c.is_control() && c != '\n') {
            return Err(HandoffError::validation(format!(
                "description must be at most {MAX_DESCRIPTION_BYTES} bytes without control characters"
            ))
            .detail("field", "description"));
        }
    }
    let e = ctx.cfg.live.get();
    let body = e.settings.canonical_json();
    let id = uuid::Uuid::now_v7().to_string();
    let info = ConfigBackupInfo {
        checksum: crate::audit::backup_checksum(crate::audit::installed()?, &id, &body),
        id,
        name,
        description: a.description.clone(),
        created_at,
        size_bytes: body.len() as i64,
    };
    let backup = ConfigBackup {
        info: info.clone(),
        body,
    };
    let pruned = ctx
        .storage
        .run(
            ctx.storage
                .db
                .insert_config_backup(&backup, e.settings.backups.max_backups),
        )
        .await?;
    configuration::audit(
        &ctx,
        "configuration.backup_created",
        None,
        json!({"backup_id": info.id, "name": info.name, "checksum": info.checksum, "pruned": pruned}),
    );
    let mut out = Out::new(Action::Create, format!("backup {} created", info.id));
    out.backup = Some(info.into());
    out.pruned = Some(pruned);
    out.configuration = Some(configuration::sections_json(&e.settings, None));
    Ok(out)
}

async fn restore(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    let info = find(&ctx, &a).await?;
    let _guard = ctx.cfg.live.writer.lock().await;
    let backup = ctx
        .storage
        .run(ctx.storage.db.config_backup(&info.id))
        .await?
        .ok_or_else(|| not_found(&info.id))?;
    let key = crate::audit::installed()?;
    let b = &backup.info;
    if let Err(m) = crate::audit::check_backup(key, &b.id, &backup.body, &b.checksum) {
        // Only why, never the checksum the key gives this body: that would
        // hand whoever altered the row the checksum to write next to it.
        let (reason, why) = match m {
            Mismatch::Unkeyed | Mismatch::Malformed => (
                "unkeyed_checksum",
                "its checksum is not keyed (taken before backups were keyed, or rewritten)",
            ),
            Mismatch::OtherKey(_) => ("other_key", "its checksum was made with another audit key"),
            Mismatch::Differs => (
                "checksum_mismatch",
                "it fails its checksum check (it was altered after it was taken)",
            ),
        };
        return Err(HandoffError::validation(format!(
            "backup {} cannot be trusted: {why}; nothing was restored",
            b.id
        ))
        .detail("backup_id", b.id.as_str())
        .detail("reason", reason));
    }
    let restored: Settings = serde_json::from_str(&backup.body).map_err(|e| {
        HandoffError::validation(format!(
            "backup {} does not match the configuration schema: {e}; nothing was restored",
            backup.info.id
        ))
        .detail("backup_id", backup.info.id.as_str())
    })?;
    let problems = restored.validate();
    if !problems.is_empty() {
        return Err(configuration::invalid(problems).detail("backup_id", backup.info.id.as_str()));
    }
    let current = ctx.cfg.live.get();
    let changes = configuration::diff(&current.settings, &restored);
    let restart_required = configuration::restart_required(&changes);
    // Every key of the backup becomes an override: the restored
    // configuration is exactly the backup's, whatever the start-up values.
    let at = rfc3339(&now());
    let by = format!("restore:{}", backup.info.id);
    let all: Vec<Change> = restored
        .flatten()
        .into_iter()
        .map(|(key, v)| Change {
            key,
            old_value: Value::Null,
            new_value: v,
            applies: String::new(),
        })
        .collect();
    let mut overrides = configuration::overrides_after(&Default::default(), &all, Some(&by), &at);
    // Keep the stamps of overrides the restore leaves unchanged.
    for (k, o) in overrides.iter_mut() {
        if let Some(prev) = current.overrides.get(k) {
            if prev.value == o.value {
                *o = prev.clone();
            }
        }
    }
    configuration::commit(&ctx, &current, overrides, restored.clone()).await?;
    configuration::audit(
        &ctx,
        "configuration.restored",
        None,
        json!({"backup_id": backup.info.id, "name": backup.info.name,
               "checksum": backup.info.checksum, "changes": changes,
               "restart_required": restart_required}),
    );
    let mut out = Out::new(
        Action::Restore,
        format!(
            "backup {} restored; {} setting(s) changed",
            backup.info.id,
            changes.len()
        ),
    );
    out.backup = Some(backup.info.into());
    out.changes = Some(changes);
    out.restart_required = Some(restart_required);
    out.configuration = Some(configuration::sections_json(&restored, None));
    Ok(out)
}

async fn delete(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    let info = find(&ctx, &a).await?;
    let gone = ctx
        .storage
        .run(ctx.storage.db.delete_config_backup(&info.id))
        .await?;
    if !gone {
        return Err(not_found(&info.id));
    }
    configuration::audit(
        &ctx,
        "configuration.backup_deleted",
        None,
        json!({"backup_id": info.id, "name": info.name, "checksum": info.checksum}),
    );
    let mut out = Out::new(Action::Delete, format!("backup {} deleted", info.id));
    out.backup = Some(info.into());
    Ok(out)
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    // Listing changes nothing; create prunes the oldest backups, restore
    // and delete change or erase what everyone runs with.
    if a.action != Action::List {
        ctx.require_admin("manage_configuration_backup create/restore/delete")?;
    }
    match a.action {
        Action::Create => create(ctx, a).await,
        Action::List => {
            let list = ctx.storage.run(ctx.storage.db.config_backups()).await?;
            let mut out = Out::new(Action::List, format!("{} backup(s)", list.len()));
            out.backups = Some(list.into_iter().map(BackupView::from).collect());
            Ok(out)
        }
        Action::Restore => restore(ctx, a).await,
        Action::Delete => delete(ctx, a).await,
    }
}
