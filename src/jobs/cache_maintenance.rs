//! `cache_maintenance`: storage housekeeping (a SQLite WAL checkpoint; a
//! no-op on PostgreSQL). The cache layer's eviction plugs in here as one
//! more step when it exists.

use async_trait::async_trait;
use handoff_actors::jobs::JobWork;
use serde_json::{json, Value};

use super::JobDeps;

pub struct CacheMaintenance(pub JobDeps);

#[async_trait]
impl JobWork for CacheMaintenance {
    async fn run(&self, _job: &str) -> Result<Value, String> {
        let storage = self
            .0
            .reads
            .run(self.0.reads.db.maintenance())
            .await
            .map_err(super::failed)?;
        Ok(json!({"storage": storage, "cache_entries_evicted": 0}))
    }
}
