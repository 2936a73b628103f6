//! Reads of sessions, their context pages, handoffs and agents' listings on SQLite.

use async_trait::async_trait;
use futures::TryStreamExt;
use handoff_actors::StoreError;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::rows::{handoff_from_row, listing_from_row};
use super::{classify, SqliteDb};
use crate::storage::Sessions;
use crate::storage::{ContextPage, HandoffRecord, PageQuery, SessionListing, StoredEntry};

#[async_trait]
impl Sessions for SqliteDb {
    async fn context_page(
        &self,
        tenant: &str,
        key: &str,
        q: PageQuery<'_>,
    ) -> Result<Option<ContextPage>, StoreError> {
        let mut conn = self.reader.acquire().await.map_err(classify)?;
        let id: Option<String> =
            sqlx::query_scalar("SELECT id FROM sessions WHERE tenant = ? AND session_key = ?")
                .bind(tenant)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(classify)?;
        let Some(id) = id else { return Ok(None) };
        let mut b = QueryBuilder::<Sqlite>::new(
            "SELECT id, seq, context_type, content, metadata, created_at FROM context_entries WHERE session_id = ",
        );
        b.push_bind(id).push(" AND seq > ").push_bind(q.after);
        if let Some(types) = q.types {
            b.push(" AND context_type IN (");
            let mut sep = b.separated(", ");
            for t in types {
                sep.push_bind(t.as_str());
            }
            b.push(")");
        }
        b.push(" ORDER BY seq LIMIT ").push_bind(q.limit as i64 + 1);
        // Rows are streamed and reading stops at the byte budget: fetching
        // `limit + 1` whole rows first held up to a thousand 1 MiB
        // contents in memory for a page that returns four.
        let mut rows = b.build().fetch(&mut *conn);
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let mut has_more = false;
        while let Some(r) = rows.try_next().await.map_err(classify)? {
            let content: String = r.get("content");
            let cost = crate::storage::encoded_cost(&content);
            if entries.len() == q.limit as usize
                || (!entries.is_empty() && bytes + cost > q.max_bytes)
            {
                has_more = true;
                break;
            }
            bytes += cost;
            let metadata: Option<String> = r.get("metadata");
            entries.push(StoredEntry {
                id: r.get("id"),
                sequence_number: r.get("seq"),
                context_type: r.get("context_type"),
                content,
                metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
                created_at: r.get("created_at"),
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
             WHERE tenant = ? AND session_key > ? ORDER BY session_key LIMIT ?",
        )
        .bind(tenant)
        .bind(after_key.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE tenant = ?")
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
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM handoffs WHERE tenant = ");
        q.push_bind(tenant)
            .push(" AND target_agent = ")
            .push_bind(target);
        if let Some(st) = status {
            q.push(" AND status = ").push_bind(st);
        }
        if let Some(b) = before_id {
            q.push(" AND id < ").push_bind(b);
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
        let row = sqlx::query("SELECT * FROM handoffs WHERE tenant = ? AND id = ?")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(classify)?;
        Ok(row.as_ref().map(handoff_from_row))
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
             WHERE tenant = ?1 AND session_key > ?3 AND (agent_from = ?2 OR id IN (
                 SELECT session_id FROM handoffs
                 WHERE tenant = ?1 AND target_agent = ?2 AND request_type = 'collaboration'))
             ORDER BY session_key LIMIT ?4",
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

    async fn session_handoffs(
        &self,
        tenant: &str,
        session_key: &str,
    ) -> Result<Vec<HandoffRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM handoffs WHERE tenant = ? AND session_key = ? ORDER BY id")
                .bind(tenant)
                .bind(session_key)
                .fetch_all(&self.reader)
                .await
                .map_err(classify)?;
        Ok(rows.iter().map(handoff_from_row).collect())
    }
}
