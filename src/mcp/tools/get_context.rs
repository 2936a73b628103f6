//! `get_context`: a page of a session's entries, in sequence order. The tool
//! form of `handoff://context/{session_key}`.

use handoff_actors::model::ContextType;
use handoff_actors::HandoffError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::args::{self, ToolArgs};
use crate::mcp::context::Ctx;
use crate::mcp::types::{ContextTypeArg, EntryOut};
use crate::storage::PageQuery;

pub const NAME: &str = "get_context";
pub const DESCRIPTION: &str = "Read a session's context entries in order, a page at a time: entries after \
after_sequence (default 0), up to limit (default 100, max 1000), optionally only some context_types. Continue \
from next_after_sequence while has_more is true.";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub session_key: String,
    /// Return entries with a sequence number above this (default 0).
    pub after_sequence: Option<i64>,
    /// Page size (default 100, max 1000).
    pub limit: Option<u32>,
    /// Only these types.
    pub context_types: Option<Vec<ContextTypeArg>>,
}

impl ToolArgs for Args {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
    pub session_key: String,
    pub entries: Vec<EntryOut>,
    /// Pass as after_sequence for the next page.
    pub next_after_sequence: i64,
    pub has_more: bool,
}

/// Shared with the context resource.
pub async fn page(
    ctx: &Ctx,
    session_key: &str,
    after: Option<i64>,
    limit: Option<u32>,
    types: Option<Vec<ContextType>>,
) -> Result<(Vec<EntryOut>, i64, bool), HandoffError> {
    args::session_key(&ctx.cfg, session_key)?;
    let after = after.unwrap_or(0);
    if after < 0 {
        return Err(HandoffError::validation("after_sequence must be ≥ 0")
            .detail("field", "after_sequence"));
    }
    let limit = limit.unwrap_or(ctx.cfg.page_size_default);
    if limit == 0 || limit > ctx.cfg.page_size_max {
        return Err(
            HandoffError::validation(format!("limit must be 1–{}", ctx.cfg.page_size_max))
                .detail("field", "limit"),
        );
    }
    let q = PageQuery {
        after,
        limit,
        types: types.as_deref(),
        max_bytes: ctx.cfg.page_bytes_max,
    };
    let page = ctx
        .storage
        .run(ctx.storage.db.context_page(&ctx.tenant, session_key, q))
        .await?
        .ok_or_else(|| HandoffError::session_not_found(session_key))?;
    let next = page.entries.last().map_or(after, |e| e.sequence_number);
    Ok((
        page.entries.into_iter().map(EntryOut::from).collect(),
        next,
        page.has_more,
    ))
}

/// `context_types` checked before any query: 1 to 4 names (one per type;
/// a repeat is harmless and dropped). 40,000 of them once made SQLite
/// refuse the statement, which counted against the breaker.
fn types_filter(
    given: Option<Vec<ContextTypeArg>>,
) -> Result<Option<Vec<ContextType>>, HandoffError> {
    let Some(given) = given else { return Ok(None) };
    let max = ContextType::ALL.len();
    if given.is_empty() || given.len() > max {
        return Err(HandoffError::validation(format!(
            "context_types must name 1–{max} types (got {})",
            given.len()
        ))
        .detail("field", "context_types"));
    }
    let mut types: Vec<ContextType> = given.into_iter().map(ContextType::from).collect();
    types.sort();
    types.dedup();
    Ok(Some(types))
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    let types = types_filter(a.context_types)?;
    let (entries, next, has_more) =
        page(&ctx, &a.session_key, a.after_sequence, a.limit, types).await?;
    Ok(Out {
        success: true,
        session_key: a.session_key,
        entries,
        next_after_sequence: next,
        has_more,
    })
}
