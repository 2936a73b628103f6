//! The restart policy, one type for every supervisor in the tree:
//!
//! - `root` (root.rs): a failed child (breaker, persistence, audit, the
//!   session and job supervisors, a transport) starts again at once with the
//!   same arguments, at most 10 times a minute; past that the failure
//!   escalates: the root stops and the process exits non-zero rather than
//!   limp along.
//! - `jobs` (jobs/supervisor.rs): a failed job actor starts again, at most 10
//!   times a minute; past that the job is left stopped (the rest go on).
//! - `sessions` (sessions.rs): a failed session actor is not restarted at
//!   once: its state is in the database, so the next call for the session
//!   starts a fresh actor that loads it.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How a supervisor treats a child that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Start it again at once, at most `max` times per `window`; past that,
    /// `then`.
    Bounded {
        max: usize,
        window: Duration,
        then: PastLimit,
    },
    /// Leave it stopped; the next call for it starts a fresh one.
    OnNextCall,
}

/// What a `Bounded` policy does once its limit is passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PastLimit {
    /// Fail the supervisor itself (its own supervisor decides).
    Escalate,
    /// Leave the child stopped; its siblings go on.
    LeaveStopped,
}

/// The root's policy for its children.
pub const ROOT: Restart = Restart::Bounded {
    max: 10,
    window: Duration::from_secs(60),
    then: PastLimit::Escalate,
};

/// The jobs supervisor's policy for job actors.
pub const JOBS: Restart = Restart::Bounded {
    max: 10,
    window: Duration::from_secs(60),
    then: PastLimit::LeaveStopped,
};

/// The session supervisor's policy for session actors.
pub const SESSIONS: Restart = Restart::OnNextCall;

/// What to do about one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Restart,
    /// The limit is passed: escalate or leave stopped, as the policy says.
    GiveUp(PastLimit),
    /// Nothing now (`OnNextCall`).
    Wait,
}

/// The failures a supervisor has seen, per child.
#[derive(Debug)]
pub struct Restarts<K> {
    policy: Restart,
    history: HashMap<K, Vec<Instant>>,
}

impl<K: Hash + Eq> Restarts<K> {
    pub fn new(policy: Restart) -> Self {
        Restarts {
            policy,
            history: HashMap::new(),
        }
    }

    /// Record a failure of `child` now and decide what to do about it.
    pub fn failed(&mut self, child: K) -> Verdict {
        self.failed_at(child, Instant::now())
    }

    fn failed_at(&mut self, child: K, now: Instant) -> Verdict {
        let Restart::Bounded { max, window, then } = self.policy else {
            return Verdict::Wait;
        };
        let history = self.history.entry(child).or_default();
        history.retain(|t| now.duration_since(*t) < window);
        history.push(now);
        if history.len() > max {
            Verdict::GiveUp(then)
        } else {
            Verdict::Restart
        }
    }

    /// Failures of `child` within the policy's window (as last recorded).
    pub fn count(&self, child: &K) -> usize {
        self.history.get(child).map_or(0, Vec::len)
    }

    /// The limit, for messages: "failed more than {max} times in {window}".
    pub fn limit(&self) -> Option<(usize, Duration)> {
        match self.policy {
            Restart::Bounded { max, window, .. } => Some((max, window)),
            Restart::OnNextCall => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_policy_gives_up_past_its_limit_within_the_window() {
        let mut r = Restarts::new(ROOT);
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(
                r.failed_at("persistence", t0 + Duration::from_secs(i)),
                Verdict::Restart
            );
        }
        assert_eq!(
            r.failed_at("persistence", t0 + Duration::from_secs(10)),
            Verdict::GiveUp(PastLimit::Escalate)
        );
        // Another child has its own count.
        assert_eq!(r.failed_at("audit", t0), Verdict::Restart);
        // Failures older than the window no longer count.
        assert_eq!(
            r.failed_at("persistence", t0 + Duration::from_secs(200)),
            Verdict::Restart
        );
        assert_eq!(r.count(&"persistence"), 1);
    }

    #[test]
    fn jobs_are_left_stopped_and_sessions_wait_for_the_next_call() {
        let mut jobs = Restarts::new(JOBS);
        let t0 = Instant::now();
        let verdicts: Vec<_> = (0..11).map(|_| jobs.failed_at("retention", t0)).collect();
        assert_eq!(verdicts[9], Verdict::Restart);
        assert_eq!(verdicts[10], Verdict::GiveUp(PastLimit::LeaveStopped));
        let mut sessions = Restarts::new(SESSIONS);
        assert_eq!(sessions.failed("s"), Verdict::Wait);
        assert_eq!(sessions.limit(), None);
    }
}
