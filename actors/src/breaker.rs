//! The circuit-breaker actor. It owns the state machine of each dependency
//! (closed → open → half-open → closed); callers read the current state from
//! a shared atomic, so the check on the hot path is one load, and report
//! outcomes with a cast. When the database dies, calls fail at once with a
//! retryable `STORAGE_UNAVAILABLE` instead of queueing behind a dead socket.
//!
//! Every call to the database or the cache goes through
//! [`BreakerHandle::guard`]: refused while open, bounded in time, its outcome
//! reported. Transitions are published on an output port
//! ([`BreakerHandle::transitions`]); the root subscribes the audit actor, so
//! the breaker knows nothing of who listens.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, OutputPort};

use crate::address::Address;
use crate::error::{HandoffError, StoreError};
use crate::metrics::metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Database,
    Cache,
}

impl Dependency {
    pub fn as_str(self) -> &'static str {
        match self {
            Dependency::Database => "database",
            Dependency::Cache => "cache",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BreakerState {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
    fn from_u8(v: u8) -> Self {
        match v {
            1 => BreakerState::HalfOpen,
            2 => BreakerState::Open,
            _ => BreakerState::Closed,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before letting probes through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
        }
    }
}

/// A breaker changed state (published on `BreakerHandle::transitions`).
#[derive(Debug, Clone, Copy)]
pub struct Transition {
    pub dependency: Dependency,
    pub from: BreakerState,
    pub to: BreakerState,
}

/// Which outcomes of a guarded call reach the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Database reads: a database that serves reads while every commit
    /// fails (disk full) must still open the breaker (`report_read`).
    FailuresOnly,
    /// Writes, and cache calls: a success proves the dependency works.
    Both,
}

/// An error a guarded call can end with: the one a timeout becomes, and
/// whether it says the dependency is failing (a refused statement or a
/// lost write race does not).
pub trait DependencyError {
    fn timed_out(what: &'static str) -> Self;
    fn counts_against_dependency(&self) -> bool;
}

impl DependencyError for StoreError {
    fn timed_out(what: &'static str) -> Self {
        StoreError::Unavailable(format!("{what} timed out"))
    }

    fn counts_against_dependency(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub enum BreakerMsg {
    /// The outcome of one call to a dependency.
    Outcome { dep: Dependency, ok: bool },
    /// The open period is over: let probes through.
    HalfOpen(Dependency),
}

/// The breaker actor's name (logs, the root's list of children).
pub const BREAKER_NAME: &str = "breaker";

struct Shared {
    states: [AtomicU8; 2],
    /// Set after a failure report, so a success after it is worth a message
    /// (to reset the count) and the common all-is-well case sends none.
    failing: [AtomicBool; 2],
    /// Where outcomes go: the breaker actor the root last started.
    actor: Address<BreakerMsg>,
    transitions: OutputPort<Transition>,
}

/// What callers hold: the shared state to check; reports go to the actor.
#[derive(Clone)]
pub struct BreakerHandle {
    shared: Arc<Shared>,
}

impl Default for BreakerHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl BreakerHandle {
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                states: [AtomicU8::new(0), AtomicU8::new(0)],
                failing: [AtomicBool::new(false), AtomicBool::new(false)],
                actor: Address::default(),
                transitions: OutputPort::default(),
            }),
        }
    }

    /// The root binds each breaker actor it starts.
    pub fn bind(&self, actor: ActorRef<BreakerMsg>) {
        self.shared.actor.bind(actor);
    }

    /// Every state change, for whoever subscribes (the audit actor).
    pub fn transitions(&self) -> &OutputPort<Transition> {
        &self.shared.transitions
    }

    /// One call to a dependency, the only way the server makes one: refused
    /// at once while the breaker is open (the outer error, retryable), given
    /// up after `budget` (`what` names it in the cause), and its outcome
    /// reported as `report` says.
    pub async fn guard<T, E: DependencyError>(
        &self,
        dep: Dependency,
        report: Report,
        budget: Duration,
        what: &'static str,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, HandoffError> {
        self.check(dep)?;
        let r = tokio::time::timeout(budget, fut)
            .await
            .unwrap_or_else(|_| Err(E::timed_out(what)));
        let ok = !matches!(&r, Err(e) if e.counts_against_dependency());
        match report {
            Report::FailuresOnly => self.report_read(dep, ok),
            Report::Both => self.report(dep, ok),
        }
        Ok(r)
    }

    pub fn state(&self, dep: Dependency) -> BreakerState {
        BreakerState::from_u8(self.shared.states[dep.index()].load(Ordering::Acquire))
    }

    fn set_state(&self, dep: Dependency, to: BreakerState) {
        self.shared.states[dep.index()].store(to as u8, Ordering::Release);
    }

    /// Fails fast while the breaker is open.
    pub fn check(&self, dep: Dependency) -> Result<(), HandoffError> {
        match self.state(dep) {
            BreakerState::Open => Err(HandoffError::breaker_open(dep.as_str())),
            _ => Ok(()),
        }
    }

    /// A read's outcome. Only failures count: a database that still serves
    /// reads while every commit fails (disk full) must still open the
    /// breaker, so read successes neither reset the count nor close it.
    fn report_read(&self, dep: Dependency, ok: bool) {
        if !ok {
            self.report(dep, false);
        }
    }

    /// A write's outcome (or any call that proves the dependency works).
    fn report(&self, dep: Dependency, ok: bool) {
        let i = dep.index();
        if ok {
            if self.state(dep) == BreakerState::Closed
                && !self.shared.failing[i].swap(false, Ordering::AcqRel)
            {
                return;
            }
        } else {
            self.shared.failing[i].store(true, Ordering::Release);
        }
        let _ = self.shared.actor.send(BreakerMsg::Outcome { dep, ok });
    }
}

pub struct BreakerActor;

pub struct BreakerArgs {
    pub config: BreakerConfig,
    pub shared: BreakerHandle,
}

pub struct BreakerActorState {
    config: BreakerConfig,
    shared: BreakerHandle,
    failures: [u32; 2],
}

impl BreakerActorState {
    fn transition(&mut self, myself: &ActorRef<BreakerMsg>, dep: Dependency, to: BreakerState) {
        let from = self.shared.state(dep);
        if from == to {
            return;
        }
        self.shared.set_state(dep, to);
        let m = metrics();
        m.breaker_state
            .with_label_values(&[dep.as_str()])
            .set(to as i64);
        m.breaker_transitions
            .with_label_values(&[dep.as_str(), to.as_str()])
            .inc();
        tracing::warn!(
            dependency = dep.as_str(),
            from = from.as_str(),
            to = to.as_str(),
            "circuit breaker transition"
        );
        self.shared.transitions().send(Transition {
            dependency: dep,
            from,
            to,
        });
        if to == BreakerState::Open {
            let open_for = self.config.open_for;
            myself.send_after(open_for, move || BreakerMsg::HalfOpen(dep));
        }
    }
}

impl Actor for BreakerActor {
    type Msg = BreakerMsg;
    type State = BreakerActorState;
    type Arguments = BreakerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: BreakerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        for dep in [Dependency::Database, Dependency::Cache] {
            metrics()
                .breaker_state
                .with_label_values(&[dep.as_str()])
                .set(args.shared.state(dep) as i64);
        }
        Ok(BreakerActorState {
            config: args.config,
            shared: args.shared,
            failures: [0, 0],
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: BreakerMsg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _handling = crate::metrics::handling(
            "breaker",
            match msg {
                BreakerMsg::Outcome { ok: true, .. } => "success",
                BreakerMsg::Outcome { ok: false, .. } => "failure",
                BreakerMsg::HalfOpen(_) => "half_open",
            },
        );
        match msg {
            BreakerMsg::Outcome { dep, ok } => {
                let i = dep.index();
                match (st.shared.state(dep), ok) {
                    (BreakerState::Closed, true) => st.failures[i] = 0,
                    (BreakerState::Closed, false) => {
                        st.failures[i] += 1;
                        if st.failures[i] >= st.config.failure_threshold {
                            st.transition(&myself, dep, BreakerState::Open);
                        }
                    }
                    (BreakerState::HalfOpen, true) => {
                        st.failures[i] = 0;
                        st.transition(&myself, dep, BreakerState::Closed);
                    }
                    (BreakerState::HalfOpen, false) => {
                        st.transition(&myself, dep, BreakerState::Open);
                    }
                    // Stragglers that started before the breaker opened.
                    (BreakerState::Open, _) => {}
                }
            }
            BreakerMsg::HalfOpen(dep) => {
                if st.shared.state(dep) == BreakerState::Open {
                    st.transition(&myself, dep, BreakerState::HalfOpen);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    #[tokio::test]
    async fn opens_after_threshold_half_opens_and_closes_on_success() {
        let shared = BreakerHandle::new();
        let (actor, handle) = Actor::spawn(
            None,
            BreakerActor,
            BreakerArgs {
                config: BreakerConfig {
                    failure_threshold: 3,
                    open_for: Duration::from_millis(100),
                },
                shared: shared.clone(),
            },
        )
        .await
        .unwrap();
        shared.bind(actor.clone());
        let db = Dependency::Database;

        // Read successes do not reset the count; failures add up.
        shared.report(db, false);
        shared.report_read(db, true);
        shared.report(db, false);
        settle().await;
        assert_eq!(shared.state(db), BreakerState::Closed);
        assert!(shared.check(db).is_ok());
        shared.report(db, false);
        settle().await;
        assert_eq!(shared.state(db), BreakerState::Open);
        let e = shared.check(db).unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::StorageUnavailable);
        assert!(e.code.retryable());
        // The cache breaker is independent.
        assert_eq!(shared.state(Dependency::Cache), BreakerState::Closed);

        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(shared.state(db), BreakerState::HalfOpen);
        assert!(shared.check(db).is_ok(), "half-open lets probes through");
        shared.report(db, false);
        settle().await;
        assert_eq!(
            shared.state(db),
            BreakerState::Open,
            "a failed probe reopens"
        );

        tokio::time::sleep(Duration::from_millis(150)).await;
        shared.report(db, true);
        settle().await;
        assert_eq!(shared.state(db), BreakerState::Closed);

        actor.stop(None);
        handle.await.unwrap();
    }
}
