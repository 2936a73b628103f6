//! The session supervisor: starts a session actor on demand, watches it, and
//! counts restarts. Policy: `supervision::SESSIONS` — a session actor that
//! panics is not restarted eagerly; its state is in the database, so the
//! next call for that session starts a fresh actor that loads it; other
//! sessions never notice.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort,
    SupervisionEvent,
};

use crate::audit::AuditEvent;
use crate::error::HandoffError;
use crate::metrics::metrics;
use crate::model::SessionKey;
use crate::session::{SessionActor, SessionArgs, SessionDeps, SessionMsg};

/// The session supervisor's name (logs, the root's list of children).
pub const SESSIONS_NAME: &str = "sessions";

/// The live session actors by key, written by the session supervisor only
/// (on start and on stop), read by whoever calls a session. An actor that
/// is stopping stays listed until it has stopped: a message to it comes
/// back, and the caller asks again.
#[derive(Clone, Default)]
pub struct SessionDirectory(Arc<DashMap<SessionKey, ActorRef<SessionMsg>>>);

impl SessionDirectory {
    /// The session's actor unless it has stopped. A stopped one can still
    /// be listed if the supervisor that started it was itself replaced
    /// before taking it off; the next start overwrites it.
    pub fn get(&self, key: &SessionKey) -> Option<ActorRef<SessionMsg>> {
        self.0
            .get(key)
            .map(|a| a.clone())
            .filter(|a| a.get_status() != ActorStatus::Stopped)
    }
}

pub enum SessionsMsg {
    /// The actor for this session, started if none is listed. One that is
    /// still stopping is listed (and refuses messages) until it has
    /// stopped: the caller asks again.
    Spawn {
        key: SessionKey,
        reply: RpcReplyPort<Result<ActorRef<SessionMsg>, HandoffError>>,
    },
    /// Refuse new sessions: the process is shutting down.
    Close,
}

pub struct SessionSupervisor;

/// What the session supervisor starts with.
pub struct SessionsArgs {
    pub deps: SessionDeps,
    pub directory: SessionDirectory,
}

pub struct SessionsState {
    deps: SessionDeps,
    directory: SessionDirectory,
    /// The key of each live actor, to take it off the directory.
    key_of: HashMap<ActorId, SessionKey>,
    live: i64,
    /// Live actors in queue order (oldest first) with their last use (see
    /// `enforce_cap`), to pick one to passivate when more than `max_live`
    /// are live.
    by_age: BTreeMap<u64, (ActorCell, LastUse)>,
    age_of: HashMap<ActorId, u64>,
    /// Queue positions handed out so far.
    started: u64,
    closed: bool,
}

impl Actor for SessionSupervisor {
    type Msg = SessionsMsg;
    type State = SessionsState;
    type Arguments = SessionsArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionsMsg>,
        SessionsArgs { deps, directory }: SessionsArgs,
    ) -> Result<SessionsState, ActorProcessingErr> {
        Ok(SessionsState {
            deps,
            directory,
            key_of: HashMap::new(),
            live: 0,
            by_age: BTreeMap::new(),
            age_of: HashMap::new(),
            started: 0,
            closed: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionsMsg>,
        msg: SessionsMsg,
        st: &mut SessionsState,
    ) -> Result<(), ActorProcessingErr> {
        let _handling = crate::metrics::handling(
            "session_supervisor",
            match msg {
                SessionsMsg::Spawn { .. } => "spawn",
                SessionsMsg::Close => "close",
            },
        );
        match msg {
            SessionsMsg::Spawn { key, reply } => {
                if st.closed {
                    let _ = reply.send(Err(HandoffError::storage_unavailable(
                        "the server is shutting down",
                    )));
                    return Ok(());
                }
                if let Some(existing) = st.directory.get(&key) {
                    let _ = reply.send(Ok(existing));
                    return Ok(());
                }
                let used = LastUse::new();
                let args = SessionArgs {
                    key: key.clone(),
                    deps: st.deps.clone(),
                    used: used.clone(),
                };
                let r = match Actor::spawn_linked(None, SessionActor, args, myself.get_cell()).await
                {
                    Ok((actor, _)) => {
                        st.key_of.insert(actor.get_id(), key.clone());
                        st.directory.0.insert(key, actor.clone());
                        st.live += 1;
                        st.queue(actor.get_cell(), used);
                        st.enforce_cap();
                        metrics()
                            .actors_live
                            .with_label_values(&["session"])
                            .set(st.live);
                        Ok(actor)
                    }
                    Err(e) => Err(HandoffError::internal(format!(
                        "could not start the session actor: {e}"
                    ))),
                };
                let _ = reply.send(r);
            }
            SessionsMsg::Close => st.closed = true,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<SessionsMsg>,
        evt: SupervisionEvent,
        st: &mut SessionsState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, ..) => {
                st.live -= 1;
                st.forget(&cell);
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                st.live -= 1;
                st.forget(&cell);
                metrics()
                    .actor_restarts
                    .with_label_values(&["session"])
                    .inc();
                // The actor name holds the raw session key: log only its id.
                tracing::error!(actor_id = %cell.get_id(), error = %err, "session actor failed; it restarts on the next call");
                st.deps.audit.record(AuditEvent::system(
                    "session.actor_failed",
                    serde_json::json!({"actor_id": cell.get_id().to_string()}),
                ));
            }
            _ => {}
        }
        metrics()
            .actors_live
            .with_label_values(&["session"])
            .set(st.live);
        Ok(())
    }
}

impl SessionsState {
    fn forget(&mut self, cell: &ActorCell) {
        if let Some(age) = self.age_of.remove(&cell.get_id()) {
            self.by_age.remove(&age);
        }
        if let Some(key) = self.key_of.remove(&cell.get_id()) {
            self.directory
                .0
                .remove_if(&key, |_, a| a.get_id() == cell.get_id());
        }
    }

    /// Put an actor at the back of the queue.
    fn queue(&mut self, cell: ActorCell, used: LastUse) {
        self.started += 1;
        self.age_of.insert(cell.get_id(), self.started);
        self.by_age.insert(self.started, (cell, used));
    }

    /// More session actors live than allowed: passivate the least recently
    /// used of the `EVICTION_SAMPLE` at the front of the queue, and send the
    /// others to the back. Memory stays bounded whatever the idle timeout
    /// and however many sessions a burst touches; a passivated session that
    /// is busy simply starts again on its next call (drain refuses new
    /// messages, senders retry).
    ///
    /// Why a sample and not exact LRU: the supervisor does not see calls
    /// (they go to the actor directly), so recency is a tick each actor
    /// stores on use, and finding the exact minimum would scan every live
    /// actor per eviction. A sample that rotates through the queue keeps a
    /// session in steady use alive under a stream of one-off sessions, at a
    /// fixed cost per eviction (the idea of Redis' approximated LRU).
    fn enforce_cap(&mut self) {
        while self.age_of.len() > self.deps.max_live {
            let mut sample = Vec::with_capacity(EVICTION_SAMPLE);
            while sample.len() < EVICTION_SAMPLE {
                match self.by_age.pop_first() {
                    Some((_, entry)) => sample.push(entry),
                    None => break,
                }
            }
            let Some(coldest) = (0..sample.len()).min_by_key(|&i| sample[i].1.last()) else {
                break;
            };
            let (victim, _) = sample.swap_remove(coldest);
            self.age_of.remove(&victim.get_id());
            let _ = victim.drain();
            for (cell, used) in sample {
                self.queue(cell, used);
            }
        }
    }
}

/// Actors compared per eviction (see `SessionsState::enforce_cap`).
const EVICTION_SAMPLE: usize = 8;

/// When a session actor was last used, as a process-wide tick: the
/// supervisor reads it to choose whom to passivate.
#[derive(Clone)]
pub struct LastUse(Arc<AtomicU64>);

static TICK: AtomicU64 = AtomicU64::new(0);

impl LastUse {
    /// Used now: a new actor is the most recent, not the first to go.
    fn new() -> Self {
        Self(Arc::new(AtomicU64::new(Self::now())))
    }

    fn now() -> u64 {
        TICK.fetch_add(1, Ordering::Relaxed)
    }

    fn last(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Record a use (one relaxed add and store per call).
    pub fn touch(&self) {
        self.0.store(Self::now(), Ordering::Relaxed);
    }
}
