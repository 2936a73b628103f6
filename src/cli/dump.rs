//! The export format of `handoff export` / `handoff import`: JSON Lines,
//! one self-describing object per line, each with a `kind`:
//!
//! ```text
//! {"kind":"header","format":"handoff-export","version":1,"tenant":"local","exported_at":…,"source":…}
//! {"kind":"session", …every stored field of one session…}
//! {"kind":"entry","session_key":…,"sequence_number":1,…}      one per entry, in order
//! {"kind":"handoff","session_key":…,…}                         one per handoff, oldest first
//! … the next session, its entries, its handoffs …
//! {"kind":"end","sessions":N,"entries":M,"handoffs":H}
//! ```
//!
//! The trailer lets an import tell a complete file from a truncated one.
//! Entries and handoffs follow their session. Every field is the stored
//! value, so export → import → export reproduces the file byte for byte
//! except the header's `exported_at` and `source`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const FORMAT: &str = "handoff-export";
pub const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Line {
    Header(Header),
    Session(Session),
    Entry(Entry),
    Handoff(crate::storage::HandoffRecord),
    End(End),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// The tenant the sessions were exported from (import's default).
    pub tenant: String,
    pub exported_at: String,
    /// The database exported (no credentials).
    pub source: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub session_key: String,
    pub id: String,
    pub agent_from: String,
    pub status: String,
    pub metadata: Option<Value>,
    pub created_at: String,
    pub last_activity_at: String,
    /// Highest sequence number the stored summary covers (entries after it
    /// are folded in when the session is next loaded).
    pub last_seq: i64,
    /// The running summary as stored (participants, counts, recent entries).
    pub summary: Value,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub session_key: String,
    pub sequence_number: i64,
    pub id: String,
    pub context_type: String,
    /// The content exactly (U+0000 is written as `\u0000`).
    pub content: String,
    pub metadata: Option<Value>,
    pub created_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct End {
    pub sessions: u64,
    pub entries: u64,
    pub handoffs: u64,
}
