//! One job's actor: runs the work on its interval or on demand, retries a
//! failed attempt, and records every run on the board. A run that panics is
//! recorded, answered, and then fails the actor on purpose, so its
//! supervisor starts a clean one (let it crash).

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::json;

use super::{JobWork, Jobs, RunOutcome, RunRecord};
use crate::audit::{AuditEvent, Auditor};
use crate::model::{now, rfc3339};

pub enum JobMsg {
    /// A scheduled run; stale when its generation is not the current one.
    Tick(u64),
    /// Run now and reply with the run's record.
    RunNow(RpcReplyPort<RunRecord>),
    /// The config changed: schedule again from now.
    Reschedule,
}

pub struct JobArgs {
    pub name: &'static str,
    pub work: Arc<dyn JobWork>,
    pub board: Jobs,
    pub audit: Auditor,
}

pub struct JobActorState {
    name: &'static str,
    work: Arc<dyn JobWork>,
    board: Jobs,
    audit: Auditor,
    generation: u64,
}

pub struct JobActor;

impl Actor for JobActor {
    type Msg = JobMsg;
    type State = JobActorState;
    type Arguments = JobArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<JobMsg>,
        args: JobArgs,
    ) -> Result<JobActorState, ActorProcessingErr> {
        let mut st = JobActorState {
            name: args.name,
            work: args.work,
            board: args.board,
            audit: args.audit,
            generation: 0,
        };
        st.schedule(&myself);
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<JobMsg>,
        msg: JobMsg,
        st: &mut JobActorState,
    ) -> Result<(), ActorProcessingErr> {
        let _handling = crate::metrics::handling(
            "job",
            match msg {
                JobMsg::Tick(_) => "tick",
                JobMsg::RunNow(_) => "run_now",
                JobMsg::Reschedule => "reschedule",
            },
        );
        let record = match msg {
            JobMsg::Tick(g) if g != st.generation => return Ok(()),
            JobMsg::Tick(_) => st.run("schedule").await,
            JobMsg::RunNow(reply) => {
                let record = st.run("manual").await;
                let _ = reply.send(record.clone());
                record
            }
            JobMsg::Reschedule => {
                st.schedule(&myself);
                return Ok(());
            }
        };
        if record.outcome == RunOutcome::Panic {
            return Err(format!(
                "job {} panicked: {}",
                st.name,
                record.error.unwrap_or_default()
            )
            .into());
        }
        st.schedule(&myself);
        Ok(())
    }
}

impl JobActorState {
    fn schedule(&mut self, myself: &ActorRef<JobMsg>) {
        self.generation += 1;
        if let Some(wait) = self.board.schedule_next(self.name) {
            let g = self.generation;
            myself.send_after(wait, move || JobMsg::Tick(g));
        }
    }

    /// One run: the work, retried per the config. The work runs in its own
    /// task so that a panic is caught here and recorded before the actor
    /// fails.
    async fn run(&mut self, trigger: &'static str) -> RunRecord {
        let run = self.board.started(self.name);
        let config = self.board.config(self.name).expect("a registered job");
        let started_at = now();
        let clock = Instant::now();
        let mut attempts = 0;
        let (outcome, report, error) = loop {
            attempts += 1;
            let work = self.work.clone();
            let name = self.name;
            #[cfg(feature = "test-hooks")]
            let hooks = (self.board.take_panic(name), self.board.take_failure(name));
            let joined = tokio::spawn(async move {
                #[cfg(feature = "test-hooks")]
                {
                    let (panic, fail) = hooks;
                    if panic {
                        panic!("test hook: job {name} panic requested");
                    }
                    if fail {
                        return Err("test hook: failure requested".to_string());
                    }
                }
                work.run(name).await
            })
            .await;
            match joined {
                Ok(Ok(report)) => break (RunOutcome::Success, Some(report), None),
                Ok(Err(e)) if attempts <= config.max_retries => {
                    tracing::warn!(job = self.name, attempt = attempts, error = %e, "job attempt failed; retrying");
                    tokio::time::sleep(config.retry_delay).await;
                }
                Ok(Err(e)) => break (RunOutcome::Failure, None, Some(e)),
                Err(e) => break (RunOutcome::Panic, None, Some(panic_message(e))),
            }
        };
        let record = RunRecord {
            run,
            trigger,
            started_at: rfc3339(&started_at),
            finished_at: rfc3339(&now()),
            duration_ms: clock.elapsed().as_millis() as u64,
            outcome,
            attempts,
            report,
            error,
        };
        if outcome != RunOutcome::Success {
            tracing::error!(job = self.name, outcome = ?outcome, error = record.error.as_deref().unwrap_or(""), "job run failed");
            self.audit.record(AuditEvent::system(
                if outcome == RunOutcome::Panic {
                    "job.panicked"
                } else {
                    "job.failed"
                },
                json!({"job": self.name, "run": run, "attempts": attempts, "error": record.error}),
            ));
        }
        self.board.finished(self.name, record.clone());
        record
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return format!("the run was cancelled: {e}");
    }
    let p = e.into_panic();
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("panicked: {msg}")
}
