//! `request_handoff`: package the session for another agent. Costs the same
//! at 10 entries and at 10,000: the summary is kept up to date as entries
//! arrive and is read from the session actor's memory.

use handoff_actors::model::{rfc3339, HandoffType};
use handoff_actors::HandoffError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::mcp::args::{self, ToolArgs};
use crate::mcp::context::Ctx;
use crate::mcp::types::{HandoffTypeArg, Priority};

pub const NAME: &str = "request_handoff";
pub const DESCRIPTION: &str = "Hand a session to another agent. request_type: context_transfer (default; session stays \
active), full_handoff (session becomes completed), collaboration (target joins as participant). Returns the handoff \
with the session's running summary and what the target should do next.";

#[derive(Debug, Deserialize, Serialize, JsonSchema, Default)]
pub struct RequestData {
    /// Free-text instructions for the receiving agent.
    pub instructions: Option<String>,
    /// low | normal | high | urgent (default normal).
    pub priority: Option<Priority>,
    /// Anything else the caller wants to pass along.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub session_key: String,
    /// The agent that should take over (1–100 bytes).
    pub target_agent: String,
    pub request_type: Option<HandoffTypeArg>,
    pub request_data: Option<RequestData>,
}

impl ToolArgs for Args {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct HandoffOut {
    pub id: String,
    pub session_key: String,
    pub source_agent: String,
    pub target_agent: String,
    pub request_type: String,
    pub status: String,
    pub priority: Priority,
    /// The session's running summary at the time of the handoff.
    pub context_summary: Value,
    /// Number of context entries in the session.
    pub context_entries: i64,
    pub created_at: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Instructions {
    pub message: String,
    pub next_steps: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
    pub handoff: HandoffOut,
    pub instructions: Instructions,
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    args::session_key(&ctx.cfg, &a.session_key)?;
    args::agent_id(&ctx.cfg, "target_agent", &a.target_agent)?;
    let request_type: HandoffType = a.request_type.unwrap_or_default().into();
    let data = a.request_data.unwrap_or_default();
    let priority = data.priority.unwrap_or_default();
    let instructions = data.instructions.clone();
    let data_value = serde_json::to_value(&data).unwrap_or(Value::Null);
    let data_value = match data_value {
        Value::Object(m) if m.values().all(Value::is_null) => None,
        v => Some(v),
    };
    args::metadata(&ctx.cfg, "request_data", &data_value)?;
    let key = ctx.key(&a.session_key);
    let r = ctx
        .core
        .handoff(
            &key,
            a.target_agent,
            request_type,
            data_value,
            ctx.caller.agent.as_deref(),
        )
        .await?;
    let h = r.handoff;
    let k = &a.session_key;
    let mut next_steps = vec![
        format!(
            "{}: accept with accept_handoff {{\"handoff_id\": \"{}\", \"agent\": \"{}\"}} to get the summary and the first page of context",
            h.target_agent, h.id, h.target_agent
        ),
        format!("or read the summary at handoff://summary/{k}"),
        format!("Page through the context with get_context {{\"session_key\": \"{k}\", \"after_sequence\": 0}} or the resource handoff://context/{k}"),
    ];
    match request_type {
        HandoffType::FullHandoff => next_steps.push(
            "The session is now completed: continue the work in a new session if needed".into(),
        ),
        HandoffType::Collaboration => next_steps.push(format!(
            "{} joins as a participant and can append with update_context",
            h.target_agent
        )),
        HandoffType::ContextTransfer => {
            next_steps.push("The session stays active: keep appending with update_context".into())
        }
    }
    if let Some(i) = &instructions {
        next_steps.push(format!("Follow the instructions: {i}"));
    }
    Ok(Out {
        success: true,
        instructions: Instructions {
            message: format!(
                "Handoff of '{k}' from {} to {} is pending ({})",
                h.source_agent,
                h.target_agent,
                request_type.as_str()
            ),
            next_steps,
        },
        handoff: HandoffOut {
            id: h.id.to_string(),
            session_key: a.session_key,
            source_agent: h.source_agent,
            target_agent: h.target_agent,
            request_type: request_type.as_str().into(),
            status: h.status,
            priority,
            context_summary: h.context_summary,
            context_entries: h.context_entries,
            created_at: rfc3339(&h.created_at),
        },
    })
}
