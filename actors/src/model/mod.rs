//! The records that flow between the session actors, the persistence actor
//! and the storage adapters; `summary.rs` the running summary a session
//! keeps of its entries.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub mod summary;

use summary::Summary;

/// A session is named by its tenant and its key; the same key in two tenants
/// is two sessions. Cheap to clone: both parts are shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub tenant: Arc<str>,
    pub key: Arc<str>,
}

impl SessionKey {
    pub fn new(tenant: &str, key: &str) -> Self {
        Self {
            tenant: Arc::from(tenant),
            key: Arc::from(key),
        }
    }
}

/// The longest tenant id.
pub const TENANT_MAX: usize = 63;

/// Whether `t` is a valid tenant id: `[a-z0-9][a-z0-9_-]{0,62}`. Tenants
/// come from the operator (API keys, tokens, the CLI), never from a tool
/// argument; the strict charset keeps them readable in logs and metrics
/// and free of separators.
pub fn valid_tenant(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= TENANT_MAX
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// The error message for a tenant id that `valid_tenant` refuses.
pub fn tenant_rule(t: &str) -> String {
    format!(
        "tenant {:?} is not a valid tenant id: 1–{TENANT_MAX} characters of a-z, 0-9, '_' and '-', \
         starting with a letter or digit",
        t.chars().take(80).collect::<String>()
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Active,
    Dormant,
    Expired,
    Archived,
    Completed,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Dormant => "dormant",
            SessionStatus::Expired => "expired",
            SessionStatus::Archived => "archived",
            SessionStatus::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => SessionStatus::Active,
            "dormant" => SessionStatus::Dormant,
            "expired" => SessionStatus::Expired,
            "archived" => SessionStatus::Archived,
            "completed" => SessionStatus::Completed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ContextType {
    Message,
    File,
    ToolCall,
    System,
}

impl ContextType {
    pub const ALL: [ContextType; 4] = [
        ContextType::Message,
        ContextType::File,
        ContextType::ToolCall,
        ContextType::System,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ContextType::Message => "message",
            ContextType::File => "file",
            ContextType::ToolCall => "tool_call",
            ContextType::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "message" => ContextType::Message,
            "file" => ContextType::File,
            "tool_call" => ContextType::ToolCall,
            "system" => ContextType::System,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffType {
    ContextTransfer,
    FullHandoff,
    Collaboration,
}

impl HandoffType {
    pub fn as_str(self) -> &'static str {
        match self {
            HandoffType::ContextTransfer => "context_transfer",
            HandoffType::FullHandoff => "full_handoff",
            HandoffType::Collaboration => "collaboration",
        }
    }
}

/// One session row, as stored. `last_seq` and `summary` are maintained by the
/// session actor as entries arrive, so nothing ever rereads the history.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: Uuid,
    pub tenant: Arc<str>,
    pub session_key: Arc<str>,
    pub agent_from: String,
    pub status: SessionStatus,
    pub metadata: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
    pub last_seq: i64,
    pub summary: Summary,
}

impl SessionRow {
    /// A copy of the row's own fields, with an empty summary: cheaper than
    /// `clone` where only those are shown.
    pub fn without_summary(&self) -> SessionRow {
        SessionRow {
            id: self.id,
            tenant: self.tenant.clone(),
            session_key: self.session_key.clone(),
            agent_from: self.agent_from.clone(),
            status: self.status,
            metadata: self.metadata.clone(),
            created_at: self.created_at,
            last_activity_at: self.last_activity_at,
            last_seq: self.last_seq,
            summary: Summary::default(),
        }
    }
}

/// An entry as a client gives it, validated.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub context_type: ContextType,
    pub content: String,
    pub metadata: Option<Value>,
}

/// An entry with its place in the session.
#[derive(Debug, Clone)]
pub struct EntryRow {
    pub session_id: Uuid,
    pub seq: i64,
    pub id: Uuid,
    pub context_type: ContextType,
    pub content: String,
    pub metadata: Option<Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct HandoffRow {
    pub id: Uuid,
    pub tenant: Arc<str>,
    pub session_id: Uuid,
    pub session_key: Arc<str>,
    pub source_agent: String,
    pub target_agent: String,
    pub request_type: HandoffType,
    pub status: String,
    pub request_data: Option<Value>,
    pub context_summary: Value,
    pub context_entries: i64,
    pub created_at: DateTime<Utc>,
}

/// A handoff taken by its target agent.
#[derive(Debug, Clone)]
pub struct HandoffAccept {
    pub id: Uuid,
    pub agent: String,
    pub at: DateTime<Utc>,
}

/// Where a lifecycle transition takes a session: a later status, or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleTarget {
    Status(SessionStatus),
    /// Erased like `delete_session`.
    Purged,
}

impl LifecycleTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleTarget::Status(s) => s.as_str(),
            LifecycleTarget::Purged => "purged",
        }
    }
}

/// A lifecycle job's request: move the session to `to` if its status is one
/// of `from` and it has seen no activity for `idle_for`. The session actor
/// decides, against its live state, so a busy session is never moved.
#[derive(Debug, Clone)]
pub struct TransitionRequest {
    pub from: Vec<SessionStatus>,
    pub to: LifecycleTarget,
    pub idle_for: chrono::Duration,
    pub reason: String,
}

/// One lifecycle transition, as stored. A purge keeps neither the session's
/// id nor its key (privacy erasure): only the hash in the audit log.
#[derive(Debug, Clone)]
pub struct LifecycleEvent {
    pub id: Uuid,
    pub tenant: Arc<str>,
    pub session_id: Option<Uuid>,
    pub session_key: Option<Arc<str>>,
    pub from: SessionStatus,
    pub to: LifecycleTarget,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// One row of the hash-chained audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub seq: i64,
    pub ts: String,
    pub tenant: String,
    pub action: String,
    pub actor: Option<String>,
    pub subject_hash: Option<String>,
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Everything one session (or the audit actor) asks to commit at once. The
/// persistence actor merges many units into one transaction.
#[derive(Debug, Clone, Default)]
pub struct CommitUnit {
    /// Sessions erased for good, with everything they own.
    pub delete: Option<Uuid>,
    /// The session row as it should be after the unit (insert or update).
    pub session: Option<SessionRow>,
    /// `session` is a new row (a registration): insert it, and fail the
    /// unit with a conflict if the key is taken. Otherwise it only updates
    /// an existing row, so a checkpoint never resurrects a deleted session.
    pub session_is_new: bool,
    pub entries: Vec<EntryRow>,
    pub handoffs: Vec<HandoffRow>,
    pub accepts: Vec<HandoffAccept>,
    pub audit: Vec<AuditRow>,
    /// Lifecycle transitions (`handoff://sessions/lifecycle`), written with
    /// the session row they change.
    pub lifecycle: Vec<LifecycleEvent>,
}

impl CommitUnit {
    pub fn is_empty(&self) -> bool {
        self.delete.is_none()
            && self.session.is_none()
            && self.entries.is_empty()
            && self.handoffs.is_empty()
            && self.accepts.is_empty()
            && self.audit.is_empty()
            && self.lifecycle.is_empty()
    }
}

/// Time formatting shared by every store: fixed microsecond precision, so a
/// value read back compares equal to the value written.
pub fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A JSON value as text, the same text as `Value::to_string`. That goes
/// through `fmt::Write` one fragment at a time; writing into a byte buffer
/// costs about half (callgrind), and every reply and stored JSON column
/// does this.
pub fn json_string(v: &Value) -> String {
    // Serialising a `Value` cannot fail (its map keys are strings).
    serde_json::to_string(v).unwrap_or_else(|_| v.to_string())
}

/// Now, truncated to what we store.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Pairs that a name joining tenant and key with a separator would confuse;
/// every place that turns a (tenant, key) into a name is tested with them.
#[doc(hidden)]
pub mod tests_support {
    use super::SessionKey;

    pub fn colliding_pairs() -> Vec<SessionKey> {
        [
            ("local/evil", "x"),
            ("local", "evil/x"),
            ("local", "evil:x"),
            ("local:evil", "x"),
            ("5:local", "x"),
            ("5", "local/x"),
            ("a", "b/c/d"),
            ("a/b", "c/d"),
            ("a/b/c", "d"),
            ("local", "x\u{0}y"),
            ("local\u{0}x", "y"),
            ("", "local/x"),
            ("local/x", ""),
        ]
        .iter()
        .map(|(t, k)| SessionKey::new(t, k))
        .collect()
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn tenant_ids_have_a_strict_charset() {
        for ok in ["local", "acme-prod", "t_1", "0", &"a".repeat(63)] {
            assert!(valid_tenant(ok), "{ok}");
        }
        for bad in [
            "",
            "Local",
            "local/evil",
            "a b",
            "-a",
            "_a",
            "a:b",
            "é",
            &"a".repeat(64),
        ] {
            assert!(!valid_tenant(bad), "{bad}");
        }
    }
}
