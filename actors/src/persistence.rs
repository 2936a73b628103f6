//! The persistence actor: group commit. Every session actor (and the audit
//! actor) sends it units of work; it gathers what has queued up and commits
//! it in one transaction, then acknowledges each unit. No timer: a batch is
//! flushed when it is full or when the mailbox holds nothing older than the
//! flush marker, so a lone write pays one commit and a busy server pays one
//! commit per crowd.
//!
//! The marker trick: the first unit after a flush enqueues `Flush` behind
//! itself. Every unit that arrived before the marker is buffered by the time
//! the marker is handled; units that arrive while the commit runs queue in
//! the mailbox and form the next batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::concurrency::{oneshot, OneshotReceiver};
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};

use crate::address::Address;
use crate::breaker::{BreakerHandle, Dependency, Report};
use crate::error::{HandoffError, StoreError};
use crate::metrics::metrics;
use crate::model::CommitUnit;
use crate::store::Store;

pub const PERSISTENCE_NAME: &str = "persistence";

pub type CommitReply = RpcReplyPort<Result<(), HandoffError>>;

pub enum PersistMsg {
    /// A unit, its reply port and when it was submitted.
    Commit(Box<CommitUnit>, CommitReply, Instant),
    /// Commit what is buffered; self-sent (see the module comment).
    Flush,
}

#[derive(Debug, Clone)]
pub struct PersistenceConfig {
    /// Units per transaction at most.
    pub max_batch: usize,
    /// A commit that takes longer counts as a failure of the database.
    pub timeout: Duration,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        Self {
            max_batch: 256,
            timeout: Duration::from_secs(5),
        }
    }
}

/// How the rest of the tree reaches the persistence actor: an address the
/// root binds to each persistence actor it starts.
#[derive(Clone, Default)]
pub struct PersistenceHandle(Address<PersistMsg>);

impl PersistenceHandle {
    pub fn bind(&self, actor: ActorRef<PersistMsg>) {
        self.0.bind(actor);
    }

    /// Submit a unit and return the receiver of its acknowledgement.
    pub fn submit(
        &self,
        unit: CommitUnit,
    ) -> Result<OneshotReceiver<Result<(), HandoffError>>, HandoffError> {
        let (tx, rx) = oneshot();
        let Some(actor) = self.0.get() else {
            return Err(HandoffError::storage_unavailable(
                "the persistence actor is restarting; retry",
            ));
        };
        match actor.cast(PersistMsg::Commit(
            Box::new(unit),
            tx.into(),
            Instant::now(),
        )) {
            Ok(()) => {
                metrics()
                    .mailbox_backlog
                    .with_label_values(&["persistence"])
                    .inc();
                Ok(rx)
            }
            Err(MessagingErr::SendErr(_)) | Err(_) => Err(HandoffError::storage_unavailable(
                "the persistence actor is stopping; retry",
            )),
        }
    }

    /// Submit and wait for the commit.
    pub async fn commit(&self, unit: CommitUnit) -> Result<(), HandoffError> {
        let rx = self.submit(unit)?;
        rx.await.unwrap_or_else(|_| {
            Err(HandoffError::internal(
                "the persistence actor failed before acknowledging",
            ))
        })
    }
}

pub struct PersistenceActor;

pub struct PersistenceArgs {
    pub store: Arc<dyn Store>,
    pub breaker: BreakerHandle,
    pub config: PersistenceConfig,
}

pub struct PersistenceState {
    store: Arc<dyn Store>,
    breaker: BreakerHandle,
    config: PersistenceConfig,
    /// Units waiting for the next commit, with when each arrived: a unit
    /// never waits longer than `timeout` in all (queue and commit).
    buffer: Vec<(CommitUnit, CommitReply, Instant)>,
    flush_scheduled: bool,
    /// Totals for the shutdown summary line: batches, units, commit time.
    totals: (u64, u64, Duration),
}

impl Actor for PersistenceActor {
    type Msg = PersistMsg;
    type State = PersistenceState;
    type Arguments = PersistenceArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<PersistMsg>,
        args: PersistenceArgs,
    ) -> Result<PersistenceState, ActorProcessingErr> {
        // Whatever a failed predecessor had queued died with it.
        metrics()
            .mailbox_backlog
            .with_label_values(&["persistence"])
            .set(0);
        Ok(PersistenceState {
            store: args.store,
            breaker: args.breaker,
            buffer: Vec::with_capacity(args.config.max_batch),
            config: args.config,
            flush_scheduled: false,
            totals: (0, 0, Duration::ZERO),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<PersistMsg>,
        msg: PersistMsg,
        st: &mut PersistenceState,
    ) -> Result<(), ActorProcessingErr> {
        let hot = &metrics().hot;
        let name = match msg {
            PersistMsg::Commit(..) => "commit",
            PersistMsg::Flush => "flush",
        };
        let _handling = crate::metrics::Handling::start(
            "persistence",
            name,
            &hot.persistence_messages,
            &hot.persistence_handling,
        );
        match msg {
            PersistMsg::Commit(unit, reply, submitted) => {
                metrics()
                    .mailbox_backlog
                    .with_label_values(&["persistence"])
                    .dec();
                if let Err(e) = st.breaker.check(Dependency::Database) {
                    let _ = reply.send(Err(e));
                    return Ok(());
                }
                st.buffer.push((*unit, reply, submitted));
                if st.buffer.len() >= st.config.max_batch {
                    st.flush().await;
                } else if !st.flush_scheduled {
                    st.flush_scheduled = true;
                    // Refused only while draining: commit now rather than
                    // fail the actor (which would drop the buffer unanswered).
                    if myself.cast(PersistMsg::Flush).is_err() {
                        st.flush().await;
                    }
                }
            }
            PersistMsg::Flush => {
                st.flush_scheduled = false;
                st.flush().await;
            }
        }
        Ok(())
    }

    /// Whatever is still buffered when the actor stops is committed first:
    /// shutdown must not drop a write a session is waiting on.
    async fn post_stop(
        &self,
        _myself: ActorRef<PersistMsg>,
        st: &mut PersistenceState,
    ) -> Result<(), ActorProcessingErr> {
        st.flush().await;
        let (batches, units, time) = st.totals;
        tracing::info!(
            batches,
            units,
            mean_units_per_batch = units as f64 / batches.max(1) as f64,
            mean_commit_ms = time.as_secs_f64() * 1000.0 / batches.max(1) as f64,
            "persistence stopped"
        );
        Ok(())
    }
}

impl PersistenceState {
    async fn flush(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.buffer);
        let m = metrics();
        m.batch_units
            .with_label_values(&["units"])
            .observe(batch.len() as f64);
        let started = Instant::now();
        // The batch may use what is left of its oldest unit's time: a unit
        // queued behind a commit that hung must not wait twice.
        for (_, _, submitted) in &batch {
            m.queue_seconds
                .observe(started.duration_since(*submitted).as_secs_f64());
        }
        let oldest = batch.iter().map(|b| b.2).min().unwrap_or(started);
        let budget = self.config.timeout.saturating_sub(oldest.elapsed());
        if budget < Duration::from_millis(5) {
            let e = HandoffError::from(StoreError::Unavailable(
                "the database did not answer in time".into(),
            ));
            for (_, reply, _) in batch {
                let _ = reply.send(Err(e.clone()));
            }
            self.buffer = Vec::with_capacity(self.config.max_batch);
            return;
        }
        let units: Vec<&CommitUnit> = batch.iter().map(|(u, _, _)| u).collect();
        let result = self.commit(&units, budget).await;
        self.totals.0 += 1;
        self.totals.1 += batch.len() as u64;
        self.totals.2 += started.elapsed();
        m.commit_seconds
            .with_label_values(&[if result.is_ok() { "ok" } else { "error" }])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(lost) => {
                for (i, (_, reply, _)) in batch.into_iter().enumerate() {
                    let _ = reply.send(if lost.contains(&i) {
                        Err(lost_registration())
                    } else {
                        Ok(())
                    });
                }
            }
            // One unit's data was refused (a constraint, another replica won
            // a race): commit the units one by one so only it fails.
            Err(StoreError::Rejected(_) | StoreError::Conflict(_)) if batch.len() > 1 => {
                for (unit, reply, _) in batch {
                    let r = match self.commit(&[&unit], self.config.timeout).await {
                        Ok(lost) if lost.is_empty() => Ok(()),
                        Ok(_) => Err(lost_registration()),
                        Err(e) => Err(HandoffError::from(e)),
                    };
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                let e = HandoffError::from(e);
                for (_, reply, _) in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
        self.buffer = Vec::with_capacity(self.config.max_batch);
    }

    /// One transaction through the breaker's guard. Returns the indexes of
    /// units left out as lost registrations. Units queued before the breaker
    /// opened get the generic unavailable answer, not the breaker's: they
    /// waited, and `details.state: open` promises a refusal at once.
    async fn commit(
        &self,
        units: &[&CommitUnit],
        budget: Duration,
    ) -> Result<Vec<usize>, StoreError> {
        let r = self
            .breaker
            .guard(
                Dependency::Database,
                Report::Both,
                budget,
                "batch commit",
                self.store.commit_partial(units),
            )
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("circuit breaker open".into())));
        match &r {
            Err(StoreError::Conflict(_)) if units.len() == 1 => {
                metrics().write_conflicts.inc();
                tracing::debug!("unit lost a write race; its writer retries");
            }
            Err(StoreError::Conflict(_)) => {}
            Err(e) => tracing::error!(error = %e, units = units.len(), "batch commit failed"),
            Ok(lost) => {
                if !lost.is_empty() {
                    metrics().write_conflicts.inc_by(lost.len() as u64);
                }
            }
        }
        r
    }
}

/// A unit registered a key that another writer (a replica, or an earlier
/// life of the session) had registered: its session actor reloads the key
/// and applies the operations again (SESSION_EXISTS, or a reactivation).
fn lost_registration() -> HandoffError {
    HandoffError::from(StoreError::Conflict(
        "the session key was registered by another writer".into(),
    ))
}
