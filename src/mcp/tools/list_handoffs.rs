//! `list_handoffs`: the handoffs addressed to an agent, newest first.

use handoff_actors::HandoffError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::args::{self, ToolArgs};
use crate::mcp::context::Ctx;
use crate::mcp::types::HandoffStatusArg;
use crate::storage::HandoffRecord;

pub const NAME: &str = "list_handoffs";
pub const DESCRIPTION: &str =
    "List the handoffs addressed to an agent, newest first, optionally only pending or \
accepted ones. Page with limit and the returned next_cursor.";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The receiving agent.
    pub target_agent: String,
    pub status: Option<HandoffStatusArg>,
    /// Page size (default 100, max 1000).
    pub limit: Option<u32>,
    /// next_cursor of the previous page.
    pub cursor: Option<String>,
}

impl ToolArgs for Args {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
    pub target_agent: String,
    pub handoffs: Vec<HandoffRecord>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

/// Shared with the `handoff://agents/{agent_id}/handoffs` resource.
pub async fn page(
    ctx: &Ctx,
    target: &str,
    status: Option<HandoffStatusArg>,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<(Vec<HandoffRecord>, bool, Option<String>), HandoffError> {
    args::agent_id(&ctx.cfg, "target_agent", target)?;
    let limit = limit.unwrap_or(ctx.cfg.page_size_default);
    if limit == 0 || limit > ctx.cfg.page_size_max {
        return Err(
            HandoffError::validation(format!("limit must be 1–{}", ctx.cfg.page_size_max))
                .detail("field", "limit"),
        );
    }
    let mut rows = ctx
        .storage
        .run(ctx.storage.db.list_handoffs(
            &ctx.tenant,
            target,
            status.map(HandoffStatusArg::as_str),
            cursor,
            limit + 1,
        ))
        .await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = if has_more {
        rows.last().map(|h| h.id.clone())
    } else {
        None
    };
    Ok((rows, has_more, next))
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    ctx.require_agent("target_agent", &a.target_agent)?;
    let (handoffs, has_more, next_cursor) = page(
        &ctx,
        &a.target_agent,
        a.status,
        a.limit,
        a.cursor.as_deref(),
    )
    .await?;
    Ok(Out {
        success: true,
        target_agent: a.target_agent,
        handoffs,
        has_more,
        next_cursor,
    })
}
