//! The root supervisor. It starts the breaker, persistence, audit and
//! session-supervisor actors, plus any extra children the binary hands it
//! (the transports), restarts a child that fails, and runs the one
//! shutdown path: stop taking sessions, drain the sessions (their pending
//! writes go to persistence), drain audit, drain persistence (which commits
//! what it holds), then stop.
//!
//! Restart policy: `supervision::ROOT` (see supervision.rs, where every
//! supervisor's policy is).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};

use crate::address::Address;
use crate::audit::{
    AuditActor, AuditArgs, AuditEvent, AuditKey, AuditMsg, Auditor, OnHead, AUDIT_NAME,
};
use crate::breaker::{
    BreakerActor, BreakerArgs, BreakerConfig, BreakerHandle, Transition, BREAKER_NAME,
};
use crate::jobs::supervisor::{JobsArgs, JobsSupervisor, JOBS_NAME};
use crate::metrics::metrics;
use crate::persistence::{
    PersistenceActor, PersistenceArgs, PersistenceConfig, PersistenceHandle, PERSISTENCE_NAME,
};
use crate::session::supervisor::{
    SessionDirectory, SessionSupervisor, SessionsArgs, SessionsMsg, SESSIONS_NAME,
};
use crate::session::SessionDeps;
use crate::store::Store;
use crate::supervision::{self, Restarts, Verdict};

const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Above any sensible `http.shutdown_grace`, which is the real bound.
const TRANSPORT_DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

pub type StartFn = Arc<
    dyn Fn(ActorCell) -> Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>
        + Send
        + Sync,
>;

/// A child the binary adds to the tree (a transport).
#[derive(Clone)]
pub struct ChildSpec {
    pub name: String,
    /// Spawn the child linked to the given supervisor.
    pub start: StartFn,
    /// When this child stops on its own (stdin closed), shut everything down.
    pub shutdown_on_exit: bool,
}

/// The addresses the root binds to the actors it starts (and starts
/// again), handed down to whoever talks to them; nobody looks an actor up
/// by name.
#[derive(Clone, Default)]
pub struct Addresses {
    pub persistence: PersistenceHandle,
    pub audit: Auditor,
    pub sessions: Address<SessionsMsg>,
    /// The live session actors, kept by the session supervisor.
    pub session_actors: SessionDirectory,
}

pub struct RootArgs {
    /// Shared with `sessions` (its persistence and audit handles are these).
    pub addresses: Addresses,
    pub store: Arc<dyn Store>,
    pub breaker: BreakerHandle,
    pub breaker_config: BreakerConfig,
    pub persistence: PersistenceConfig,
    pub sessions: SessionDeps,
    /// The audit chain's key, and who is told its new head.
    pub audit_key: AuditKey,
    pub audit_on_head: Option<OnHead>,
    pub extra: Vec<ChildSpec>,
}

pub enum RootMsg {
    /// Start the transports (after the core is up).
    StartExtra(Vec<ChildSpec>),
    /// Start the jobs supervisor (once the core is up: the jobs' work calls
    /// into it).
    StartJobs(JobsArgs),
    Shutdown,
    /// Liveness of every child, for health reports.
    Status(RpcReplyPort<Vec<ChildStatus>>),
}

#[derive(Debug, Clone)]
pub struct ChildStatus {
    pub name: String,
    pub alive: bool,
    pub restarts: usize,
}

pub struct RootActor;

pub struct RootState {
    args: RootArgs,
    children: HashMap<String, ActorCell>,
    restarts: Restarts<String>,
    specs: HashMap<String, ChildSpec>,
    jobs: Option<JobsArgs>,
    shutting_down: bool,
}

impl RootState {
    async fn start_core(&mut self, name: &str, me: &ActorCell) -> Result<(), SpawnErr> {
        let a = &self.args;
        let cell = match name {
            BREAKER_NAME => {
                let (actor, _) = Actor::spawn_linked(
                    None,
                    BreakerActor,
                    BreakerArgs {
                        config: a.breaker_config.clone(),
                        shared: a.breaker.clone(),
                    },
                    me.clone(),
                )
                .await?;
                a.breaker.bind(actor.clone());
                actor.get_cell()
            }
            PERSISTENCE_NAME => {
                let (actor, _) = Actor::spawn_linked(
                    None,
                    PersistenceActor,
                    PersistenceArgs {
                        store: a.store.clone(),
                        breaker: a.breaker.clone(),
                        config: a.persistence.clone(),
                    },
                    me.clone(),
                )
                .await?;
                a.addresses.persistence.bind(actor.clone());
                actor.get_cell()
            }
            AUDIT_NAME => {
                let (actor, _) = Actor::spawn_linked(
                    None,
                    AuditActor,
                    AuditArgs {
                        store: a.store.clone(),
                        persistence: a.addresses.persistence.clone(),
                        key: a.audit_key.clone(),
                        on_head: a.audit_on_head.clone(),
                    },
                    me.clone(),
                )
                .await?;
                a.addresses.audit.bind(actor.clone());
                // A previous audit actor's subscription ends at the next
                // transition, when its send fails.
                a.breaker
                    .transitions()
                    .subscribe(actor.clone(), |t| Some(AuditMsg::Record(breaker_event(t))));
                actor.get_cell()
            }
            SESSIONS_NAME => {
                let (actor, _) = Actor::spawn_linked(
                    None,
                    SessionSupervisor,
                    SessionsArgs {
                        deps: a.sessions.clone(),
                        directory: a.addresses.session_actors.clone(),
                    },
                    me.clone(),
                )
                .await?;
                a.addresses.sessions.bind(actor.clone());
                actor.get_cell()
            }
            JOBS_NAME => Actor::spawn_linked(
                None,
                JobsSupervisor,
                self.jobs.clone().ok_or(SpawnErr::ActorAlreadyStarted)?,
                me.clone(),
            )
            .await?
            .0
            .get_cell(),
            other => {
                let spec = self
                    .specs
                    .get(other)
                    .cloned()
                    .ok_or(SpawnErr::ActorAlreadyStarted)?;
                (spec.start)(me.clone()).await?
            }
        };
        metrics().actors_live.with_label_values(&[name]).set(1);
        // At zero from the start, so a restart alert has a series to watch.
        metrics().actor_restarts.with_label_values(&[name]);
        self.children.insert(name.to_string(), cell);
        Ok(())
    }

    fn name_of(&self, cell: &ActorCell) -> Option<String> {
        self.children
            .iter()
            .find(|(_, c)| c.get_id() == cell.get_id())
            .map(|(n, _)| n.clone())
    }

    async fn shutdown(&mut self, myself: &ActorRef<RootMsg>) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        tracing::info!("shutting down: draining sessions, audit and persistence");
        // Transports first, and wait for them: the HTTP transport lets the
        // calls in flight finish (its own `shutdown_grace` bounds that),
        // and they need live sessions and persistence to do so.
        for name in self.specs.keys() {
            if let Some(c) = self.children.get(name) {
                match c
                    .stop_and_wait(Some("shutdown".into()), Some(TRANSPORT_DRAIN_TIMEOUT))
                    .await
                {
                    // Already gone (a transport that ended is what started
                    // this shutdown): nothing to wait for.
                    Ok(()) | Err(ractor::RactorErr::Messaging(_)) => {}
                    Err(e) => {
                        tracing::error!(child = %name, error = ?e, "transport did not stop in time")
                    }
                }
            }
        }
        // Jobs first: a run in progress finishes against live sessions.
        if let Some(c) = self.children.get(JOBS_NAME) {
            if let Err(e) = c
                .stop_and_wait(Some("shutdown".into()), Some(DRAIN_TIMEOUT))
                .await
            {
                tracing::error!(error = ?e, "jobs did not stop in time");
            }
        }
        if let Some(s) = self.children.get(SESSIONS_NAME) {
            let _ = s.send_message(SessionsMsg::Close);
            s.drain_children_and_wait(Some(DRAIN_TIMEOUT)).await;
        }
        for name in [SESSIONS_NAME, AUDIT_NAME, PERSISTENCE_NAME, BREAKER_NAME] {
            if let Some(c) = self.children.get(name) {
                if let Err(e) = c.drain_and_wait(Some(DRAIN_TIMEOUT)).await {
                    tracing::error!(actor = name, error = ?e, "drain did not finish");
                }
            }
        }
        tracing::info!("shutdown complete");
        myself.stop(Some("shutdown".into()));
    }
}

impl Actor for RootActor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RootMsg>,
        args: RootArgs,
    ) -> Result<RootState, ActorProcessingErr> {
        let extra = args.extra.clone();
        let mut st = RootState {
            args,
            children: HashMap::new(),
            restarts: Restarts::new(supervision::ROOT),
            specs: HashMap::new(),
            jobs: None,
            shutting_down: false,
        };
        let me = myself.get_cell();
        // Order matters: persistence and the breaker before anything that
        // writes; audit before sessions, which record events.
        for name in [BREAKER_NAME, PERSISTENCE_NAME, AUDIT_NAME, SESSIONS_NAME] {
            st.start_core(name, &me).await?;
        }
        if !extra.is_empty() {
            myself.cast(RootMsg::StartExtra(extra))?;
        }
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<RootMsg>,
        msg: RootMsg,
        st: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::StartExtra(specs) => {
                let me = myself.get_cell();
                for spec in specs {
                    let name = spec.name.clone();
                    st.specs.insert(name.clone(), spec);
                    st.start_core(&name, &me).await?;
                }
            }
            RootMsg::StartJobs(args) => {
                st.jobs = Some(args);
                st.start_core(JOBS_NAME, &myself.get_cell()).await?;
            }
            RootMsg::Shutdown => st.shutdown(&myself).await,
            RootMsg::Status(reply) => {
                let mut out: Vec<ChildStatus> = st
                    .children
                    .iter()
                    .map(|(name, cell)| ChildStatus {
                        name: name.clone(),
                        alive: !matches!(
                            cell.get_status(),
                            ractor::ActorStatus::Stopped | ractor::ActorStatus::Stopping
                        ),
                        restarts: st.restarts.count(name),
                    })
                    .collect();
                out.sort_by(|a, b| a.name.cmp(&b.name));
                let _ = reply.send(out);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        evt: SupervisionEvent,
        st: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            _ => return Ok(()),
        };
        let Some(name) = st.name_of(&cell) else {
            return Ok(());
        };
        if st.shutting_down {
            // A child that fails while draining skips its post_stop (and
            // whatever that would have written): never silently.
            if let Some(err) = failure {
                tracing::error!(child = %name, error = %err, "child failed during shutdown");
            }
            return Ok(());
        }
        metrics().actors_live.with_label_values(&[&name]).set(0);
        match failure {
            None if st.specs.get(&name).is_some_and(|s| s.shutdown_on_exit) => {
                tracing::info!(child = %name, "transport closed");
                st.shutdown(&myself).await;
            }
            None => {
                tracing::warn!(child = %name, "child stopped unexpectedly; restarting");
                restart(st, &myself, &name).await?;
            }
            Some(err) => {
                tracing::error!(child = %name, error = %err, "child failed; restarting");
                st.args.addresses.audit.record(AuditEvent::system(
                    "actor.restarted",
                    serde_json::json!({"actor": name, "error": err}),
                ));
                restart(st, &myself, &name).await?;
            }
        }
        Ok(())
    }
}

/// A breaker transition as the audit log records it.
fn breaker_event(t: Transition) -> AuditEvent {
    AuditEvent::system(
        "breaker.transition",
        serde_json::json!({
            "dependency": t.dependency.as_str(),
            "from": t.from.as_str(),
            "to": t.to.as_str(),
        }),
    )
}

async fn restart(
    st: &mut RootState,
    myself: &ActorRef<RootMsg>,
    name: &str,
) -> Result<(), ActorProcessingErr> {
    if let Verdict::GiveUp(_) = st.restarts.failed(name.to_string()) {
        tracing::error!(child = %name, "restart limit reached; escalating");
        let (max, window) = st.restarts.limit().unwrap_or_default();
        return Err(format!("{name} failed more than {max} times in {window:?}").into());
    }
    metrics().actor_restarts.with_label_values(&[name]).inc();
    st.start_core(name, &myself.get_cell()).await?;
    Ok(())
}
