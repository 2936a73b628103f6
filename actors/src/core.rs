//! `Core`: the front door the MCP surface calls. It finds (or starts) the
//! session actor for a key and speaks to it by typed messages; it never
//! touches session state itself.

use std::sync::Arc;
use std::time::Duration;

use ractor::concurrency::oneshot;
use ractor::{Actor, ActorRef, MessagingErr};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::audit::Auditor;
use crate::breaker::BreakerHandle;
use crate::error::{ErrorCode, HandoffError};
use crate::jobs::job::JobMsg;
use crate::jobs::supervisor::JobsArgs;
use crate::jobs::{JobConfig, JobSpec, JobStatus, Jobs, RunRecord};
use crate::model::summary::SummaryView;
use crate::model::{HandoffType, LifecycleEvent, NewEntry, SessionKey, TransitionRequest};
use crate::root::{Addresses, ChildSpec, ChildStatus, RootActor, RootArgs, RootMsg};
use crate::session::supervisor::SessionsMsg;
use crate::session::{
    Accept, Accepted, Append, Appended, Delete, Deleted, Handoff, HandoffCreated, Register,
    Registered, Reply, SessionMsg, Transition,
};
use crate::store::Store;

/// How long a call keeps trying to reach a session actor that is being
/// replaced (passivating, crashed) before it gives up with INTERNAL_ERROR.
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Core {
    pub store: Arc<dyn Store>,
    pub breaker: BreakerHandle,
    pub hash_key: [u8; 32],
    pub cache: Arc<dyn crate::cache::SessionCache>,
    /// The jobs' status board.
    pub jobs: Jobs,
    root: ActorRef<RootMsg>,
    addresses: Addresses,
}

impl Core {
    /// Start the supervision tree. Returns the handle and the root's join
    /// handle, which completes when the tree has shut down.
    pub async fn start(args: RootArgs) -> Result<(Core, JoinHandle<()>), HandoffError> {
        let store = args.store.clone();
        let breaker = args.breaker.clone();
        let hash_key = args.sessions.hash_key;
        let cache = args.sessions.cache.clone();
        let addresses = args.addresses.clone();
        let (root, handle) = Actor::spawn(None, RootActor, args)
            .await
            .map_err(|e| HandoffError::internal(format!("could not start the actor tree: {e}")))?;
        Ok((
            Core {
                store,
                breaker,
                hash_key,
                cache,
                jobs: Jobs::default(),
                root,
                addresses,
            },
            handle,
        ))
    }

    /// Where audit events go (configuration changes, auth failures).
    pub fn audit(&self) -> &Auditor {
        &self.addresses.audit
    }

    pub fn start_children(&self, specs: Vec<ChildSpec>) {
        let _ = self.root.cast(RootMsg::StartExtra(specs));
    }

    /// Start the background jobs under the root.
    pub fn start_jobs(&self, specs: Vec<JobSpec>) {
        self.jobs.register(&specs);
        let _ = self.root.cast(RootMsg::StartJobs(JobsArgs {
            board: self.jobs.clone(),
            specs,
            audit: self.addresses.audit.clone(),
        }));
    }

    fn job(&self, name: &str) -> Result<JobStatus, HandoffError> {
        self.jobs.get(name).ok_or_else(|| {
            HandoffError::new(ErrorCode::NotFound, format!("no job named '{name}'"))
                .detail("job_name", name)
                .detail("jobs", crate::jobs::JOB_NAMES.to_vec())
        })
    }

    /// One job's status, or every job's.
    pub fn job_status(&self, name: Option<&str>) -> Result<Vec<JobStatus>, HandoffError> {
        match name {
            Some(n) => Ok(vec![self.job(n)?]),
            None => Ok(self.jobs.all()),
        }
    }

    /// Run a job now and wait for the run's record (queued behind a run in
    /// progress).
    pub async fn run_job(&self, name: &str) -> Result<RunRecord, HandoffError> {
        self.job(name)?;
        // A job restarting after a panic is back within milliseconds.
        for _ in 0..200 {
            if let Some(a) = self.jobs.actor(name) {
                match a.call(JobMsg::RunNow, None).await {
                    Ok(ractor::rpc::CallResult::Success(r)) => return Ok(r),
                    // Stopped before it took the call: ask its successor.
                    Err(MessagingErr::SendErr(_)) => {}
                    _ => {
                        return Err(HandoffError::internal(
                            "the job's actor stopped before the run finished",
                        ))
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(HandoffError::storage_unavailable(
            "the job is not running (restarting or stopped); retry",
        ))
    }

    /// Change a job's config; its schedule restarts from now.
    pub fn update_job_config(
        &self,
        name: &str,
        config: JobConfig,
    ) -> Result<JobStatus, HandoffError> {
        self.job(name)?;
        let status = self.jobs.set_config(name, config).expect("checked above");
        if let Some(a) = self.jobs.actor(name) {
            let _ = a.cast(JobMsg::Reschedule);
        }
        Ok(status)
    }

    /// A lifecycle step, decided by the session's actor.
    pub async fn transition(
        &self,
        key: &SessionKey,
        request: TransitionRequest,
    ) -> Result<Option<LifecycleEvent>, HandoffError> {
        self.ask(key, |reply| SessionMsg::call(Transition(request), reply))
            .await
    }

    /// Begin the ordered shutdown; await the join handle for its end.
    pub fn shutdown(&self) {
        let _ = self.root.cast(RootMsg::Shutdown);
    }

    pub async fn children(&self) -> Vec<ChildStatus> {
        match self
            .root
            .call(RootMsg::Status, Some(Duration::from_secs(2)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(v)) => v,
            _ => Vec::new(),
        }
    }

    pub async fn register(
        &self,
        key: &SessionKey,
        agent_from: String,
        metadata: Option<Value>,
    ) -> Result<Registered, HandoffError> {
        let op = Register {
            agent_from,
            metadata,
        };
        self.ask(key, |reply| SessionMsg::call(op, reply)).await
    }

    pub async fn append(
        &self,
        key: &SessionKey,
        entries: Vec<NewEntry>,
    ) -> Result<Appended, HandoffError> {
        self.ask(key, |reply| SessionMsg::call(Append { entries }, reply))
            .await
    }

    pub async fn handoff(
        &self,
        key: &SessionKey,
        target_agent: String,
        request_type: HandoffType,
        request_data: Option<Value>,
        as_agent: Option<&str>,
    ) -> Result<HandoffCreated, HandoffError> {
        let op = Handoff {
            target_agent,
            request_type,
            request_data,
            as_agent: as_agent.map(str::to_string),
        };
        self.ask(key, |reply| SessionMsg::call(op, reply)).await
    }

    pub async fn delete(
        &self,
        key: &SessionKey,
        requested_by: Option<String>,
    ) -> Result<Deleted, HandoffError> {
        self.ask(key, |reply| {
            SessionMsg::call(Delete { requested_by }, reply)
        })
        .await
    }

    pub async fn accept(
        &self,
        key: &SessionKey,
        handoff_id: uuid::Uuid,
        agent: String,
    ) -> Result<Accepted, HandoffError> {
        let op = Accept { handoff_id, agent };
        self.ask(key, |reply| SessionMsg::call(op, reply)).await
    }

    /// A live actor here answers (it is the freshest copy); otherwise the
    /// cache may, before an actor is started just to read one row.
    pub async fn summary(&self, key: &SessionKey) -> Result<SummaryView, HandoffError> {
        if self.addresses.session_actors.get(key).is_none() {
            if let Some(row) = self.cache.get(key).await {
                return Ok(SummaryView::of(&row, crate::model::now()));
            }
        }
        self.ask(key, |reply| SessionMsg::Summary { reply }).await
    }

    /// Test hook: make the session's actor panic while handling a call.
    #[cfg(feature = "test-hooks")]
    pub async fn crash_session(&self, key: &SessionKey) -> Result<(), HandoffError> {
        self.ask(key, SessionMsg::Crash).await
    }

    /// Send a message to the session's actor and wait for the reply. A
    /// message refused at the door (the actor was passivating) is handed to
    /// a fresh actor; a reply lost after delivery (the actor died handling
    /// it) is an `INTERNAL_ERROR`, never a silent retry.
    async fn ask<T: Send + 'static>(
        &self,
        key: &SessionKey,
        build: impl FnOnce(Reply<T>) -> SessionMsg,
    ) -> Result<T, HandoffError> {
        let (tx, rx) = oneshot();
        let mut msg = build(tx.into());
        // A stopping or crashed actor stays in the directory until it has
        // stopped, which takes longer on a loaded machine: retry for
        // a bounded time, not a number of turns. One deadline covers
        // finding the actor and getting the message in.
        let deadline = std::time::Instant::now() + REACH_TIMEOUT;
        let mut attempts = 0u32;
        loop {
            let actor = self.session_actor(key).await?;
            match actor.cast(msg) {
                Ok(()) => break,
                Err(MessagingErr::SendErr(m)) if std::time::Instant::now() < deadline => {
                    msg = m;
                    attempts += 1;
                    if attempts < 100 {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Err(_) => return Err(HandoffError::internal("could not reach the session actor")),
            }
        }
        rx.await.unwrap_or_else(|_| {
            Err(HandoffError::internal(
                "the session actor failed while handling this call; it restarts on the next call",
            ))
        })
    }

    /// The session's live actor, or a new one from the session supervisor.
    async fn session_actor(&self, key: &SessionKey) -> Result<ActorRef<SessionMsg>, HandoffError> {
        if let Some(a) = self.addresses.session_actors.get(key) {
            return Ok(a);
        }
        let restarting =
            || HandoffError::storage_unavailable("the session supervisor is restarting; retry");
        let sup = self.addresses.sessions.get().ok_or_else(restarting)?;
        let key = key.clone();
        match sup
            .call(|reply| SessionsMsg::Spawn { key, reply }, None)
            .await
        {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            _ => Err(restarting()),
        }
    }
}
