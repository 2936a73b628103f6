//! The jobs supervisor: starts one actor per job and starts a failed one
//! again (its status is on the board, so nothing is lost but the run that
//! failed, which the actor recorded before failing). Policy:
//! `supervision::JOBS` (a job failing too often is left stopped rather than
//! spinning); the root's own policy covers this supervisor.

use std::collections::HashMap;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde_json::json;

use super::job::{JobActor, JobArgs};
use super::{JobSpec, Jobs};
use crate::audit::{AuditEvent, Auditor};
use crate::metrics::metrics;
use crate::supervision::{self, Restarts, Verdict};

pub const JOBS_NAME: &str = "jobs";

#[derive(Clone)]
pub struct JobsArgs {
    pub board: Jobs,
    pub specs: Vec<JobSpec>,
    pub audit: Auditor,
}

pub enum JobsMsg {
    /// Start the job's actor again (self-sent after a failure).
    Restart(&'static str),
}

pub struct JobsSupervisor;

pub struct JobsState {
    args: JobsArgs,
    by_id: HashMap<ActorId, &'static str>,
    restarts: Restarts<&'static str>,
}

impl JobsState {
    async fn start(&mut self, name: &'static str, me: ActorCell) -> Result<(), ActorProcessingErr> {
        let spec = self
            .args
            .specs
            .iter()
            .find(|s| s.name == name)
            .ok_or("unknown job")?;
        let args = JobArgs {
            name,
            work: spec.work.clone(),
            board: self.args.board.clone(),
            audit: self.args.audit.clone(),
        };
        let (a, _) = Actor::spawn_linked(None, JobActor, args, me).await?;
        self.args.board.bind(name, a.clone());
        self.by_id.insert(a.get_id(), name);
        metrics().actors_live.with_label_values(&["job"]).inc();
        Ok(())
    }
}

impl Actor for JobsSupervisor {
    type Msg = JobsMsg;
    type State = JobsState;
    type Arguments = JobsArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<JobsMsg>,
        args: JobsArgs,
    ) -> Result<JobsState, ActorProcessingErr> {
        args.board.register(&args.specs);
        let names: Vec<&'static str> = args.specs.iter().map(|s| s.name).collect();
        let mut st = JobsState {
            args,
            by_id: HashMap::new(),
            restarts: Restarts::new(supervision::JOBS),
        };
        for name in names {
            st.start(name, myself.get_cell()).await?;
        }
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<JobsMsg>,
        msg: JobsMsg,
        st: &mut JobsState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JobsMsg::Restart(name) => {
                if let Err(e) = st.start(name, myself.get_cell()).await {
                    tracing::error!(job = name, error = %e, "job actor did not start again");
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<JobsMsg>,
        evt: SupervisionEvent,
        st: &mut JobsState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, err) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err),
            SupervisionEvent::ActorTerminated(cell, ..) => {
                if st.by_id.remove(&cell.get_id()).is_some() {
                    metrics().actors_live.with_label_values(&["job"]).dec();
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        let Some(name) = st.by_id.remove(&cell.get_id()) else {
            return Ok(());
        };
        metrics().actors_live.with_label_values(&["job"]).dec();
        metrics().actor_restarts.with_label_values(&["job"]).inc();
        st.args.board.restarted(name);
        let give_up = st.restarts.failed(name) != Verdict::Restart;
        tracing::error!(job = name, error = %err, give_up, "job actor failed");
        st.args.audit.record(AuditEvent::system(
            if give_up {
                "job.stopped"
            } else {
                "job.restarted"
            },
            json!({"job": name, "error": err.to_string()}),
        ));
        if !give_up {
            myself.cast(JobsMsg::Restart(name))?;
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<JobsMsg>,
        _st: &mut JobsState,
    ) -> Result<(), ActorProcessingErr> {
        myself
            .get_cell()
            .stop_children_and_wait(Some("shutdown".into()), Some(Duration::from_secs(30)))
            .await;
        Ok(())
    }
}
