//! `update_context`: append one entry, or a batch that commits atomically
//! with contiguous sequence numbers.

use handoff_actors::model::NewEntry;
use handoff_actors::HandoffError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::UnknownFields;
use crate::mcp::args::{self, ToolArgs};
use crate::mcp::context::Ctx;
use crate::mcp::types::{ContextTypeArg, SessionBrief};

pub const NAME: &str = "update_context";
pub const DESCRIPTION: &str = "Append context to a session: one entry ({context_type, content, metadata?}) or a batch \
({entries: [...]}, 1–100, atomic). context_type is message, file, tool_call or system. Each entry gets the next \
sequence number; the reply comes after the entry is durably committed.";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryArgs {
    /// message | file | tool_call | system (alias: `type`).
    pub context_type: ContextTypeArg,
    /// The entry's content (non-empty, ≤ 1 MiB).
    pub content: String,
    /// Free-form JSON object (≤ 16 KiB, depth ≤ 8).
    // Published as what `args::metadata` accepts: an object, or null.
    #[schemars(with = "Option<Map<String, Value>>")]
    pub metadata: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub session_key: String,
    /// Single form: the entry's type.
    pub context_type: Option<ContextTypeArg>,
    /// Single form: the entry's content.
    pub content: Option<String>,
    /// Single form: the entry's metadata.
    // Published as what `args::metadata` accepts: an object, or null.
    #[schemars(with = "Option<Map<String, Value>>")]
    pub metadata: Option<Value>,
    /// Batch form: 1–100 entries committed together.
    pub entries: Option<Vec<EntryArgs>>,
}

impl ToolArgs for Args {
    fn prepare(map: &mut Map<String, Value>, policy: UnknownFields) -> Result<(), HandoffError> {
        // Entries take the same spelling rules as the top level.
        let Some(Value::Array(items)) = map.get_mut("entries") else {
            return Ok(());
        };
        let known = ["context_type", "content", "metadata"]
            .into_iter()
            .map(String::from)
            .collect();
        for (i, item) in items.iter_mut().enumerate() {
            if let Value::Object(obj) = item {
                let m = std::mem::take(obj);
                *obj = args::normalize(
                    m,
                    &known,
                    &[("type", "context_type")],
                    policy,
                    &format!("entries[{i}]."),
                )?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct EntryAck {
    pub id: String,
    pub sequence_number: i64,
    pub context_type: String,
    pub content_length: usize,
    pub created_at: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Out {
    pub success: bool,
    pub message: String,
    /// Single form: the stored entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_entry: Option<EntryAck>,
    /// Batch form: the stored entries, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_entries: Option<Vec<EntryAck>>,
    pub session: SessionBrief,
}

pub async fn call(ctx: Ctx, a: Args) -> Result<Out, HandoffError> {
    args::session_key(&ctx.cfg, &a.session_key)?;
    let batch = a.entries.is_some();
    let entries: Vec<NewEntry> = match a.entries {
        Some(items) => {
            if a.content.is_some() || a.context_type.is_some() || a.metadata.is_some() {
                return Err(HandoffError::validation(
                    "give either entries or context_type/content/metadata, not both",
                ));
            }
            if items.is_empty() || items.len() > ctx.cfg.max_batch_entries {
                return Err(HandoffError::validation(format!(
                    "entries must hold 1–{} items (got {})",
                    ctx.cfg.max_batch_entries,
                    items.len()
                ))
                .detail("field", "entries"));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, e) in items.into_iter().enumerate() {
                args::content(&ctx.cfg, &format!("entries[{i}].content"), &e.content)?;
                args::metadata(&ctx.cfg, &format!("entries[{i}].metadata"), &e.metadata)?;
                out.push(NewEntry {
                    context_type: e.context_type.into(),
                    content: e.content,
                    metadata: e.metadata,
                });
            }
            out
        }
        None => {
            let context_type = a.context_type.ok_or_else(|| {
                HandoffError::validation("context_type is required (or give entries)")
                    .detail("field", "context_type")
            })?;
            let content = a.content.ok_or_else(|| {
                HandoffError::validation("content is required (or give entries)")
                    .detail("field", "content")
            })?;
            args::content(&ctx.cfg, "content", &content)?;
            args::metadata(&ctx.cfg, "metadata", &a.metadata)?;
            vec![NewEntry {
                context_type: context_type.into(),
                content,
                metadata: a.metadata,
            }]
        }
    };
    let r = ctx.core.append(&ctx.key(&a.session_key), entries).await?;
    let mut acks: Vec<EntryAck> = r
        .entries
        .iter()
        .map(|e| EntryAck {
            id: e.id.to_string(),
            sequence_number: e.sequence_number,
            context_type: e.context_type.as_str().into(),
            content_length: e.content_length,
            created_at: handoff_actors::model::rfc3339(&e.created_at),
        })
        .collect();
    let n = acks.len();
    Ok(Out {
        success: true,
        message: format!(
            "{n} context entr{} stored",
            if n == 1 { "y" } else { "ies" }
        ),
        context_entry: if batch { None } else { acks.pop() },
        context_entries: if batch { Some(acks) } else { None },
        session: SessionBrief {
            id: r.session_id.to_string(),
            session_key: a.session_key,
            status: r.status.as_str().into(),
        },
    })
}
