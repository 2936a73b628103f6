//! Prometheus metrics, registered once per process. Hot paths hold the
//! resolved label handles, so recording is an atomic add.

use std::sync::OnceLock;

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub actors_live: IntGaugeVec,
    pub actor_messages: IntCounterVec,
    pub actor_handling_seconds: HistogramVec,
    pub actor_restarts: IntCounterVec,
    pub mailbox_backlog: IntGaugeVec,
    pub breaker_state: IntGaugeVec,
    pub breaker_transitions: IntCounterVec,
    pub batch_units: HistogramVec,
    pub commit_seconds: HistogramVec,
    pub tool_calls: IntCounterVec,
    pub tool_seconds: HistogramVec,
    pub created: IntCounterVec,
    /// Units that lost an optimistic race to another writer and were retried.
    pub write_conflicts: prometheus::IntCounter,
    /// Cache lookups and writes by operation and outcome (hit, miss, error…).
    pub cache_ops: IntCounterVec,
    /// Session actors started on a session's state, by where it came from:
    /// `cache` (a row parked by an earlier actor here) or `database`.
    pub session_loads: IntCounterVec,
    /// 1 when the replica is ready (as `/ready` says), set at each scrape of
    /// the admin listener's `/metrics`.
    pub ready: prometheus::IntGauge,
    /// Messages handled by actor kind, message and outcome (`handled`, or
    /// `panicked`: the handler panicked and the supervisor restarts it).
    pub actor_message_outcomes: IntCounterVec,
    /// 1 when the audit log reached its anchor at start, 0 when its newest
    /// rows were deleted or rewritten (`handoff audit verify` will fail).
    pub audit_anchor_ok: prometheus::IntGauge,
    /// Panics anywhere in the process (an actor's handler, a task): each
    /// is also an actor failure the supervisor restarts, or a failed call.
    pub panics: IntCounter,
    /// Time a write waited from submission until its batch began to commit.
    pub queue_seconds: prometheus::Histogram,
    /// HTTP answers on the MCP listener by route (`mcp`, `metadata`,
    /// `other`) and status code.
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
    /// Refused credentials by method (`api_key`, `oauth`, `unknown`) and
    /// reason (a fixed set: `handoff::auth::Refusal`).
    pub auth_failures: IntCounterVec,
    /// Requests answered 429, by limit (`rate`, `in_flight`, `streams`).
    pub rate_limited: IntCounterVec,
    /// Children of the vectors above that every call touches, resolved once
    /// (a label lookup hashes and locks).
    pub hot: Hot,
}

pub struct Hot {
    pub session_messages: IntCounter,
    pub persistence_messages: IntCounter,
    pub session_handling: prometheus::Histogram,
    pub persistence_handling: prometheus::Histogram,
    pub created_entries: IntCounter,
    pub created_handoffs: IntCounter,
    pub created_sessions: IntCounter,
    pub loads_from_cache: IntCounter,
    pub loads_from_database: IntCounter,
}

fn build() -> Metrics {
    let registry = Registry::new_custom(Some("handoff".into()), None).expect("metrics registry");
    let latency = exponential_buckets(0.00005, 2.0, 18).expect("buckets");
    let actor_messages = IntCounterVec::new(
        Opts::new("actor_messages_total", "Messages handled by actor kind"),
        &["kind"],
    )
    .unwrap();
    let created = IntCounterVec::new(
        Opts::new(
            "created_total",
            "Sessions, context entries and handoffs created",
        ),
        &["what"],
    )
    .unwrap();
    let session_loads = IntCounterVec::new(
        Opts::new(
            "session_loads_total",
            "Session actors' state loads, by source: cache (a parked row) or database (a read, whatever it found)",
        ),
        &["source"],
    )
    .unwrap();
    let actor_handling_seconds = HistogramVec::new(
        HistogramOpts::new("actor_handling_seconds", "Time to handle one message")
            .buckets(latency.clone()),
        &["kind"],
    )
    .unwrap();
    let hot = Hot {
        session_handling: actor_handling_seconds.with_label_values(&["session"]),
        persistence_handling: actor_handling_seconds.with_label_values(&["persistence"]),
        loads_from_cache: session_loads.with_label_values(&["cache"]),
        loads_from_database: session_loads.with_label_values(&["database"]),
        session_messages: actor_messages.with_label_values(&["session"]),
        persistence_messages: actor_messages.with_label_values(&["persistence"]),
        created_entries: created.with_label_values(&["context_entries"]),
        created_handoffs: created.with_label_values(&["handoffs"]),
        created_sessions: created.with_label_values(&["sessions"]),
    };
    let m = Metrics {
        hot,
        actors_live: IntGaugeVec::new(Opts::new("actors_live", "Live actors by kind"), &["kind"])
            .unwrap(),
        actor_messages,
        actor_handling_seconds,
        actor_restarts: IntCounterVec::new(
            Opts::new("actor_restarts_total", "Actors restarted after a failure"),
            &["kind"],
        )
        .unwrap(),
        mailbox_backlog: IntGaugeVec::new(
            Opts::new("mailbox_backlog", "Messages waiting for the actor"),
            &["kind"],
        )
        .unwrap(),
        breaker_state: IntGaugeVec::new(
            Opts::new(
                "breaker_state",
                "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            ),
            &["dependency"],
        )
        .unwrap(),
        breaker_transitions: IntCounterVec::new(
            Opts::new("breaker_transitions_total", "Breaker state changes"),
            &["dependency", "to"],
        )
        .unwrap(),
        batch_units: HistogramVec::new(
            HistogramOpts::new("persistence_batch_size", "Writes per committed batch")
                .buckets(exponential_buckets(1.0, 2.0, 10).unwrap()),
            &["kind"],
        )
        .unwrap(),
        commit_seconds: HistogramVec::new(
            HistogramOpts::new("persistence_commit_seconds", "Batch commit latency")
                .buckets(latency.clone()),
            &["outcome"],
        )
        .unwrap(),
        tool_calls: IntCounterVec::new(
            Opts::new("tool_calls_total", "Tool calls by tool and outcome"),
            &["tool", "outcome"],
        )
        .unwrap(),
        tool_seconds: HistogramVec::new(
            HistogramOpts::new("tool_call_seconds", "Tool call duration").buckets(latency.clone()),
            &["tool"],
        )
        .unwrap(),
        created,
        write_conflicts: prometheus::IntCounter::new(
            "write_conflicts_total",
            "Writes that lost a race to another replica and were retried",
        )
        .unwrap(),
        cache_ops: IntCounterVec::new(
            Opts::new(
                "cache_ops_total",
                "Cache operations by operation and outcome",
            ),
            &["op", "outcome"],
        )
        .unwrap(),
        session_loads,
        panics: IntCounter::new("panics_total", "Panics in the process").unwrap(),
        actor_message_outcomes: IntCounterVec::new(
            Opts::new(
                "actor_message_outcomes_total",
                "Messages handled by actor kind, message and outcome",
            ),
            &["kind", "message", "outcome"],
        )
        .unwrap(),
        audit_anchor_ok: prometheus::IntGauge::new(
            "audit_anchor_ok",
            "1 when the audit log reached its anchor at start, 0 when its newest rows are gone",
        )
        .unwrap(),
        ready: prometheus::IntGauge::new(
            "ready",
            "1 when the database answers and its breaker is not open (as /ready)",
        )
        .unwrap(),
        queue_seconds: prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "persistence_queue_seconds",
                "Wait from a write's submission until its batch starts to commit",
            )
            .buckets(latency.clone()),
        )
        .unwrap(),
        http_requests: IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP answers by route and status"),
            &["route", "status"],
        )
        .unwrap(),
        http_seconds: HistogramVec::new(
            HistogramOpts::new(
                "http_request_seconds",
                "HTTP request duration, head to answer",
            )
            .buckets(latency.clone()),
            &["route"],
        )
        .unwrap(),
        auth_failures: IntCounterVec::new(
            Opts::new(
                "auth_failures_total",
                "Refused credentials by method and reason",
            ),
            &["method", "reason"],
        )
        .unwrap(),
        rate_limited: IntCounterVec::new(
            Opts::new("rate_limited_total", "Requests answered 429 by limit"),
            &["limit"],
        )
        .unwrap(),
        registry,
    };
    for c in [
        Box::new(m.actors_live.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(m.actor_messages.clone()),
        Box::new(m.actor_handling_seconds.clone()),
        Box::new(m.actor_restarts.clone()),
        Box::new(m.mailbox_backlog.clone()),
        Box::new(m.breaker_state.clone()),
        Box::new(m.breaker_transitions.clone()),
        Box::new(m.batch_units.clone()),
        Box::new(m.commit_seconds.clone()),
        Box::new(m.tool_calls.clone()),
        Box::new(m.tool_seconds.clone()),
        Box::new(m.created.clone()),
        Box::new(m.write_conflicts.clone()),
        Box::new(m.cache_ops.clone()),
        Box::new(m.session_loads.clone()),
        Box::new(m.panics.clone()),
        Box::new(m.actor_message_outcomes.clone()),
        Box::new(m.audit_anchor_ok.clone()),
        Box::new(m.ready.clone()),
        Box::new(m.queue_seconds.clone()),
        Box::new(m.http_requests.clone()),
        Box::new(m.http_seconds.clone()),
        Box::new(m.auth_failures.clone()),
        Box::new(m.rate_limited.clone()),
    ] {
        m.registry.register(c).expect("register metric");
    }
    // RSS, CPU seconds, open fds, threads, start time: read from /proc.
    #[cfg(target_os = "linux")]
    m.registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("register process metrics");
    // Series a dashboard or an alert names exist from the start, at zero.
    for limit in ["rate", "in_flight", "streams"] {
        m.rate_limited.with_label_values(&[limit]);
    }
    for dep in ["database", "cache"] {
        m.breaker_state.with_label_values(&[dep]);
    }
    for kind in ["persistence", "audit"] {
        m.mailbox_backlog.with_label_values(&[kind]);
    }
    for kind in ["session", "job"] {
        m.actor_restarts.with_label_values(&[kind]);
    }
    m.audit_anchor_ok.set(1);
    for dep in ["database", "cache"] {
        for to in ["open", "half_open", "closed"] {
            m.breaker_transitions.with_label_values(&[dep, to]);
        }
    }
    m
}

/// A message handled by an actor: counted and timed when dropped (at the
/// end of `handle`, or while unwinding from a panic in it).
pub struct Handling {
    counter: IntCounter,
    hist: prometheus::Histogram,
    kind: &'static str,
    message: &'static str,
    started: std::time::Instant,
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.counter.inc();
        self.hist.observe(self.started.elapsed().as_secs_f64());
        let outcome = if std::thread::panicking() {
            "panicked"
        } else {
            "handled"
        };
        metrics()
            .actor_message_outcomes
            .with_label_values(&[self.kind, self.message, outcome])
            .inc();
    }
}

impl Handling {
    /// With the kind's counter and histogram already resolved (hot paths).
    pub fn start(
        kind: &'static str,
        message: &'static str,
        counter: &IntCounter,
        hist: &prometheus::Histogram,
    ) -> Self {
        Self {
            counter: counter.clone(),
            hist: hist.clone(),
            kind,
            message,
            started: std::time::Instant::now(),
        }
    }
}

/// Count and time one `message` of an actor of `kind`.
pub fn handling(kind: &'static str, message: &'static str) -> Handling {
    let m = metrics();
    Handling::start(
        kind,
        message,
        &m.actor_messages.with_label_values(&[kind]),
        &m.actor_handling_seconds.with_label_values(&[kind]),
    )
}

pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(build)
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&metrics().registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}
