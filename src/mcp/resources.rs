//! The resources (contract §4): `handoff://sessions`,
//! `handoff://context/{session_key}` (paged with `?after=N&limit=M`),
//! `handoff://summary/{session_key}`, `handoff://health`,
//! `handoff://metrics`, `handoff://analytics/{type}`, `handoff://configuration`,
//! `handoff://configuration/backups`. Keys in URIs are percent-decoded.

use handoff_actors::breaker::Dependency;
use handoff_actors::model::{now, rfc3339};
use handoff_actors::{ErrorCode, HandoffError};
use percent_encoding::percent_decode_str;
use rmcp::model::{Resource, ResourceTemplate};
use serde_json::{json, Value};

use super::context::Ctx;
use super::tools::{get_context, get_job_status, list_handoffs};
use super::types::HandoffStatusArg;

pub fn list() -> Vec<Resource> {
    [
        (
            "handoff://sessions",
            "sessions",
            "Sessions of the caller, paged (?cursor=&limit=)",
            "application/json",
        ),
        (
            "handoff://sessions/lifecycle",
            "sessions-lifecycle",
            "Recent session lifecycle transitions, newest first: session_key, from, to, at, reason (?limit=)",
            "application/json",
        ),
        (
            "handoff://jobs",
            "jobs",
            "Background jobs: state, config, last and next run, counts, last error, recent runs",
            "application/json",
        ),
        (
            "handoff://health",
            "health",
            "Health of the database, the breakers and every actor group",
            "application/json",
        ),
        (
            "handoff://metrics",
            "metrics",
            "Prometheus metrics (text exposition)",
            "text/plain",
        ),
        (
            "handoff://configuration",
            "configuration",
            "The effective runtime configuration with per-key metadata",
            "application/json",
        ),
        (
            "handoff://configuration/backups",
            "configuration-backups",
            "Configuration backups, newest first: id, name, created_at, checksum, size_bytes",
            "application/json",
        ),
    ]
    .into_iter()
    .map(|(uri, name, desc, mime)| {
        Resource::new(uri, name)
            .with_description(desc)
            .with_mime_type(mime)
    })
    .collect()
}

pub fn templates() -> Vec<ResourceTemplate> {
    [
        (
            "handoff://context/{session_key}",
            "context",
            "A session's context entries in order; page with ?after=N&limit=M",
        ),
        (
            "handoff://summary/{session_key}",
            "summary",
            "A session's running summary: counts, participants, recent entries",
        ),
        (
            "handoff://agents/{agent_id}/sessions",
            "agent-sessions",
            "Sessions the agent registered or joined as a collaborator; page with ?limit=&cursor=",
        ),
        (
            "handoff://jobs/{job_name}",
            "job",
            "One background job: state, config, last and next run, counts, last error, recent runs",
        ),
        (
            "handoff://agents/{agent_id}/handoffs",
            "agent-handoffs",
            "Handoffs addressed to the agent, newest first; ?status=pending|accepted&limit=&cursor=",
        ),
        (
            "handoff://analytics/{type}",
            "analytics",
            "Analytics computed from live data; type: sessions, handoffs, context (your tenant), \
             performance (this process's metrics), resources (process and database)",
        ),
    ]
    .into_iter()
    .map(|(uri, name, desc)| {
        ResourceTemplate::new(uri, name)
            .with_description(desc)
            .with_mime_type("application/json")
    })
    .collect()
}

fn not_found(uri: &str) -> HandoffError {
    HandoffError::new(ErrorCode::NotFound, format!("no resource at {uri}")).detail("uri", uri)
}

/// Split `handoff://what/rest?query` and decode the parts.
pub struct Parsed {
    pub kind: String,
    pub key: Option<String>,
    pub query: Vec<(String, String)>,
}

pub fn parse(uri: &str) -> Option<Parsed> {
    let rest = uri.strip_prefix("handoff://")?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (kind, key) = match path.split_once('/') {
        Some((k, key)) => (k, Some(key)),
        None => (path, None),
    };
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .ok()
    };
    let key = match key {
        Some(k) => Some(decode(k)?),
        None => None,
    };
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Parsed {
        kind: kind.to_string(),
        key,
        query,
    })
}

fn q_num<T: std::str::FromStr>(p: &Parsed, name: &str) -> Result<Option<T>, HandoffError> {
    match p.query.iter().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => v.parse().map(Some).map_err(|_| {
            HandoffError::validation(format!("query parameter {name} must be a number"))
                .detail("field", name)
        }),
    }
}

/// What a subscribable URI watches: a session's context or summary (both
/// change with every commit to it) or an agent's handoff list. `None` for
/// URIs that cannot be subscribed to.
pub fn watch_key(uri: &str) -> Option<String> {
    let p = parse(uri)?;
    match (p.kind.as_str(), p.key?) {
        ("context" | "summary", key) if !key.is_empty() => Some(format!("session\u{0}{key}")),
        ("agents", rest) => {
            let (agent, what) = rest.rsplit_once('/')?;
            (what == "handoffs" && !agent.is_empty()).then(|| format!("agent\u{0}{agent}"))
        }
        _ => None,
    }
}

/// The watch keys a committed change touches.
pub fn change_keys(change: &handoff_actors::changes::Change) -> Vec<String> {
    std::iter::once(format!("session\u{0}{}", change.session_key))
        .chain(change.agents.iter().map(|a| format!("agent\u{0}{a}")))
        .collect()
}

/// Read a resource: (mime type, body).
/// Resources about the whole process rather than the caller's tenant:
/// they need the admin capability (contract §1).
fn process_wide(kind: &str, key: Option<&str>) -> bool {
    matches!(
        (kind, key),
        ("metrics", None) | ("analytics", Some("performance")) | ("analytics", Some("resources"))
    )
}

/// Whether reading (or subscribing to) `uri` needs the admin capability.
pub fn process_wide_uri(uri: &str) -> bool {
    parse(uri).is_some_and(|p| process_wide(&p.kind, p.key.as_deref()))
}

pub async fn read(ctx: &Ctx, uri: &str) -> Result<(&'static str, String), HandoffError> {
    let p = parse(uri).ok_or_else(|| not_found(uri))?;
    if process_wide(&p.kind, p.key.as_deref()) {
        ctx.require_admin(&format!("reading {}", p.kind))?;
    }
    let body: Value = match (p.kind.as_str(), p.key.as_deref()) {
        ("context", Some(key)) if !key.is_empty() => {
            let after = q_num::<i64>(&p, "after")?;
            let limit = q_num::<u32>(&p, "limit")?;
            let (entries, next, has_more) = get_context::page(ctx, key, after, limit, None).await?;
            json!({"session_key": key, "entries": entries, "has_more": has_more, "next_after_sequence": next})
        }
        ("summary", Some(key)) if !key.is_empty() => {
            crate::mcp::args::session_key(&ctx.cfg, key)?;
            let v = ctx.core.summary(&ctx.key(key)).await?;
            serde_json::to_value(v).unwrap_or(Value::Null)
        }
        ("sessions", None) => {
            let limit = q_num::<u32>(&p, "limit")?.unwrap_or(ctx.cfg.page_size_default);
            if limit == 0 || limit > ctx.cfg.page_size_max {
                return Err(HandoffError::validation(format!(
                    "limit must be 1–{}",
                    ctx.cfg.page_size_max
                )));
            }
            let cursor = p
                .query
                .iter()
                .find(|(k, _)| k == "cursor")
                .map(|(_, v)| v.as_str());
            let (list, total) = ctx
                .storage
                .run(ctx.storage.db.list_sessions(&ctx.tenant, cursor, limit + 1))
                .await?;
            let has_more = list.len() > limit as usize;
            let list = &list[..list.len().min(limit as usize)];
            let next = if has_more {
                list.last().map(|s| s.session_key.clone())
            } else {
                None
            };
            json!({
                "sessions": list.iter().map(|s| json!({
                    "session_key": s.session_key, "status": s.status, "agent_from": s.agent_from,
                    "created_at": s.created_at, "last_activity_at": s.last_activity_at,
                })).collect::<Vec<_>>(),
                "total": total,
                "next_cursor": next,
            })
        }
        ("agents", Some(rest)) => {
            let Some((agent, what)) = rest.rsplit_once('/') else {
                return Err(not_found(uri));
            };
            // A key bound to an agent reads that agent's handoffs and
            // sessions only, as `list_handoffs` does.
            ctx.require_agent("agent_id", agent)?;
            let limit = q_num::<u32>(&p, "limit")?;
            let cursor = p
                .query
                .iter()
                .find(|(k, _)| k == "cursor")
                .map(|(_, v)| v.as_str());
            match what {
                "handoffs" => {
                    let status = match p
                        .query
                        .iter()
                        .find(|(k, _)| k == "status")
                        .map(|(_, v)| v.as_str())
                    {
                        None => None,
                        Some("pending") => Some(HandoffStatusArg::Pending),
                        Some("accepted") => Some(HandoffStatusArg::Accepted),
                        Some(other) => {
                            return Err(HandoffError::validation(format!(
                                "status must be pending or accepted, not {other}"
                            )))
                        }
                    };
                    let (handoffs, has_more, next) =
                        list_handoffs::page(ctx, agent, status, limit, cursor).await?;
                    json!({"agent_id": agent, "handoffs": handoffs, "has_more": has_more, "next_cursor": next})
                }
                "sessions" => {
                    crate::mcp::args::agent_id(&ctx.cfg, "agent_id", agent)?;
                    let limit = limit.unwrap_or(ctx.cfg.page_size_default);
                    if limit == 0 || limit > ctx.cfg.page_size_max {
                        return Err(HandoffError::validation(format!(
                            "limit must be 1–{}",
                            ctx.cfg.page_size_max
                        )));
                    }
                    let mut list = ctx
                        .storage
                        .run(
                            ctx.storage
                                .db
                                .agent_sessions(&ctx.tenant, agent, cursor, limit + 1),
                        )
                        .await?;
                    let has_more = list.len() > limit as usize;
                    list.truncate(limit as usize);
                    let next = if has_more {
                        list.last().map(|s| s.session_key.clone())
                    } else {
                        None
                    };
                    json!({
                        "agent_id": agent,
                        "sessions": list.iter().map(|s| json!({
                            "session_key": s.session_key, "status": s.status, "agent_from": s.agent_from,
                            "role": if s.agent_from == agent { "owner" } else { "collaborator" },
                            "created_at": s.created_at, "last_activity_at": s.last_activity_at,
                        })).collect::<Vec<_>>(),
                        "has_more": has_more,
                        "next_cursor": next,
                    })
                }
                _ => return Err(not_found(uri)),
            }
        }
        ("sessions", Some("lifecycle")) => {
            let limit = q_num::<u32>(&p, "limit")?.unwrap_or(ctx.cfg.page_size_default);
            if limit == 0 || limit > ctx.cfg.page_size_max {
                return Err(HandoffError::validation(format!(
                    "limit must be 1–{}",
                    ctx.cfg.page_size_max
                )));
            }
            let events = ctx
                .storage
                .run(ctx.storage.db.lifecycle_events(&ctx.tenant, limit))
                .await?;
            json!({
                "events": events.iter().map(|e| json!({
                    "session_key": e.session_key, "from": e.from, "to": e.to,
                    "at": e.at, "reason": e.reason,
                })).collect::<Vec<_>>(),
                "generated_at": rfc3339(&now()),
            })
        }
        ("jobs", None) => json!({
            "jobs": ctx.core.job_status(None)?.iter().map(|s| get_job_status::view(ctx, s)).collect::<Vec<_>>(),
            "generated_at": rfc3339(&now()),
        }),
        ("jobs", Some(name)) => match ctx.core.job_status(Some(name)) {
            Ok(s) => get_job_status::view(ctx, &s[0]),
            Err(_) => return Err(not_found(uri)),
        },
        ("analytics", Some(kind)) => match super::analytics::read(ctx, kind).await {
            Some(r) => r?,
            None => return Err(not_found(uri)),
        },
        ("health", None) => health(ctx).await,
        ("metrics", None) => {
            // Read live: switching metrics off hides them at once.
            if !ctx.cfg.live.settings().monitoring.metrics_enabled {
                return Err(HandoffError::new(
                    ErrorCode::NotFound,
                    "metrics are switched off (monitoring.metrics_enabled = false)",
                )
                .detail("uri", uri));
            }
            return Ok(("text/plain", handoff_actors::metrics::render()));
        }
        ("configuration", None) => super::configuration::resource(ctx),
        ("configuration", Some("backups")) => super::configuration::backups_resource(ctx).await?,
        _ => return Err(not_found(uri)),
    };
    Ok(("application/json", body.to_string()))
}

/// `ok` when everything answers; `degraded` when a breaker is not closed or
/// an actor group is down; `error` when the database does not answer.
pub async fn health(ctx: &Ctx) -> Value {
    let mut components = Vec::new();
    // Which kind of database, never where it is (a path, a host, a user):
    // the failure's own text goes to the log.
    let backend = ctx.backend_kind();
    let db_ok = match tokio::time::timeout(ctx.storage.timeout, ctx.storage.db.ping()).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::logging::redact(&e.to_string()), "health: database ping failed");
            components.push(json!({"name": "database", "status": "error", "details": {"backend": backend, "error": "unreachable"}}));
            false
        }
        Err(_) => {
            components.push(json!({"name": "database", "status": "error", "details": {"backend": backend, "error": "timed out"}}));
            false
        }
    };
    if db_ok {
        let durability =
            match tokio::time::timeout(ctx.storage.timeout, ctx.storage.db.writer_durability())
                .await
            {
                Ok(Ok(v)) => v,
                _ => Value::Null,
            };
        components.push(json!({"name": "database", "status": "ok", "details": {"backend": backend, "durability": durability}}));
    }
    // A cache that does not answer degrades nothing a client sees (reads
    // fall back to the database), so it is reported, not escalated.
    let cache = &ctx.storage.cache;
    match cache.ping().await {
        Ok(()) => components.push(
            json!({"name": "cache", "status": "ok", "details": {"backend": cache.backend()}}),
        ),
        Err(e) => {
            tracing::warn!(error = %crate::logging::redact(&e), "health: cache ping failed");
            components.push(json!({"name": "cache", "status": "degraded", "details": {"backend": cache.backend(), "error": "unreachable"}}))
        }
    }
    let mut degraded = false;
    for dep in [Dependency::Database, Dependency::Cache] {
        let s = ctx.core.breaker.state(dep);
        let ok = s == handoff_actors::breaker::BreakerState::Closed;
        degraded |= !ok;
        components.push(json!({"name": format!("breaker.{}", dep.as_str()), "status": if ok { "ok" } else { "degraded" }, "details": {"state": s.as_str()}}));
    }
    for c in ctx.core.children().await {
        degraded |= !c.alive;
        let mut details = json!({"alive": c.alive, "restarts": c.restarts});
        // How many sessions are live counts every tenant's: for callers
        // with the admin capability (and the operators' listener) only.
        if c.name == "sessions" && ctx.caller.admin {
            let live = handoff_actors::metrics::metrics()
                .actors_live
                .with_label_values(&["session"])
                .get();
            details["live_session_actors"] = json!(live);
        }
        components.push(json!({"name": format!("actor.{}", c.name), "status": if c.alive { "ok" } else { "error" }, "details": details}));
    }
    let status = if !db_ok {
        "error"
    } else if degraded {
        "degraded"
    } else {
        "ok"
    };
    json!({"status": status, "components": components, "timestamp": rfc3339(&now())})
}
