//! The session actor: one per live session, keyed by (tenant, session_key).
//! It owns the session's state, serialises its writes and keeps the running
//! summary, so a handoff never rereads the history.
//!
//! Writes are pipelined but never reordered: at most one unit of this
//! session is at the persistence actor at a time. Operations that arrive
//! while it is in flight wait in `pending` and go out together as the next
//! unit, so a hot session still rides group commit. Sequence numbers are
//! handed out against a speculative copy of the state; if the unit fails,
//! the copy is dropped and the numbers are handed out again — no gaps.
//!
//! The actor replies to clients from a small waiter task, not from its own
//! state: if the actor panics while a unit is in flight, the unit's callers
//! still learn truthfully whether it committed.
//!
//! The session row (status, metadata, running summary) is a checkpoint: it
//! is written with a unit only when the status or participants change, or
//! every `CHECKPOINT_EVERY` entries, or when the actor stops. An ordinary
//! append therefore costs one INSERT, not an INSERT and an UPDATE. Loading a
//! session folds the entries committed after the checkpoint back in, so a
//! crash between checkpoints loses nothing.
//!
//! After `idle` without activity the actor drains and stops (passivation);
//! the next call starts a fresh one that loads the row again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::audit::{AuditEvent, AuditMsg};
use crate::breaker::{BreakerHandle, Dependency};
use crate::error::{ErrorCode, HandoffError, StoreError};
use crate::metrics::metrics;
use crate::model::{
    now, CommitUnit, ContextType, EntryRow, HandoffAccept, HandoffRow, HandoffType, LifecycleEvent,
    LifecycleTarget, NewEntry, SessionKey, SessionRow, SessionStatus, TransitionRequest,
};
use crate::persistence::PersistenceHandle;
use crate::sessions::LastUse;
use crate::store::{SessionLock, Store};
use crate::summary::{Summary, SummaryView};

pub type Reply<T> = RpcReplyPort<Result<T, HandoffError>>;

/// Entries between two checkpoints of the session row at most (bounds the
/// tail a load must fold in).
const CHECKPOINT_EVERY: i64 = 64;

/// Times in a row a unit may lose a write race to another replica before
/// its callers get a retryable error instead of another attempt.
const MAX_CONFLICT_RETRIES: u32 = 16;

/// A session that lost a write race to another process, or found another
/// process's entries under its lock, stays hot this long: its units are
/// written under the session's write lock (`Store::lock_session`) instead
/// of optimistically. See "Hot sessions" below `SessionState`.
const HOT_FOR: Duration = Duration::from_secs(2);

/// Operations handled this soon after the database failed to answer this
/// actor fail at once: they waited in the mailbox behind that failure, and
/// trying again would make them wait a second timeout.
const FAIL_FAST_AFTER_OUTAGE: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct HandoffRequest {
    pub target_agent: String,
    pub request_type: HandoffType,
    pub request_data: Option<Value>,
    /// The agent the caller is bound to (an API key bound to one): the
    /// handoff's source is the session's registering agent, so a caller
    /// bound to another agent is refused (`FORBIDDEN`).
    pub as_agent: Option<String>,
}

pub enum SessionMsg {
    Register {
        agent_from: String,
        metadata: Option<Value>,
        reply: Reply<Registered>,
    },
    Append {
        entries: Vec<NewEntry>,
        reply: Reply<Appended>,
    },
    Handoff {
        request: HandoffRequest,
        reply: Reply<HandoffCreated>,
    },
    Delete {
        requested_by: Option<String>,
        reply: Reply<Deleted>,
    },
    /// The target agent takes a handoff of this session.
    Accept {
        handoff_id: Uuid,
        agent: String,
        reply: Reply<Accepted>,
    },
    Summary {
        reply: Reply<SummaryView>,
    },
    /// A lifecycle step (from the lifecycle and retention jobs). `None`:
    /// the session no longer qualifies (or is gone) and nothing changed.
    Transition {
        request: TransitionRequest,
        reply: Reply<Option<LifecycleEvent>>,
    },
    /// The in-flight unit finished (sent by the waiter task).
    Committed,
    /// Time to check whether the session went idle.
    IdleCheck,
    /// Test hook: panic inside the handler, to exercise supervision. The
    /// port is dropped by the panic, which is how the caller learns of it.
    Crash(Reply<()>),
}

impl SessionMsg {
    /// The message's name, a metric label.
    pub fn name(&self) -> &'static str {
        match self {
            SessionMsg::Register { .. } => "register",
            SessionMsg::Append { .. } => "append",
            SessionMsg::Handoff { .. } => "handoff",
            SessionMsg::Delete { .. } => "delete",
            SessionMsg::Accept { .. } => "accept",
            SessionMsg::Summary { .. } => "summary",
            SessionMsg::Transition { .. } => "transition",
            SessionMsg::Committed => "committed",
            SessionMsg::IdleCheck => "idle_check",
            SessionMsg::Crash(_) => "crash",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Registered {
    /// The row as registered; its `summary` is left empty (the reply shows
    /// the session's own fields only).
    pub session: SessionRow,
    pub reactivated: bool,
}

#[derive(Debug, Clone)]
pub struct AppendedEntry {
    pub id: Uuid,
    pub sequence_number: i64,
    pub context_type: ContextType,
    pub content_length: usize,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone)]
pub struct Appended {
    pub session_id: Uuid,
    pub status: SessionStatus,
    pub entries: Vec<AppendedEntry>,
}

#[derive(Debug, Clone)]
pub struct HandoffCreated {
    pub handoff: HandoffRow,
    pub session_status: SessionStatus,
}

#[derive(Debug, Clone)]
pub struct Accepted {
    pub handoff_id: Uuid,
    pub accepted_at: chrono::DateTime<chrono::Utc>,
    pub session_status: SessionStatus,
}

#[derive(Debug, Clone)]
pub struct Deleted {
    pub session_id: Uuid,
    pub entries_removed: i64,
}

/// What the session actor needs from the rest of the tree.
#[derive(Clone)]
pub struct SessionDeps {
    pub store: Arc<dyn Store>,
    pub persistence: PersistenceHandle,
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

/// A mutating operation waiting for its turn.
enum Op {
    Register {
        agent_from: String,
        metadata: Option<Value>,
        reply: Reply<Registered>,
    },
    Append {
        entries: Vec<NewEntry>,
        reply: Reply<Appended>,
    },
    Handoff {
        request: HandoffRequest,
        reply: Reply<HandoffCreated>,
    },
    Delete {
        requested_by: Option<String>,
        reply: Reply<Deleted>,
    },
    Accept {
        handoff_id: Uuid,
        agent: String,
        reply: Reply<Accepted>,
    },
    Transition {
        request: TransitionRequest,
        reply: Reply<Option<LifecycleEvent>>,
    },
}

/// What an operation carries besides its reply port. Kept beside its ack
/// so a unit that lost a write race can be rebuilt and applied again.
enum OpInput {
    Register {
        agent_from: String,
        metadata: Option<Value>,
    },
    Append(Vec<NewEntry>),
    Handoff(HandoffRequest),
    Delete(Option<String>),
    Accept {
        handoff_id: Uuid,
        agent: String,
    },
    Transition(TransitionRequest),
}

impl Op {
    fn input(&self) -> OpInput {
        match self {
            Op::Register {
                agent_from,
                metadata,
                ..
            } => OpInput::Register {
                agent_from: agent_from.clone(),
                metadata: metadata.clone(),
            },
            Op::Append { entries, .. } => OpInput::Append(entries.clone()),
            Op::Handoff { request, .. } => OpInput::Handoff(request.clone()),
            Op::Delete { requested_by, .. } => OpInput::Delete(requested_by.clone()),
            Op::Accept {
                handoff_id, agent, ..
            } => OpInput::Accept {
                handoff_id: *handoff_id,
                agent: agent.clone(),
            },
            Op::Transition { request, .. } => OpInput::Transition(request.clone()),
        }
    }
}

impl OpInput {
    /// The operation again, answering on the ack's port.
    fn retry(self, ack: Ack) -> Option<Op> {
        Some(match (self, ack) {
            (
                OpInput::Register {
                    agent_from,
                    metadata,
                },
                Ack::Register(reply, _),
            ) => Op::Register {
                agent_from,
                metadata,
                reply,
            },
            (OpInput::Append(entries), Ack::Append(reply, _)) => Op::Append { entries, reply },
            (OpInput::Handoff(request), Ack::Handoff(reply, _)) => Op::Handoff { request, reply },
            (OpInput::Delete(requested_by), Ack::Delete(reply, _)) => Op::Delete {
                requested_by,
                reply,
            },
            (OpInput::Accept { handoff_id, agent }, Ack::Accept(reply, _)) => Op::Accept {
                handoff_id,
                agent,
                reply,
            },
            (OpInput::Transition(request), Ack::Transition(reply, _)) => {
                Op::Transition { request, reply }
            }
            // Built in pairs by `submit`; a mismatch cannot happen.
            _ => return None,
        })
    }
}

/// How the unit in flight ended.
enum Outcome {
    Committed,
    /// Failed; its callers were told.
    Failed(HandoffError),
    /// Lost a race to another writer: apply these again on fresh state.
    Conflict(Vec<(OpInput, Ack)>),
}

/// A reply prepared against the speculative state, sent once the unit commits.
enum Ack {
    Register(Reply<Registered>, Registered),
    Append(Reply<Appended>, Appended),
    Handoff(Reply<HandoffCreated>, HandoffCreated),
    Delete(Reply<Deleted>, Deleted),
    Accept(Reply<Accepted>, Accepted),
    Transition(Reply<Option<LifecycleEvent>>, Option<LifecycleEvent>),
}

impl Ack {
    fn send(self, result: &Result<(), HandoffError>) {
        fn go<T>(port: Reply<T>, value: T, r: &Result<(), HandoffError>) {
            let _ = port.send(r.clone().map(|_| value));
        }
        match self {
            Ack::Register(p, v) => go(p, v, result),
            Ack::Append(p, v) => go(p, v, result),
            Ack::Handoff(p, v) => go(p, v, result),
            Ack::Delete(p, v) => go(p, v, result),
            Ack::Accept(p, v) => go(p, v, result),
            Ack::Transition(p, v) => go(p, v, result),
        }
    }
}

struct Inflight {
    spec: Option<SessionRow>,
    /// Handoffs this unit accepts.
    accepts: Vec<Uuid>,
    /// The checkpoint this unit writes, if it carries the session row.
    checkpoint: Option<i64>,
    done: oneshot::Receiver<Outcome>,
}

pub struct SessionState {
    key: SessionKey,
    deps: SessionDeps,
    /// `None` until loaded from the store; then the committed row (or none).
    committed: Option<Option<SessionRow>>,
    /// `last_seq` of the session row as stored.
    checkpoint_seq: i64,
    inflight: Option<Inflight>,
    pending: VecDeque<Op>,
    /// Reads that arrived while a unit was in flight; answered after it.
    waiting_reads: Vec<Reply<SummaryView>>,
    /// Handoffs accepted through this actor: a second accept that raced the
    /// first past the caller's status check is refused here.
    accepted: std::collections::HashSet<Uuid>,
    last_activity: Instant,
    /// The supervisor's view of `last_activity` (see `LastUse`).
    used: LastUse,
    /// When `committed` was loaded or last confirmed by a commit.
    synced_at: Instant,
    /// Write races lost in a row (see `MAX_CONFLICT_RETRIES`).
    conflicts: u32,
    /// When the database last failed to answer a load or a commit.
    unavailable_at: Option<Instant>,
    /// Until when this session counts as hot across processes (`HOT_FOR`).
    hot_until: Option<Instant>,
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

pub struct SessionActor;

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        myself.send_after(args.deps.idle, || SessionMsg::IdleCheck);
        Ok(SessionState {
            key: args.key,
            deps: args.deps,
            committed: None,
            checkpoint_seq: 0,
            inflight: None,
            pending: VecDeque::new(),
            waiting_reads: Vec::new(),
            accepted: Default::default(),
            last_activity: Instant::now(),
            used: args.used,
            synced_at: Instant::now(),
            conflicts: 0,
            unavailable_at: None,
            hot_until: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        st: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        let hot = &metrics().hot;
        let _handling = crate::metrics::Handling::start(
            "session",
            msg.name(),
            &hot.session_messages,
            &hot.session_handling,
        );
        let op = match msg {
            SessionMsg::Register {
                agent_from,
                metadata,
                reply,
            } => Op::Register {
                agent_from,
                metadata,
                reply,
            },
            SessionMsg::Append { entries, reply } => Op::Append { entries, reply },
            SessionMsg::Handoff { request, reply } => Op::Handoff { request, reply },
            SessionMsg::Delete {
                requested_by,
                reply,
            } => Op::Delete {
                requested_by,
                reply,
            },
            SessionMsg::Accept {
                handoff_id,
                agent,
                reply,
            } => Op::Accept {
                handoff_id,
                agent,
                reply,
            },
            SessionMsg::Transition { request, reply } => Op::Transition { request, reply },
            SessionMsg::Summary { reply } => {
                st.touch();
                if st.inflight.is_none()
                    && st.pending.is_empty()
                    && st.synced_at.elapsed() >= st.deps.refresh_after
                {
                    // Another process may have written since: reload.
                    st.committed = None;
                }
                if st.inflight.is_some() {
                    st.waiting_reads.push(reply);
                } else {
                    let r = st.summary().await;
                    let _ = reply.send(r);
                }
                return Ok(());
            }
            SessionMsg::Committed => {
                st.settle_inflight().await;
                st.submit(&myself).await;
                return Ok(());
            }
            SessionMsg::IdleCheck => {
                let idle = st.last_activity.elapsed();
                if st.inflight.is_none() && st.pending.is_empty() && idle >= st.deps.idle {
                    // Messages already queued are still handled; later
                    // senders are refused and start a fresh actor.
                    let _ = myself.drain();
                } else {
                    let wait = st
                        .deps
                        .idle
                        .saturating_sub(idle)
                        .max(Duration::from_millis(10));
                    myself.send_after(wait, || SessionMsg::IdleCheck);
                }
                return Ok(());
            }
            SessionMsg::Crash(_port) => panic!("test hook: session actor crash requested"),
        };
        st.touch();
        st.pending.push_back(op);
        if st.inflight.is_none() {
            st.submit(&myself).await;
        }
        Ok(())
    }

    /// Passivation and shutdown: finish what was accepted before stopping.
    async fn post_stop(
        &self,
        myself: ActorRef<SessionMsg>,
        st: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        loop {
            st.settle_inflight().await;
            if st.pending.is_empty() {
                break;
            }
            st.submit(&myself).await;
        }
        st.checkpoint().await;
        st.park_in_cache().await;
        Ok(())
    }
}

impl SessionState {
    /// A call for this session: it is not idle, nor a candidate to passivate.
    fn touch(&mut self) {
        self.last_activity = Instant::now();
        self.used.touch();
    }

    /// Load the row on first use. Lazy, so spawning an actor costs no I/O
    /// on the supervisor's turn.
    async fn load(&mut self) -> Result<&Option<SessionRow>, HandoffError> {
        if self.committed.is_none() {
            self.deps.breaker.check(Dependency::Database)?;
            // A predecessor that died may still have a unit in flight.
            self.deps.fences.wait(&self.key).await;
            if self.warm_start().await {
                return Ok(self.committed.as_ref().expect("taken from the cache"));
            }
            metrics().hot.loads_from_database.inc();
            let r = tokio::time::timeout(
                self.deps.db_timeout,
                self.deps
                    .store
                    .load_session(&self.key.tenant, &self.key.key),
            )
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("load timed out".into())));
            let unavailable = matches!(r, Err(StoreError::Unavailable(_)));
            self.deps
                .breaker
                .report_read(Dependency::Database, !unavailable);
            if unavailable {
                self.unavailable_at = Some(Instant::now());
            }
            self.synced_at = Instant::now();
            self.committed = Some(r?.map(|stored| self.fold(stored)));
            self.take_over_cached_copy().await;
            if let (true, Some(Some(row))) = (self.deps.cache.shared(), &self.committed) {
                self.deps.cache.put(&self.key, row).await;
            }
        }
        Ok(self.committed.as_ref().expect("loaded above"))
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

    fn is_hot(&self) -> bool {
        self.hot_until.is_some_and(|t| Instant::now() < t)
    }

    /// A hot session's unit: take the session's write lock and read the
    /// session under it (see "Hot sessions"). Returns the lock and the
    /// deadline of the unit (lock and commit share one `db_timeout`), or
    /// `None` when the store has no lock (the unit stays optimistic).
    async fn lock(&mut self) -> Result<Option<(Box<dyn SessionLock>, Instant)>, HandoffError> {
        self.deps.breaker.check(Dependency::Database)?;
        // A predecessor that died may still have a unit in flight.
        self.deps.fences.wait(&self.key).await;
        let deadline = Instant::now() + self.deps.db_timeout;
        let r = tokio::time::timeout(
            self.deps.db_timeout,
            self.deps
                .store
                .lock_session(&self.key.tenant, &self.key.key),
        )
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "waiting for the session's write lock timed out".into(),
            ))
        });
        let unavailable = matches!(r, Err(StoreError::Unavailable(_)));
        self.deps
            .breaker
            .report_read(Dependency::Database, !unavailable);
        if unavailable {
            self.unavailable_at = Some(Instant::now());
        }
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
    async fn assume_new_for_registration(&mut self) {
        let first_is_register = matches!(self.pending.front(), Some(Op::Register { .. }));
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

    async fn summary(&mut self) -> Result<SummaryView, HandoffError> {
        let key = self.key.key.clone();
        match self.load().await? {
            Some(row) => Ok(SummaryView::of(row, now())),
            None => Err(HandoffError::session_not_found(&key)),
        }
    }

    /// Wait for the unit in flight (if any) and take its outcome.
    async fn settle_inflight(&mut self) {
        if let Some(inf) = self.inflight.take() {
            let lost = || Outcome::Failed(HandoffError::internal("the commit waiter failed"));
            match inf.done.await.unwrap_or_else(|_| lost()) {
                Outcome::Committed => {
                    self.committed = Some(inf.spec);
                    self.accepted.extend(inf.accepts);
                    if let Some(seq) = inf.checkpoint {
                        self.checkpoint_seq = seq;
                    }
                    self.synced_at = Instant::now();
                    self.conflicts = 0;
                }
                Outcome::Failed(e) => {
                    // The store may or may not hold the unit (a timeout is
                    // ambiguous): forget the state and reload it on next use.
                    self.committed = None;
                    // Operations queued behind it would meet the same dead
                    // database after having waited once already: answer
                    // them now, so no call waits longer than one timeout.
                    if e.code == ErrorCode::StorageUnavailable && !e.is_write_conflict() {
                        self.unavailable_at = Some(Instant::now());
                        for op in self.pending.drain(..) {
                            op.fail(e.clone());
                        }
                    }
                }
                Outcome::Conflict(acks) => {
                    // Nothing of the unit was stored and nobody was answered:
                    // reload and apply the same operations again, in order.
                    self.committed = None;
                    self.conflicts += 1;
                    self.hot_until = Some(Instant::now() + HOT_FOR);
                    for (input, ack) in acks.into_iter().rev() {
                        // An acceptance may have lost to one made elsewhere:
                        // then the retry must refuse it, not try again.
                        if let OpInput::Accept { handoff_id, .. } = &input {
                            if let Ok(true) = self
                                .deps
                                .store
                                .handoff_accepted(&self.key.tenant, *handoff_id)
                                .await
                            {
                                self.accepted.insert(*handoff_id);
                            }
                        }
                        if let Some(op) = input.retry(ack) {
                            self.pending.push_front(op);
                        }
                    }
                    // Two writers that keep colliding (a slow machine, a hot
                    // session) must stop moving in step: after the second
                    // loss in a row, wait a random few milliseconds.
                    if self.conflicts >= 2 {
                        let cap = 1u64 << self.conflicts.min(5);
                        let jitter = u64::from(Uuid::new_v4().as_bytes()[0]) % (cap + 1);
                        tokio::time::sleep(Duration::from_millis(jitter)).await;
                    }
                }
            }
        }
        for reply in std::mem::take(&mut self.waiting_reads) {
            let r = self.summary().await;
            let _ = reply.send(r);
        }
    }

    /// Turn pending operations into one unit and send it to persistence.
    async fn submit(&mut self, myself: &ActorRef<SessionMsg>) {
        if self.pending.is_empty() || self.inflight.is_some() {
            return;
        }
        if self
            .unavailable_at
            .is_some_and(|at| at.elapsed() < FAIL_FAST_AFTER_OUTAGE)
        {
            let e = HandoffError::storage_unavailable(
                "the database did not answer just now; retry shortly",
            );
            for op in self.pending.drain(..) {
                op.fail(e.clone());
            }
            return;
        }
        let locked = if self.is_hot() {
            match self.lock().await {
                Ok(locked) => locked,
                Err(e) => {
                    for op in self.pending.drain(..) {
                        op.fail(e.clone());
                    }
                    return;
                }
            }
        } else {
            None
        };
        if locked.is_none() {
            self.assume_new_for_registration().await;
            if let Err(e) = self.load().await {
                for op in self.pending.drain(..) {
                    op.fail(e.clone());
                }
                return;
            }
        }
        // The state is moved, not copied, into the speculative copy: until
        // the unit settles nothing reads `committed`, and a unit that fails
        // leaves it unknown (reloaded on next use) anyway.
        let was_new = matches!(self.committed, Some(None));
        let mut spec = self.committed.take().expect("loaded");
        let mut unit = CommitUnit::default();
        let mut acks = Vec::new();
        let mut audits = Vec::new();
        let mut structural = false;
        while let Some(op) = self.pending.pop_front() {
            let is_delete = op.erases();
            // A deletion travels alone: nothing of the session may be
            // written in the same unit as its erasure.
            if is_delete && !unit.is_empty() {
                self.pending.push_front(op);
                break;
            }
            let before = spec
                .as_ref()
                .map(|r| (r.status, r.summary.participants.len()));
            // Appends and plain handoffs only add rows (entries, a handoff):
            // the load folds those back in. Anything that changes the row's
            // own fields (status, participants, a new row) is structural.
            let is_entry_only = matches!(
                op,
                Op::Append { .. } | Op::Handoff { .. } | Op::Accept { .. }
            );
            let input = op.input();
            if let Some(ack) = self.apply(op, &mut spec, &mut unit, &mut audits) {
                let after = spec
                    .as_ref()
                    .map(|r| (r.status, r.summary.participants.len()));
                structural |= !is_entry_only || before != after;
                acks.push((input, ack));
            }
            if is_delete && !unit.is_empty() {
                break;
            }
        }
        if unit.is_empty() {
            // Every operation was refused before changing anything.
            self.committed = Some(spec);
            if let Some((lock, _)) = locked {
                lock.release().await;
            }
            return;
        }
        let mut checkpoint = None;
        unit.session_is_new = was_new;
        if let Some(row) = spec.as_ref().filter(|_| unit.delete.is_none()) {
            if structural || row.last_seq - self.checkpoint_seq >= CHECKPOINT_EVERY {
                unit.session = Some(row.clone());
                checkpoint = Some(row.last_seq);
            }
        }
        let accept_ids: Vec<Uuid> = unit.accepts.iter().map(|a| a.id).collect();
        let change = crate::changes::Change {
            tenant: self.key.tenant.clone(),
            session_key: self.key.key.clone(),
            agents: unit
                .handoffs
                .iter()
                .map(|h| h.target_agent.clone())
                .chain(unit.accepts.iter().map(|a| a.agent.clone()))
                .collect(),
        };
        let changes = self.deps.changes.clone();
        let cache = self.deps.cache.clone();
        let cache_key = self.key.clone();
        let snapshot = if cache.shared() { spec.clone() } else { None };
        let counts = (
            unit.entries.len() as u64,
            unit.handoffs.len() as u64,
            acks.iter()
                .filter(|(_, a)| matches!(a, Ack::Register(..)))
                .count() as u64,
        );
        let committing: std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), HandoffError>> + Send>,
        > = match locked {
            Some((lock, deadline)) => Box::pin(commit_locked(
                lock,
                unit,
                deadline,
                self.deps.breaker.clone(),
            )),
            None => match self.deps.persistence.submit(unit) {
                Ok(rx) => Box::pin(async move {
                    rx.await.unwrap_or_else(|_| {
                        Err(HandoffError::internal("the persistence actor failed"))
                    })
                }),
                // Nothing was written; `committed` stays unknown and reloads.
                Err(e) => {
                    let r = Err(e);
                    for (_, ack) in acks {
                        ack.send(&r);
                    }
                    return;
                }
            },
        };
        let may_retry = self.conflicts < MAX_CONFLICT_RETRIES;
        let (done_tx, done_rx) = oneshot::channel();
        let me = myself.clone();
        let fence = self.deps.fences.raise(&self.key);
        tokio::spawn(async move {
            let _fence = fence;
            let r = committing.await;
            if matches!(&r, Err(e) if e.is_write_conflict() && may_retry) {
                let _ = done_tx.send(Outcome::Conflict(acks));
                let _ = me.cast(SessionMsg::Committed);
                return;
            }
            let ok = r.is_ok();
            // Before the replies: a client that saw its reply and then caused
            // another change gets the two notices in that order.
            if ok {
                changes.publish(change);
            }
            for (_, ack) in acks {
                ack.send(&r);
            }
            let outcome = match &r {
                Ok(()) => Outcome::Committed,
                Err(e) => Outcome::Failed(e.clone()),
            };
            // After the replies: a live actor answers this process's reads
            // itself, so only other replicas read what this writes.
            if ok && cache.shared() {
                match &snapshot {
                    Some(row) => cache.put(&cache_key, row).await,
                    None => cache.forget(&cache_key).await,
                }
            }
            if ok {
                let m = metrics();
                m.hot.created_entries.inc_by(counts.0);
                m.hot.created_handoffs.inc_by(counts.1);
                m.hot.created_sessions.inc_by(counts.2);
                for e in audits {
                    AuditMsg::record(e);
                }
            }
            let _ = done_tx.send(outcome);
            let _ = me.cast(SessionMsg::Committed);
        });
        self.inflight = Some(Inflight {
            spec,
            accepts: accept_ids,
            checkpoint,
            done: done_rx,
        });
    }

    /// From here this actor answers the session's reads: a cache only this
    /// process reads drops its copy (see `crate::cache`) until
    /// `park_in_cache` puts the final row back.
    async fn take_over_cached_copy(&self) {
        if !self.deps.cache.shared() {
            self.deps.cache.evict(&self.key).await;
        }
    }

    /// A cache only this process reads gets the final row now (see
    /// `crate::cache`); an unknown state (a failed unit) leaves no copy.
    async fn park_in_cache(&self) {
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
    async fn checkpoint(&mut self) {
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

    fn audit(&self, action: &'static str, actor: Option<&str>, details: Value) -> AuditEvent {
        AuditEvent {
            action,
            tenant: self.key.tenant.to_string(),
            actor: actor.map(str::to_string),
            subject_hash: Some(crate::key_hash(&self.deps.hash_key, &self.key.key)),
            details,
        }
    }

    /// `apply_op`, and a dormant session that activity woke up recorded as
    /// a lifecycle transition (dormant → active).
    fn apply(
        &self,
        op: Op,
        spec: &mut Option<SessionRow>,
        unit: &mut CommitUnit,
        audits: &mut Vec<AuditEvent>,
    ) -> Option<Ack> {
        let was = spec.as_ref().map(|r| (r.status, r.id));
        // Registration audits its reactivation itself.
        let register = matches!(op, Op::Register { .. });
        let ack = self.apply_op(op, spec, unit, audits)?;
        let now_active = spec
            .as_ref()
            .is_some_and(|r| r.status == SessionStatus::Active);
        if let (Some((SessionStatus::Dormant, id)), true) = (was, now_active) {
            let reason = "activity on a dormant session".to_string();
            if !register {
                audits.push(self.audit(
                    "session.lifecycle",
                    None,
                    json!({"session_id": id, "from": "dormant", "to": "active", "reason": reason}),
                ));
            }
            unit.lifecycle.push(LifecycleEvent {
                id: Uuid::now_v7(),
                tenant: self.key.tenant.clone(),
                session_id: Some(id),
                session_key: Some(self.key.key.clone()),
                from: SessionStatus::Dormant,
                to: LifecycleTarget::Status(SessionStatus::Active),
                at: now(),
                reason,
            });
        }
        Some(ack)
    }

    /// Validate one operation against the speculative state and fold it in.
    /// A refused operation is answered at once and leaves no trace.
    fn apply_op(
        &self,
        op: Op,
        spec: &mut Option<SessionRow>,
        unit: &mut CommitUnit,
        audits: &mut Vec<AuditEvent>,
    ) -> Option<Ack> {
        let at = now();
        match op {
            Op::Register {
                agent_from,
                metadata,
                reply,
            } => {
                let reactivated = match spec {
                    Some(row) if row.status == SessionStatus::Dormant => {
                        row.status = SessionStatus::Active;
                        if metadata.is_some() {
                            row.metadata = metadata;
                        }
                        row.summary.add_participant(&agent_from);
                        true
                    }
                    Some(row) => {
                        let _ = reply.send(Err(HandoffError::new(
                            ErrorCode::SessionExists,
                            format!(
                                "a session with this key already exists ({})",
                                row.status.as_str()
                            ),
                        )
                        .detail("existing_session", session_json(row))));
                        return None;
                    }
                    None => {
                        *spec = Some(SessionRow {
                            id: Uuid::now_v7(),
                            tenant: self.key.tenant.clone(),
                            session_key: self.key.key.clone(),
                            agent_from: agent_from.clone(),
                            status: SessionStatus::Active,
                            metadata,
                            created_at: at,
                            last_activity_at: at,
                            last_seq: 0,
                            summary: Summary::with_participant(&agent_from),
                        });
                        false
                    }
                };
                let row = spec.as_mut().expect("set above");
                let text = if reactivated {
                    format!("Session reactivated by agent {agent_from}")
                } else {
                    format!("Session registered by agent {agent_from}")
                };
                push_entry(row, unit, ContextType::System, text, None, at);
                audits.push(self.audit(
                    if reactivated {
                        "session.reactivated"
                    } else {
                        "session.registered"
                    },
                    Some(&agent_from),
                    json!({"session_id": row.id}),
                ));
                Some(Ack::Register(
                    reply,
                    Registered {
                        session: row.without_summary(),
                        reactivated,
                    },
                ))
            }
            Op::Append { entries, reply } => {
                let row = match writable(spec, &self.key.key) {
                    Ok(row) => row,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return None;
                    }
                };
                let out = entries
                    .into_iter()
                    .map(|e| {
                        let len = e.content.len();
                        let entry =
                            push_entry(row, unit, e.context_type, e.content, e.metadata, at);
                        AppendedEntry {
                            id: entry.0,
                            sequence_number: entry.1,
                            context_type: e.context_type,
                            content_length: len,
                            created_at: at,
                        }
                    })
                    .collect();
                Some(Ack::Append(
                    reply,
                    Appended {
                        session_id: row.id,
                        status: row.status,
                        entries: out,
                    },
                ))
            }
            Op::Handoff { request, reply } => {
                if let (Some(bound), Some(row)) = (&request.as_agent, spec.as_ref()) {
                    if *bound != row.agent_from {
                        let _ = reply.send(Err(HandoffError::new(
                            ErrorCode::Forbidden,
                            format!(
                                "this API key acts as agent '{bound}' only; the session's handoffs come from its registering agent"
                            ),
                        )
                        .detail("field", "session_key")));
                        return None;
                    }
                }
                let row = match writable(spec, &self.key.key) {
                    Ok(row) => row,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return None;
                    }
                };
                let source = row.agent_from.clone();
                let text = format!(
                    "Handoff requested: {} -> {} ({})",
                    source,
                    request.target_agent,
                    request.request_type.as_str()
                );
                push_entry(row, unit, ContextType::System, text, None, at);
                match request.request_type {
                    HandoffType::FullHandoff => row.status = SessionStatus::Completed,
                    HandoffType::Collaboration => {
                        row.summary.add_participant(&request.target_agent)
                    }
                    HandoffType::ContextTransfer => {}
                }
                row.summary.handoffs += 1;
                let context_summary =
                    serde_json::to_value(SummaryView::of(row, at)).unwrap_or(Value::Null);
                let handoff = HandoffRow {
                    id: Uuid::now_v7(),
                    tenant: self.key.tenant.clone(),
                    session_id: row.id,
                    session_key: self.key.key.clone(),
                    source_agent: source.clone(),
                    target_agent: request.target_agent,
                    request_type: request.request_type,
                    status: "pending".into(),
                    request_data: request.request_data,
                    context_summary,
                    context_entries: row.summary.total_entries,
                    created_at: at,
                };
                unit.handoffs.push(handoff.clone());
                audits.push(self.audit(
                    "handoff.requested",
                    Some(&source),
                    json!({"handoff_id": handoff.id, "target_agent": handoff.target_agent,
                           "request_type": handoff.request_type.as_str()}),
                ));
                Some(Ack::Handoff(
                    reply,
                    HandoffCreated {
                        handoff,
                        session_status: row.status,
                    },
                ))
            }
            Op::Accept {
                handoff_id,
                agent,
                reply,
            } => {
                let Some(row) = spec.as_mut() else {
                    let _ = reply.send(Err(HandoffError::session_not_found(&self.key.key)));
                    return None;
                };
                if self.accepted.contains(&handoff_id)
                    || unit.accepts.iter().any(|a| a.id == handoff_id)
                {
                    let _ = reply.send(Err(HandoffError::validation(
                        "this handoff has already been accepted",
                    )
                    .detail("handoff_id", handoff_id.to_string())));
                    return None;
                }
                // A completed session (full handoff) takes no more entries;
                // the acceptance is still recorded on the handoff.
                if matches!(row.status, SessionStatus::Active | SessionStatus::Dormant) {
                    row.status = SessionStatus::Active;
                    let text = format!("Handoff {handoff_id} accepted by {agent}");
                    push_entry(row, unit, ContextType::System, text, None, at);
                }
                unit.accepts.push(HandoffAccept {
                    id: handoff_id,
                    agent: agent.clone(),
                    at,
                });
                audits.push(self.audit(
                    "handoff.accepted",
                    Some(&agent),
                    json!({"handoff_id": handoff_id}),
                ));
                Some(Ack::Accept(
                    reply,
                    Accepted {
                        handoff_id,
                        accepted_at: at,
                        session_status: row.status,
                    },
                ))
            }
            Op::Delete {
                requested_by,
                reply,
            } => {
                let Some(row) = spec.take() else {
                    let _ = reply.send(Err(HandoffError::session_not_found(&self.key.key)));
                    return None;
                };
                unit.delete = Some(row.id);
                audits.push(self.audit(
                    "session.deleted",
                    requested_by.as_deref(),
                    json!({"session_id": row.id, "entries": row.summary.total_entries}),
                ));
                Some(Ack::Delete(
                    reply,
                    Deleted {
                        session_id: row.id,
                        entries_removed: row.last_seq,
                    },
                ))
            }
            Op::Transition { request, reply } => {
                let event = self.transition(request, spec, unit, audits, at);
                if event.is_none() {
                    let _ = reply.send(Ok(None));
                    return None;
                }
                Some(Ack::Transition(reply, event))
            }
        }
    }

    /// A lifecycle step, decided on the live state: the in-memory
    /// `last_activity_at` is current even when the stored row lags.
    fn transition(
        &self,
        request: TransitionRequest,
        spec: &mut Option<SessionRow>,
        unit: &mut CommitUnit,
        audits: &mut Vec<AuditEvent>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Option<LifecycleEvent> {
        let row = spec.as_mut()?;
        if !request.from.contains(&row.status) || at - row.last_activity_at < request.idle_for {
            return None;
        }
        let from = row.status;
        let mut event = LifecycleEvent {
            id: Uuid::now_v7(),
            tenant: self.key.tenant.clone(),
            session_id: Some(row.id),
            session_key: Some(self.key.key.clone()),
            from,
            to: request.to,
            at,
            reason: request.reason,
        };
        let details = json!({"session_id": row.id, "from": from.as_str(),
                             "to": request.to.as_str(), "reason": event.reason});
        match request.to {
            LifecycleTarget::Status(to) => {
                row.status = to;
                audits.push(self.audit("session.lifecycle", Some("system"), details));
            }
            LifecycleTarget::Purged => {
                let row = spec.take()?;
                unit.delete = Some(row.id);
                event.session_id = None;
                event.session_key = None;
                audits.push(self.audit("session.purged", Some("system"), details));
            }
        }
        unit.lifecycle.push(event.clone());
        Some(event)
    }
}

impl Op {
    fn erases(&self) -> bool {
        matches!(self, Op::Delete { .. })
            || matches!(self, Op::Transition { request, .. } if request.to == LifecycleTarget::Purged)
    }

    fn fail(self, e: HandoffError) {
        match self {
            Op::Register { reply, .. } => drop(reply.send(Err(e))),
            Op::Append { reply, .. } => drop(reply.send(Err(e))),
            Op::Handoff { reply, .. } => drop(reply.send(Err(e))),
            Op::Delete { reply, .. } => drop(reply.send(Err(e))),
            Op::Accept { reply, .. } => drop(reply.send(Err(e))),
            Op::Transition { reply, .. } => drop(reply.send(Err(e))),
        }
    }
}

/// Write a hot session's unit under its lock, within what is left of the
/// unit's deadline; reported to the breaker as the persistence actor's
/// commits are.
async fn commit_locked(
    lock: Box<dyn SessionLock>,
    unit: CommitUnit,
    deadline: Instant,
    breaker: BreakerHandle,
) -> Result<(), HandoffError> {
    let budget = deadline.saturating_duration_since(Instant::now());
    let r = tokio::time::timeout(budget, lock.commit(&unit))
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the locked commit did not finish in time".into(),
            ))
        });
    breaker.report(
        Dependency::Database,
        !matches!(r, Err(StoreError::Unavailable(_))),
    );
    if matches!(r, Err(StoreError::Conflict(_))) {
        metrics().write_conflicts.inc();
    }
    r.map_err(HandoffError::from)
}

/// The session, if it may take writes; a dormant one wakes up.
fn writable<'a>(
    spec: &'a mut Option<SessionRow>,
    key: &str,
) -> Result<&'a mut SessionRow, HandoffError> {
    let row = spec
        .as_mut()
        .ok_or_else(|| HandoffError::session_not_found(key))?;
    match row.status {
        SessionStatus::Active => Ok(row),
        SessionStatus::Dormant => {
            row.status = SessionStatus::Active;
            Ok(row)
        }
        other => Err(HandoffError::new(
            ErrorCode::SessionNotActive,
            format!(
                "the session is {} and takes no further writes",
                other.as_str()
            ),
        )
        .detail("session_key", key)
        .detail("current_status", other.as_str())),
    }
}

/// Append one entry at the next sequence number. Returns (id, seq).
fn push_entry(
    row: &mut SessionRow,
    unit: &mut CommitUnit,
    context_type: ContextType,
    content: String,
    metadata: Option<Value>,
    at: chrono::DateTime<chrono::Utc>,
) -> (Uuid, i64) {
    row.last_seq += 1;
    row.last_activity_at = at;
    let entry = EntryRow {
        session_id: row.id,
        seq: row.last_seq,
        id: Uuid::now_v7(),
        context_type,
        content,
        metadata,
        created_at: at,
    };
    row.summary.apply(&entry);
    let out = (entry.id, entry.seq);
    unit.entries.push(entry);
    out
}

pub fn session_json(row: &SessionRow) -> Value {
    json!({
        "id": row.id,
        "session_key": &*row.session_key,
        "agent_from": row.agent_from,
        "status": row.status.as_str(),
        "created_at": crate::model::rfc3339(&row.created_at),
        "last_activity_at": crate::model::rfc3339(&row.last_activity_at),
        "metadata": row.metadata.clone().unwrap_or_else(|| json!({})),
    })
}
