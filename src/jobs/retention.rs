//! `retention`: purges per policy. Any session (whatever its status, e.g.
//! while the lifecycle job was disabled) without activity for
//! `retention.purge_after` is erased through its actor, like
//! `delete_session`; lifecycle events and analytics roll-ups older than
//! that go too.

use async_trait::async_trait;
use handoff_actors::jobs::JobWork;
use handoff_actors::model::LifecycleTarget;
use serde_json::{json, Value};

use super::{human, step, JobDeps};

pub struct Retention(pub JobDeps);

#[async_trait]
impl JobWork for Retention {
    async fn run(&self, _job: &str) -> Result<Value, String> {
        let after = self.0.cfg.live.settings().retention.purge_after;
        let reason = format!(
            "retention: no activity for {} (retention.purge_after)",
            human(after)
        );
        let all = ["active", "dormant", "expired", "archived", "completed"];
        let n = step(&self.0, &all, LifecycleTarget::Purged, after, reason).await?;
        let cutoff = super::cutoff(after)?;
        let (events, rollups) = self
            .0
            .storage
            .run(self.0.storage.db.prune_job_records(cutoff))
            .await
            .map_err(super::failed)?;
        if let Some(e) = n.errors.first() {
            return Err(format!("{} purge(s) failed: {e}", n.errors.len()));
        }
        Ok(json!({
            "sessions_purged": n.moved,
            "skipped": n.skipped,
            "lifecycle_events_deleted": events,
            "analytics_rollups_deleted": rollups,
        }))
    }
}
