//! `cache_maintenance`: storage housekeeping (a SQLite WAL checkpoint; a
//! no-op on PostgreSQL), then the session cache's own: expired entries of
//! the in-process cache evicted, expired "do not serve" marks dropped
//! (Redis expires its keys by itself).

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
            .storage
            .run(self.0.storage.db.maintenance())
            .await
            .map_err(super::failed)?;
        let (held, suspects_dropped) = self.0.storage.cache.maintain();
        Ok(json!({
            "storage": storage,
            "cache": {
                "backend": self.0.storage.cache.backend(),
                "entries_held": held,
                "stale_marks_dropped": suspects_dropped,
            },
        }))
    }
}
