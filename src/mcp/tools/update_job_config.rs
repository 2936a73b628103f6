//! `update_job_config`: change a job's schedule and retry policy. Every
//! problem with the request is reported together; the change is stored
//! (it survives restarts), takes effect at once (the next run is an
//! interval from now) and is written to the audit log.

use std::time::Duration;

use handoff_actors::audit::AuditEvent;
use handoff_actors::jobs::JobConfig;
use handoff_actors::model::{now, rfc3339};
use handoff_actors::HandoffError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::jobs::config_json;
use crate::mcp::args::{self, ToolArgs};
use crate::mcp::configuration::invalid;
use crate::mcp::context::Ctx;
use crate::settings::bounds;
use crate::settings::Problem;

pub const NAME: &str = "update_job_config";
pub const DESCRIPTION: &str =
    "Change a background job's config: config {interval (humantime, e.g. \"30m\") or \
interval_ms, enabled, max_retries (0–10), retry_delay_ms (0–3600000)} — only the keys to change \
(camelCase accepted). The next run is one interval from now. Invalid values: VALIDATION_ERROR \
listing every problem; unknown job_name: NOT_FOUND. Stored across restarts and audited.";

const MAX_RETRIES: u64 = crate::settings::bounds::MAX_JOB_RETRIES as u64;

/// The published shape of `config` (parsed by hand, so that every problem
/// in it is reported at once).
#[derive(Debug, Deserialize, JsonSchema)]
#[allow(dead_code)]
pub struct ConfigArg {
    /// Humantime duration ("30s", "15m", "1h"); at least 1s, at most 30d.
    interval: Option<String>,
    /// The interval in milliseconds (instead of `interval`).
    interval_ms: Option<u64>,
    enabled: Option<bool>,
    /// Further attempts after a failed one, in the same run (0–10).
    max_retries: Option<u32>,
    /// Wait between attempts (0–3600000).
    retry_delay_ms: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// lifecycle | retention | cache_maintenance | analytics_rollup.
    pub job_name: String,
    #[schemars(with = "ConfigArg")]
    pub config: Map<String, Value>,
    /// Who makes the change (kept in the audit log).
    pub updated_by: Option<String>,
}

impl ToolArgs for Args {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Change {
    pub key: String,
    pub old_value: Value,
    pub new_value: Value,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
    pub message: String,
    pub job_name: String,
    pub changes: Vec<Change>,
    /// The job's status after the change (config, next_run_at, …).
    pub job: Value,
    pub updated_by: Option<String>,
    pub updated_at: String,
}

/// `old` with the requested values, or every problem.
fn apply(old: &JobConfig, raw: &Map<String, Value>) -> Result<JobConfig, Vec<Problem>> {
    let mut c = old.clone();
    let mut problems = Vec::new();
    let mut seen: Vec<(String, &str)> = Vec::new();
    if raw.is_empty() {
        problems.push(Problem::new("config", "names no setting to change"));
    }
    for (k, v) in raw {
        let key = args::snake_case(k);
        let field = format!("config.{key}");
        let canon = if key == "interval_ms" {
            "interval"
        } else {
            key.as_str()
        };
        if let Some((_, first)) = seen.iter().find(|(c, _)| c == canon) {
            problems.push(Problem::new(
                &field,
                format!("given twice (as '{first}' and '{k}'); use one"),
            ));
            continue;
        }
        seen.push((canon.to_string(), k));
        match key.as_str() {
            "interval" => match v.as_str().map(|s| humantime::parse_duration(s.trim())) {
                Some(Ok(d)) => c.interval = d,
                Some(Err(e)) => problems.push(Problem::new(
                    &field,
                    format!("{v} is not a duration ({e}); use e.g. \"30m\""),
                )),
                None => problems.push(Problem::new(&field, "must be a humantime string")),
            },
            "interval_ms" => match v.as_u64() {
                Some(ms) => c.interval = Duration::from_millis(ms),
                None => problems.push(Problem::new(&field, "must be a whole number of ms")),
            },
            "enabled" => match v.as_bool() {
                Some(b) => c.enabled = b,
                None => problems.push(Problem::new(&field, "must be true or false")),
            },
            "max_retries" => match v.as_u64().filter(|n| *n <= MAX_RETRIES) {
                Some(n) => c.max_retries = n as u32,
                None => problems.push(Problem::new(
                    &field,
                    format!("must be a whole number 0–{MAX_RETRIES}"),
                )),
            },
            "retry_delay_ms" => match v.as_u64().map(Duration::from_millis) {
                Some(d) => match bounds::check("jobs.retry_delay", d) {
                    None => c.retry_delay = d,
                    Some(m) => problems.push(Problem::new(&field, m)),
                },
                None => problems.push(Problem::new(&field, "must be a whole number of ms")),
            },
            _ => problems.push(Problem::new(&field, "unknown setting")),
        }
    }
    if seen.iter().any(|(k, _)| k == "interval") {
        if let Some(m) = bounds::check("jobs.interval", c.interval) {
            problems.push(Problem::new("config.interval", m));
        }
    }
    if problems.is_empty() {
        Ok(c)
    } else {
        Err(problems)
    }
}

fn changes(old: &JobConfig, new: &JobConfig) -> Vec<Change> {
    let (o, n) = (config_json(old), config_json(new));
    ["interval_ms", "enabled", "max_retries", "retry_delay_ms"]
        .into_iter()
        .filter(|k| o[k] != n[k])
        .map(|k| Change {
            key: k.to_string(),
            old_value: o[k].clone(),
            new_value: n[k].clone(),
        })
        .collect()
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    ctx.require_admin(NAME)?;
    let old = ctx.core.job_status(Some(&a.job_name))?.remove(0).config;
    let mut problems = Vec::new();
    if let Some(by) = &a.updated_by {
        if let Err(e) = args::agent_id(&ctx.cfg, "updated_by", by) {
            problems.push(Problem::new("updated_by", e.message));
        }
    }
    let new = match apply(&old, &a.config) {
        Ok(c) if problems.is_empty() => c,
        Ok(_) => return Err(invalid(problems)),
        Err(more) => {
            problems.extend(more);
            return Err(invalid(problems));
        }
    };
    let changes = changes(&old, &new);
    let at = rfc3339(&now());
    ctx.storage
        .run(
            ctx.storage
                .db
                .save_job_config(&a.job_name, &config_json(&new), &at),
        )
        .await?;
    let status = ctx.core.update_job_config(&a.job_name, new)?;
    ctx.core.audit().record(AuditEvent {
        action: "job.config_updated",
        tenant: ctx.tenant.to_string(),
        actor: Some(ctx.caller.principal.to_string()),
        subject_hash: None,
        details: json!({"job": a.job_name, "changes": changes, "claimed_by": a.updated_by}),
    });
    Ok(Out {
        success: true,
        message: format!(
            "{} setting(s) changed; next run one interval from now",
            changes.len()
        ),
        job_name: a.job_name,
        changes,
        job: status.to_json(false),
        updated_by: a.updated_by,
        updated_at: at,
    })
}
