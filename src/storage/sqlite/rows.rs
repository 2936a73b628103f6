//! Rows as SQLite returns them, turned into the storage records.

use handoff_actors::model::summary::Summary;
use handoff_actors::model::{ContextType, EntryRow, SessionRow, SessionStatus};
use handoff_actors::StoreError;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::storage::{ConfigBackupInfo, HandoffRecord, SessionListing};

pub(super) fn session_from_row(
    r: &SqliteRow,
    tenant: &str,
    key: &str,
) -> Result<SessionRow, StoreError> {
    let bad = |what: &str| StoreError::Rejected(format!("corrupt session row: {what}"));
    let parse_t = |s: String| {
        chrono::DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|_| bad("timestamp"))
    };
    let summary: String = r.try_get("summary").map_err(|_| bad("summary"))?;
    let metadata: Option<String> = r.try_get("metadata").map_err(|_| bad("metadata"))?;
    Ok(SessionRow {
        id: r
            .try_get::<String, _>("id")
            .ok()
            .and_then(|s| uuid::Uuid::parse_str(&s).ok())
            .ok_or_else(|| bad("id"))?,
        tenant: tenant.into(),
        session_key: key.into(),
        agent_from: r.try_get("agent_from").map_err(|_| bad("agent_from"))?,
        status: SessionStatus::parse(
            &r.try_get::<String, _>("status")
                .map_err(|_| bad("status"))?,
        )
        .ok_or_else(|| bad("status"))?,
        metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
        created_at: parse_t(r.try_get("created_at").map_err(|_| bad("created_at"))?)?,
        last_activity_at: parse_t(
            r.try_get("last_activity_at")
                .map_err(|_| bad("last_activity_at"))?,
        )?,
        last_seq: r.try_get("last_seq").map_err(|_| bad("last_seq"))?,
        summary: serde_json::from_str::<Summary>(&summary).map_err(|_| bad("summary"))?,
    })
}

pub(super) fn entry_from_row(
    r: &SqliteRow,
    session_id: uuid::Uuid,
) -> Result<EntryRow, StoreError> {
    let bad = |what: &str| StoreError::Rejected(format!("corrupt entry row: {what}"));
    let metadata: Option<String> = r.get("metadata");
    Ok(EntryRow {
        session_id,
        seq: r.get("seq"),
        id: uuid::Uuid::parse_str(&r.get::<String, _>("id")).map_err(|_| bad("id"))?,
        context_type: ContextType::parse(&r.get::<String, _>("context_type"))
            .ok_or_else(|| bad("context_type"))?,
        content: r.get("content"),
        metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
        created_at: chrono::DateTime::parse_from_rfc3339(&r.get::<String, _>("created_at"))
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|_| bad("created_at"))?,
    })
}

/// A row of `sessions` as the listings show it.
pub(super) fn listing_from_row(r: &SqliteRow) -> SessionListing {
    SessionListing {
        session_key: r.get("session_key"),
        status: r.get("status"),
        agent_from: r.get("agent_from"),
        created_at: r.get("created_at"),
        last_activity_at: r.get("last_activity_at"),
    }
}

pub(super) fn handoff_from_row(r: &SqliteRow) -> HandoffRecord {
    let json = |col: &str| -> Option<serde_json::Value> {
        r.get::<Option<String>, _>(col)
            .and_then(|s| serde_json::from_str(&s).ok())
    };
    HandoffRecord {
        id: r.get("id"),
        session_key: r.get("session_key"),
        source_agent: r.get("source_agent"),
        target_agent: r.get("target_agent"),
        request_type: r.get("request_type"),
        status: r.get("status"),
        request_data: json("request_data"),
        context_summary: json("context_summary").unwrap_or(serde_json::Value::Null),
        context_entries: r.get("context_entries"),
        created_at: r.get("created_at"),
        accepted_at: r.get("accepted_at"),
        accepted_by: r.get("accepted_by"),
    }
}

pub(super) fn backup_info_from_row(r: &SqliteRow) -> ConfigBackupInfo {
    ConfigBackupInfo {
        id: r.get("id"),
        name: r.get("name"),
        description: r.get("description"),
        created_at: r.get("created_at"),
        checksum: r.get("checksum"),
        size_bytes: r.get("size_bytes"),
    }
}
