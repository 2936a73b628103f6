//! What the `handoff://analytics/{type}` resources read from the database:
//! aggregates of one tenant's rows, computed on demand (no rollup tables),
//! so they are exact at the moment of the read. Each adapter implements the
//! queries (`sqlite_analytics.rs`, `postgres_analytics.rs`).

use serde::Serialize;

/// A label and how many rows carry it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Counted {
    pub name: String,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionAnalytics {
    pub total: i64,
    pub by_status: Vec<Counted>,
    /// `YYYY-MM-DD` (UTC) → sessions created that day, days since `since`.
    pub created_per_day: Vec<Counted>,
    /// Context entries across the tenant's sessions.
    pub entries: i64,
    /// Registering agents with the most sessions (at most `TOP`).
    pub top_agents: Vec<Counted>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HandoffAnalytics {
    pub total: i64,
    pub by_status: Vec<Counted>,
    pub by_request_type: Vec<Counted>,
    /// Target agents with the most handoffs (at most `TOP`).
    pub by_target_agent: Vec<Counted>,
    /// created → accepted, in milliseconds, of every accepted handoff,
    /// ascending.
    pub accept_latencies_ms: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TypeStats {
    pub context_type: String,
    pub count: i64,
    /// UTF-8 bytes of content.
    pub bytes: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContextAnalytics {
    pub by_type: Vec<TypeStats>,
    /// `YYYY-MM-DD` (UTC) → entries created that day, days since `since`.
    pub per_day: Vec<Counted>,
}

/// How many agents the "top" lists keep.
pub const TOP: i64 = 10;
