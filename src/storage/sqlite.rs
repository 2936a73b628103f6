//! The embedded default: SQLite in WAL mode with `synchronous=FULL`, so a
//! committed batch survives power loss. One writer connection (SQLite has
//! one writer anyway; the persistence actor is its only user) and a small
//! pool of readers that WAL lets run beside it.
//!
//! A batch becomes a handful of multi-row statements, not one per entry:
//! sqlx runs each SQLite connection on its own thread, so statements are
//! round trips, and one 32-row INSERT is ~4× cheaper than 32 INSERTs.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use handoff_actors::model::{
    json_string, rfc3339, AuditRow, CommitUnit, ContextType, EntryRow, SessionRow, SessionStatus,
};
use handoff_actors::store::Store;
use handoff_actors::summary::Summary;
use handoff_actors::StoreError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::analytics::{ContextAnalytics, Counted, HandoffAnalytics, SessionAnalytics};
use super::{
    json_text, sqlite_analytics, Candidate, ConfigBackup, ConfigBackupInfo, ConfigOverride,
    ContextPage, Database, HandoffListing, LifecycleListing, PageQuery, SearchHit, SessionListing,
    StoredEntry,
};

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

fn session_from_row(r: &SqliteRow, tenant: &str, key: &str) -> Result<SessionRow, StoreError> {
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
        Ok(rows.iter().map(audit_from_row).next())
    }

    /// The same lookup `accept_handoff` makes (tenant-scoped).
    async fn handoff_accepted(&self, tenant: &str, id: uuid::Uuid) -> Result<bool, StoreError> {
        let h = Database::get_handoff(self, tenant, &id.to_string()).await?;
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

/// A hot session's transaction (`Store::lock_session`): `BEGIN IMMEDIATE`
/// on the writer connection, so the lock is SQLite's write lock on the
/// whole file — every other writer, in this process or another on the same
/// file, waits for it (`busy_timeout`). A connection whose transaction did
/// not end cleanly is closed, not pooled.
struct SqliteLock {
    conn: Option<sqlx::pool::PoolConnection<Sqlite>>,
}

#[async_trait]
impl handoff_actors::store::SessionLock for SqliteLock {
    async fn commit(mut self: Box<Self>, unit: &CommitUnit) -> Result<(), StoreError> {
        let mut conn = self.conn.take().expect("a lock commits once");
        let r = write_batch(&mut conn, &[unit], false).await;
        if r.is_err() {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            conn.close_on_drop();
        }
        r
    }

    async fn release(mut self: Box<Self>) {
        if let Some(mut conn) = self.conn.take() {
            if sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
                conn.close_on_drop();
            }
        }
    }
}

impl Drop for SqliteLock {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }
}

/// One batch in one transaction, sent as ONE multi-statement query:
/// `BEGIN IMMEDIATE; DELETE …; INSERT … VALUES (…), (…); …; COMMIT`.
/// sqlx-sqlite runs the statements in order and binds the parameters across
/// them, so the whole batch is a single round trip to the connection's
/// worker thread instead of one per statement.
/// `begin` false: inside a transaction the caller opened (`SqliteLock`).
async fn write_batch(
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

fn entry_from_row(r: &SqliteRow, session_id: uuid::Uuid) -> Result<EntryRow, StoreError> {
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
fn listing_from_row(r: &SqliteRow) -> SessionListing {
    SessionListing {
        session_key: r.get("session_key"),
        status: r.get("status"),
        agent_from: r.get("agent_from"),
        created_at: r.get("created_at"),
        last_activity_at: r.get("last_activity_at"),
    }
}

fn handoff_from_row(r: &SqliteRow) -> HandoffListing {
    let json = |col: &str| -> Option<serde_json::Value> {
        r.get::<Option<String>, _>(col)
            .and_then(|s| serde_json::from_str(&s).ok())
    };
    HandoffListing {
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

fn backup_info_from_row(r: &SqliteRow) -> ConfigBackupInfo {
    ConfigBackupInfo {
        id: r.get("id"),
        name: r.get("name"),
        description: r.get("description"),
        created_at: r.get("created_at"),
        checksum: r.get("checksum"),
        size_bytes: r.get("size_bytes"),
    }
}

fn audit_from_row(r: &SqliteRow) -> AuditRow {
    AuditRow {
        seq: r.get("seq"),
        ts: r.get("ts"),
        tenant: r.get("tenant"),
        action: r.get("action"),
        actor: r.get("actor"),
        subject_hash: r.get("subject_hash"),
        details: r.get("details"),
        prev_hash: r.get("prev_hash"),
        hash: r.get("hash"),
    }
}

#[async_trait]
impl Database for SqliteDb {
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
            let cost = super::encoded_cost(&content);
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

    async fn audit_rows(&self) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_log ORDER BY seq")
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        Ok(rows.iter().map(audit_from_row).collect())
    }

    async fn setting_or_init(&self, key: &str, init: &str) -> Result<String, StoreError> {
        sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING")
            .bind(key)
            .bind(init)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_one(&self.writer)
            .await
            .map_err(classify)
    }

    fn describe(&self) -> String {
        format!("sqlite {}", self.path)
    }

    async fn insert_api_key(&self, k: &super::ApiKeyRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant, scope, agent, name, hash, created_ms, \
             last_used_ms, expires_ms, revoked_ms, replaced_by) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&k.id)
        .bind(&k.tenant)
        .bind(&k.scope)
        .bind(&k.agent)
        .bind(&k.name)
        .bind(&k.hash)
        .bind(k.created_ms)
        .bind(k.last_used_ms)
        .bind(k.expires_ms)
        .bind(k.revoked_ms)
        .bind(&k.replaced_by)
        .execute(&self.writer)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn api_key(&self, id: &str) -> Result<Option<super::ApiKeyRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM api_keys WHERE id = ?",
            super::API_KEY_COLUMNS
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(classify)?;
        row.map(|r| super::api_key_from_row(&r).map_err(classify))
            .transpose()
    }

    async fn api_keys(&self) -> Result<Vec<super::ApiKeyRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM api_keys ORDER BY tenant, created_ms, id",
            super::API_KEY_COLUMNS
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| super::api_key_from_row(r).map_err(classify))
            .collect()
    }

    async fn update_api_key(
        &self,
        id: &str,
        revoked_ms: Option<i64>,
        expires_ms: Option<i64>,
        replaced_by: Option<&str>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE api_keys SET revoked_ms = COALESCE(?, revoked_ms), \
             expires_ms = COALESCE(?, expires_ms), replaced_by = COALESCE(?, replaced_by) \
             WHERE id = ?",
        )
        .bind(revoked_ms)
        .bind(expires_ms)
        .bind(replaced_by)
        .bind(id)
        .execute(&self.writer)
        .await
        .map_err(classify)?;
        Ok(r.rows_affected() > 0)
    }

    async fn put_http_session(
        &self,
        id_hash: &str,
        tenant: Option<&str>,
        init_params: Option<&str>,
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM http_sessions WHERE expires_ms < ?")
            .bind(now_ms)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        sqlx::query(
            "INSERT INTO http_sessions (id_hash, tenant, init_params, expires_ms) VALUES (?, ?, ?, ?) \
             ON CONFLICT (id_hash) DO UPDATE SET \
             tenant = COALESCE(http_sessions.tenant, excluded.tenant), \
             init_params = COALESCE(excluded.init_params, http_sessions.init_params), \
             expires_ms = excluded.expires_ms",
        )
        .bind(id_hash)
        .bind(tenant)
        .bind(init_params)
        .bind(expires_ms)
        .execute(&self.writer)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn http_session(
        &self,
        id_hash: &str,
        now_ms: i64,
    ) -> Result<Option<(Option<String>, Option<String>)>, StoreError> {
        sqlx::query_as(
            "SELECT tenant, init_params FROM http_sessions WHERE id_hash = ? AND expires_ms > ?",
        )
        .bind(id_hash)
        .bind(now_ms)
        .fetch_optional(&self.reader)
        .await
        .map_err(classify)
    }

    async fn delete_http_session(&self, id_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM http_sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn touch_api_key(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET last_used_ms = ? WHERE id = ?")
            .bind(at_ms)
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(())
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

    async fn lifecycle_candidates(
        &self,
        statuses: &[&str],
        idle_before: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<Vec<Candidate>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT tenant, session_key FROM sessions WHERE status IN (",
        );
        let mut sep = q.separated(", ");
        for s in statuses {
            sep.push_bind(*s);
        }
        q.push(") AND last_activity_at < ")
            .push_bind(rfc3339(&idle_before))
            .push(" ORDER BY last_activity_at LIMIT ")
            .push_bind(limit as i64);
        let rows = q.build().fetch_all(&self.reader).await.map_err(classify)?;
        Ok(rows
            .iter()
            .map(|r| (r.get("tenant"), r.get("session_key")))
            .collect())
    }

    async fn lifecycle_events(
        &self,
        tenant: &str,
        limit: u32,
    ) -> Result<Vec<LifecycleListing>, StoreError> {
        let rows = sqlx::query(
            "SELECT session_key, from_status, to_status, at, reason FROM lifecycle_events
             WHERE tenant = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(tenant)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows
            .iter()
            .map(|r| LifecycleListing {
                session_key: r.get("session_key"),
                from: r.get("from_status"),
                to: r.get("to_status"),
                at: r.get("at"),
                reason: r.get("reason"),
            })
            .collect())
    }

    async fn prune_job_records(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<(u64, u64), StoreError> {
        let before = rfc3339(&before);
        let events = sqlx::query("DELETE FROM lifecycle_events WHERE at < ?")
            .bind(&before)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        let rollups = sqlx::query("DELETE FROM analytics_rollups WHERE at < ?")
            .bind(&before)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok((events.rows_affected(), rollups.rows_affected()))
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)`: moves the WAL into the database
    /// file and empties it, so the WAL does not grow between automatic
    /// checkpoints (which never truncate).
    async fn maintenance(&self) -> Result<serde_json::Value, StoreError> {
        let r = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.writer)
            .await
            .map_err(classify)?;
        let (busy, log, done): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
        Ok(serde_json::json!({"wal_checkpoint": {
            "busy": busy != 0, "log_frames": log, "checkpointed_frames": done}}))
    }

    async fn analytics_rollup(&self) -> Result<serde_json::Value, StoreError> {
        let pairs = |sql: &'static str| async move {
            let rows = sqlx::query(sql)
                .fetch_all(&self.reader)
                .await
                .map_err(classify)?;
            Ok::<_, StoreError>(
                rows.iter()
                    .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
                    .collect::<Vec<_>>(),
            )
        };
        let counts = super::rollup_json(
            pairs("SELECT status, count(*) FROM sessions GROUP BY status").await?,
            pairs("SELECT context_type, count(*) FROM context_entries GROUP BY context_type")
                .await?,
            pairs("SELECT status, count(*) FROM handoffs GROUP BY status").await?,
            pairs("SELECT request_type, count(*) FROM handoffs GROUP BY request_type").await?,
        );
        sqlx::query("INSERT INTO analytics_rollups (id, at, counts) VALUES (?, ?, ?)")
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(rfc3339(&handoff_actors::model::now()))
            .bind(counts.to_string())
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(counts)
    }

    async fn job_configs(&self) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let rows = sqlx::query("SELECT job_name, config FROM job_configs")
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let v = serde_json::from_str(&r.get::<String, _>("config")).ok()?;
                Some((r.get("job_name"), v))
            })
            .collect())
    }

    async fn save_job_config(
        &self,
        job: &str,
        config: &serde_json::Value,
        updated_at: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO job_configs (job_name, config, updated_at) VALUES (?, ?, ?)
             ON CONFLICT (job_name) DO UPDATE SET config = excluded.config,
             updated_at = excluded.updated_at",
        )
        .bind(job)
        .bind(config.to_string())
        .bind(updated_at)
        .execute(&self.writer)
        .await
        .map(|_| ())
        .map_err(classify)
    }

    async fn config_overrides(&self) -> Result<Vec<ConfigOverride>, StoreError> {
        let rows = sqlx::query(
            "SELECT section, key, value, updated_at, updated_by FROM configuration_overrides
             ORDER BY section, key",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let value: String = r.get("value");
                Ok(ConfigOverride {
                    section: r.get("section"),
                    key: r.get("key"),
                    value: serde_json::from_str(&value).map_err(|_| {
                        StoreError::Rejected("corrupt configuration override".into())
                    })?,
                    updated_at: r.get("updated_at"),
                    updated_by: r.get("updated_by"),
                })
            })
            .collect()
    }

    async fn replace_config_overrides(&self, rows: &[ConfigOverride]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await.map_err(classify)?;
        sqlx::query("DELETE FROM configuration_overrides")
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        for r in rows {
            sqlx::query(
                "INSERT INTO configuration_overrides (section, key, value, updated_at, updated_by)
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&r.section)
            .bind(&r.key)
            .bind(r.value.to_string())
            .bind(&r.updated_at)
            .bind(&r.updated_by)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    async fn insert_config_backup(
        &self,
        b: &ConfigBackup,
        keep: u32,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.writer.begin().await.map_err(classify)?;
        sqlx::query(
            "INSERT INTO configuration_backups
             (id, name, description, created_at, checksum, size_bytes, body)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&b.info.id)
        .bind(&b.info.name)
        .bind(&b.info.description)
        .bind(&b.info.created_at)
        .bind(&b.info.checksum)
        .bind(b.info.size_bytes)
        .bind(&b.body)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        let pruned: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM configuration_backups ORDER BY id DESC LIMIT -1 OFFSET ?",
        )
        .bind(keep as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        for id in &pruned {
            sqlx::query("DELETE FROM configuration_backups WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(pruned)
    }

    async fn config_backups(&self) -> Result<Vec<ConfigBackupInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, description, created_at, checksum, size_bytes
             FROM configuration_backups ORDER BY id DESC",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows.iter().map(backup_info_from_row).collect())
    }

    async fn config_backup(&self, id: &str) -> Result<Option<ConfigBackup>, StoreError> {
        let row = sqlx::query("SELECT * FROM configuration_backups WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(classify)?;
        Ok(row.map(|r| ConfigBackup {
            info: backup_info_from_row(&r),
            body: r.get("body"),
        }))
    }

    async fn delete_config_backup(&self, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM configuration_backups WHERE id = ?")
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(r.rows_affected() > 0)
    }

    async fn list_handoffs(
        &self,
        tenant: &str,
        target: &str,
        status: Option<&str>,
        before_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<HandoffListing>, StoreError> {
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
    ) -> Result<Option<HandoffListing>, StoreError> {
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
    ) -> Result<Vec<HandoffListing>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM handoffs WHERE tenant = ? AND session_key = ? ORDER BY id")
                .bind(tenant)
                .bind(session_key)
                .fetch_all(&self.reader)
                .await
                .map_err(classify)?;
        Ok(rows.iter().map(handoff_from_row).collect())
    }

    // Analytics: see `sqlite_analytics`.
    async fn session_analytics(
        &self,
        tenant: &str,
        since: &str,
    ) -> Result<SessionAnalytics, StoreError> {
        sqlite_analytics::sessions(&self.reader, tenant, since).await
    }

    async fn handoff_analytics(&self, tenant: &str) -> Result<HandoffAnalytics, StoreError> {
        sqlite_analytics::handoffs(&self.reader, tenant).await
    }

    async fn context_analytics(
        &self,
        tenant: &str,
        since: &str,
    ) -> Result<ContextAnalytics, StoreError> {
        sqlite_analytics::context(&self.reader, tenant, since).await
    }

    async fn database_size(&self) -> Result<Vec<Counted>, StoreError> {
        Ok(sqlite_analytics::size(&self.path))
    }

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
        super::push_search_filters(&mut q, session_key, agent);
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
