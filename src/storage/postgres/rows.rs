//! Rows as PostgreSQL returns them, turned into the storage records.

use chrono::{DateTime, Utc};
use handoff_actors::model::summary::Summary;
use handoff_actors::model::{rfc3339, ContextType, EntryRow, SessionRow, SessionStatus};
use handoff_actors::StoreError;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::Row;
use uuid::Uuid;

use crate::storage::{HandoffRecord, SessionListing};

pub(super) fn session_from_row(
    r: &PgRow,
    tenant: &str,
    key: &str,
) -> Result<SessionRow, StoreError> {
    let bad = |what: &str| StoreError::Rejected(format!("corrupt session row: {what}"));
    let metadata: Option<Json<Value>> = r.try_get("metadata").unwrap_or(None);
    let summary: Json<Summary> = r.try_get("summary").map_err(|_| bad("summary"))?;
    Ok(SessionRow {
        id: r.try_get("id").map_err(|_| bad("id"))?,
        tenant: tenant.into(),
        session_key: key.into(),
        agent_from: r.try_get("agent_from").map_err(|_| bad("agent_from"))?,
        status: SessionStatus::parse(r.try_get("status").map_err(|_| bad("status"))?)
            .ok_or_else(|| bad("status"))?,
        metadata: metadata.map(|m| m.0),
        created_at: r.try_get("created_at").map_err(|_| bad("created_at"))?,
        last_activity_at: r
            .try_get("last_activity_at")
            .map_err(|_| bad("last_activity_at"))?,
        last_seq: r.try_get("last_seq").map_err(|_| bad("last_seq"))?,
        summary: summary.0,
    })
}

/// Content is stored as bytea (PostgreSQL text cannot hold U+0000); it was
/// written from a `String`, so it reads back as UTF-8.
pub(super) fn content_of(r: &PgRow) -> Result<String, StoreError> {
    let bad = || StoreError::Rejected("corrupt entry row: content".into());
    let bytes: Vec<u8> = r.try_get("content").map_err(|_| bad())?;
    String::from_utf8(bytes).map_err(|_| bad())
}

pub(super) fn entry_from_row(r: &PgRow, session_id: Uuid) -> Result<EntryRow, StoreError> {
    let bad = |what: &str| StoreError::Rejected(format!("corrupt entry row: {what}"));
    let metadata: Option<Json<Value>> = r.try_get("metadata").unwrap_or(None);
    Ok(EntryRow {
        session_id,
        seq: r.try_get("seq").map_err(|_| bad("seq"))?,
        id: r.try_get("id").map_err(|_| bad("id"))?,
        context_type: ContextType::parse(r.try_get("context_type").map_err(|_| bad("type"))?)
            .ok_or_else(|| bad("context_type"))?,
        content: content_of(r)?,
        metadata: metadata.map(|m| m.0),
        created_at: r.try_get("created_at").map_err(|_| bad("created_at"))?,
    })
}

/// A row of `sessions` as the listings show it.
pub(super) fn listing_from_row(r: &PgRow) -> SessionListing {
    SessionListing {
        session_key: r.get("session_key"),
        status: r.get("status"),
        agent_from: r.get("agent_from"),
        created_at: time_of(r, "created_at"),
        last_activity_at: time_of(r, "last_activity_at"),
    }
}

pub(super) fn handoff_from_row(r: &PgRow) -> HandoffRecord {
    let json = |col: &str| -> Option<Value> {
        r.try_get::<Option<Json<Value>>, _>(col)
            .ok()
            .flatten()
            .map(|j| j.0)
    };
    HandoffRecord {
        id: r.get::<Uuid, _>("id").to_string(),
        session_key: r.get("session_key"),
        source_agent: r.get("source_agent"),
        target_agent: r.get("target_agent"),
        request_type: r.get("request_type"),
        status: r.get("status"),
        request_data: json("request_data"),
        context_summary: json("context_summary").unwrap_or(Value::Null),
        context_entries: r.get("context_entries"),
        created_at: time_of(r, "created_at"),
        accepted_at: r
            .get::<Option<DateTime<Utc>>, _>("accepted_at")
            .map(|t| rfc3339(&t)),
        accepted_by: r.get("accepted_by"),
    }
}

pub(super) fn since_time(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::Rejected(format!("not an RFC 3339 time: {s}")))
}

pub(super) fn time_of(r: &PgRow, col: &str) -> String {
    rfc3339(&r.get::<DateTime<Utc>, _>(col))
}
