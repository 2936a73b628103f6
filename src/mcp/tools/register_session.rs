//! `register_session`: create a session (or wake a dormant one).

use handoff_actors::HandoffError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::mcp::args::{self, ToolArgs};
use crate::mcp::context::Ctx;
use crate::mcp::types::SessionOut;

pub const NAME: &str = "register_session";
pub const DESCRIPTION: &str =
    "Register a new session under a key so agents can append context to it and hand it off. \
An existing active key is refused (SESSION_EXISTS); a dormant one is reactivated.";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Unique key of the session (1–255 bytes, no control characters).
    pub session_key: String,
    /// The agent that owns the session (1–100 bytes).
    pub agent_from: String,
    /// Free-form JSON object kept with the session (≤ 16 KiB, depth ≤ 8).
    // Published as what `args::metadata` accepts: an object, or null.
    #[schemars(with = "Option<Map<String, Value>>")]
    pub metadata: Option<Value>,
}

impl ToolArgs for Args {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
    pub message: String,
    pub session: SessionOut,
    /// True when a dormant session was woken up instead of created.
    pub reactivated: bool,
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    args::session_key(&ctx.cfg, &a.session_key)?;
    args::agent_id(&ctx.cfg, "agent_from", &a.agent_from)?;
    ctx.require_agent("agent_from", &a.agent_from)?;
    args::metadata(&ctx.cfg, "metadata", &a.metadata)?;
    let r = ctx
        .core
        .register(&ctx.key(&a.session_key), a.agent_from, a.metadata)
        .await?;
    Ok(Out {
        success: true,
        message: if r.reactivated {
            "Session reactivated".into()
        } else {
            "Session registered".into()
        },
        session: SessionOut::from(&r.session),
        reactivated: r.reactivated,
    })
}
