//! `search_context`: full-text search over the caller's context entries,
//! best match first, with a snippet around the matches.

use handoff_actors::{HandoffError, StoreError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::args::{self, ToolArgs};
use crate::mcp::context::Ctx;
use crate::storage::SearchHit;

pub const NAME: &str = "search_context";
pub const DESCRIPTION: &str =
    "Full-text search across your sessions' context entries, best match first. Every \
whitespace-separated term of query must occur (words, case-insensitive, accent-insensitive on \
SQLite; no operators, quotes or wildcards). Optionally only one session_key, or only sessions an agent registered or \
was handed. Each result has a snippet with the matches between « and ».";

const QUERY_MAX_BYTES: usize = 1000;
const LIMIT_DEFAULT: u32 = 20;
const LIMIT_MAX: u32 = 100;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Words to find (1–1000 bytes); every term must occur.
    pub query: String,
    /// Search only this session.
    pub session_key: Option<String>,
    /// Only sessions this agent registered (agent_from) or was the target
    /// of a handoff from.
    pub agent: Option<String>,
    /// Results (default 20, max 100).
    pub limit: Option<u32>,
}

impl ToolArgs for Args {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Hit {
    pub session_key: String,
    pub sequence_number: i64,
    pub context_type: String,
    /// Excerpt around the matches: matched words between « and », elided
    /// text marked with ….
    pub snippet: String,
    /// Relevance (SQLite: negated bm25; PostgreSQL: ts_rank): higher is
    /// better; compare within one reply.
    pub score: f64,
    pub created_at: String,
}

impl From<SearchHit> for Hit {
    fn from(h: SearchHit) -> Self {
        Hit {
            session_key: h.session_key,
            sequence_number: h.sequence_number,
            context_type: h.context_type,
            snippet: h.snippet,
            score: h.score,
            created_at: h.created_at,
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
    pub query: String,
    pub results: Vec<Hit>,
    pub total_returned: usize,
}

fn validate(ctx: &Ctx, a: &Args) -> Result<u32, HandoffError> {
    if a.query.trim().is_empty() || a.query.len() > QUERY_MAX_BYTES {
        return Err(HandoffError::validation(format!(
            "query must be 1–{QUERY_MAX_BYTES} bytes with at least one word (got {} bytes)",
            a.query.len()
        ))
        .detail("field", "query"));
    }
    if a.query
        .chars()
        .any(|c| c.is_control() && !c.is_whitespace())
    {
        return Err(
            HandoffError::validation("query must not contain control characters")
                .detail("field", "query"),
        );
    }
    if let Some(k) = &a.session_key {
        args::session_key(&ctx.cfg, k)?;
    }
    if let Some(agent) = &a.agent {
        args::agent_id(&ctx.cfg, "agent", agent)?;
    }
    let limit = a.limit.unwrap_or(LIMIT_DEFAULT);
    if limit == 0 || limit > LIMIT_MAX {
        return Err(
            HandoffError::validation(format!("limit must be 1–{LIMIT_MAX}"))
                .detail("field", "limit"),
        );
    }
    Ok(limit)
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    let limit = validate(&ctx, &a)?;
    let db = ctx.storage.db.clone();
    // A query the index refuses comes back as `Rejected`: carry it through
    // the breaker as a success (the database is fine) and report it as the
    // caller's error.
    let found = ctx
        .storage
        .run(async {
            match db
                .search(
                    &ctx.tenant,
                    &a.query,
                    a.session_key.as_deref(),
                    a.agent.as_deref(),
                    limit,
                )
                .await
            {
                Ok(hits) => Ok(Ok(hits)),
                Err(StoreError::Rejected(m)) => Ok(Err(m)),
                Err(e) => Err(e),
            }
        })
        .await?;
    let hits = found.map_err(|cause| {
        HandoffError::validation("the search index refused this query")
            .detail("field", "query")
            .internal_cause(cause)
    })?;
    let results: Vec<Hit> = hits.into_iter().map(Hit::from).collect();
    Ok(Out {
        success: true,
        total_returned: results.len(),
        query: a.query,
        results,
    })
}
