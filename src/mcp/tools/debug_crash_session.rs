//! `debug_crash_session` (only with HANDOFF_TEST_HOOKS=true): makes the
//! session's actor panic, to show that supervision contains the failure.

use handoff_actors::HandoffError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcp::args::ToolArgs;
use crate::mcp::context::Ctx;

pub const NAME: &str = "debug_crash_session";
pub const DESCRIPTION: &str =
    "Test hook: panic the session's actor. Always fails with INTERNAL_ERROR.";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub session_key: String,
}

impl ToolArgs for Args {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    crate::mcp::args::session_key(&ctx.cfg, &a.session_key)?;
    ctx.core.crash_session(&ctx.key(&a.session_key)).await?;
    Ok(Out { success: true })
}
