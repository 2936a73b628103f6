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
//! Layout: `ops/` the operations and their rules (one type each, no actor
//! or database), `state.rs` loading, caching and hot sessions, `commit.rs`
//! turning queued operations into units and settling them, this file the
//! actor and its messages, `supervisor.rs` the supervisor that starts
//! session actors on demand and stops the least recently used.
//!
//! After `idle` without activity the actor drains and stops (passivation);
//! the next call starts a fresh one that loads the row again.

mod commit;
pub mod ops;
mod state;
pub mod supervisor;

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::error::HandoffError;
use crate::metrics::metrics;
use crate::model::summary::SummaryView;

pub use ops::{
    session_json, Accept, Accepted, Append, Appended, AppendedEntry, Delete, Deleted, Handoff,
    HandoffCreated, Operation, Pending, Register, Registered, Transition,
};
pub use state::{SessionArgs, SessionDeps, SessionState};

pub type Reply<T> = RpcReplyPort<Result<T, HandoffError>>;

pub enum SessionMsg {
    /// A mutating operation, queued and committed in arrival order.
    Call(Pending),
    Summary {
        reply: Reply<SummaryView>,
    },
    /// The in-flight unit finished (sent by the waiter task).
    Committed,
    /// Time to check whether the session went idle.
    IdleCheck,
    /// Test hook: panic inside the handler, to exercise supervision. The
    /// port is dropped by the panic, which is how the caller learns of it.
    #[cfg(feature = "test-hooks")]
    Crash(Reply<()>),
}

impl SessionMsg {
    /// The message for `op`, answering on `reply`.
    pub fn call<O: Operation>(op: O, reply: Reply<O::Output>) -> Self {
        SessionMsg::Call(Pending::new(op, reply))
    }

    /// The message's name, a metric label.
    pub fn name(&self) -> &'static str {
        match self {
            SessionMsg::Call(op) => op.kind().name(),
            SessionMsg::Summary { .. } => "summary",
            SessionMsg::Committed => "committed",
            SessionMsg::IdleCheck => "idle_check",
            #[cfg(feature = "test-hooks")]
            SessionMsg::Crash(_) => "crash",
        }
    }
}

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
        Ok(SessionState::new(args))
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
        match msg {
            SessionMsg::Call(op) => {
                st.touch();
                st.pending.push_back(op);
                if st.inflight.is_none() {
                    st.submit(&myself).await;
                }
            }
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
            }
            SessionMsg::Committed => {
                st.settle_inflight().await;
                st.submit(&myself).await;
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
            }
            #[cfg(feature = "test-hooks")]
            SessionMsg::Crash(_port) => panic!("test hook: session actor crash requested"),
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
