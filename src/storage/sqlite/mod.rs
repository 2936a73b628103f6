//! The embedded default: SQLite in WAL mode with `synchronous=FULL`, so a
//! committed batch survives power loss. One writer connection (SQLite has
//! one writer anyway; the persistence actor is its only user) and a small
//! pool of readers that WAL lets run beside it.
//!
//! A batch becomes a handful of multi-row statements, not one per entry:
//! sqlx runs each SQLite connection on its own thread, so statements are
//! round trips, and one 32-row INSERT is ~4× cheaper than 32 INSERTs.

mod analytics;
mod batch;
mod config;
mod credentials;
mod jobs;
mod lock;
mod rows;
mod search;
mod sessions;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use handoff_actors::model::{AuditRow, CommitUnit, EntryRow, SessionRow};
use handoff_actors::store::Store;
use handoff_actors::StoreError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::SqliteConnection;

use crate::storage::Diagnostics;
use batch::write_batch;
use lock::SqliteLock;
use rows::{entry_from_row, session_from_row};

/// SQLite's bound-parameter limit is 32766; stay well under it.
const MAX_PARAMS: usize = 30_000;

pub struct SqliteDb {
    writer: SqlitePool,
    reader: SqlitePool,
    path: String,
}

impl SqliteDb {
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            .pragma("temp_store", "memory");
        let path = opts.get_filename().display().to_string();
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(opts.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot open SQLite database {path}: {e}"))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| anyhow::anyhow!("migrating {path}: {e}"))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .connect_with(opts)
            .await?;
        Ok(Self {
            writer,
            reader,
            path,
        })
    }
}

/// Constraint violations are the data's fault; anything else is the
/// database's (and counts against the breaker).
pub(super) fn classify(e: sqlx::Error) -> StoreError {
    if super::dependency_failed(&e) {
        return StoreError::Unavailable(e.to_string());
    }
    match &e {
        sqlx::Error::Database(db) => StoreError::Rejected(db.message().to_string()),
        _ => StoreError::Rejected(e.to_string()),
    }
}

#[async_trait]
impl Store for SqliteDb {
    async fn load_session(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<(SessionRow, Vec<EntryRow>)>, StoreError> {
        let mut conn = self.reader.acquire().await.map_err(classify)?;
        load_on(&mut conn, tenant, key).await
    }

    /// The transaction is driven by hand (BEGIN IMMEDIATE … COMMIT) rather
    /// than through `sqlx::Transaction`: when SQLite fails a statement with
    /// SQLITE_FULL or an I/O error it may roll the transaction back by
    /// itself, and sqlx's depth bookkeeping then drifts — later batches were
    /// reported committed without being stored. Here a failed batch always
    /// ends in ROLLBACK and its connection is replaced, so the next batch
    /// starts from a known state.
    async fn commit(&self, units: &[&CommitUnit]) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await.map_err(classify)?;
        let r = write_batch(&mut conn, units, true).await;
        if r.is_err() {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            conn.close_on_drop();
        }
        r
    }

    async fn audit_head(&self) -> Result<Option<AuditRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_all(&self.writer)
            .await
            .map_err(classify)?;
        Ok(rows.iter().map(crate::storage::audit_from_row).next())
    }

    /// The same lookup `accept_handoff` makes (tenant-scoped).
    async fn handoff_accepted(&self, tenant: &str, id: uuid::Uuid) -> Result<bool, StoreError> {
        let h = crate::storage::Sessions::get_handoff(self, tenant, &id.to_string()).await?;
        Ok(h.is_some_and(|h| h.status == "accepted"))
    }

    /// `BEGIN IMMEDIATE` on the writer connection (see `SqliteLock`), then
    /// the session as `load_session` reads it.
    async fn lock_session(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<handoff_actors::store::Locked>, StoreError> {
        let mut conn = self.writer.acquire().await.map_err(classify)?;
        let r = async {
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *conn)
                .await
                .map_err(classify)?;
            load_on(&mut conn, tenant, key).await
        }
        .await;
        match r {
            Ok(session) => Ok(Some(handoff_actors::store::Locked {
                session,
                lock: Box::new(SqliteLock { conn: Some(conn) }),
            })),
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                conn.close_on_drop();
                Err(e)
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

/// `Store::load_session` on `conn`.
async fn load_on(
    conn: &mut SqliteConnection,
    tenant: &str,
    key: &str,
) -> Result<Option<(SessionRow, Vec<EntryRow>)>, StoreError> {
    let row = sqlx::query(
        "SELECT id, agent_from, status, metadata, created_at, last_activity_at, last_seq, summary
         FROM sessions WHERE tenant = ? AND session_key = ?",
    )
    .bind(tenant)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await
    .map_err(classify)?;
    let Some(row) = row else { return Ok(None) };
    let mut session = session_from_row(&row, tenant, key)?;
    session.summary.handoffs =
        sqlx::query_scalar("SELECT count(*) FROM handoffs WHERE session_id = ?")
            .bind(session.id.to_string())
            .fetch_one(&mut *conn)
            .await
            .map_err(classify)?;
    let tail = sqlx::query(
        "SELECT seq, id, context_type, content, metadata, created_at FROM context_entries
         WHERE session_id = ? AND seq > ? ORDER BY seq",
    )
    .bind(session.id.to_string())
    .bind(session.last_seq)
    .fetch_all(&mut *conn)
    .await
    .map_err(classify)?
    .iter()
    .map(|r| entry_from_row(r, session.id))
    .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((session, tail)))
}

#[async_trait]
impl Diagnostics for SqliteDb {
    async fn audit_rows(&self) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_log ORDER BY seq")
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        Ok(rows.iter().map(crate::storage::audit_from_row).collect())
    }

    fn describe(&self) -> String {
        format!("sqlite {}", self.path)
    }

    async fn writer_durability(&self) -> Result<serde_json::Value, StoreError> {
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&self.writer)
            .await
            .map_err(classify)?;
        let name = match level {
            0 => "off",
            1 => "normal",
            2 => "full",
            3 => "extra",
            _ => "unknown",
        };
        Ok(serde_json::json!({ "synchronous": name }))
    }
}

/// The user's text as an FTS5 query that cannot be a syntax error: each
/// whitespace-separated term becomes a quoted phrase (inner `"` doubled), and
/// the phrases are ANDed (juxtaposition). Operators (`AND`, `OR`, `NOT`,
/// `NEAR`), prefixes (`*`), column filters and parentheses lose their meaning
/// and are searched as words; punctuation separates words as in the index,
/// so `foo-bar` matches the phrase "foo bar". `None` when there is no term.
pub fn fts5_query(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split_whitespace()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

#[cfg(test)]
mod tests {
    use super::fts5_query;

    #[tokio::test]
    async fn tenants_see_only_their_own_rows() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = super::SqliteDb::open(&url).await.unwrap();
        crate::storage::analytics::isolation::check(&db).await;
    }

    #[test]
    fn terms_are_quoted_phrases() {
        assert_eq!(fts5_query("  "), None);
        assert_eq!(
            fts5_query("foo  NEAR(bar*) \"x\"").as_deref(),
            Some("\"foo\" \"NEAR(bar*)\" \"\"\"x\"\"\"")
        );
    }
}
