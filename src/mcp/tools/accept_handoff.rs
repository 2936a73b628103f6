//! `accept_handoff`: the receiving agent closes the loop. Marks the handoff
//! accepted (only its target may, and only once) and returns what the agent
//! needs to carry on: the summary and the first page of context.

use handoff_actors::{ErrorCode, HandoffError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::mcp::args::{self, ToolArgs};
use crate::mcp::context::Ctx;
use crate::mcp::tools::get_context;
use crate::mcp::types::EntryOut;
use crate::storage::HandoffRecord;

pub const NAME: &str = "accept_handoff";
pub const DESCRIPTION: &str =
    "Accept a handoff addressed to you: marks it accepted and returns the session's \
summary and the first page of its context, with next_after_sequence to continue with get_context.";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The id returned by request_handoff or list_handoffs.
    pub handoff_id: String,
    /// The accepting agent; must be the handoff's target.
    pub agent: String,
}

impl ToolArgs for Args {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ContextPage {
    pub entries: Vec<EntryOut>,
    pub next_after_sequence: i64,
    pub has_more: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
    pub message: String,
    pub handoff: HandoffRecord,
    /// The session's running summary now.
    pub summary: Value,
    /// The first page of the session's context.
    pub context: ContextPage,
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    args::agent_id(&ctx.cfg, "agent", &a.agent)?;
    ctx.require_agent("agent", &a.agent)?;
    let id = uuid::Uuid::parse_str(&a.handoff_id).map_err(|_| {
        HandoffError::validation("handoff_id must be a UUID").detail("field", "handoff_id")
    })?;
    let not_found = || {
        HandoffError::new(ErrorCode::HandoffNotFound, "no handoff with this id")
            .detail("handoff_id", a.handoff_id.clone())
    };
    let h = ctx
        .storage
        .run(ctx.storage.db.get_handoff(&ctx.tenant, &id.to_string()))
        .await?
        .ok_or_else(not_found)?;
    if h.target_agent != a.agent {
        return Err(HandoffError::new(
            ErrorCode::Forbidden,
            "only the handoff's target agent may accept it",
        )
        .detail("handoff_id", h.id));
    }
    if h.status != "pending" {
        return Err(
            HandoffError::validation("this handoff has already been accepted")
                .detail("handoff_id", h.id)
                .detail("status", h.status),
        );
    }
    let key = ctx.key(&h.session_key);
    let accepted = ctx.core.accept(&key, id, a.agent.clone()).await?;
    let summary = serde_json::to_value(ctx.core.summary(&key).await?).unwrap_or(Value::Null);
    let (entries, next, has_more) =
        get_context::page(&ctx, &h.session_key, Some(0), None, None).await?;
    let at = handoff_actors::model::rfc3339(&accepted.accepted_at);
    let mut view = h;
    view.status = "accepted".into();
    view.accepted_at = Some(at);
    view.accepted_by = Some(a.agent);
    Ok(Out {
        success: true,
        message: format!(
            "Handoff accepted; the session is {}",
            accepted.session_status.as_str()
        ),
        handoff: view,
        summary,
        context: ContextPage {
            entries,
            next_after_sequence: next,
            has_more,
        },
    })
}
