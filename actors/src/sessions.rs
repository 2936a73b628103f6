//! The session supervisor: starts a session actor on demand, watches it, and
//! counts restarts. A session actor that panics is not restarted eagerly —
//! its state is in the database, so the next call for that session starts a
//! fresh actor that loads it; other sessions never notice.

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use std::collections::{BTreeMap, HashMap};

use crate::audit::{AuditEvent, AuditMsg};
use crate::error::HandoffError;
use crate::metrics::metrics;
use crate::model::SessionKey;
use crate::session::{SessionActor, SessionArgs, SessionDeps, SessionMsg};

pub const SESSIONS_NAME: &str = "sessions";

pub enum SessionsMsg {
    /// The actor for this session, started if needed. `Ok(None)` means an
    /// earlier actor of the same session is still stopping: ask again.
    Spawn {
        key: SessionKey,
        reply: RpcReplyPort<Result<Option<ActorRef<SessionMsg>>, HandoffError>>,
    },
    /// Refuse new sessions: the process is shutting down.
    Close,
}

pub struct SessionSupervisor;

pub struct SessionsState {
    deps: SessionDeps,
    live: i64,
    /// Live actors by start order (oldest first), to passivate the oldest
    /// when more than `max_live` are live.
    by_age: BTreeMap<u64, ActorCell>,
    age_of: HashMap<ActorId, u64>,
    started: u64,
    closed: bool,
}

impl Actor for SessionSupervisor {
    type Msg = SessionsMsg;
    type State = SessionsState;
    type Arguments = SessionDeps;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionsMsg>,
        deps: SessionDeps,
    ) -> Result<SessionsState, ActorProcessingErr> {
        Ok(SessionsState {
            deps,
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
        metrics()
            .actor_messages
            .with_label_values(&["session_supervisor"])
            .inc();
        match msg {
            SessionsMsg::Spawn { key, reply } => {
                if st.closed {
                    let _ = reply.send(Err(HandoffError::storage_unavailable(
                        "the server is shutting down",
                    )));
                    return Ok(());
                }
                let name = key.actor_name();
                if let Some(existing) = ActorRef::<SessionMsg>::where_is(name.clone()) {
                    let _ = reply.send(Ok(Some(existing)));
                    return Ok(());
                }
                let args = SessionArgs {
                    key,
                    deps: st.deps.clone(),
                };
                let r = match Actor::spawn_linked(Some(name), SessionActor, args, myself.get_cell())
                    .await
                {
                    Ok((actor, _)) => {
                        st.live += 1;
                        st.started += 1;
                        st.by_age.insert(st.started, actor.get_cell());
                        st.age_of.insert(actor.get_id(), st.started);
                        st.enforce_cap();
                        metrics()
                            .actors_live
                            .with_label_values(&["session"])
                            .set(st.live);
                        Ok(Some(actor))
                    }
                    Err(SpawnErr::ActorAlreadyRegistered(_)) => Ok(None),
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
                AuditMsg::record(AuditEvent::system(
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
    }

    /// More session actors live than allowed: passivate the oldest. Memory
    /// stays bounded whatever the idle timeout and however many sessions a
    /// burst touches; a passivated session that is busy simply starts again
    /// on its next call (drain refuses new messages, senders retry).
    fn enforce_cap(&mut self) {
        while self.age_of.len() > self.deps.max_live {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.age_of.remove(&oldest.get_id());
            let _ = oldest.drain();
        }
    }
}
