//! Turning queued operations into units: applied in order against a
//! speculative copy of the state, sent to the persistence actor (or, for a
//! hot session, written under its lock), and settled when the commit
//! answers — replies, the conflict retry, the fail-fast after an outage.

use std::time::{Duration, Instant};

use ractor::ActorRef;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::ops::{Draft, Kind, Prepared, Rules};
use super::state::{Inflight, SessionState, UnitOutcome, HOT_FOR};
use super::SessionMsg;
use crate::breaker::{BreakerHandle, Dependency, Report};
use crate::error::{ErrorCode, HandoffError, StoreError};
use crate::metrics::metrics;
use crate::model::{now, CommitUnit};
use crate::store::SessionLock;

/// Entries between two checkpoints of the session row at most (bounds the
/// tail a load must fold in).
const CHECKPOINT_EVERY: i64 = 64;

/// Times in a row a unit may lose a write race to another replica before
/// its callers get a retryable error instead of another attempt.
const MAX_CONFLICT_RETRIES: u32 = 16;

/// Operations handled this soon after the database failed to answer this
/// actor fail at once: they waited in the mailbox behind that failure, and
/// trying again would make them wait a second timeout.
const FAIL_FAST_AFTER_OUTAGE: Duration = Duration::from_millis(100);

impl SessionState {
    /// Wait for the unit in flight (if any) and take its outcome.
    pub(super) async fn settle_inflight(&mut self) {
        if let Some(inf) = self.inflight.take() {
            let lost = || UnitOutcome::Failed(HandoffError::internal("the commit waiter failed"));
            match inf.done.await.unwrap_or_else(|_| lost()) {
                UnitOutcome::Committed => {
                    self.committed = Some(inf.spec);
                    self.accepted.extend(inf.accepts);
                    if let Some(seq) = inf.checkpoint {
                        self.checkpoint_seq = seq;
                    }
                    self.synced_at = Instant::now();
                    self.conflicts = 0;
                }
                UnitOutcome::Failed(e) => {
                    // The store may or may not hold the unit (a timeout is
                    // ambiguous): forget the state and reload it on next use.
                    self.committed = None;
                    // Operations queued behind it would meet the same dead
                    // database after having waited once already: answer
                    // them now, so no call waits longer than one timeout.
                    if e.code == ErrorCode::StorageUnavailable && !e.is_write_conflict() {
                        // A refusal by the open breaker is fast already and
                        // says so itself; the window is for a database that
                        // did not answer.
                        if !e.is_breaker_refusal() {
                            self.unavailable_at = Some(Instant::now());
                        }
                        self.fail_pending(&e);
                    }
                }
                UnitOutcome::Conflict(applied) => {
                    // Nothing of the unit was stored and nobody was answered:
                    // reload and apply the same operations again, in order.
                    self.committed = None;
                    self.conflicts += 1;
                    self.hot_until = Some(Instant::now() + HOT_FOR);
                    for prepared in applied.into_iter().rev() {
                        // An acceptance may have lost to one made elsewhere:
                        // then the retry must refuse it, not try again.
                        if let Kind::Accept(handoff_id) = prepared.kind() {
                            if let Ok(true) = self
                                .deps
                                .store
                                .handoff_accepted(&self.key.tenant, handoff_id)
                                .await
                            {
                                self.accepted.insert(handoff_id);
                            }
                        }
                        self.pending.push_front(prepared.retry());
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

    /// Answer every queued operation with `e`; none of them was applied.
    fn fail_pending(&mut self, e: &HandoffError) {
        for op in self.pending.drain(..) {
            op.fail(e.clone());
        }
    }

    /// Turn pending operations into one unit and send it to persistence.
    pub(super) async fn submit(&mut self, myself: &ActorRef<SessionMsg>) {
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
            self.fail_pending(&e);
            return;
        }
        let locked = if self.is_hot() {
            match self.lock().await {
                Ok(locked) => locked,
                Err(e) => {
                    self.fail_pending(&e);
                    return;
                }
            }
        } else {
            None
        };
        if locked.is_none() {
            self.assume_new_for_registration().await;
            if let Err(e) = self.load().await {
                self.fail_pending(&e);
                return;
            }
        }
        // The state is moved, not copied, into the speculative copy: until
        // the unit settles nothing reads `committed`, and a unit that fails
        // leaves it unknown (reloaded on next use) anyway.
        let was_new = matches!(self.committed, Some(None));
        let mut draft = Draft {
            spec: self.committed.take().expect("loaded"),
            ..Draft::default()
        };
        let mut applied: Vec<Prepared> = Vec::new();
        let mut structural = false;
        while let Some(op) = self.pending.pop_front() {
            let kind = op.kind();
            // A deletion travels alone: nothing of the session may be
            // written in the same unit as its erasure.
            if kind.erases() && !draft.unit.is_empty() {
                self.pending.push_front(op);
                break;
            }
            let shape = |d: &Draft| {
                d.spec
                    .as_ref()
                    .map(|r| (r.status, r.summary.participants.len()))
            };
            let before = shape(&draft);
            let rules = Rules {
                key: &self.key,
                hash_key: &self.deps.hash_key,
                accepted: &self.accepted,
                at: now(),
            };
            if let Some(prepared) = op.apply(&rules, &mut draft) {
                // Rows added only (entries, a handoff) are folded back in by
                // a load; a change of the row's own fields (status,
                // participants, a new row) needs the row written.
                structural |= !kind.adds_rows_only() || before != shape(&draft);
                applied.push(prepared);
            }
            if kind.erases() && !draft.unit.is_empty() {
                break;
            }
        }
        let Draft {
            spec,
            mut unit,
            audits,
        } = draft;
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
            applied
                .iter()
                .filter(|p| p.kind() == Kind::Register)
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
                    for prepared in applied {
                        prepared.send(&r);
                    }
                    return;
                }
            },
        };
        let may_retry = self.conflicts < MAX_CONFLICT_RETRIES;
        let (done_tx, done_rx) = oneshot::channel();
        let me = myself.clone();
        let fence = self.deps.fences.raise(&self.key);
        let auditor = self.deps.audit.clone();
        tokio::spawn(async move {
            let _fence = fence;
            let r = committing.await;
            if matches!(&r, Err(e) if e.is_write_conflict() && may_retry) {
                let _ = done_tx.send(UnitOutcome::Conflict(applied));
                let _ = me.cast(SessionMsg::Committed);
                return;
            }
            let ok = r.is_ok();
            // Before the replies: a client that saw its reply and then caused
            // another change gets the two notices in that order.
            if ok {
                changes.publish(change);
            }
            for prepared in applied {
                prepared.send(&r);
            }
            let outcome = match &r {
                Ok(()) => UnitOutcome::Committed,
                Err(e) => UnitOutcome::Failed(e.clone()),
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
                    auditor.record(e);
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
    let r = breaker
        .guard(
            Dependency::Database,
            Report::Both,
            budget,
            "the locked commit",
            lock.commit(&unit),
        )
        .await?;
    if matches!(r, Err(StoreError::Conflict(_))) {
        metrics().write_conflicts.inc();
    }
    r.map_err(HandoffError::from)
}
