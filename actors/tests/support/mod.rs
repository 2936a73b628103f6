//! An in-memory `Store` and a tree started on it: the actors tested
//! in-process, without a database. The real adapters (SQLite, PostgreSQL)
//! are tested through the binary in the package's own tests.

#![allow(dead_code)] // each test file uses part of it

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use handoff_actors::audit::AuditKey;
use handoff_actors::breaker::{BreakerConfig, BreakerHandle};
use handoff_actors::cache::NoCache;
use handoff_actors::model::{AuditRow, CommitUnit, EntryRow, SessionRow};
use handoff_actors::persistence::PersistenceConfig;
use handoff_actors::root::{Addresses, RootArgs};
use handoff_actors::session::SessionDeps;
use handoff_actors::store::Store;
use handoff_actors::{Core, StoreError};
use tokio::task::JoinHandle;

/// What the store holds, and switches a test flips to make it misbehave.
#[derive(Default)]
pub struct Memory {
    sessions: Mutex<HashMap<(String, String), SessionRow>>,
    entries: Mutex<HashMap<uuid::Uuid, Vec<EntryRow>>>,
    handoffs: Mutex<HashMap<uuid::Uuid, i64>>,
    pub audit: Mutex<Vec<AuditRow>>,
    /// Transactions committed (a batch is one).
    pub commits: AtomicUsize,
    /// Loads answered.
    pub loads: AtomicUsize,
    /// The next load of any session panics (once).
    pub panic_on_load: AtomicBool,
    /// Every commit panics.
    pub panic_on_commit: AtomicBool,
    /// Every commit of a session's data fails as if the database were down
    /// (audit-only units still commit).
    pub sessions_unavailable: AtomicBool,
}

impl Memory {
    /// The entries stored for a session, in the order stored.
    pub fn entries_of(&self, tenant: &str, key: &str) -> Vec<EntryRow> {
        let id = self
            .sessions
            .lock()
            .unwrap()
            .get(&(tenant.to_string(), key.to_string()))
            .map(|r| r.id);
        id.and_then(|id| self.entries.lock().unwrap().get(&id).cloned())
            .unwrap_or_default()
    }

    pub fn audit_actions(&self) -> Vec<String> {
        self.audit
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.action.clone())
            .collect()
    }
}

#[async_trait]
impl Store for Memory {
    async fn load_session(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<(SessionRow, Vec<EntryRow>)>, StoreError> {
        if self.panic_on_load.swap(false, Ordering::SeqCst) {
            panic!("the in-memory store was told to panic on load");
        }
        self.loads.fetch_add(1, Ordering::SeqCst);
        let sessions = self.sessions.lock().unwrap();
        let Some(row) = sessions.get(&(tenant.to_string(), key.to_string())) else {
            return Ok(None);
        };
        let mut row = row.clone();
        row.summary.handoffs = *self.handoffs.lock().unwrap().get(&row.id).unwrap_or(&0);
        let tail = self
            .entries
            .lock()
            .unwrap()
            .get(&row.id)
            .map(|all| {
                all.iter()
                    .filter(|e| e.seq > row.last_seq)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some((row, tail)))
    }

    async fn commit(&self, units: &[&CommitUnit]) -> Result<(), StoreError> {
        if self.panic_on_commit.load(Ordering::SeqCst) {
            panic!("the in-memory store was told to panic on commit");
        }
        let touches_sessions = units
            .iter()
            .any(|u| u.session.is_some() || !u.entries.is_empty() || u.delete.is_some());
        if touches_sessions && self.sessions_unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("told to be down".into()));
        }
        let mut sessions = self.sessions.lock().unwrap();
        let mut entries = self.entries.lock().unwrap();
        // All or nothing: check every registration first.
        for u in units {
            if let Some(row) = u.session.as_ref().filter(|_| u.session_is_new) {
                let k = (row.tenant.to_string(), row.session_key.to_string());
                if sessions.contains_key(&k) {
                    return Err(StoreError::Conflict("session key taken".into()));
                }
            }
        }
        for u in units {
            if let Some(id) = u.delete {
                sessions.retain(|_, r| r.id != id);
                entries.remove(&id);
            }
            if let Some(row) = &u.session {
                let k = (row.tenant.to_string(), row.session_key.to_string());
                if u.session_is_new || sessions.contains_key(&k) {
                    sessions.insert(k, row.clone());
                }
            }
            for e in &u.entries {
                let stored = entries.entry(e.session_id).or_default();
                if stored.last().is_some_and(|last| last.seq >= e.seq) {
                    return Err(StoreError::Rejected("sequence number out of order".into()));
                }
                stored.push(e.clone());
            }
            for h in &u.handoffs {
                *self
                    .handoffs
                    .lock()
                    .unwrap()
                    .entry(h.session_id)
                    .or_default() += 1;
            }
            self.audit.lock().unwrap().extend(u.audit.iter().cloned());
        }
        self.commits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn audit_head(&self) -> Result<Option<AuditRow>, StoreError> {
        Ok(self.audit.lock().unwrap().last().cloned())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Knobs of a tree under test.
pub struct Options {
    pub idle: Duration,
    pub max_live: usize,
    pub breaker: BreakerConfig,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(60),
            max_live: 10_000,
            breaker: BreakerConfig::default(),
        }
    }
}

/// A supervision tree on an in-memory store.
pub async fn start(store: Arc<Memory>, opts: Options) -> (Core, JoinHandle<()>) {
    let addresses = Addresses::default();
    let breaker = BreakerHandle::new();
    let args = RootArgs {
        addresses: addresses.clone(),
        store: store.clone(),
        breaker: breaker.clone(),
        breaker_config: opts.breaker,
        persistence: PersistenceConfig {
            max_batch: 64,
            timeout: Duration::from_secs(5),
        },
        sessions: SessionDeps {
            store,
            persistence: addresses.persistence.clone(),
            audit: addresses.audit.clone(),
            breaker,
            idle: opts.idle,
            max_live: opts.max_live,
            db_timeout: Duration::from_secs(5),
            hash_key: [7; 32],
            fences: Default::default(),
            changes: Default::default(),
            refresh_after: Duration::from_secs(3600),
            cache: Arc::new(NoCache),
        },
        audit_key: AuditKey::new([9; 32]),
        audit_on_head: None,
        extra: Vec::new(),
    };
    Core::start(args).await.expect("the tree starts")
}

/// Stop the tree and wait for it.
pub async fn stop(core: Core, root: JoinHandle<()>) {
    core.shutdown();
    tokio::time::timeout(Duration::from_secs(30), root)
        .await
        .expect("the tree stops within 30 s")
        .expect("the root task ends cleanly");
}
