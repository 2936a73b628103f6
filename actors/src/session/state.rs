//! A session actor's state, and how it is loaded: from the database, from
//! the row an earlier actor of this process parked in the cache, or under
//! the session's write lock when the session is hot.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::ops::{Kind, Pending, Prepared};
use super::Reply;
use crate::audit::Auditor;
use crate::breaker::{BreakerHandle, Dependency, Report};
use crate::error::{HandoffError, StoreError};
use crate::metrics::metrics;
use crate::model::summary::SummaryView;
use crate::model::CommitUnit;
use crate::model::{now, EntryRow, SessionKey, SessionRow};
use crate::persistence::PersistenceHandle;
use crate::session::supervisor::LastUse;
use crate::store::{SessionLock, Store};

/// A session that lost a write race to another process, or found another
/// process's entries under its lock, stays hot this long: its units are
/// written under the session's write lock (`Store::lock_session`) instead
/// of optimistically. See "Hot sessions" below `SessionState`.
pub(super) const HOT_FOR: Duration = Duration::from_secs(2);

/// What the session actor needs from the rest of the tree.
#[derive(Clone)]
pub struct SessionDeps {
    pub store: Arc<dyn Store>,
    pub persistence: PersistenceHandle,
    pub audit: Auditor,
    pub breaker: BreakerHandle,
    pub idle: Duration,
    /// Live session actors at most; the oldest passivate beyond it.
    pub max_live: usize,
    pub db_timeout: Duration,
    /// Keyed-hash key for the session key in audit rows.
    pub hash_key: [u8; 32],
    /// Units in flight per session, shared by every session actor.
    pub fences: crate::fence::Fences,
    /// Where committed changes are announced (resource subscriptions).
    pub changes: crate::changes::Changes,
    /// Another process may write the same database: a read answered from
    /// memory reloads first when the state is older than this.
    pub refresh_after: Duration,
    /// Session rows as committed, for reads that find no live actor.
    pub cache: Arc<dyn crate::cache::SessionCache>,
}

pub struct SessionArgs {
    pub key: SessionKey,
    pub deps: SessionDeps,
    /// Where this actor records its last use, for the supervisor.
    pub used: LastUse,
}

pub struct SessionState {
    pub(super) key: SessionKey,
    pub(super) deps: SessionDeps,
    /// `None` until loaded from the store; then the committed row (or none).
    pub(super) committed: Option<Option<SessionRow>>,
    /// `last_seq` of the session row as stored.
    pub(super) checkpoint_seq: i64,
    pub(super) inflight: Option<Inflight>,
    pub(super) pending: VecDeque<Pending>,
    /// Reads that arrived while a unit was in flight; answered after it.
    pub(super) waiting_reads: Vec<Reply<SummaryView>>,
    /// Handoffs accepted through this actor: a second accept that raced the
    /// first past the caller's status check is refused here.
    pub(super) accepted: HashSet<Uuid>,
    pub(super) last_activity: Instant,
    /// The supervisor's view of `last_activity` (see `LastUse`).
    used: LastUse,
    /// When `committed` was loaded or last confirmed by a commit.
    pub(super) synced_at: Instant,
    /// Write races lost in a row (see `commit::MAX_CONFLICT_RETRIES`).
    pub(super) conflicts: u32,
    /// When the database last failed to answer a load or a commit.
    pub(super) unavailable_at: Option<Instant>,
    /// Until when this session counts as hot across processes (`HOT_FOR`).
    pub(super) hot_until: Option<Instant>,
}

// Hot sessions. Sequence numbers are handed out in memory, against what
// this actor last read; another replica (or process on the same SQLite
// file) writing the same session makes that stale, and the database refuses
// the loser (`UNIQUE (session_id, seq)`), which reloads and tries again.
// That costs nothing while a session has one writer process, but a session
// written through several replicas at once (a load balancer without
// affinity) turns into a retry storm: measured with 16 writers on 2
// sessions, 10× fewer calls/s than the same load without shared sessions,
// and calls failing once 16 attempts in a row lost.
//
// So a session that lost a race becomes *hot* for `HOT_FOR`: each unit
// then takes the session's write lock in a transaction (PostgreSQL: the
// session row `FOR UPDATE`; SQLite: `BEGIN IMMEDIATE`), reads the session
// under it, applies its operations to that state and writes them in the
// same transaction. Writers of one session queue on the lock instead of
// failing; a unit waits at most `db_timeout` for the lock and the commit
// together. Every locked read that finds another process's entries
// extends the hot period, so a session stays hot while it is shared and
// returns to the optimistic path (group commit, one statement) two seconds
// after the other writers stopped.
//
// Alternatives considered: numbering entries in the database
// (the batch statement takes `max(seq) + n` under the row lock) keeps the
// batch at one statement but leaves the acknowledgement's summary, the
// handoff snapshot and the checkpoint built on a state without the other
// replica's entries; a transaction-scoped advisory lock does not stop an
// optimistic writer that does not take it (the lock holder would still
// lose its sequence numbers to it); routing a session to an owning replica
// needs membership and forwarding the deployment does not have.

impl SessionState {
    pub(super) fn new(args: SessionArgs) -> Self {
        SessionState {
            key: args.key,
            deps: args.deps,
            committed: None,
            checkpoint_seq: 0,
            inflight: None,
            pending: VecDeque::new(),
            waiting_reads: Vec::new(),
            accepted: HashSet::new(),
            last_activity: Instant::now(),
            used: args.used,
            synced_at: Instant::now(),
            conflicts: 0,
            unavailable_at: None,
            hot_until: None,
        }
    }

    /// A call for this session: it is not idle, nor a candidate to passivate.
    pub(super) fn touch(&mut self) {
        self.last_activity = Instant::now();
        self.used.touch();
    }

    /// Load the row on first use. Lazy, so spawning an actor costs no I/O
    /// on the supervisor's turn.
    pub(super) async fn load(&mut self) -> Result<&Option<SessionRow>, HandoffError> {
        if self.committed.is_none() {
            // Fail fast, before waiting on a predecessor or the cache.
            self.deps.breaker.check(Dependency::Database)?;
            // A predecessor that died may still have a unit in flight.
            self.deps.fences.wait(&self.key).await;
            if self.warm_start().await {
                return Ok(self.committed.as_ref().expect("taken from the cache"));
            }
            metrics().hot.loads_from_database.inc();
            let (store, key) = (self.deps.store.clone(), self.key.clone());
            let r = self
                .read("load", async move {
                    store.load_session(&key.tenant, &key.key).await
                })
                .await;
            self.synced_at = Instant::now();
            self.committed = Some(r?.map(|stored| self.fold(stored)));
            self.take_over_cached_copy().await;
            if let (true, Some(Some(row))) = (self.deps.cache.shared(), &self.committed) {
                self.deps.cache.put(&self.key, row).await;
            }
        }
        Ok(self.committed.as_ref().expect("loaded above"))
    }

    /// A read of this session's rows through the breaker's guard; a
    /// database found unavailable is remembered (`unavailable_at`).
    async fn read<T>(
        &mut self,
        what: &'static str,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, HandoffError> {
        let r = self
            .deps
            .breaker
            .guard(
                Dependency::Database,
                Report::FailuresOnly,
                self.deps.db_timeout,
                what,
                fut,
            )
            .await?;
        if matches!(r, Err(StoreError::Unavailable(_))) {
            self.unavailable_at = Some(Instant::now());
        }
        r.map_err(HandoffError::from)
    }

    /// The live state from a stored row and the entries after its checkpoint.
    fn fold(&mut self, (mut row, tail): (SessionRow, Vec<EntryRow>)) -> SessionRow {
        self.checkpoint_seq = row.last_seq;
        for e in &tail {
            row.last_seq = e.seq;
            row.last_activity_at = e.created_at;
            row.summary.apply(e);
        }
        row
    }

    pub(super) fn is_hot(&self) -> bool {
        self.hot_until.is_some_and(|t| Instant::now() < t)
    }

    /// A hot session's unit: take the session's write lock and read the
    /// session under it (see "Hot sessions"). Returns the lock and the
    /// deadline of the unit (lock and commit share one `db_timeout`), or
    /// `None` when the store has no lock (the unit stays optimistic).
    pub(super) async fn lock(
        &mut self,
    ) -> Result<Option<(Box<dyn SessionLock>, Instant)>, HandoffError> {
        // A predecessor that died may still have a unit in flight.
        self.deps.fences.wait(&self.key).await;
        let deadline = Instant::now() + self.deps.db_timeout;
        let (store, key) = (self.deps.store.clone(), self.key.clone());
        let r = self
            .read("waiting for the session's write lock", async move {
                store.lock_session(&key.tenant, &key.key).await
            })
            .await;
        let Some(locked) = r? else {
            return Ok(None);
        };
        metrics().hot.loads_from_database.inc();
        let known = self
            .committed
            .as_ref()
            .map(|c| c.as_ref().map(|r| (r.id, r.last_seq)));
        let stored = locked.session.map(|stored| self.fold(stored));
        if known != Some(stored.as_ref().map(|r| (r.id, r.last_seq))) {
            // Another process wrote since this actor last did: still hot.
            self.hot_until = Some(Instant::now() + HOT_FOR);
        }
        self.committed = Some(stored);
        self.synced_at = Instant::now();
        self.take_over_cached_copy().await;
        Ok(Some((locked.lock, deadline)))
    }

    /// Start from the row an earlier actor of this process parked when it
    /// stopped (`park_in_cache`) instead of reading the database. A parked
    /// row is the stored row: it is parked only after its checkpoint
    /// committed. Without this, a session that passivated (idle, or pushed
    /// out by `max_live`) paid two reads on its next write, and a load that
    /// touches more sessions than `max_live` paid them on most calls.
    ///
    /// Another process may have written the session since; that is caught
    /// where it is for a live actor: a taken sequence number or key, or a
    /// deleted row, fails the unit, which then reloads from the database and
    /// applies its operations again (never from the cache: `conflicts`).
    /// Reads still reload once the copy is older than `refresh_after`: it
    /// counts as synced long ago. A shared cache (Redis) is written by every
    /// replica after every commit, not at checkpoints, so it is not used.
    async fn warm_start(&mut self) -> bool {
        if self.deps.cache.shared() || self.conflicts > 0 {
            return false;
        }
        let Some(row) = self.deps.cache.get(&self.key).await else {
            return false;
        };
        self.checkpoint_seq = row.last_seq;
        self.committed = Some(Some(row));
        let now = Instant::now();
        self.synced_at = now.checked_sub(self.deps.refresh_after).unwrap_or(now);
        self.take_over_cached_copy().await;
        metrics().hot.loads_from_cache.inc();
        true
    }

    /// A registration of a key this actor has not looked up is built as if
    /// the key were new, when the store leaves out a registration that lost
    /// (`Store::registers_blind`): the common case then costs no read. If
    /// the key did exist, the unit comes back as a write conflict and the
    /// operations are applied again on the loaded row (SESSION_EXISTS, or a
    /// reactivation). Only on the first try: a retry always loads.
    pub(super) async fn assume_new_for_registration(&mut self) {
        let first_is_register = self.pending.front().map(Pending::kind) == Some(Kind::Register);
        if self.committed.is_some()
            || !first_is_register
            || self.conflicts > 0
            || !self.deps.store.registers_blind()
        {
            return;
        }
        self.take_over_cached_copy().await;
        self.committed = Some(None);
        self.checkpoint_seq = 0;
        self.synced_at = Instant::now();
    }

    pub(super) async fn summary(&mut self) -> Result<SummaryView, HandoffError> {
        let key = self.key.key.clone();
        match self.load().await? {
            Some(row) => Ok(SummaryView::of(row, now())),
            None => Err(HandoffError::session_not_found(&key)),
        }
    }

    /// From here this actor answers the session's reads: a cache only this
    /// process reads drops its copy (see `crate::cache`) until
    /// `park_in_cache` puts the final row back.
    pub(super) async fn take_over_cached_copy(&self) {
        if !self.deps.cache.shared() {
            self.deps.cache.evict(&self.key).await;
        }
    }

    /// A cache only this process reads gets the final row now (see
    /// `crate::cache`); an unknown state (a failed unit) leaves no copy.
    pub(super) async fn park_in_cache(&self) {
        let cache = &self.deps.cache;
        if cache.shared() {
            return;
        }
        match &self.committed {
            // Only the stored row is parked (see `warm_start`): a checkpoint
            // that failed leaves the copy out.
            Some(Some(row)) if row.last_seq == self.checkpoint_seq => {
                cache.put(&self.key, row).await
            }
            Some(None) => cache.forget(&self.key).await,
            _ => cache.evict(&self.key).await,
        }
    }

    /// Write the session row if entries arrived since the last checkpoint
    /// (on stop, so the next load has no tail to fold).
    pub(super) async fn checkpoint(&mut self) {
        let Some(Some(row)) = &self.committed else {
            return;
        };
        if row.last_seq <= self.checkpoint_seq {
            return;
        }
        let unit = CommitUnit {
            session: Some(row.clone()),
            ..Default::default()
        };
        if self.deps.persistence.commit(unit).await.is_ok() {
            self.checkpoint_seq = row.last_seq;
        }
    }
}

/// How the unit in flight ended.
pub(super) enum UnitOutcome {
    Committed,
    /// Failed; its callers were told.
    Failed(HandoffError),
    /// Lost a race to another writer: apply these again on fresh state.
    Conflict(Vec<Prepared>),
}

/// The unit at the persistence actor (or under the session's lock).
pub(super) struct Inflight {
    pub(super) spec: Option<SessionRow>,
    /// Handoffs this unit accepts.
    pub(super) accepts: Vec<Uuid>,
    /// The checkpoint this unit writes, if it carries the session row.
    pub(super) checkpoint: Option<i64>,
    pub(super) done: oneshot::Receiver<UnitOutcome>,
}
