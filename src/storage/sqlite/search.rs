//! Full-text search of context entries on SQLite.

use async_trait::async_trait;
use handoff_actors::StoreError;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{classify, fts5_query, SqliteDb};
use crate::storage::Search;
use crate::storage::SearchHit;

#[async_trait]
impl Search for SqliteDb {
    /// FTS5 over `context_fts` (migrations/sqlite/0002_search.sql), ranked
    /// by bm25 (reported negated, so higher is better), ties by session key
    /// and sequence. The join to `sessions` scopes the tenant.
    async fn search(
        &self,
        tenant: &str,
        query: &str,
        session_key: Option<&str>,
        agent: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SearchHit>, StoreError> {
        let Some(expr) = fts5_query(query) else {
            return Ok(Vec::new());
        };
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT s.session_key, e.seq, e.context_type, e.created_at, \
             snippet(context_fts, 0, '«', '»', '…', 16) AS snippet, \
             bm25(context_fts) AS rank \
             FROM context_fts \
             JOIN context_entries e ON e.rowid = context_fts.rowid \
             JOIN sessions s ON s.id = e.session_id \
             WHERE context_fts MATCH ",
        );
        q.push_bind(expr).push(" AND s.tenant = ").push_bind(tenant);
        crate::storage::push_search_filters(&mut q, session_key, agent);
        q.push(" ORDER BY rank, s.session_key, e.seq LIMIT ")
            .push_bind(limit as i64);
        let rows = q
            .build()
            .fetch_all(&self.reader)
            .await
            .map_err(|e| match &e {
                // Cannot happen with the quoting of fts5_query, but a query the
                // index refuses is the caller's problem, not the database's.
                sqlx::Error::Database(db) if db.message().starts_with("fts5:") => {
                    StoreError::Rejected(db.message().to_string())
                }
                _ => classify(e),
            })?;
        Ok(rows
            .iter()
            .map(|r| SearchHit {
                session_key: r.get("session_key"),
                sequence_number: r.get("seq"),
                context_type: r.get("context_type"),
                snippet: r.get("snippet"),
                score: -r.get::<f64, _>("rank"),
                created_at: r.get("created_at"),
            })
            .collect())
    }
}
