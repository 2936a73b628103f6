//! Reads of sessions, their context pages, handoffs and agents' listings on PostgreSQL.

use async_trait::async_trait;
use handoff_actors::StoreError;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::rows::{content_of, handoff_from_row, listing_from_row, time_of};
use super::{classify, PgDb};
use crate::storage::Sessions;
use crate::storage::{ContextPage, HandoffRecord, PageQuery, SessionListing, StoredEntry};

#[async_trait]
impl Sessions for PgDb {
    async fn context_page(
        &self,
        tenant: &str,
        key: &str,
        q: PageQuery<'_>,
    ) -> Result<Option<ContextPage>, StoreError> {
        let mut conn = self.reader.acquire().await.map_err(classify)?;
        let id: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM sessions WHERE tenant = $1 AND session_key = $2")
                .bind(tenant)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(classify)?;
        let Some(id) = id else { return Ok(None) };
        // The same page as the SQLite adapter's, with less traffic. The
        // first row is always on the page and the second is always needed
        // (on the page, or the row that tells `has_more`). A later row is
        // needed only if every row ahead of it made the page, so their
        // encoded cost fits `max_bytes`; that cost is at least twice their
        // raw size (`before`), so rows with `before * 2 > max_bytes` are not
        // sent: a page of large entries does not fetch up to `limit` of
        // them to keep a few. `octet_length` of a bytea reads its stored
        // length without fetching the value.
        // No type filter: NULL, which the `IS NULL` arm lets through.
        let types: Option<Vec<&str>> = q
            .types
            .map(|types| types.iter().map(|t| t.as_str()).collect());
        let rows = sqlx::query(
            "SELECT id, seq, context_type, content, metadata, created_at FROM (
                 SELECT id, seq, context_type, content, metadata, created_at,
                        row_number() OVER (ORDER BY seq) AS n,
                        coalesce(sum(octet_length(content)) OVER (ORDER BY seq
                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
                 FROM context_entries
                 WHERE session_id = $1 AND seq > $2
                   AND ($5::text[] IS NULL OR context_type = ANY($5::text[]))
                 ORDER BY seq LIMIT $3) page
             WHERE n <= 2 OR before * 2 <= $4 ORDER BY seq",
        )
        .bind(id)
        .bind(q.after)
        .bind(q.limit as i64 + 1)
        .bind(i64::try_from(q.max_bytes).unwrap_or(i64::MAX))
        .bind(types)
        .fetch_all(&mut *conn)
        .await
        .map_err(classify)?;
        let mut entries = Vec::with_capacity(rows.len().min(q.limit as usize));
        let mut bytes = 0usize;
        let mut has_more = false;
        for r in rows {
            let content = content_of(&r)?;
            let cost = crate::storage::encoded_cost(&content);
            if entries.len() == q.limit as usize
                || (!entries.is_empty() && bytes + cost > q.max_bytes)
            {
                has_more = true;
                break;
            }
            bytes += cost;
            let metadata: Option<Json<Value>> = r.try_get("metadata").unwrap_or(None);
            entries.push(StoredEntry {
                id: r.get::<Uuid, _>("id").to_string(),
                sequence_number: r.get("seq"),
                context_type: r.get("context_type"),
                content,
                metadata: metadata.map(|m| m.0),
                created_at: time_of(&r, "created_at"),
            });
        }
        Ok(Some(ContextPage { entries, has_more }))
    }

    async fn list_sessions(
        &self,
        tenant: &str,
        after_key: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<SessionListing>, i64), StoreError> {
        let rows = sqlx::query(
            "SELECT session_key, status, agent_from, created_at, last_activity_at FROM sessions
             WHERE tenant = $1 AND session_key > $2 ORDER BY session_key LIMIT $3",
        )
        .bind(tenant)
        .bind(after_key.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE tenant = $1")
            .bind(tenant)
            .fetch_one(&self.reader)
            .await
            .map_err(classify)?;
        let list = rows.iter().map(listing_from_row).collect();
        Ok((list, total))
    }

    async fn list_handoffs(
        &self,
        tenant: &str,
        target: &str,
        status: Option<&str>,
        before_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<HandoffRecord>, StoreError> {
        let mut q = QueryBuilder::<Postgres>::new("SELECT * FROM handoffs WHERE tenant = ");
        q.push_bind(tenant)
            .push(" AND target_agent = ")
            .push_bind(target);
        if let Some(st) = status {
            q.push(" AND status = ").push_bind(st);
        }
        // The cursor is the client's string: compared as text, bytewise, as
        // SQLite compares it (for a uuid's canonical spelling that is the
        // uuid order used by ORDER BY).
        if let Some(b) = before_id {
            q.push(" AND id::text COLLATE \"C\" < ").push_bind(b);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(limit as i64);
        let rows = q.build().fetch_all(&self.reader).await.map_err(classify)?;
        Ok(rows.iter().map(handoff_from_row).collect())
    }

    async fn get_handoff(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<HandoffRecord>, StoreError> {
        // Only a uuid's canonical spelling names a row (as in SQLite, where
        // ids are that text).
        let Some(id) = Uuid::parse_str(id).ok().filter(|u| u.to_string() == id) else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT * FROM handoffs WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(classify)?;
        Ok(row.as_ref().map(handoff_from_row))
    }

    async fn session_handoffs(
        &self,
        tenant: &str,
        session_key: &str,
    ) -> Result<Vec<HandoffRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM handoffs WHERE tenant = $1 AND session_key = $2 ORDER BY id",
        )
        .bind(tenant)
        .bind(session_key)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows.iter().map(handoff_from_row).collect())
    }

    async fn agent_sessions(
        &self,
        tenant: &str,
        agent: &str,
        after_key: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SessionListing>, StoreError> {
        let rows = sqlx::query(
            "SELECT session_key, status, agent_from, created_at, last_activity_at FROM sessions
             WHERE tenant = $1 AND session_key > $3 AND (agent_from = $2 OR id IN (
                 SELECT session_id FROM handoffs
                 WHERE tenant = $1 AND target_agent = $2 AND request_type = 'collaboration'))
             ORDER BY session_key LIMIT $4",
        )
        .bind(tenant)
        .bind(agent)
        .bind(after_key.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows.iter().map(listing_from_row).collect())
    }
}
