//! Argument enums and output records shared by several tools; their JSON
//! Schemas are generated (schemars), never written by hand.

use handoff_actors::model::{rfc3339, ContextType, HandoffType, SessionRow};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContextTypeArg {
    Message,
    File,
    ToolCall,
    System,
}

impl From<ContextTypeArg> for ContextType {
    fn from(t: ContextTypeArg) -> Self {
        match t {
            ContextTypeArg::Message => ContextType::Message,
            ContextTypeArg::File => ContextType::File,
            ContextTypeArg::ToolCall => ContextType::ToolCall,
            ContextTypeArg::System => ContextType::System,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum HandoffTypeArg {
    #[default]
    ContextTransfer,
    FullHandoff,
    Collaboration,
}

impl From<HandoffTypeArg> for HandoffType {
    fn from(t: HandoffTypeArg) -> Self {
        match t {
            HandoffTypeArg::ContextTransfer => HandoffType::ContextTransfer,
            HandoffTypeArg::FullHandoff => HandoffType::FullHandoff,
            HandoffTypeArg::Collaboration => HandoffType::Collaboration,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, Default, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

/// A session as tools return it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SessionOut {
    pub id: String,
    pub session_key: String,
    pub agent_from: String,
    pub status: String,
    pub created_at: String,
    pub last_activity_at: String,
    pub metadata: Map<String, Value>,
}

impl From<&SessionRow> for SessionOut {
    fn from(r: &SessionRow) -> Self {
        SessionOut {
            id: r.id.to_string(),
            session_key: r.session_key.to_string(),
            agent_from: r.agent_from.clone(),
            status: r.status.as_str().into(),
            created_at: rfc3339(&r.created_at),
            last_activity_at: rfc3339(&r.last_activity_at),
            metadata: match &r.metadata {
                Some(Value::Object(m)) => m.clone(),
                _ => Map::new(),
            },
        }
    }
}

/// The short form of a session in write replies.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SessionBrief {
    pub id: String,
    pub session_key: String,
    pub status: String,
}

/// One stored entry, content included.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EntryOut {
    pub id: String,
    pub sequence_number: i64,
    pub context_type: String,
    pub content: String,
    pub metadata: Map<String, Value>,
    pub created_at: String,
}

impl From<crate::storage::StoredEntry> for EntryOut {
    fn from(e: crate::storage::StoredEntry) -> Self {
        EntryOut {
            id: e.id,
            sequence_number: e.sequence_number,
            context_type: e.context_type,
            content: e.content,
            metadata: match e.metadata {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            },
            created_at: e.created_at,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum HandoffStatusArg {
    Pending,
    Accepted,
}

impl HandoffStatusArg {
    pub fn as_str(self) -> &'static str {
        match self {
            HandoffStatusArg::Pending => "pending",
            HandoffStatusArg::Accepted => "accepted",
        }
    }
}
