//! How a session row is stored in the cache: a fixed-width version prefix
//! (so the newest write wins by plain string comparison, also inside a
//! Redis script) followed by the row as JSON, or `null` for a deletion.

use chrono::{DateTime, Utc};
use handoff_actors::model::summary::Summary;
use handoff_actors::model::{SessionRow, SessionStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub const VERSION_LEN: usize = 40;

/// (creation time, last sequence number): grows with every entry, and a
/// session registered again after a deletion outranks the deleted one.
/// A deletion's version is (now, 0), above everything the deleted session
/// had, below any later registration.
pub fn version(row: Option<&SessionRow>) -> String {
    let (t, seq) = match row {
        Some(r) => (r.created_at.timestamp_micros(), r.last_seq),
        None => (Utc::now().timestamp_micros(), 0),
    };
    format!("{:020}{:020}", t.max(0), seq.max(0))
}

#[derive(Serialize, Deserialize)]
struct Cached {
    id: Uuid,
    agent_from: String,
    status: String,
    metadata: Option<Value>,
    created_at: DateTime<Utc>,
    last_activity_at: DateTime<Utc>,
    last_seq: i64,
    summary: Summary,
}

pub fn encode(row: Option<&SessionRow>) -> String {
    let body = match row {
        Some(r) => serde_json::to_string(&Cached {
            id: r.id,
            agent_from: r.agent_from.clone(),
            status: r.status.as_str().to_string(),
            metadata: r.metadata.clone(),
            created_at: r.created_at,
            last_activity_at: r.last_activity_at,
            last_seq: r.last_seq,
            summary: r.summary.clone(),
        })
        .unwrap_or_else(|_| "null".into()),
        None => "null".into(),
    };
    format!("{}{body}", version(row))
}

/// The row, or `None` for a deletion or anything unreadable (a miss).
pub fn decode(tenant: &str, key: &str, stored: &str) -> Option<SessionRow> {
    let body = stored.get(VERSION_LEN..)?;
    let c: Cached = serde_json::from_str::<Option<Cached>>(body).ok()??;
    Some(SessionRow {
        id: c.id,
        tenant: tenant.into(),
        session_key: key.into(),
        agent_from: c.agent_from,
        status: SessionStatus::parse(&c.status)?,
        metadata: c.metadata,
        created_at: c.created_at,
        last_activity_at: c.last_activity_at,
        last_seq: c.last_seq,
        summary: c.summary,
    })
}
