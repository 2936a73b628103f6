//! `update_configuration`: change runtime settings. Every value is checked
//! against the one schema (`crate::settings`); all problems are reported
//! together. The change is stored in the database, made effective, and
//! written to the audit log; the reply says which keys applied live and
//! which need a restart.

use handoff_actors::model::{now, rfc3339};
use handoff_actors::HandoffError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::get_configuration::SectionArg;
use crate::mcp::args::{self, ToolArgs};
use crate::mcp::configuration::{self, Change};
use crate::mcp::context::Ctx;
use crate::settings::{Problem, Section};

pub const NAME: &str = "update_configuration";
pub const DESCRIPTION: &str =
    "Change runtime configuration. config_section names the section; give its new values \
(only the keys to change) in retention_policy {dormant_after, expire_after, archive_after, \
purge_after}, monitoring_config {metrics_enabled, slow_call_threshold}, analytics_config \
{enabled, rollup_interval} or backups_config {max_backups}; with config_section all, any of \
them. Durations are humantime strings (\"7d\", \"12h\"); retention must satisfy dormant_after < \
expire_after < archive_after < purge_after. Invalid values: VALIDATION_ERROR listing every \
problem. validate_only checks without changing anything. The reply lists the changes and which \
keys need a restart (restart_required).";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// retention | monitoring | analytics | backups | all.
    pub config_section: SectionArg,
    /// New retention values: dormant_after, expire_after, archive_after,
    /// purge_after (humantime strings).
    pub retention_policy: Option<Map<String, Value>>,
    /// New monitoring values: metrics_enabled (bool), slow_call_threshold
    /// (humantime).
    pub monitoring_config: Option<Map<String, Value>>,
    /// New analytics values: enabled (bool), rollup_interval (humantime).
    pub analytics_config: Option<Map<String, Value>>,
    /// New backups values: max_backups (1–1000).
    pub backups_config: Option<Map<String, Value>>,
    /// Who makes the change (recorded with it and in the audit log).
    pub updated_by: Option<String>,
    /// Check only; change nothing (default false).
    pub validate_only: Option<bool>,
}

impl ToolArgs for Args {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
    pub message: String,
    pub config_section: SectionArg,
    pub validate_only: bool,
    /// The settings that change (or would, with validate_only).
    pub changes: Vec<Change>,
    /// Keys changed that are in force now.
    pub applied_live: Vec<String>,
    /// Keys changed that take effect after a restart.
    pub restart_required: Vec<String>,
    /// The effective values of the section(s) after the update.
    pub configuration: Map<String, Value>,
    pub updated_by: Option<String>,
    pub updated_at: Option<String>,
}

/// One section's new values, as given.
type Payload<'a> = (&'static str, Section, Option<&'a Map<String, Value>>);

/// (argument name, section, values) of each payload.
fn payloads(a: &Args) -> [Payload<'_>; 4] {
    [
        (
            "retention_policy",
            Section::Retention,
            a.retention_policy.as_ref(),
        ),
        (
            "monitoring_config",
            Section::Monitoring,
            a.monitoring_config.as_ref(),
        ),
        (
            "analytics_config",
            Section::Analytics,
            a.analytics_config.as_ref(),
        ),
        (
            "backups_config",
            Section::Backups,
            a.backups_config.as_ref(),
        ),
    ]
}

/// The `section.key` values asked for, or every problem with the request.
fn requested(a: &Args) -> (Vec<(String, Value)>, Vec<Problem>) {
    let mut values = Vec::new();
    let mut problems = Vec::new();
    let wanted = a.config_section.section();
    let mut given = 0;
    for (arg, section, payload) in payloads(a) {
        let Some(p) = payload else {
            if wanted == Some(section) {
                problems.push(Problem::new(
                    arg,
                    format!("required when config_section is {}", section.as_str()),
                ));
            }
            continue;
        };
        given += 1;
        if wanted.is_some_and(|w| w != section) {
            problems.push(Problem::new(
                arg,
                format!(
                    "belongs to config_section {}, not {}",
                    section.as_str(),
                    wanted.map(Section::as_str).unwrap_or("all")
                ),
            ));
            continue;
        }
        if p.is_empty() {
            problems.push(Problem::new(arg, "names no setting to change"));
        }
        let mut seen: Vec<(String, &str)> = Vec::new();
        for (k, v) in p {
            let canon = args::snake_case(k);
            let key = format!("{}.{canon}", section.as_str());
            if let Some((_, first)) = seen.iter().find(|(c, _)| *c == canon) {
                problems.push(Problem::new(
                    key,
                    format!("given twice (as '{first}' and '{k}')"),
                ));
                continue;
            }
            seen.push((canon, k));
            values.push((key, v.clone()));
        }
    }
    if wanted.is_none() && given == 0 {
        problems.push(Problem::new(
            "config_section",
            "all needs at least one of retention_policy, monitoring_config, analytics_config, backups_config",
        ));
    }
    (values, problems)
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    ctx.require_admin(NAME)?;
    let (values, mut problems) = requested(&a);
    if let Some(by) = &a.updated_by {
        if let Err(e) = args::agent_id(&ctx.cfg, "updated_by", by) {
            problems.push(Problem::new("updated_by", e.message));
        }
    }
    let validate_only = a.validate_only.unwrap_or(false);
    // Read-modify-write under the writer lock, so concurrent updates do not
    // lose each other (configuration changes are rare; contention is not a
    // concern).
    let _guard = ctx.cfg.live.writer.lock().await;
    let current = ctx.cfg.live.get();
    let new = match current.settings.with_values(&values) {
        Ok(s) if problems.is_empty() => s,
        Ok(_) => return Err(configuration::invalid(problems)),
        Err(more) => {
            problems.extend(more);
            return Err(configuration::invalid(problems));
        }
    };
    let changes = configuration::diff(&current.settings, &new);
    let restart_required = configuration::restart_required(&changes);
    let applied_live: Vec<String> = changes
        .iter()
        .filter(|c| c.applies == "live")
        .map(|c| c.key.clone())
        .collect();
    let only = a.config_section.section();
    if validate_only {
        return Ok(Out {
            success: true,
            message: format!(
                "valid; {} setting(s) would change (nothing was changed)",
                changes.len()
            ),
            config_section: a.config_section,
            validate_only,
            changes,
            applied_live: Vec::new(),
            restart_required,
            configuration: configuration::sections_json(&new, only),
            updated_by: a.updated_by,
            updated_at: None,
        });
    }
    let at = rfc3339(&now());
    if !changes.is_empty() {
        let overrides = configuration::overrides_after(
            &current.overrides,
            &changes,
            a.updated_by.as_deref(),
            &at,
        );
        configuration::commit(&ctx, &current, overrides, new.clone()).await?;
        configuration::audit(
            &ctx,
            "configuration.updated",
            a.updated_by.as_deref(),
            json!({
                "config_section": a.config_section,
                "changes": changes,
                "restart_required": restart_required,
            }),
        );
    }
    Ok(Out {
        success: true,
        message: if changes.is_empty() {
            "nothing to change: the values are already in effect".into()
        } else if restart_required.is_empty() {
            format!("{} setting(s) changed and in effect", changes.len())
        } else {
            format!(
                "{} setting(s) changed; {} take effect after a restart",
                changes.len(),
                restart_required.len()
            )
        },
        config_section: a.config_section,
        validate_only,
        changes,
        applied_live,
        restart_required,
        configuration: configuration::sections_json(&new, only),
        updated_by: a.updated_by,
        updated_at: Some(at),
    })
}
