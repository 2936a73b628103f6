//! The work of the background jobs (the actors that schedule, retry and
//! record them live in `handoff_actors::jobs`): one file per job, each a
//! `JobWork` the actor runs. `specs` builds the four from the start-up
//! configuration and the overrides `update_job_config` stored.

pub mod analytics_rollup;
pub mod cache_maintenance;
pub mod lifecycle;
pub mod retention;

use std::sync::Arc;
use std::time::Duration;

use handoff_actors::jobs::{JobConfig, JobSpec, JobWork};
use handoff_actors::model::{LifecycleTarget, SessionKey, TransitionRequest};
use handoff_actors::Core;
use serde_json::{json, Value};

use crate::config::Config;
use crate::storage::Storage;

/// Sessions looked at per lifecycle step and run; a larger backlog drains
/// over the next runs.
const STEP_BATCH: u32 = 1000;

/// What a job's work needs from the rest of the server.
#[derive(Clone)]
pub struct JobDeps {
    pub core: Core,
    pub storage: Storage,
    pub cfg: Arc<Config>,
}

/// The four jobs, with stored config overrides applied.
pub async fn specs(deps: JobDeps) -> Vec<JobSpec> {
    let j = &deps.cfg.jobs;
    let base = |interval| JobConfig {
        interval,
        enabled: true,
        max_retries: j.max_retries,
        retry_delay: j.retry_delay,
    };
    let stored = match deps.storage.db.job_configs().await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %crate::logging::redact(&e.to_string()), "cannot read stored job configs; using the start-up ones");
            Vec::new()
        }
    };
    let work: [(&'static str, Duration, Arc<dyn JobWork>); 4] = [
        (
            "lifecycle",
            j.lifecycle_interval,
            Arc::new(lifecycle::Lifecycle(deps.clone())),
        ),
        (
            "retention",
            j.retention_interval,
            Arc::new(retention::Retention(deps.clone())),
        ),
        (
            "cache_maintenance",
            j.cache_maintenance_interval,
            Arc::new(cache_maintenance::CacheMaintenance(deps.clone())),
        ),
        (
            "analytics_rollup",
            // The effective value (start-up overlaid with a stored
            // override): an override applies at the next start.
            deps.cfg.live.settings().analytics.rollup_interval,
            Arc::new(analytics_rollup::AnalyticsRollup(deps.clone())),
        ),
    ];
    work.into_iter()
        .map(|(name, interval, work)| {
            let mut config = base(interval);
            if let Some((_, v)) = stored.iter().find(|(n, _)| n == name) {
                match config_from_json(v) {
                    Some(c) => config = c,
                    None => tracing::warn!(job = name, "stored job config unreadable; ignored"),
                }
            }
            JobSpec { name, config, work }
        })
        .collect()
}

/// The stored form of a job config.
pub fn config_json(c: &JobConfig) -> Value {
    json!({
        "interval_ms": c.interval.as_millis() as u64,
        "enabled": c.enabled,
        "max_retries": c.max_retries,
        "retry_delay_ms": c.retry_delay.as_millis() as u64,
    })
}

/// A stored schedule, brought inside today's bounds (a row written by an
/// older version, or by hand, cannot make a job spin or overflow).
fn config_from_json(v: &Value) -> Option<JobConfig> {
    let clamp = |key: &str, d: Duration| {
        let (min, max) = crate::settings::bounds::duration(key);
        d.clamp(min, max)
    };
    Some(JobConfig {
        interval: clamp(
            "jobs.interval",
            Duration::from_millis(v["interval_ms"].as_u64()?),
        ),
        enabled: v["enabled"].as_bool()?,
        max_retries: v["max_retries"]
            .as_u64()?
            .min(u64::from(crate::settings::bounds::MAX_JOB_RETRIES)) as u32,
        retry_delay: clamp(
            "jobs.retry_delay",
            Duration::from_millis(v["retry_delay_ms"].as_u64()?),
        ),
    })
}

/// What one lifecycle step did.
#[derive(Debug, Default)]
pub struct StepCount {
    pub moved: u64,
    /// Candidates the session actor turned down (activity since the row was
    /// written, or already moved on).
    pub skipped: u64,
    pub errors: Vec<String>,
}

/// Move the sessions in `from` idle for at least `idle_for` to `to`, each
/// through its session actor. One indexed query finds the candidates.
pub async fn step(
    deps: &JobDeps,
    from: &[&str],
    to: LifecycleTarget,
    idle_for: Duration,
    reason: String,
) -> Result<StepCount, String> {
    let cutoff = cutoff(idle_for)?;
    let idle = chrono::Duration::from_std(idle_for).map_err(failed)?;
    let candidates = deps
        .storage
        .run(
            deps.storage
                .db
                .lifecycle_candidates(from, cutoff, STEP_BATCH),
        )
        .await
        .map_err(failed)?;
    let statuses = from
        .iter()
        .filter_map(|s| handoff_actors::model::SessionStatus::parse(s))
        .collect::<Vec<_>>();
    let mut out = StepCount::default();
    for (tenant, key) in candidates {
        let request = TransitionRequest {
            from: statuses.clone(),
            to,
            idle_for: idle,
            reason: reason.clone(),
        };
        match deps
            .core
            .transition(&SessionKey::new(&tenant, &key), request)
            .await
        {
            Ok(Some(_)) => out.moved += 1,
            Ok(None) => out.skipped += 1,
            Err(e) => out.errors.push(failed(e)),
        }
    }
    Ok(out)
}

/// `7d`-style rendering for reasons.
pub fn human(d: Duration) -> String {
    handoff_actors::jobs::format_duration(d)
}

/// A failure as a run reports it (it reaches logs, the audit log and
/// clients): redacted.
/// The instant `ago` before now. Checked: the bounds keep durations far
/// from chrono's range, but a job must fail its run, never panic, if one
/// ever is not.
pub fn cutoff(ago: Duration) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|d| handoff_actors::model::now().checked_sub_signed(d))
        .ok_or_else(|| format!("{} is too long to subtract from now", human(ago)))
}

pub fn failed(e: impl std::fmt::Display) -> String {
    crate::logging::redact(&e.to_string())
}
