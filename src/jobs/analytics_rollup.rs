//! `analytics_rollup`: counts sessions by status, entries by type and
//! handoffs by status and type, and stores the snapshot
//! (`analytics_rollups`). Skipped while `analytics.enabled` is false (read
//! live on every run).

use async_trait::async_trait;
use handoff_actors::jobs::JobWork;
use serde_json::{json, Value};

use super::JobDeps;

pub struct AnalyticsRollup(pub JobDeps);

#[async_trait]
impl JobWork for AnalyticsRollup {
    async fn run(&self, _job: &str) -> Result<Value, String> {
        if !self.0.cfg.live.settings().analytics.enabled {
            return Ok(json!({"skipped": "analytics.enabled is false"}));
        }
        self.0
            .storage
            .run(self.0.storage.db.analytics_rollup())
            .await
            .map_err(super::failed)
    }
}
