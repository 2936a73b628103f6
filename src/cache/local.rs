//! The cache inside the process (no Redis configured): bounded, with the
//! same time to live, and the same newest-version-wins rule.

use std::sync::Arc;
use std::time::Duration;

use handoff_actors::model::{SessionKey, SessionRow};

use super::codec::version;

type Slot = Arc<(String, Option<SessionRow>)>;

pub struct LocalCache {
    rows: moka::sync::Cache<SessionKey, Slot>,
}

impl LocalCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        LocalCache {
            rows: moka::sync::Cache::builder()
                .max_capacity(capacity as u64)
                .time_to_live(ttl)
                .build(),
        }
    }

    pub fn get(&self, key: &SessionKey) -> Option<SessionRow> {
        self.rows.get(key).and_then(|slot| slot.1.clone())
    }

    /// `None` records a deletion.
    pub fn put(&self, key: &SessionKey, row: Option<&SessionRow>) {
        let v = version(row);
        self.rows
            .entry(key.clone())
            .and_compute_with(|cur| match cur {
                Some(cur) if cur.value().0 > v => moka::ops::compute::Op::Nop,
                _ => moka::ops::compute::Op::Put(Arc::new((v, row.cloned()))),
            });
    }

    /// Drop the key, whatever version it holds.
    pub fn evict(&self, key: &SessionKey) {
        self.rows.invalidate(key);
    }

    /// Run moka's pending evictions; entries held afterwards.
    pub fn maintain(&self) -> u64 {
        self.rows.run_pending_tasks();
        self.rows.entry_count()
    }
}
