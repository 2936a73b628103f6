//! Writing a batch of units in one transaction: a handful of multi-row
//! statements, not one per entry.

use handoff_actors::model::{json_string, rfc3339, CommitUnit, SessionRow};
use handoff_actors::StoreError;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::{classify, MAX_PARAMS};
use crate::storage::json_text;

/// One batch in one transaction, sent as ONE multi-statement query:
/// `BEGIN IMMEDIATE; DELETE …; INSERT … VALUES (…), (…); …; COMMIT`.
/// sqlx-sqlite runs the statements in order and binds the parameters across
/// them, so the whole batch is a single round trip to the connection's
/// worker thread instead of one per statement.
/// `begin` false: inside a transaction the caller opened (`SqliteLock`).
pub(super) async fn write_batch(
    conn: &mut SqliteConnection,
    units: &[&CommitUnit],
    begin: bool,
) -> Result<(), StoreError> {
    let mut q = QueryBuilder::<Sqlite>::new(if begin { "BEGIN IMMEDIATE;" } else { "" });

    let deletes: Vec<String> = units
        .iter()
        .filter_map(|u| u.delete)
        .map(|id| id.to_string())
        .collect();
    for chunk in deletes.chunks(500) {
        q.push(" DELETE FROM sessions WHERE id IN (");
        let mut sep = q.separated(", ");
        for id in chunk {
            sep.push_bind(id.clone());
        }
        q.push(");");
    }

    // New rows are plain inserts: a key another process registered first
    // fails the unit (UNIQUE (tenant, session_key)) and its actor reloads.
    let sessions: Vec<&SessionRow> = units
        .iter()
        .filter(|u| u.session_is_new)
        .filter_map(|u| u.session.as_ref())
        .collect();
    for chunk in sessions.chunks(MAX_PARAMS / 10) {
        q.push(
            " INSERT INTO sessions (id, tenant, session_key, agent_from, status, metadata, \
             created_at, last_activity_at, last_seq, summary) ",
        );
        q.push_values(chunk, |mut b, s| {
            b.push_bind(s.id.to_string())
                .push_bind(s.tenant.to_string())
                .push_bind(s.session_key.to_string())
                .push_bind(s.agent_from.clone())
                .push_bind(s.status.as_str())
                .push_bind(json_text(&s.metadata))
                .push_bind(rfc3339(&s.created_at))
                .push_bind(rfc3339(&s.last_activity_at))
                .push_bind(s.last_seq)
                .push_bind(serde_json::to_string(&s.summary).unwrap_or_else(|_| "{}".into()));
        });
        q.push(";");
    }
    // Checkpoints only update: a session deleted meanwhile stays deleted, and
    // an older checkpoint (another writer got further) changes nothing.
    for s in units
        .iter()
        .filter(|u| !u.session_is_new)
        .filter_map(|u| u.session.as_ref())
    {
        q.push(" UPDATE sessions SET agent_from = ")
            .push_bind(s.agent_from.clone())
            .push(", status = ")
            .push_bind(s.status.as_str())
            .push(", metadata = ")
            .push_bind(json_text(&s.metadata))
            .push(", last_activity_at = ")
            .push_bind(rfc3339(&s.last_activity_at))
            .push(", last_seq = ")
            .push_bind(s.last_seq)
            .push(", summary = ")
            .push_bind(serde_json::to_string(&s.summary).unwrap_or_else(|_| "{}".into()))
            .push(" WHERE id = ")
            .push_bind(s.id.to_string())
            .push(" AND last_seq <= ")
            .push_bind(s.last_seq)
            .push(";");
    }

    let entries: Vec<_> = units.iter().flat_map(|u| u.entries.iter()).collect();
    for chunk in entries.chunks(MAX_PARAMS / 7) {
        q.push(
            " INSERT INTO context_entries (session_id, seq, id, context_type, content, metadata, created_at) ",
        );
        q.push_values(chunk, |mut b, e| {
            b.push_bind(e.session_id.to_string())
                .push_bind(e.seq)
                .push_bind(e.id.to_string())
                .push_bind(e.context_type.as_str())
                .push_bind(e.content.clone())
                .push_bind(json_text(&e.metadata))
                .push_bind(rfc3339(&e.created_at));
        });
        q.push(";");
    }

    let handoffs: Vec<_> = units.iter().flat_map(|u| u.handoffs.iter()).collect();
    for chunk in handoffs.chunks(MAX_PARAMS / 12) {
        q.push(
            " INSERT INTO handoffs (id, tenant, session_id, session_key, source_agent, target_agent, \
             request_type, status, request_data, context_summary, context_entries, created_at) ",
        );
        q.push_values(chunk, |mut b, h| {
            b.push_bind(h.id.to_string())
                .push_bind(h.tenant.to_string())
                .push_bind(h.session_id.to_string())
                .push_bind(h.session_key.to_string())
                .push_bind(h.source_agent.clone())
                .push_bind(h.target_agent.clone())
                .push_bind(h.request_type.as_str())
                .push_bind(h.status.clone())
                .push_bind(json_text(&h.request_data))
                .push_bind(json_string(&h.context_summary))
                .push_bind(h.context_entries)
                .push_bind(rfc3339(&h.created_at));
        });
        q.push(";");
    }

    let lifecycle: Vec<_> = units.iter().flat_map(|u| u.lifecycle.iter()).collect();
    for chunk in lifecycle.chunks(MAX_PARAMS / 8) {
        q.push(
            " INSERT INTO lifecycle_events (id, tenant, session_id, session_key, from_status, \
             to_status, at, reason) ",
        );
        q.push_values(chunk, |mut b, e| {
            b.push_bind(e.id.to_string())
                .push_bind(e.tenant.to_string())
                .push_bind(e.session_id.map(|id| id.to_string()))
                .push_bind(e.session_key.as_deref().map(str::to_string))
                .push_bind(e.from.as_str())
                .push_bind(e.to.as_str())
                .push_bind(rfc3339(&e.at))
                .push_bind(e.reason.clone());
        });
        q.push(";");
    }

    for a in units.iter().flat_map(|u| u.accepts.iter()) {
        q.push(" UPDATE handoffs SET status = 'accepted', accepted_at = ")
            .push_bind(rfc3339(&a.at))
            .push(", accepted_by = ")
            .push_bind(a.agent.clone())
            .push(" WHERE id = ")
            .push_bind(a.id.to_string())
            // Accepted elsewhere first (another process): the trigger
            // `handoff_accepted_once` fails the unit.
            .push(";");
    }

    let audit: Vec<_> = units.iter().flat_map(|u| u.audit.iter()).collect();
    for chunk in audit.chunks(MAX_PARAMS / 9) {
        q.push(
            " INSERT INTO audit_log (seq, ts, tenant, action, actor, subject_hash, details, prev_hash, hash) ",
        );
        q.push_values(chunk, |mut b, a| {
            b.push_bind(a.seq)
                .push_bind(a.ts.clone())
                .push_bind(a.tenant.clone())
                .push_bind(a.action.clone())
                .push_bind(a.actor.clone())
                .push_bind(a.subject_hash.clone())
                .push_bind(a.details.clone())
                .push_bind(a.prev_hash.clone())
                .push_bind(a.hash.clone());
        });
        q.push(";");
    }

    q.push(" COMMIT;");
    // Not cached: batch shapes vary with their row counts, and a cache of
    // large prepared multi-row statements costs far more memory than the
    // microseconds a prepare takes.
    q.build()
        .persistent(false)
        .execute(&mut *conn)
        .await
        .map_err(classify_write)?;
    Ok(())
}

/// A constraint that only another writer can have broken (a taken key or
/// sequence number, a session deleted meanwhile, a handoff accepted
/// elsewhere) is a lost race, which the writer resolves by reloading.
fn classify_write(e: sqlx::Error) -> StoreError {
    use sqlx::error::ErrorKind;
    match &e {
        sqlx::Error::Database(db)
            if matches!(
                db.kind(),
                ErrorKind::UniqueViolation | ErrorKind::ForeignKeyViolation
            ) || db.message().contains("write_conflict") =>
        {
            StoreError::Conflict(db.message().to_string())
        }
        _ => classify(e),
    }
}
