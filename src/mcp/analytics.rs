//! `handoff://analytics/{type}`: `sessions`, `handoffs` and `context` are
//! aggregates of the caller's tenant's rows (storage/analytics.rs);
//! `performance` reads this process's Prometheus registry; `resources` is
//! the process and its database (live session actors, RSS, database size,
//! uptime). The payloads are documented in docs/tools.md.

use std::sync::OnceLock;
use std::time::Instant;

use chrono::Duration as ChronoDuration;
use handoff_actors::metrics::metrics;
use handoff_actors::model::{now, rfc3339};
use handoff_actors::HandoffError;
use prometheus::proto::{Histogram, Metric, MetricFamily};
use serde_json::{json, Map, Value};

use super::context::Ctx;
use crate::storage::analytics::Counted;

/// The per-day series cover this many days, today included.
const DAYS: i64 = 30;

/// When the process started (first touched at start-up, see `mark_start`).
fn started() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Call at start-up so `uptime_seconds` counts from there.
pub fn mark_start() {
    started();
}

/// `None` for an unknown type (the caller answers NOT_FOUND).
/// Every analytics type, tenant-scoped ones first: a new type goes here
/// too (tests/isolation.rs reads each as two tenants).
pub const TYPES: [&str; 5] = [
    "sessions",
    "handoffs",
    "context",
    "performance",
    "resources",
];

pub async fn read(ctx: &Ctx, kind: &str) -> Option<Result<Value, HandoffError>> {
    Some(match kind {
        "sessions" => sessions(ctx).await,
        "handoffs" => handoffs(ctx).await,
        "context" => context(ctx).await,
        "performance" => Ok(performance()),
        "resources" => resources(ctx).await,
        _ => return None,
    })
}

/// Midnight UTC of the first day of the per-day series.
fn since() -> String {
    let first = (now() - ChronoDuration::days(DAYS - 1)).date_naive();
    format!("{first}T00:00:00.000000Z")
}

fn counts(list: &[Counted]) -> Map<String, Value> {
    list.iter()
        .map(|c| (c.name.clone(), json!(c.count)))
        .collect()
}

fn series(list: &[Counted]) -> Vec<Value> {
    list.iter()
        .map(|c| json!({"day": c.name, "count": c.count}))
        .collect()
}

async fn sessions(ctx: &Ctx) -> Result<Value, HandoffError> {
    let s = ctx
        .storage
        .run(ctx.storage.db.session_analytics(&ctx.tenant, &since()))
        .await?;
    let avg = if s.total > 0 {
        s.entries as f64 / s.total as f64
    } else {
        0.0
    };
    Ok(json!({
        "type": "sessions",
        "total": s.total,
        "by_status": counts(&s.by_status),
        "created_per_day": series(&s.created_per_day),
        "total_entries": s.entries,
        "average_entries_per_session": avg,
        "top_agents": s.top_agents.iter().map(|c| json!({"agent": c.name, "sessions": c.count})).collect::<Vec<_>>(),
        "days": DAYS,
        "generated_at": rfc3339(&now()),
    }))
}

/// Nearest-rank percentile of ascending values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

async fn handoffs(ctx: &Ctx) -> Result<Value, HandoffError> {
    let h = ctx
        .storage
        .run(ctx.storage.db.handoff_analytics(&ctx.tenant))
        .await?;
    let l = &h.accept_latencies_ms;
    Ok(json!({
        "type": "handoffs",
        "total": h.total,
        "by_status": counts(&h.by_status),
        "by_request_type": counts(&h.by_request_type),
        "by_target_agent": h.by_target_agent.iter().map(|c| json!({"agent": c.name, "handoffs": c.count})).collect::<Vec<_>>(),
        "accept_latency_ms": {
            "count": l.len(),
            "median": percentile(l, 50.0),
            "p95": percentile(l, 95.0),
            "max": l.last(),
        },
        "generated_at": rfc3339(&now()),
    }))
}

async fn context(ctx: &Ctx) -> Result<Value, HandoffError> {
    let c = ctx
        .storage
        .run(ctx.storage.db.context_analytics(&ctx.tenant, &since()))
        .await?;
    let total: i64 = c.by_type.iter().map(|t| t.count).sum();
    let bytes: i64 = c.by_type.iter().map(|t| t.bytes).sum();
    Ok(json!({
        "type": "context",
        "total_entries": total,
        "total_content_bytes": bytes,
        "average_content_bytes": if total > 0 { bytes as f64 / total as f64 } else { 0.0 },
        "by_context_type": c.by_type.iter().map(|t| (t.context_type.clone(), json!({"entries": t.count, "content_bytes": t.bytes}))).collect::<Map<_, _>>(),
        "entries_per_day": series(&c.per_day),
        "days": DAYS,
        "generated_at": rfc3339(&now()),
    }))
}

fn label<'a>(m: &'a Metric, name: &str) -> &'a str {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

/// The q-quantile of a histogram, interpolated linearly inside the bucket
/// it falls in (as PromQL's `histogram_quantile`); values above the last
/// bound report that bound.
fn quantile(h: &Histogram, q: f64) -> Option<f64> {
    let total = h.get_sample_count();
    if total == 0 {
        return None;
    }
    let target = q * total as f64;
    let mut lower = 0.0;
    let mut below = 0u64;
    for b in h.get_bucket() {
        let count = b.cumulative_count();
        if count as f64 >= target {
            let in_bucket = (count - below) as f64;
            let frac = if in_bucket > 0.0 {
                (target - below as f64) / in_bucket
            } else {
                1.0
            };
            return Some(lower + (b.upper_bound() - lower) * frac);
        }
        lower = b.upper_bound();
        below = count;
    }
    Some(lower)
}

/// count, mean and quantiles of a histogram, scaled (1000: seconds → ms).
fn summary(h: &Histogram, scale: f64) -> Value {
    let n = h.get_sample_count();
    let q = |p| quantile(h, p).map(|v| v * scale);
    json!({
        "count": n,
        "mean": (n > 0).then(|| h.get_sample_sum() / n as f64 * scale),
        "p50": q(0.5),
        "p95": q(0.95),
        "p99": q(0.99),
    })
}

fn family<'a>(all: &'a [MetricFamily], name: &str) -> &'a [Metric] {
    all.iter()
        .find(|f| f.name() == name)
        .map_or(&[], |f| f.get_metric())
}

/// Process-wide (every tenant's calls): the registry has no tenant label.
fn performance() -> Value {
    let all = metrics().registry.gather();
    let mut tools: Map<String, Value> = Map::new();
    for m in family(&all, "handoff_tool_calls_total") {
        let t = tools
            .entry(label(m, "tool").to_string())
            .or_insert_with(|| json!({"calls": 0, "errors": 0, "errors_by_code": {}}));
        let n = m.get_counter().get_value() as u64;
        t["calls"] = json!(t["calls"].as_u64().unwrap_or(0) + n);
        let outcome = label(m, "outcome");
        if outcome != "ok" {
            t["errors"] = json!(t["errors"].as_u64().unwrap_or(0) + n);
            t["errors_by_code"][outcome] = json!(n);
        }
    }
    for m in family(&all, "handoff_tool_call_seconds") {
        let t = tools
            .entry(label(m, "tool").to_string())
            .or_insert_with(|| json!({"calls": 0, "errors": 0, "errors_by_code": {}}));
        t["latency_ms"] = summary(m.get_histogram(), 1000.0);
    }
    let batches: Map<String, Value> = family(&all, "handoff_persistence_batch_size")
        .iter()
        .map(|m| {
            (
                label(m, "kind").to_string(),
                summary(m.get_histogram(), 1.0),
            )
        })
        .collect();
    let commits: Map<String, Value> = family(&all, "handoff_persistence_commit_seconds")
        .iter()
        .map(|m| {
            (
                label(m, "outcome").to_string(),
                summary(m.get_histogram(), 1000.0),
            )
        })
        .collect();
    let breakers: Map<String, Value> = family(&all, "handoff_breaker_state")
        .iter()
        .map(|m| {
            let state = match m.get_gauge().get_value() as i64 {
                0 => "closed",
                1 => "half_open",
                _ => "open",
            };
            (label(m, "dependency").to_string(), json!(state))
        })
        .collect();
    json!({
        "type": "performance",
        "scope": "process",
        "tools": tools,
        "persistence": {"batch_size": batches, "commit_latency_ms": commits},
        "breakers": breakers,
        "generated_at": rfc3339(&now()),
    })
}

/// Resident set size from /proc/self/statm (pages × page size); `None`
/// off Linux.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|p| *p > 0)?)
}

async fn resources(ctx: &Ctx) -> Result<Value, HandoffError> {
    let size = ctx.storage.run(ctx.storage.db.database_size()).await?;
    let live = metrics().actors_live.with_label_values(&["session"]).get();
    Ok(json!({
        "type": "resources",
        "live_session_actors": live,
        "max_live_session_actors": ctx.cfg.max_live_sessions,
        "rss_bytes": rss_bytes(),
        "database": {
            "backend": ctx.backend_kind(),
            "size_bytes": size.iter().map(|c| c.count).sum::<i64>(),
            "files": counts(&size),
        },
        "uptime_seconds": started().elapsed().as_secs_f64(),
        "generated_at": rfc3339(&now()),
    }))
}
