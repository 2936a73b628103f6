//! `delete_session`: erase a session and everything it owns, for good. The
//! audit log keeps only the key's hash and who asked.

use handoff_actors::HandoffError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::args::{self, ToolArgs};
use crate::mcp::context::Ctx;

pub const NAME: &str = "delete_session";
pub const DESCRIPTION: &str =
    "Permanently delete a session with its context, summary and handoffs (privacy erasure).";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub session_key: String,
    /// Who asks for the erasure (kept in the audit log).
    pub requested_by: Option<String>,
}

impl ToolArgs for Args {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
    pub message: String,
    pub session_key: String,
    pub session_id: String,
    pub entries_removed: i64,
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    args::session_key(&ctx.cfg, &a.session_key)?;
    if let Some(who) = &a.requested_by {
        args::agent_id(&ctx.cfg, "requested_by", who)?;
    }
    let d = ctx
        .core
        .delete(&ctx.key(&a.session_key), a.requested_by)
        .await?;
    Ok(Out {
        success: true,
        message: "Session and all its data deleted".into(),
        session_key: a.session_key,
        session_id: d.session_id.to_string(),
        entries_removed: d.entries_removed,
    })
}
