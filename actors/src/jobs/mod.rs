//! Background jobs: `lifecycle`, `retention`, `cache_maintenance`,
//! `analytics_rollup`. Each runs in its own actor (`job.rs`) under the jobs
//! supervisor (`supervisor.rs`), which the root supervises like any other
//! child. The actors own the schedule, the retries and the history; the work
//! itself comes from the binary as a [`JobWork`] trait object, so this crate
//! knows nothing of SQL or settings.
//!
//! Status lives on a shared board ([`Jobs`]) rather than in the actors, so
//! it survives an actor's restart and can be read while a run is going on.

pub mod job;
pub mod supervisor;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ractor::ActorRef;
use serde::Serialize;
use serde_json::Value;

use crate::model::{now, rfc3339};

/// The jobs, in the order they are listed.
pub const JOB_NAMES: [&str; 4] = [
    "lifecycle",
    "retention",
    "cache_maintenance",
    "analytics_rollup",
];

/// Runs kept per job.
pub const HISTORY: usize = 20;

/// The work of one job: what a run does. `Ok` carries the run's report
/// (counts); `Err` a message, and the run is retried per the job's config.
#[async_trait]
pub trait JobWork: Send + Sync + 'static {
    async fn run(&self, job: &str) -> Result<Value, String>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobConfig {
    pub interval: Duration,
    pub enabled: bool,
    /// Further attempts after a failed one, within the same run.
    pub max_retries: u32,
    pub retry_delay: Duration,
}

#[derive(Clone)]
pub struct JobSpec {
    pub name: &'static str,
    pub config: JobConfig,
    pub work: Arc<dyn JobWork>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Idle,
    Running,
    Disabled,
    /// The last run failed (or panicked).
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Success,
    Failure,
    /// The run panicked; the job's actor was restarted.
    Panic,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// Per job, from 1 (resets at restart, like the history).
    pub run: u64,
    /// `schedule` or `manual` (run_job_now).
    pub trigger: &'static str,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    pub outcome: RunOutcome,
    pub attempts: u32,
    pub report: Option<Value>,
    pub error: Option<String>,
}

/// What `get_job_status` and `handoff://jobs` show of a job.
#[derive(Debug, Clone)]
pub struct JobStatus {
    pub name: &'static str,
    pub config: JobConfig,
    pub running: bool,
    pub last_run_started_at: Option<DateTime<Utc>>,
    pub last_run_finished_at: Option<DateTime<Utc>>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub success_count: u64,
    pub failure_count: u64,
    pub restarts: u64,
    pub last_outcome: Option<RunOutcome>,
    pub last_error: Option<String>,
    /// Newest first.
    pub history: VecDeque<RunRecord>,
    runs: u64,
}

impl JobStatus {
    fn new(name: &'static str, config: JobConfig) -> Self {
        Self {
            name,
            config,
            running: false,
            last_run_started_at: None,
            last_run_finished_at: None,
            next_run_at: None,
            success_count: 0,
            failure_count: 0,
            restarts: 0,
            last_outcome: None,
            last_error: None,
            history: VecDeque::new(),
            runs: 0,
        }
    }

    pub fn state(&self) -> JobState {
        if self.running {
            JobState::Running
        } else if !self.config.enabled {
            JobState::Disabled
        } else if matches!(
            self.last_outcome,
            Some(RunOutcome::Failure | RunOutcome::Panic)
        ) {
            JobState::Failed
        } else {
            JobState::Idle
        }
    }

    pub fn to_json(&self, history: bool) -> Value {
        let t = |v: &Option<DateTime<Utc>>| v.as_ref().map(rfc3339);
        let mut v = serde_json::json!({
            "name": self.name,
            "state": self.state(),
            "config": {
                "interval": format_duration(self.config.interval),
                "interval_ms": self.config.interval.as_millis() as u64,
                "enabled": self.config.enabled,
                "max_retries": self.config.max_retries,
                "retry_delay_ms": self.config.retry_delay.as_millis() as u64,
            },
            "last_run_started_at": t(&self.last_run_started_at),
            "last_run_finished_at": t(&self.last_run_finished_at),
            "next_run_at": t(&self.next_run_at),
            "success_count": self.success_count,
            "failure_count": self.failure_count,
            "restarts": self.restarts,
            "last_outcome": self.last_outcome,
            "last_error": self.last_error,
            "last_run": self.history.front(),
        });
        if history {
            v["history"] = serde_json::to_value(&self.history).unwrap_or_default();
        }
        v
    }
}

/// Durations in the largest whole unit (`30m`, `1h`, `1500ms`), as the
/// configuration shows them.
/// `d` from now, saturating at chrono's far end instead of panicking.
fn after_now(d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now().checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 || s == 0 {
        return format!("{}ms", d.as_millis());
    }
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s.is_multiple_of(n) {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

/// The status board every job actor reports to. Cheap to clone.
#[derive(Clone, Default)]
pub struct Jobs {
    board: Arc<Mutex<BTreeMap<&'static str, JobStatus>>>,
    /// Each job's actor, bound by the jobs supervisor when it starts one.
    actors: Arc<Mutex<BTreeMap<&'static str, ActorRef<job::JobMsg>>>>,
    /// Test hook: jobs whose next run panics.
    #[cfg(feature = "test-hooks")]
    panic_next: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Test hook: attempts still to fail, per job.
    #[cfg(feature = "test-hooks")]
    fail_next: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Jobs {
    fn with<T>(&self, name: &str, f: impl FnOnce(&mut JobStatus) -> T) -> Option<T> {
        self.board.lock().expect("jobs board").get_mut(name).map(f)
    }

    /// Put the jobs on the board (a job already there keeps its status).
    pub fn register(&self, specs: &[JobSpec]) {
        let mut b = self.board.lock().expect("jobs board");
        for s in specs {
            b.entry(s.name)
                .or_insert_with(|| JobStatus::new(s.name, s.config.clone()));
        }
    }

    /// The job's actor as last started (it may be restarting: a call to
    /// it then fails and the caller asks again).
    pub fn actor(&self, name: &str) -> Option<ActorRef<job::JobMsg>> {
        self.actors.lock().expect("jobs actors").get(name).cloned()
    }

    pub(crate) fn bind(&self, name: &'static str, actor: ActorRef<job::JobMsg>) {
        self.actors.lock().expect("jobs actors").insert(name, actor);
    }

    pub fn get(&self, name: &str) -> Option<JobStatus> {
        self.with(name, |s| s.clone())
    }

    /// Every job, in `JOB_NAMES` order.
    pub fn all(&self) -> Vec<JobStatus> {
        let b = self.board.lock().expect("jobs board");
        JOB_NAMES.iter().filter_map(|n| b.get(n).cloned()).collect()
    }

    pub fn config(&self, name: &str) -> Option<JobConfig> {
        self.with(name, |s| s.config.clone())
    }

    /// Set the config and the next run it implies (an interval from now).
    pub fn set_config(&self, name: &str, config: JobConfig) -> Option<JobStatus> {
        self.with(name, |s| {
            s.next_run_at = config.enabled.then(|| after_now(config.interval));
            s.config = config;
            s.clone()
        })
    }

    /// Schedule the next run an interval from now (none when disabled).
    /// Returns the wait.
    fn schedule_next(&self, name: &str) -> Option<Duration> {
        self.with(name, |s| {
            if !s.config.enabled {
                s.next_run_at = None;
                return None;
            }
            s.next_run_at = Some(after_now(s.config.interval));
            Some(s.config.interval)
        })
        .flatten()
    }

    fn started(&self, name: &str) -> u64 {
        self.with(name, |s| {
            s.running = true;
            s.last_run_started_at = Some(now());
            s.runs += 1;
            s.runs
        })
        .unwrap_or(0)
    }

    fn finished(&self, name: &str, record: RunRecord) {
        self.with(name, |s| {
            s.running = false;
            s.last_run_finished_at = Some(now());
            match record.outcome {
                RunOutcome::Success => s.success_count += 1,
                RunOutcome::Failure | RunOutcome::Panic => {
                    s.failure_count += 1;
                    s.last_error = record.error.clone();
                }
            }
            s.last_outcome = Some(record.outcome);
            s.history.push_front(record);
            s.history.truncate(HISTORY);
        });
    }

    fn restarted(&self, name: &str) {
        self.with(name, |s| {
            s.running = false;
            s.restarts += 1;
        });
    }

    /// Test hook: make the job's next run panic.
    #[cfg(feature = "test-hooks")]
    pub fn panic_next_run(&self, name: &str) {
        self.panic_next
            .lock()
            .expect("jobs hooks")
            .insert(name.to_string());
    }

    #[cfg(feature = "test-hooks")]
    fn take_panic(&self, name: &str) -> bool {
        self.panic_next.lock().expect("jobs hooks").remove(name)
    }

    /// Test hook: the job's next `attempts` attempts fail.
    #[cfg(feature = "test-hooks")]
    pub fn fail_next_attempts(&self, name: &str, attempts: u32) {
        self.fail_next
            .lock()
            .expect("jobs hooks")
            .insert(name.to_string(), attempts);
    }

    #[cfg(feature = "test-hooks")]
    fn take_failure(&self, name: &str) -> bool {
        let mut f = self.fail_next.lock().expect("jobs hooks");
        match f.get_mut(name) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;

    #[async_trait]
    impl JobWork for Nothing {
        async fn run(&self, _job: &str) -> Result<Value, String> {
            Ok(Value::Null)
        }
    }

    fn record(run: u64, outcome: RunOutcome) -> RunRecord {
        RunRecord {
            run,
            trigger: "manual",
            started_at: String::new(),
            finished_at: String::new(),
            duration_ms: 0,
            outcome,
            attempts: 1,
            report: None,
            error: (outcome != RunOutcome::Success).then(|| "boom".into()),
        }
    }

    #[test]
    fn durations_use_the_largest_whole_unit() {
        for (d, s) in [
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(2 * 86_400), "2d"),
        ] {
            assert_eq!(format_duration(d), s);
        }
    }

    #[test]
    fn the_board_tracks_state_counts_and_history() {
        let jobs = Jobs::default();
        let config = JobConfig {
            interval: Duration::from_secs(60),
            enabled: true,
            max_retries: 0,
            retry_delay: Duration::ZERO,
        };
        jobs.register(&[JobSpec {
            name: "lifecycle",
            config: config.clone(),
            work: Arc::new(Nothing),
        }]);
        assert_eq!(jobs.get("lifecycle").unwrap().state(), JobState::Idle);
        let n = jobs.started("lifecycle");
        assert_eq!(jobs.get("lifecycle").unwrap().state(), JobState::Running);
        jobs.finished("lifecycle", record(n, RunOutcome::Panic));
        jobs.restarted("lifecycle");
        let s = jobs.get("lifecycle").unwrap();
        assert_eq!(
            (s.state(), s.failure_count, s.restarts),
            (JobState::Failed, 1, 1)
        );
        for _ in 0..HISTORY + 5 {
            let n = jobs.started("lifecycle");
            jobs.finished("lifecycle", record(n, RunOutcome::Success));
        }
        let s = jobs.get("lifecycle").unwrap();
        assert_eq!(s.state(), JobState::Idle);
        assert_eq!(s.history.len(), HISTORY);
        assert_eq!(s.history[0].run, HISTORY as u64 + 6, "newest first");
        let s = jobs
            .set_config(
                "lifecycle",
                JobConfig {
                    enabled: false,
                    ..config
                },
            )
            .unwrap();
        assert_eq!(s.state(), JobState::Disabled);
        assert!(s.next_run_at.is_none());
        assert!(jobs.get("nope").is_none());
    }
}
