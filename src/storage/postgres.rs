//! PostgreSQL, selected by `HANDOFF_DATABASE_URL=postgres://…`: the same
//! contract and durability as the SQLite adapter, also with several replicas
//! on one database (see `BATCH_CTES` for how races between them end).
//!
//! Durability: a batch is acknowledged after PostgreSQL reports its commit,
//! which with `synchronous_commit` on (enforced on every connection here,
//! whatever the server default) means its WAL is flushed — the counterpart
//! of SQLite's `synchronous=FULL`.
//!
//! Connections: ONE dedicated writer connection for commits (the
//! persistence actor is its only user) and a small pool for everything
//! else. The writer is not a sqlx pool on purpose: a pool pings a connection
//! when it hands it out and again when it takes it back, two extra round
//! trips around every batch. It is instead taken out of its slot for the
//! batch and put back only after a clean commit, so a batch that fails, or
//! that the persistence actor's timeout abandons mid-flight (half a message
//! sent, a transaction open), never leaves a connection in an unknown state
//! for the next one: the connection is closed and the next batch opens a
//! fresh one.
//!
//! One batch is one round trip: a single statement (data-modifying CTEs fed
//! by `unnest` of array parameters) that PostgreSQL runs in an implicit
//! transaction — all or nothing, committed before the reply. Its text never
//! changes, so it is prepared once per connection and cached (a statement
//! with parameters that is not cached costs a second round trip to prepare).
//! Only a batch whose entries exceed `CHUNK_BYTES` is split over several
//! executions of the same statement, inside an explicit BEGIN … COMMIT.
//!
//! Measured on the 2-core dev machine (local PostgreSQL 15, 1 KiB entries,
//! serial commits; mean per batch with synchronous_commit on, and off to
//! show what is left without the WAL flush):
//!
//! ```text
//!                                                 1 unit           32 units
//! this statement, dedicated connection        1.29 / 0.19 ms   2.76 / 0.53 ms
//! BEGIN; this statement; COMMIT               1.35 / 0.35 ms   2.95 / 0.64 ms
//! this statement via a sqlx pool (2 pings)    1.42 / 0.34 ms   2.89 / 0.58 ms
//! BEGIN; INSERT … VALUES per table; COMMIT    1.37 / 0.49 ms   3.03 / 0.87 ms
//!   (multi-row, QueryBuilder::push_values, not cached)
//! ```

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use handoff_actors::model::{
    json_string, rfc3339, AuditRow, CommitUnit, ContextType, EntryRow, SessionRow, SessionStatus,
};
use handoff_actors::store::Store;
use handoff_actors::summary::Summary;
use handoff_actors::StoreError;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Connection, Executor, PgConnection, Postgres, QueryBuilder, Row};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::analytics::{ContextAnalytics, Counted, HandoffAnalytics, SessionAnalytics};
use super::{
    json_text, postgres_analytics, postgres_config, Candidate, ConfigBackup, ConfigBackupInfo,
    ConfigOverride, ContextPage, Database, HandoffListing, LifecycleListing, PageQuery, SearchHit,
    SessionListing, StoredEntry,
};
use crate::logging::redact;

/// Entry content and metadata bytes sent in one execution of the batch
/// statement. A single array parameter may not exceed 1 GiB and a batch can
/// in principle carry `batch_max` units of a few MiB each.
const CHUNK_BYTES: usize = 64 * 1024 * 1024;

/// A pooled read connection idle this long is pinged before it is used.
const READER_CHECK_AFTER_IDLE: Duration = Duration::from_secs(5);

/// Hot sessions locked at once at most, per process (`PgDb::locker`).
const LOCKER_CONNECTIONS: u32 = 8;

/// How long start-up waits for the first connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Run on every new connection, in one round trip. Notices ("relation
/// already exists, skipping" from the migrator) stay out of the logs; and an
/// acknowledged write must be durable, so a server-wide
/// `synchronous_commit = off` is overridden for our sessions (`local`,
/// `remote_write`, `remote_apply` are durable on this server and kept).
const SESSION_SETUP: &str = "SET client_min_messages = warning; \
     SELECT set_config('synchronous_commit', 'on', false) \
     WHERE current_setting('synchronous_commit') = 'off'";

/// Every sub-statement of `BATCH_CTES` reaches existing rows by primary key
/// (delete, checkpoint, acceptance), so its right plan is always "for each
/// row of the batch, one index lookup". The planner does not know that: on
/// young tables (no statistics yet) and with the cached generic plan of a
/// prepared statement it chose sequential scans of `sessions` and `handoffs`,
/// and the cost of every batch then grew with the table (measured: 8 ms per
/// batch after 20 s of load, a third of the throughput). Forbidding
/// sequential scans on this one connection pins the batch to the lookups it
/// was written for; reads (a pool of their own) are planned normally.
const WRITER_SETUP: &str = "SET enable_seqscan = off";

pub struct PgDb {
    /// The commit connection; `None` after a failed batch (see the module
    /// comment) until the next batch connects again.
    writer: Mutex<Option<PgConnection>>,
    /// Reads, probes, the audit head and the one-off settings row.
    reader: PgPool,
    /// Connections for hot sessions' locked units (`Store::lock_session`),
    /// apart from the reads and from the group commit's writer: a unit
    /// waiting for a session's lock holds one while it waits.
    locker: PgPool,
    opts: PgConnectOptions,
    name: String,
    /// `CHUNK_BYTES`; smaller in tests, to exercise split batches.
    chunk_bytes: usize,
}

impl PgDb {
    pub async fn open(url: &str, migrate: bool) -> anyhow::Result<Self> {
        let mut opts = PgConnectOptions::from_str(url)
            .map_err(|e| anyhow::anyhow!("invalid PostgreSQL URL: {}", redact(&e.to_string())))?
            .application_name("handoff");
        // TLS only when the URL asks (`sslmode=require`, `verify-full`, …),
        // not libpq's `prefer`: over sqlx's rustls stream, batches stall
        // ~88 ms each (c=32 on loopback: 425 calls/s against 8,515 in
        // clear, measured 2026-12-05; see docs/operations.md).
        if !asks_for_ssl_mode(url) && std::env::var_os("PGSSLMODE").is_none() {
            opts = opts.ssl_mode(sqlx::postgres::PgSslMode::Disable);
        }
        let name = describe_opts(&opts);
        let mut writer = tokio::time::timeout(CONNECT_TIMEOUT, connect(&opts, false))
            .await
            .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut))
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot connect to PostgreSQL {name}: {}",
                    redact(&e.to_string())
                )
            })?;
        let migrator = sqlx::migrate!("./migrations/postgres");
        if migrate {
            migrator
                .run(&mut writer)
                .await
                .map_err(|e| anyhow::anyhow!("migrating {name}: {}", redact(&e.to_string())))?;
        } else {
            let applied: Vec<i64> = sqlx::query_scalar(
                "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
            )
            .fetch_all(&mut writer)
            .await
            .unwrap_or_default();
            let missing: Vec<String> = migrator
                .iter()
                .filter(|m| !applied.contains(&m.version))
                .map(|m| format!("{} {}", m.version, m.description))
                .collect();
            if !missing.is_empty() {
                anyhow::bail!(
                    "PostgreSQL {name} is missing migrations ({}); run `handoff migrate` as the \
                     migration role, or unset HANDOFF_MIGRATE_ON_START=false",
                    missing.join(", ")
                );
            }
        }
        let fsync: String = sqlx::query_scalar("SELECT current_setting('fsync')")
            .fetch_one(&mut writer)
            .await?;
        writer.execute(sqlx::raw_sql(WRITER_SETUP)).await?;
        if fsync != "on" {
            tracing::warn!(
                database = %name,
                "PostgreSQL runs with fsync = off: acknowledged writes may be lost in a crash"
            );
        }
        // sqlx pings a connection before handing it out by default: a round
        // trip (and a PostgreSQL wake-up) per read. Only a connection that
        // sat idle long enough to have been cut is checked; a busy one that
        // broke fails its query, which is retryable, and is then dropped.
        let reader = PgPoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= READER_CHECK_AFTER_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(|conn, _| Box::pin(async move { setup(conn).await }))
            .connect_lazy_with(opts.clone());
        let locker = PgPoolOptions::new()
            .max_connections(LOCKER_CONNECTIONS)
            .min_connections(0)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= READER_CHECK_AFTER_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(|conn, _| {
                Box::pin(async move {
                    setup(conn).await?;
                    conn.execute(sqlx::raw_sql(WRITER_SETUP)).await.map(|_| ())
                })
            })
            .connect_lazy_with(opts.clone());
        Ok(Self {
            writer: Mutex::new(Some(writer)),
            reader,
            locker,
            opts,
            name,
            chunk_bytes: CHUNK_BYTES,
        })
    }

    /// One batch on the writer connection (see `Store::commit` below for
    /// what happens to the connection when it fails); the ids of lost
    /// registrations when `partial`.
    async fn write(&self, units: &[&CommitUnit], partial: bool) -> Result<Vec<Uuid>, StoreError> {
        let mut slot = self.writer.lock().await;
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => connect(&self.opts, true).await.map_err(classify)?,
        };
        let mut in_transaction = false;
        match write_batch(
            &mut conn,
            units,
            self.chunk_bytes,
            partial,
            &mut in_transaction,
            false,
        )
        .await
        {
            Ok(lost) => {
                *slot = Some(conn);
                Ok(lost)
            }
            Err(e) => {
                if in_transaction {
                    let _ = conn.execute(sqlx::raw_sql("ROLLBACK")).await;
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
                Err(e)
            }
        }
    }
}

/// A writer connection: `SESSION_SETUP`, and `WRITER_SETUP` unless it is
/// the start-up one, which migrates first (migrations are planned normally).
async fn connect(opts: &PgConnectOptions, for_batches: bool) -> Result<PgConnection, sqlx::Error> {
    let mut conn = PgConnection::connect_with(opts).await?;
    setup(&mut conn).await?;
    if for_batches {
        conn.execute(sqlx::raw_sql(WRITER_SETUP)).await?;
    }
    Ok(conn)
}

async fn setup(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    conn.execute(sqlx::raw_sql(SESSION_SETUP)).await.map(|_| ())
}

/// `postgres://user@host:port/db`, rebuilt from the parsed options, so no
/// spelling of a password (in the user info, `?password=`) can reach it.
/// Whether the URL names an `sslmode` (or `ssl-mode`) itself.
fn asks_for_ssl_mode(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|kv| {
            let key = kv
                .split('=')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            key == "sslmode" || key == "ssl-mode"
        })
    })
}

fn describe_opts(opts: &PgConnectOptions) -> String {
    let host = match opts.get_socket() {
        Some(dir) => dir.display().to_string(),
        None => opts.get_host().to_string(),
    };
    redact(&format!(
        "postgres://{}@{}:{}/{}",
        opts.get_username(),
        host,
        opts.get_port(),
        opts.get_database().unwrap_or("")
    ))
}

/// The data's fault or the database's? Integrity violations (SQLSTATE class
/// 23: unique, foreign key, not null, check) and data exceptions (class 22:
/// a value PostgreSQL cannot take, e.g. out of range) are deterministic —
/// retrying cannot help, and they must not count against the breaker: the
/// persistence actor then retries the batch unit by unit so only the bad
/// unit fails. Everything else — connection refused or lost, timeouts, I/O,
/// disk full, a server shutting down, serialization failures — is the
/// database being unavailable.
pub(super) fn classify(e: sqlx::Error) -> StoreError {
    if super::dependency_failed(&e) {
        return StoreError::Unavailable(redact(&e.to_string()));
    }
    match &e {
        sqlx::Error::Database(db) => StoreError::Rejected(redact(db.message())),
        _ => StoreError::Rejected(redact(&e.to_string())),
    }
}

/// A constraint only another writer can have broken (a taken key or
/// sequence number, a session deleted meanwhile, a handoff accepted
/// elsewhere: see `BATCH_CTES`) is a lost race, not bad data.
fn classify_write(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        let code = db.code();
        if matches!(code.as_deref(), Some("23505" | "23503"))
            || db.message().contains("write_conflict")
        {
            return StoreError::Conflict(redact(db.message()));
        }
    }
    classify(e)
}

fn session_from_row(r: &PgRow, tenant: &str, key: &str) -> Result<SessionRow, StoreError> {
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
fn content_of(r: &PgRow) -> Result<String, StoreError> {
    let bad = || StoreError::Rejected("corrupt entry row: content".into());
    let bytes: Vec<u8> = r.try_get("content").map_err(|_| bad())?;
    String::from_utf8(bytes).map_err(|_| bad())
}

fn entry_from_row(r: &PgRow, session_id: Uuid) -> Result<EntryRow, StoreError> {
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
fn listing_from_row(r: &PgRow) -> SessionListing {
    SessionListing {
        session_key: r.get("session_key"),
        status: r.get("status"),
        agent_from: r.get("agent_from"),
        created_at: time_of(r, "created_at"),
        last_activity_at: time_of(r, "last_activity_at"),
    }
}

fn handoff_from_row(r: &PgRow) -> HandoffListing {
    let json = |col: &str| -> Option<Value> {
        r.try_get::<Option<Json<Value>>, _>(col)
            .ok()
            .flatten()
            .map(|j| j.0)
    };
    HandoffListing {
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

fn audit_from_row(r: &PgRow) -> AuditRow {
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

fn since_time(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::Rejected(format!("not an RFC 3339 time: {s}")))
}

fn time_of(r: &PgRow, col: &str) -> String {
    rfc3339(&r.get::<DateTime<Utc>, _>(col))
}

#[async_trait]
impl Store for PgDb {
    async fn load_session(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<(SessionRow, Vec<EntryRow>)>, StoreError> {
        let mut conn = self.reader.acquire().await.map_err(classify)?;
        load_on(&mut conn, tenant, key, false).await
    }

    /// See the module comment: the writer is out of its slot for the batch
    /// and goes back only after a clean commit. A failed batch ends in
    /// ROLLBACK (sent when it ran in an explicit transaction; a one-statement
    /// batch is rolled back by PostgreSQL itself when it fails) and its
    /// connection is closed, so the next batch starts from a known state —
    /// the same rule as the SQLite adapter's `close_on_drop`. (A batch
    /// abandoned by the caller's timeout after its statement was sent may
    /// still commit on the server, as with any database once the commit is
    /// on its way; the caller reported it as a retryable failure.)
    async fn commit(&self, units: &[&CommitUnit]) -> Result<(), StoreError> {
        self.write(units, false).await.map(|_| ())
    }

    /// `BATCH_CTES` leaves a lost registration out (see there).
    async fn commit_partial(&self, units: &[&CommitUnit]) -> Result<Vec<usize>, StoreError> {
        let lost = self.write(units, true).await?;
        Ok(units
            .iter()
            .enumerate()
            .filter(|(_, u)| {
                u.session_is_new && u.session.as_ref().is_some_and(|s| lost.contains(&s.id))
            })
            .map(|(i, _)| i)
            .collect())
    }

    fn registers_blind(&self) -> bool {
        true
    }

    async fn audit_head(&self) -> Result<Option<AuditRow>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, ts, tenant, action, actor, subject_hash, details, prev_hash, hash
             FROM audit_log ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&self.reader)
        .await
        .map_err(classify)?;
        Ok(row.as_ref().map(audit_from_row))
    }

    /// The same lookup `accept_handoff` makes (tenant-scoped).
    async fn handoff_accepted(&self, tenant: &str, id: uuid::Uuid) -> Result<bool, StoreError> {
        let h = Database::get_handoff(self, tenant, &id.to_string()).await?;
        Ok(h.is_some_and(|h| h.status == "accepted"))
    }

    /// `BEGIN`, then the session row `FOR UPDATE` and its tail. The row
    /// lock is what every other writer of the session meets: an optimistic
    /// batch takes `FOR KEY SHARE` on the rows of the sessions it writes
    /// before it inserts anything (`HELD`), a deletion or a checkpoint
    /// updates the row, another locked unit asks for `FOR UPDATE`. A key
    /// not registered yet has no row to lock: its registration races as it
    /// does unlocked (`UNIQUE (tenant, session_key)`).
    async fn lock_session(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<handoff_actors::store::Locked>, StoreError> {
        let mut conn = self.locker.acquire().await.map_err(classify)?;
        let r = async {
            conn.execute(sqlx::raw_sql("BEGIN"))
                .await
                .map_err(classify)?;
            load_on(&mut conn, tenant, key, true).await
        }
        .await;
        match r {
            Ok(session) => Ok(Some(handoff_actors::store::Locked {
                session,
                lock: Box::new(PgLock {
                    conn: Some(conn),
                    chunk_bytes: self.chunk_bytes,
                }),
            })),
            Err(e) => {
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

/// `Store::load_session` on `conn`; with `for_update`, the session row is
/// locked `FOR UPDATE` (inside the caller's transaction, see `PgLock`).
async fn load_on(
    conn: &mut PgConnection,
    tenant: &str,
    key: &str,
    for_update: bool,
) -> Result<Option<(SessionRow, Vec<EntryRow>)>, StoreError> {
    // A plain handoff does not rewrite the row: its count comes from the
    // handoffs themselves.
    let sql = if for_update {
        LOAD_SQL_FOR_UPDATE
    } else {
        LOAD_SQL
    };
    let row = sqlx::query(sql)
        .bind(tenant)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(classify)?;
    let Some(row) = row else { return Ok(None) };
    let mut session = session_from_row(&row, tenant, key)?;
    session.summary.handoffs = row
        .try_get("handoffs")
        .map_err(|_| StoreError::Rejected("corrupt session row: handoffs".into()))?;
    // Unless the row is locked, another replica may append between the
    // two reads.
    let tail = sqlx::query(
        "SELECT seq, id, context_type, content, metadata, created_at FROM context_entries
         WHERE session_id = $1 AND seq > $2 ORDER BY seq",
    )
    .bind(session.id)
    .bind(session.last_seq)
    .fetch_all(&mut *conn)
    .await
    .map_err(classify)?
    .iter()
    .map(|r| entry_from_row(r, session.id))
    .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((session, tail)))
}

const LOAD_SQL: &str = "SELECT id, agent_from, status, metadata, created_at, last_activity_at,
        last_seq, summary, (SELECT count(*) FROM handoffs h WHERE h.session_id = s.id) AS handoffs
     FROM sessions s WHERE tenant = $1 AND session_key = $2";
const LOAD_SQL_FOR_UPDATE: &str = "SELECT id, agent_from, status, metadata, created_at,
        last_activity_at, last_seq, summary,
        (SELECT count(*) FROM handoffs h WHERE h.session_id = s.id) AS handoffs
     FROM sessions s WHERE tenant = $1 AND session_key = $2 FOR UPDATE OF s";

/// A hot session's transaction (`Store::lock_session`). A connection whose
/// transaction did not end cleanly is closed, not pooled.
struct PgLock {
    conn: Option<sqlx::pool::PoolConnection<Postgres>>,
    chunk_bytes: usize,
}

#[async_trait]
impl handoff_actors::store::SessionLock for PgLock {
    async fn commit(mut self: Box<Self>, unit: &CommitUnit) -> Result<(), StoreError> {
        let mut conn = self.conn.take().expect("a lock commits once");
        let mut in_transaction = true;
        let r = async {
            write_batch(
                &mut conn,
                &[unit],
                self.chunk_bytes,
                false,
                &mut in_transaction,
                true,
            )
            .await?;
            conn.execute(sqlx::raw_sql("COMMIT"))
                .await
                .map_err(classify)?;
            Ok(())
        }
        .await;
        if r.is_err() {
            let _ = conn.execute(sqlx::raw_sql("ROLLBACK")).await;
            conn.close_on_drop();
        }
        r
    }

    async fn release(mut self: Box<Self>) {
        if let Some(mut conn) = self.conn.take() {
            if conn.execute(sqlx::raw_sql("ROLLBACK")).await.is_err() {
                conn.close_on_drop();
            }
        }
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }
}

/// Which groups of rows one execution of the batch statement writes.
/// Each group is a CTE that PostgreSQL sets up (opens the table and its
/// indexes, builds the executor nodes) on every execution, rows or not, and
/// deletions, acceptances and lifecycle events are rare. So the statement
/// is composed of the groups present, one text per shape (each prepared
/// once per connection and cached); parameters of absent groups are still
/// bound, empty, so numbering never changes. Measured with `ops/bench` at
/// concurrency 32: PostgreSQL's CPU per call ÷1.06 against one statement
/// with every group.
#[derive(Clone, Copy)]
struct Shape(u8);

impl Shape {
    const DELETES: u8 = 1;
    const SESSIONS: u8 = 2;
    const ENTRIES: u8 = 4;
    const HANDOFFS: u8 = 8;
    const ACCEPTS: u8 = 16;
    const AUDIT: u8 = 32;
    const LIFECYCLE: u8 = 64;
    const COUNT: usize = 128;

    fn has(self, group: u8) -> bool {
        self.0 & group != 0
    }
}

/// The batch statement for `shape` (see `BATCH_CTES` for what it does).
fn batch_sql(shape: Shape) -> &'static str {
    static STATEMENTS: [OnceLock<String>; Shape::COUNT] = [const { OnceLock::new() }; Shape::COUNT];
    STATEMENTS[shape.0 as usize].get_or_init(|| {
        let mut ctes = Vec::new();
        let gated =
            shape.has(Shape::ENTRIES) || shape.has(Shape::HANDOFFS) || shape.has(Shape::ACCEPTS);
        if gated {
            ctes.push(if shape.has(Shape::ACCEPTS) {
                HELD_WITH_ACCEPTS
            } else {
                HELD
            });
        }
        for (group, cte) in BATCH_CTES {
            if shape.has(group) {
                ctes.push(cte);
            } else if group == Shape::SESSIONS {
                // Later CTEs read `lost`: it must come before them.
                ctes.push(NO_LOST);
            }
        }
        let ctes: Vec<String> = ctes
            .into_iter()
            .map(|c| c.replace(AFTER_HELD, if gated { GATE } else { "" }))
            .collect();
        // Without acceptances there is no count to check (and a constant
        // count would let the planner evaluate the failing cast up front).
        let (check, from) = if shape.has(Shape::ACCEPTS) {
            (ACCEPTS_CHECK, "(SELECT count(*) AS n FROM accepted) c, ")
        } else {
            ("", "")
        };
        format!(
            "WITH {}\nSELECT CASE {check}{LOST_CHECK} ELSE 1 END AS ok, lost\n\
             FROM {from}(SELECT array_agg(id) AS lost FROM lost) l",
            ctes.join(",\n")
        )
    })
}

/// The whole batch as one statement. Parameters are column arrays, one
/// group per table; `unnest` turns each group back into rows. The
/// data-modifying CTEs all run to completion whether or not the final
/// SELECT reads them, inside the statement's one (implicit) transaction;
/// foreign keys are checked at the end of the statement, so entries may
/// reference a session row inserted beside them. Each CTE is listed with
/// the `Shape` group it belongs to (see `batch_sql`).
///
/// The sub-statements see one snapshot and run in no defined order, unlike
/// the SQLite adapter's statement sequence (delete, upsert, insert…). That is
/// only observable when two of them touch the same row, which a batch never
/// does: a session has at most one unit in flight, a deletion travels alone
/// in its unit, and an accepted handoff was committed by an earlier unit.
/// Session rows with the same id are folded before binding (see
/// `Columns::rows`), because an upsert may not touch a row twice.
///
/// Several replicas (or processes) may write one session: sequence numbers
/// are allocated optimistically by each process's session actor, in memory,
/// and the database refuses the loser of a race. No lock is held across
/// replicas and the common case (one writer) pays nothing extra:
/// - `UNIQUE (session_id, seq)`: a writer whose numbers were taken fails;
///   since it only ever numbers from what it last read, a number it may use
///   is exactly the next one, so numbers stay gap-free and unique;
/// - a new session row is an INSERT that `UNIQUE (tenant, session_key)`
///   turns into nothing for the second registration of a key; that unit's
///   rows are left out and its session id returned (`lost`), so a session
///   actor may register a key it has not looked up (the common case: the
///   key is new) and reload only when it lost — without failing the rest
///   of the batch. `Store::commit` (all or nothing) aborts instead;
/// - a checkpoint only UPDATEs (guarded by `last_seq`), so it never
///   resurrects a session deleted meanwhile; entries for it fail their
///   foreign key;
/// - an acceptance must find its handoff still `pending`; the final SELECT
///   raises `write_conflict` when fewer rows than expected were accepted.
///
/// Any of these aborts the whole statement; the adapter reports
/// `StoreError::Conflict`, the persistence actor retries the batch unit by
/// unit, and the losing session actor reloads and applies its operations
/// again (actors/src/session.rs).
const BATCH_CTES: [(u8, &str); 7] = [
    (
        Shape::DELETES,
        "deleted AS (
    DELETE FROM sessions s USING unnest($1::uuid[]) AS d(id) WHERE s.id = d.id
)",
    ),
    (
        Shape::SESSIONS,
        "rows AS (
    SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::timestamptz[], $9::timestamptz[], $10::int8[],
                         $11::text[], $51::bool[])
         AS t(id, tenant, session_key, agent_from, status, metadata,
              created_at, last_activity_at, last_seq, summary, fresh)
),
registered AS (
    INSERT INTO sessions (id, tenant, session_key, agent_from, status, metadata,
                          created_at, last_activity_at, last_seq, summary)
    SELECT id, tenant, session_key, agent_from, status, metadata::json,
           created_at, last_activity_at, last_seq, summary::json
    FROM rows WHERE fresh
    ON CONFLICT (tenant, session_key) DO NOTHING
    RETURNING id
),
-- New sessions whose key another writer registered first: nothing of them
-- is written (their rows below are filtered out), and the final SELECT
-- names them, or aborts the statement when $54 (partial) is false.
lost AS (
    SELECT id FROM rows WHERE fresh EXCEPT SELECT id FROM registered
),
checkpoints AS (
    UPDATE sessions s SET agent_from = t.agent_from, status = t.status,
        metadata = t.metadata::json, last_activity_at = t.last_activity_at,
        last_seq = t.last_seq, summary = t.summary::json
    FROM rows t
    WHERE NOT t.fresh AND s.id = t.id AND t.last_seq >= s.last_seq
)",
    ),
    (
        Shape::ENTRIES,
        "entries AS (
    INSERT INTO context_entries (session_id, seq, id, context_type, content, metadata,
                                 created_at, search)
    SELECT session_id, seq, id, context_type, content, metadata::json, created_at,
           search
    FROM unnest($12::uuid[], $13::int8[], $14::uuid[], $15::text[], $16::bytea[],
                $17::text[], $18::timestamptz[], $53::tsvector[])
         AS t(session_id, seq, id, context_type, content, metadata, created_at, search)
    WHERE t.session_id NOT IN (SELECT id FROM lost)/*after held*/
)",
    ),
    (
        Shape::HANDOFFS,
        "new_handoffs AS (
    INSERT INTO handoffs (id, tenant, session_id, session_key, source_agent, target_agent,
                          request_type, status, request_data, context_summary,
                          context_entries, created_at)
    SELECT id, tenant, session_id, session_key, source_agent, target_agent,
           request_type, status, request_data::json, context_summary::json,
           context_entries, created_at
    FROM unnest($19::uuid[], $20::text[], $21::uuid[], $22::text[], $23::text[],
                $24::text[], $25::text[], $26::text[], $27::text[], $28::text[],
                $29::int8[], $30::timestamptz[])
         AS t(id, tenant, session_id, session_key, source_agent, target_agent,
              request_type, status, request_data, context_summary, context_entries,
              created_at)
    WHERE t.session_id NOT IN (SELECT id FROM lost)/*after held*/
)",
    ),
    (
        Shape::ACCEPTS,
        "accepted AS (
    UPDATE handoffs h SET status = 'accepted', accepted_at = a.at, accepted_by = a.agent
    FROM unnest($31::uuid[], $32::text[], $33::timestamptz[]) AS a(id, agent, at)
    WHERE h.id = a.id AND h.status = 'pending'/*after held*/
    RETURNING 1
)",
    ),
    (
        Shape::AUDIT,
        "audit AS (
    INSERT INTO audit_log (seq, ts, tenant, action, actor, subject_hash, details,
                           prev_hash, hash)
    SELECT * FROM unnest($34::int8[], $35::text[], $36::text[], $37::text[], $38::text[],
                         $39::text[], $40::text[], $41::text[], $42::text[])
)",
    ),
    (
        Shape::LIFECYCLE,
        "lifecycle AS (
    INSERT INTO lifecycle_events (id, tenant, session_id, session_key, from_status,
                                  to_status, at, reason)
    SELECT * FROM unnest($43::uuid[], $44::text[], $45::uuid[], $46::text[], $47::text[],
                         $48::text[], $49::timestamptz[], $50::text[])
         AS t(id, tenant, session_id, session_key, from_status, to_status, at, reason)
    WHERE t.session_id IS NULL OR t.session_id NOT IN (SELECT id FROM lost)
)",
    ),
];

/// Hot sessions (`Store::lock_session`) hold their row `FOR UPDATE` while
/// they read, number and write. An optimistic batch must meet that lock
/// before it inserts anything for the session: the foreign key checks take
/// `FOR KEY SHARE` too, but only at the end of the statement, after the
/// rows (and their `UNIQUE (session_id, seq)` entries) are in — the locked
/// unit would then wait for the batch's seq, the batch for the lock, and
/// PostgreSQL would break the deadlock after a second. So `held` takes
/// `FOR KEY SHARE` on the rows of the batch's sessions first: entries,
/// handoffs and acceptances wait on it through `GATE`, an uncorrelated
/// subquery evaluated once before their first row. `FOR KEY SHARE` does not
/// conflict with itself: optimistic batches never wait for each other.
/// Sessions the batch registers have no row yet and are not held (nobody
/// else knows their id).
const HELD: &str = "held AS (
    SELECT id FROM sessions WHERE id = ANY($12::uuid[] || $21::uuid[]) FOR KEY SHARE
)";
const HELD_WITH_ACCEPTS: &str = "held AS (
    SELECT id FROM sessions
    WHERE id = ANY($12::uuid[] || $21::uuid[]
                   || ARRAY(SELECT session_id FROM handoffs WHERE id = ANY($31::uuid[])))
    FOR KEY SHARE
)";
const AFTER_HELD: &str = "/*after held*/";
const GATE: &str = " AND (SELECT count(*) FROM held) >= 0";

/// `lost` of a batch without session rows: none.
const NO_LOST: &str = "lost AS (SELECT NULL::uuid AS id WHERE false)";

/// The final SELECT's casts fail (aborting the statement) only when an
/// acceptance found its handoff no longer pending, or a registration lost
/// and the caller wants all or nothing; they depend on the CTEs, so they
/// are not folded early.
const ACCEPTS_CHECK: &str = "WHEN n <> $52 THEN ('write_conflict ' || n)::int ";
const LOST_CHECK: &str = "WHEN NOT $54 AND lost IS NOT NULL \
     THEN ('write_conflict registrations ' || cardinality(lost))::int";

/// One execution's parameters, column by column.
#[derive(Default)]
struct Columns<'a> {
    deletes: Vec<Uuid>,
    // sessions
    s_id: Vec<Uuid>,
    s_tenant: Vec<&'a str>,
    s_key: Vec<&'a str>,
    s_agent: Vec<&'a str>,
    s_status: Vec<&'a str>,
    s_metadata: Vec<Option<String>>,
    s_created: Vec<DateTime<Utc>>,
    s_active: Vec<DateTime<Utc>>,
    s_last_seq: Vec<i64>,
    s_summary: Vec<String>,
    s_fresh: Vec<bool>,
    // context entries
    e_session: Vec<Uuid>,
    e_seq: Vec<i64>,
    e_id: Vec<Uuid>,
    e_type: Vec<&'a str>,
    e_content: Vec<&'a [u8]>,
    e_metadata: Vec<Option<String>>,
    e_created: Vec<DateTime<Utc>>,
    /// The search index's words (see `search_words`).
    e_search: Vec<super::search_words::TsVector>,
    // handoffs
    h_id: Vec<Uuid>,
    h_tenant: Vec<&'a str>,
    h_session: Vec<Uuid>,
    h_key: Vec<&'a str>,
    h_source: Vec<&'a str>,
    h_target: Vec<&'a str>,
    h_type: Vec<&'a str>,
    h_status: Vec<&'a str>,
    h_data: Vec<Option<String>>,
    h_summary: Vec<String>,
    h_entries: Vec<i64>,
    h_created: Vec<DateTime<Utc>>,
    // accepted handoffs
    a_id: Vec<Uuid>,
    a_agent: Vec<&'a str>,
    a_at: Vec<DateTime<Utc>>,
    // audit rows
    l_seq: Vec<i64>,
    l_ts: Vec<&'a str>,
    l_tenant: Vec<&'a str>,
    l_action: Vec<&'a str>,
    l_actor: Vec<Option<&'a str>>,
    l_subject: Vec<Option<&'a str>>,
    l_details: Vec<&'a str>,
    l_prev: Vec<&'a str>,
    l_hash: Vec<&'a str>,
    // lifecycle events
    v_id: Vec<Uuid>,
    v_tenant: Vec<&'a str>,
    v_session: Vec<Option<Uuid>>,
    v_key: Vec<Option<&'a str>>,
    v_from: Vec<&'a str>,
    v_to: Vec<&'a str>,
    v_at: Vec<DateTime<Utc>>,
    v_reason: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    /// Everything of the batch but its entries.
    fn rows(units: &[&'a CommitUnit]) -> Self {
        let mut c = Columns {
            deletes: units.iter().filter_map(|u| u.delete).collect(),
            ..Default::default()
        };

        // Sequential upserts guarded by `last_seq >=` leave the last row with
        // the highest last_seq; keep just that one per id.
        let mut sessions: Vec<(&SessionRow, bool)> = Vec::new();
        let mut at: HashMap<Uuid, usize> = HashMap::new();
        for u in units.iter().copied() {
            let Some(s) = u.session.as_ref() else {
                continue;
            };
            match at.get(&s.id) {
                Some(&i) => {
                    let fresh = sessions[i].1 || u.session_is_new;
                    if s.last_seq >= sessions[i].0.last_seq {
                        sessions[i].0 = s;
                    }
                    sessions[i].1 = fresh;
                }
                None => {
                    at.insert(s.id, sessions.len());
                    sessions.push((s, u.session_is_new));
                }
            }
        }
        for (s, fresh) in sessions {
            c.s_fresh.push(fresh);
            c.s_id.push(s.id);
            c.s_tenant.push(&s.tenant);
            c.s_key.push(&s.session_key);
            c.s_agent.push(&s.agent_from);
            c.s_status.push(s.status.as_str());
            c.s_metadata.push(json_text(&s.metadata));
            c.s_created.push(s.created_at);
            c.s_active.push(s.last_activity_at);
            c.s_last_seq.push(s.last_seq);
            c.s_summary
                .push(serde_json::to_string(&s.summary).unwrap_or_else(|_| "{}".into()));
        }

        for h in units.iter().copied().flat_map(|u| u.handoffs.iter()) {
            c.h_id.push(h.id);
            c.h_tenant.push(&h.tenant);
            c.h_session.push(h.session_id);
            c.h_key.push(&h.session_key);
            c.h_source.push(&h.source_agent);
            c.h_target.push(&h.target_agent);
            c.h_type.push(h.request_type.as_str());
            c.h_status.push(&h.status);
            c.h_data.push(json_text(&h.request_data));
            c.h_summary.push(json_string(&h.context_summary));
            c.h_entries.push(h.context_entries);
            c.h_created.push(h.created_at);
        }

        for a in units.iter().copied().flat_map(|u| u.accepts.iter()) {
            c.a_id.push(a.id);
            c.a_agent.push(&a.agent);
            c.a_at.push(a.at);
        }

        for a in units.iter().copied().flat_map(|u| u.audit.iter()) {
            c.l_seq.push(a.seq);
            c.l_ts.push(&a.ts);
            c.l_tenant.push(&a.tenant);
            c.l_action.push(&a.action);
            c.l_actor.push(a.actor.as_deref());
            c.l_subject.push(a.subject_hash.as_deref());
            c.l_details.push(&a.details);
            c.l_prev.push(&a.prev_hash);
            c.l_hash.push(&a.hash);
        }

        for e in units.iter().copied().flat_map(|u| u.lifecycle.iter()) {
            c.v_id.push(e.id);
            c.v_tenant.push(&e.tenant);
            c.v_session.push(e.session_id);
            c.v_key.push(e.session_key.as_deref());
            c.v_from.push(e.from.as_str());
            c.v_to.push(e.to.as_str());
            c.v_at.push(e.at);
            c.v_reason.push(&e.reason);
        }
        c
    }

    fn entry(&mut self, e: &'a EntryRow, metadata: Option<String>) {
        self.e_session.push(e.session_id);
        self.e_seq.push(e.seq);
        self.e_id.push(e.id);
        self.e_type.push(e.context_type.as_str());
        self.e_content.push(e.content.as_bytes());
        self.e_metadata.push(metadata);
        self.e_created.push(e.created_at);
        self.e_search
            .push(super::search_words::tsvector(&e.content));
    }

    /// The groups this execution writes.
    fn shape(&self) -> Shape {
        let groups = [
            (!self.deletes.is_empty(), Shape::DELETES),
            (!self.s_id.is_empty(), Shape::SESSIONS),
            (!self.e_session.is_empty(), Shape::ENTRIES),
            (!self.h_id.is_empty(), Shape::HANDOFFS),
            (!self.a_id.is_empty(), Shape::ACCEPTS),
            (!self.l_seq.is_empty(), Shape::AUDIT),
            (!self.v_id.is_empty(), Shape::LIFECYCLE),
        ];
        Shape(
            groups
                .iter()
                .filter(|(present, _)| *present)
                .map(|(_, g)| g)
                .sum(),
        )
    }

    /// Runs the statement; the ids of new sessions whose registration lost
    /// (only when `partial`: otherwise such a loss aborts it).
    async fn execute(
        self,
        conn: &mut PgConnection,
        partial: bool,
    ) -> Result<Vec<Uuid>, StoreError> {
        let accepts = self.a_id.len() as i64;
        let row = sqlx::query(batch_sql(self.shape()))
            .bind(self.deletes)
            .bind(self.s_id)
            .bind(self.s_tenant)
            .bind(self.s_key)
            .bind(self.s_agent)
            .bind(self.s_status)
            .bind(self.s_metadata)
            .bind(self.s_created)
            .bind(self.s_active)
            .bind(self.s_last_seq)
            .bind(self.s_summary)
            .bind(self.e_session)
            .bind(self.e_seq)
            .bind(self.e_id)
            .bind(self.e_type)
            .bind(self.e_content)
            .bind(self.e_metadata)
            .bind(self.e_created)
            .bind(self.h_id)
            .bind(self.h_tenant)
            .bind(self.h_session)
            .bind(self.h_key)
            .bind(self.h_source)
            .bind(self.h_target)
            .bind(self.h_type)
            .bind(self.h_status)
            .bind(self.h_data)
            .bind(self.h_summary)
            .bind(self.h_entries)
            .bind(self.h_created)
            .bind(self.a_id)
            .bind(self.a_agent)
            .bind(self.a_at)
            .bind(self.l_seq)
            .bind(self.l_ts)
            .bind(self.l_tenant)
            .bind(self.l_action)
            .bind(self.l_actor)
            .bind(self.l_subject)
            .bind(self.l_details)
            .bind(self.l_prev)
            .bind(self.l_hash)
            .bind(self.v_id)
            .bind(self.v_tenant)
            .bind(self.v_session)
            .bind(self.v_key)
            .bind(self.v_from)
            .bind(self.v_to)
            .bind(self.v_at)
            .bind(self.v_reason)
            .bind(self.s_fresh)
            .bind(accepts)
            .bind(self.e_search)
            .bind(partial)
            .fetch_one(&mut *conn)
            .await
            .map_err(classify_write)?;
        let lost: Option<Vec<Uuid>> = row
            .try_get("lost")
            .map_err(|e| StoreError::Rejected(format!("batch result: {e}")))?;
        Ok(lost.unwrap_or_default())
    }
}

/// One batch, all or nothing: one execution of the batch statement (one
/// round trip, implicit transaction) when its entries fit in
/// `chunk_bytes`, else `BEGIN`, one execution per chunk of entries (the
/// first also carrying the sessions, handoffs and audit rows), `COMMIT`. `in_transaction` tells the
/// caller whether a failure left an explicit transaction to roll back.
async fn write_batch(
    conn: &mut PgConnection,
    units: &[&CommitUnit],
    chunk_bytes: usize,
    partial: bool,
    in_transaction: &mut bool,
    in_outer_transaction: bool,
) -> Result<Vec<Uuid>, StoreError> {
    let mut chunks = vec![Columns::rows(units)];
    let mut bytes = 0usize;
    for e in units.iter().copied().flat_map(|u| u.entries.iter()) {
        let metadata = json_text(&e.metadata);
        let size = e.content.len() + metadata.as_ref().map_or(0, String::len);
        if bytes > 0 && bytes + size > chunk_bytes {
            chunks.push(Columns::default());
            bytes = 0;
        }
        bytes += size;
        chunks.last_mut().expect("a chunk").entry(e, metadata);
    }
    if chunks.len() == 1 || in_outer_transaction {
        let mut lost = Vec::new();
        for chunk in chunks {
            lost.extend(chunk.execute(conn, partial).await?);
        }
        return Ok(lost);
    }
    if chunks.len() == 1 {
        return chunks
            .pop()
            .expect("one chunk")
            .execute(conn, partial)
            .await;
    }
    conn.execute(sqlx::raw_sql("BEGIN"))
        .await
        .map_err(classify)?;
    *in_transaction = true;
    // Sessions travel in the first chunk: a lost one is known there, and
    // its entries in later chunks fail their foreign key (the whole batch
    // is then retried unit by unit).
    let mut lost = Vec::new();
    for chunk in chunks {
        lost.extend(chunk.execute(conn, partial).await?);
    }
    conn.execute(sqlx::raw_sql("COMMIT"))
        .await
        .map_err(classify)?;
    *in_transaction = false;
    Ok(lost)
}

#[async_trait]
impl Database for PgDb {
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
        let rows = if let Some(types) = q.types {
            let types: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
            sqlx::query(
                "SELECT id, seq, context_type, content, metadata, created_at FROM (
                     SELECT id, seq, context_type, content, metadata, created_at,
                            row_number() OVER (ORDER BY seq) AS n,
                            coalesce(sum(octet_length(content)) OVER (ORDER BY seq
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
                     FROM context_entries
                     WHERE session_id = $1 AND seq > $2 AND context_type = ANY($5::text[])
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
        } else {
            sqlx::query(
                "SELECT id, seq, context_type, content, metadata, created_at FROM (
                     SELECT id, seq, context_type, content, metadata, created_at,
                            row_number() OVER (ORDER BY seq) AS n,
                            coalesce(sum(octet_length(content)) OVER (ORDER BY seq
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
                     FROM context_entries
                     WHERE session_id = $1 AND seq > $2
                     ORDER BY seq LIMIT $3) page
                 WHERE n <= 2 OR before * 2 <= $4 ORDER BY seq",
            )
            .bind(id)
            .bind(q.after)
            .bind(q.limit as i64 + 1)
            .bind(i64::try_from(q.max_bytes).unwrap_or(i64::MAX))
            .fetch_all(&mut *conn)
            .await
        }
        .map_err(classify)?;
        let mut entries = Vec::with_capacity(rows.len().min(q.limit as usize));
        let mut bytes = 0usize;
        let mut has_more = false;
        for r in rows {
            let content = content_of(&r)?;
            let cost = super::encoded_cost(&content);
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

    async fn audit_rows(&self) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, ts, tenant, action, actor, subject_hash, details, prev_hash, hash
             FROM audit_log ORDER BY seq",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows.iter().map(audit_from_row).collect())
    }

    async fn setting_or_init(&self, key: &str, init: &str) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(init)
        .execute(&self.reader)
        .await
        .map_err(classify)?;
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(&self.reader)
            .await
            .map_err(classify)
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    async fn insert_api_key(&self, k: &super::ApiKeyRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant, scope, agent, name, hash, created_ms, \
             last_used_ms, expires_ms, revoked_ms, replaced_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
        .execute(&self.reader)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn api_key(&self, id: &str) -> Result<Option<super::ApiKeyRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM api_keys WHERE id = $1",
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
            "UPDATE api_keys SET revoked_ms = COALESCE($1, revoked_ms), \
             expires_ms = COALESCE($2, expires_ms), replaced_by = COALESCE($3, replaced_by) \
             WHERE id = $4",
        )
        .bind(revoked_ms)
        .bind(expires_ms)
        .bind(replaced_by)
        .bind(id)
        .execute(&self.reader)
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
        sqlx::query("DELETE FROM http_sessions WHERE expires_ms < $1")
            .bind(now_ms)
            .execute(&self.reader)
            .await
            .map_err(classify)?;
        sqlx::query(
            "INSERT INTO http_sessions (id_hash, tenant, init_params, expires_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id_hash) DO UPDATE SET \
             tenant = COALESCE(http_sessions.tenant, excluded.tenant), \
             init_params = COALESCE(excluded.init_params, http_sessions.init_params), \
             expires_ms = excluded.expires_ms",
        )
        .bind(id_hash)
        .bind(tenant)
        .bind(init_params)
        .bind(expires_ms)
        .execute(&self.reader)
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
            "SELECT tenant, init_params FROM http_sessions WHERE id_hash = $1 AND expires_ms > $2",
        )
        .bind(id_hash)
        .bind(now_ms)
        .fetch_optional(&self.reader)
        .await
        .map_err(classify)
    }

    async fn delete_http_session(&self, id_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM http_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.reader)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn touch_api_key(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET last_used_ms = $1 WHERE id = $2")
            .bind(at_ms)
            .bind(id)
            .execute(&self.reader)
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Read on the commit connection itself (the pool's readers run the
    /// same set-up, but only the writer's setting makes acks durable); a
    /// writer lost to a failure is reconnected as the next batch would.
    async fn writer_durability(&self) -> Result<Value, StoreError> {
        let mut slot = self.writer.lock().await;
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => connect(&self.opts, true).await.map_err(classify)?,
        };
        let r: Result<String, _> = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&mut conn)
            .await;
        match r {
            Ok(v) => {
                *slot = Some(conn);
                Ok(serde_json::json!({ "synchronous_commit": v }))
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn lifecycle_candidates(
        &self,
        statuses: &[&str],
        idle_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Candidate>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant, session_key FROM sessions
             WHERE status = ANY($1) AND last_activity_at < $2
             ORDER BY last_activity_at LIMIT $3",
        )
        .bind(statuses)
        .bind(idle_before)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
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
             WHERE tenant = $1 ORDER BY id DESC LIMIT $2",
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
                at: time_of(r, "at"),
                reason: r.get("reason"),
            })
            .collect())
    }

    async fn prune_job_records(&self, before: DateTime<Utc>) -> Result<(u64, u64), StoreError> {
        let events = sqlx::query("DELETE FROM lifecycle_events WHERE at < $1")
            .bind(before)
            .execute(&self.reader)
            .await
            .map_err(classify)?;
        let rollups = sqlx::query("DELETE FROM analytics_rollups WHERE at < $1")
            .bind(before)
            .execute(&self.reader)
            .await
            .map_err(classify)?;
        Ok((events.rows_affected(), rollups.rows_affected()))
    }

    /// Nothing to do: autovacuum and the server's checkpointer look after
    /// PostgreSQL.
    async fn maintenance(&self) -> Result<Value, StoreError> {
        Ok(serde_json::json!({"postgres": "nothing to do (autovacuum)"}))
    }

    async fn analytics_rollup(&self) -> Result<Value, StoreError> {
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
        sqlx::query("INSERT INTO analytics_rollups (id, at, counts) VALUES ($1, now(), $2::json)")
            .bind(Uuid::now_v7())
            .bind(counts.to_string())
            .execute(&self.reader)
            .await
            .map_err(classify)?;
        Ok(counts)
    }

    async fn job_configs(&self) -> Result<Vec<(String, Value)>, StoreError> {
        let rows = sqlx::query("SELECT job_name, config::text AS config FROM job_configs")
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
        config: &Value,
        updated_at: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO job_configs (job_name, config, updated_at)
             VALUES ($1, $2::json, $3::timestamptz)
             ON CONFLICT (job_name) DO UPDATE SET config = excluded.config,
             updated_at = excluded.updated_at",
        )
        .bind(job)
        .bind(config.to_string())
        .bind(updated_at)
        .execute(&self.reader)
        .await
        .map(|_| ())
        .map_err(classify)
    }

    async fn list_handoffs(
        &self,
        tenant: &str,
        target: &str,
        status: Option<&str>,
        before_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<HandoffListing>, StoreError> {
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
    ) -> Result<Option<HandoffListing>, StoreError> {
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
    ) -> Result<Vec<HandoffListing>, StoreError> {
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

    // Analytics: see `postgres_analytics`.
    async fn session_analytics(
        &self,
        tenant: &str,
        since: &str,
    ) -> Result<SessionAnalytics, StoreError> {
        postgres_analytics::sessions(&self.reader, tenant, since_time(since)?).await
    }

    async fn handoff_analytics(&self, tenant: &str) -> Result<HandoffAnalytics, StoreError> {
        postgres_analytics::handoffs(&self.reader, tenant).await
    }

    async fn context_analytics(
        &self,
        tenant: &str,
        since: &str,
    ) -> Result<ContextAnalytics, StoreError> {
        postgres_analytics::context(&self.reader, tenant, since_time(since)?).await
    }

    async fn database_size(&self) -> Result<Vec<Counted>, StoreError> {
        postgres_analytics::size(&self.reader).await
    }

    // Configuration: see `postgres_config`.
    async fn config_overrides(&self) -> Result<Vec<ConfigOverride>, StoreError> {
        postgres_config::overrides(&self.reader).await
    }

    async fn replace_config_overrides(&self, rows: &[ConfigOverride]) -> Result<(), StoreError> {
        postgres_config::replace_overrides(&self.reader, rows).await
    }

    async fn insert_config_backup(
        &self,
        backup: &ConfigBackup,
        keep: u32,
    ) -> Result<Vec<String>, StoreError> {
        postgres_config::insert_backup(&self.reader, backup, keep).await
    }

    async fn config_backups(&self) -> Result<Vec<ConfigBackupInfo>, StoreError> {
        postgres_config::backups(&self.reader).await
    }

    async fn config_backup(&self, id: &str) -> Result<Option<ConfigBackup>, StoreError> {
        postgres_config::backup(&self.reader, id).await
    }

    async fn delete_config_backup(&self, id: &str) -> Result<bool, StoreError> {
        postgres_config::delete_backup(&self.reader, id).await
    }

    /// See `postgres_search`.
    async fn search(
        &self,
        tenant: &str,
        query: &str,
        session_key: Option<&str>,
        agent: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SearchHit>, StoreError> {
        super::postgres_search::search(&self.reader, tenant, query, session_key, agent, limit).await
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

/// Adapter tests against a scratch database; they run in the PostgreSQL pass
/// of the suite (`HANDOFF_TEST_BACKEND=postgres`) and skip otherwise.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use handoff_actors::model::{HandoffAccept, HandoffRow, HandoffType};
    use serde_json::json;

    use super::*;

    /// A fresh database on the test server, dropped with psql on drop.
    struct Scratch {
        server: String,
        name: String,
    }

    impl Scratch {
        /// The test server (`HANDOFF_TEST_PG_URL`) is a prerequisite of
        /// the suite on either backend: these tests always run.
        async fn open() -> (Scratch, PgDb) {
            let server = std::env::var("HANDOFF_TEST_PG_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
                .trim_end_matches('/')
                .to_string();
            let name = format!("handoff_unit_{}", Uuid::new_v4().simple());
            let mut admin = PgConnection::connect(&format!("{server}/postgres"))
                .await
                .expect("connect to the test PostgreSQL server");
            admin
                .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .await
                .expect("create database");
            let scratch = Scratch { server, name };
            let db = PgDb::open(&scratch.url(), true).await.expect("open");
            (scratch, db)
        }

        fn url(&self) -> String {
            format!("{}/{}", self.server, self.name)
        }

        async fn drop_now(&self) {
            let mut admin = PgConnection::connect(&format!("{}/postgres", self.server))
                .await
                .expect("connect");
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                )))
                .await
                .expect("drop database");
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::process::Command::new("psql")
                .arg(format!("{}/postgres", self.server))
                .args(["-X", "-q", "-c"])
                .arg(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .output();
        }
    }

    /// A time with microseconds, as the actors make them.
    fn t(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(1_790_000_000_000_000 + micros).unwrap()
    }

    fn session(id: Uuid, key: &str, last_seq: i64) -> SessionRow {
        SessionRow {
            id,
            tenant: Arc::from("t"),
            session_key: Arc::from(key),
            agent_from: "agent-a".into(),
            status: SessionStatus::Active,
            metadata: Some(json!({"z": 1, "a": "nul\u{0}", "n": 1.5})),
            created_at: t(1),
            last_activity_at: t(2),
            last_seq,
            summary: Summary::with_participant("agent-a"),
        }
    }

    fn entry(session_id: Uuid, seq: i64, content: &str) -> EntryRow {
        EntryRow {
            session_id,
            seq,
            id: Uuid::now_v7(),
            context_type: ContextType::Message,
            content: content.into(),
            metadata: (seq % 2 == 0).then(|| json!({"seq": seq, "q": "\"\u{0}"})),
            created_at: t(100 + seq),
        }
    }

    /// A unit that registers `session` (a new row).
    fn unit(session: Option<SessionRow>, entries: Vec<EntryRow>) -> CommitUnit {
        CommitUnit {
            session_is_new: session.is_some(),
            session,
            entries,
            ..Default::default()
        }
    }

    /// A unit that checkpoints an existing session row.
    fn checkpoint(session: SessionRow) -> CommitUnit {
        CommitUnit {
            session: Some(session),
            ..Default::default()
        }
    }

    async fn tail(db: &PgDb, key: &str) -> Vec<(i64, String)> {
        let (_, tail) = db.load_session("t", key).await.unwrap().unwrap();
        tail.into_iter().map(|e| (e.seq, e.content)).collect()
    }

    #[tokio::test]
    async fn a_batch_round_trips_exactly() {
        let (scratch, db) = Scratch::open().await;
        let id = Uuid::now_v7();
        let row = session(id, "k", 1);
        let entries: Vec<EntryRow> = ["first", "nul\u{0} \"quoted\" é 😀", "line\nbreak\\"]
            .iter()
            .enumerate()
            .map(|(i, c)| entry(id, i as i64 + 1, c))
            .collect();
        let handoff = HandoffRow {
            id: Uuid::now_v7(),
            tenant: Arc::from("t"),
            session_id: id,
            session_key: Arc::from("k"),
            source_agent: "agent-a".into(),
            target_agent: "agent-b".into(),
            request_type: HandoffType::Collaboration,
            status: "pending".into(),
            request_data: Some(json!({"instructions": "go"})),
            context_summary: json!({"total": 3}),
            context_entries: 3,
            created_at: t(7),
        };
        let audit = AuditRow {
            seq: 1,
            ts: rfc3339(&t(8)),
            tenant: "t".into(),
            action: "session.registered".into(),
            actor: Some("agent-a".into()),
            subject_hash: None,
            details: "{}".into(),
            prev_hash: "0".into(),
            hash: "h1".into(),
        };
        let mut u = unit(Some(row.clone()), entries.clone());
        u.handoffs.push(handoff.clone());
        u.audit.push(audit.clone());
        db.commit(&[&u]).await.unwrap();

        let (back, tail) = db.load_session("t", "k").await.unwrap().unwrap();
        assert_eq!(back.id, id);
        assert_eq!(back.metadata, row.metadata);
        assert_eq!(back.created_at, row.created_at);
        assert_eq!(back.last_activity_at, row.last_activity_at);
        assert_eq!(back.last_seq, 1);
        assert_eq!(back.summary.handoffs, 1, "handoffs are counted on load");
        assert_eq!(tail.len(), 2, "the entries after the checkpoint");
        for (got, want) in tail.iter().zip(&entries[1..]) {
            assert_eq!(
                (got.seq, got.id, &got.content, &got.metadata, got.created_at),
                (
                    want.seq,
                    want.id,
                    &want.content,
                    &want.metadata,
                    want.created_at
                )
            );
        }
        assert_eq!(db.audit_head().await.unwrap(), Some(audit.clone()));
        assert_eq!(db.audit_rows().await.unwrap(), vec![audit]);

        let page = db
            .context_page(
                "t",
                "k",
                PageQuery {
                    after: 0,
                    limit: 10,
                    types: None,
                    max_bytes: 1 << 20,
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert!(!page.has_more);
        let want: Vec<_> = entries
            .iter()
            .map(|e| (e.id.to_string(), e.content.clone(), rfc3339(&e.created_at)))
            .collect();
        let got: Vec<_> = page
            .entries
            .iter()
            .map(|e| (e.id.clone(), e.content.clone(), e.created_at.clone()))
            .collect();
        assert_eq!(
            got, want,
            "timestamps read back as the strings SQLite keeps"
        );

        let (list, total) = db.list_sessions("t", None, 10).await.unwrap();
        assert_eq!(total, 1);
        assert_eq!(list[0].created_at, rfc3339(&row.created_at));
        let h = db
            .get_handoff("t", &handoff.id.to_string())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(h.created_at, rfc3339(&handoff.created_at));
        assert_eq!(h.request_data, handoff.request_data);
        assert!(db
            .get_handoff("t", &handoff.id.to_string().to_uppercase())
            .await
            .unwrap()
            .is_none());

        // A later checkpoint wins; an older one never overwrites it.
        let mut newer = row.clone();
        newer.last_seq = 3;
        newer.status = SessionStatus::Completed;
        let mut older = row.clone();
        older.last_seq = 2;
        let accept = HandoffAccept {
            id: handoff.id,
            agent: "agent-b".into(),
            at: t(9),
        };
        let mut u1 = checkpoint(newer);
        u1.accepts.push(accept);
        let u2 = checkpoint(older.clone());
        db.commit(&[&u1, &u2]).await.unwrap();
        db.commit(&[&checkpoint(older)]).await.unwrap();
        let (back, _) = db.load_session("t", "k").await.unwrap().unwrap();
        assert_eq!((back.last_seq, back.status), (3, SessionStatus::Completed));
        let h = db
            .list_handoffs("t", "agent-b", Some("accepted"), None, 10)
            .await
            .unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].accepted_at, Some(rfc3339(&t(9))));
        scratch.drop_now().await;
    }

    #[tokio::test]
    async fn a_refused_batch_leaves_nothing_and_the_next_one_commits() {
        let (scratch, db) = Scratch::open().await;
        let id = Uuid::now_v7();
        db.commit(&[&unit(Some(session(id, "k", 0)), vec![entry(id, 1, "one")])])
            .await
            .unwrap();
        // Unit A is fine, unit B repeats sequence number 1.
        let a = unit(None, vec![entry(id, 2, "two")]);
        let b = unit(None, vec![entry(id, 1, "again")]);
        match db.commit(&[&a, &b]).await {
            // A taken sequence number is a lost race (another writer).
            Err(StoreError::Conflict(m)) => assert!(m.contains("duplicate key"), "{m}"),
            other => panic!("expected Conflict, got {other:?}"),
        }
        assert_eq!(tail(&db, "k").await, vec![(1, "one".to_string())]);
        // An entry of a session that does not exist (deleted by another
        // writer): a foreign key, also a lost race.
        let orphan = unit(None, vec![entry(Uuid::now_v7(), 1, "x")]);
        assert!(matches!(
            db.commit(&[&orphan]).await,
            Err(StoreError::Conflict(_))
        ));
        // The writer was closed after each failure; the next batch reconnects.
        db.commit(&[&a]).await.unwrap();
        assert_eq!(
            tail(&db, "k").await,
            vec![(1, "one".to_string()), (2, "two".to_string())]
        );
        scratch.drop_now().await;
    }

    /// Every shape of the batch statement commits, also past the first
    /// executions (planned with the parameters' values, where a constant
    /// failing branch would be evaluated up front) on one connection.
    #[tokio::test]
    async fn each_batch_shape_commits_again_and_again() {
        let (scratch, db) = Scratch::open().await;
        let id = Uuid::now_v7();
        db.commit(&[&unit(Some(session(id, "k", 0)), vec![])])
            .await
            .unwrap();
        let mut seq = 0;
        for round in 0..8 {
            let fresh = Uuid::now_v7();
            let key = format!("fresh-{round}");
            seq += 1;
            let e1 = entry(id, seq, &format!("bare {seq}"));
            seq += 1;
            let with_row = unit(None, vec![entry(id, seq, &format!("with row {seq}"))]);
            let with_row = CommitUnit {
                session: Some(session(id, "k", seq)),
                ..with_row
            };
            let shapes: [Vec<CommitUnit>; 4] = [
                vec![unit(Some(session(fresh, &key, 0)), vec![])],
                vec![unit(None, vec![e1])],
                vec![with_row],
                vec![CommitUnit {
                    delete: Some(fresh),
                    ..Default::default()
                }],
            ];
            for units in &shapes {
                let units: Vec<&CommitUnit> = units.iter().collect();
                db.commit(&units).await.expect("commits");
            }
        }
        let stored: Vec<i64> = sqlx::query_scalar(
            "SELECT seq FROM context_entries WHERE session_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&db.reader)
        .await
        .unwrap();
        assert_eq!(stored, (1..=16).collect::<Vec<i64>>());
        let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
            .fetch_one(&db.reader)
            .await
            .unwrap();
        assert_eq!(sessions, 1, "each fresh session was deleted again");
        scratch.drop_now().await;
    }

    #[tokio::test]
    async fn a_split_batch_is_still_one_transaction() {
        let (scratch, mut db) = Scratch::open().await;
        db.chunk_bytes = 8; // every entry in its own execution
        let id = Uuid::now_v7();
        let first: Vec<EntryRow> = (1..=5).map(|i| entry(id, i, "0123456789")).collect();
        db.commit(&[&unit(Some(session(id, "k", 0)), first)])
            .await
            .unwrap();
        assert_eq!(tail(&db, "k").await.len(), 5);
        // The duplicate comes in the last chunk: the earlier chunks roll back.
        let bad = unit(
            None,
            vec![
                entry(id, 6, "0123456789"),
                entry(id, 7, "0123456789"),
                entry(id, 3, "0123456789"),
            ],
        );
        assert!(matches!(
            db.commit(&[&bad]).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(tail(&db, "k").await.len(), 5);
        let good = unit(
            None,
            vec![entry(id, 6, "0123456789"), entry(id, 7, "0123456789")],
        );
        db.commit(&[&good]).await.unwrap();
        assert_eq!(tail(&db, "k").await.len(), 7);
        scratch.drop_now().await;
    }

    /// The page rule of the SQLite adapter, applied to all entries.
    fn reference_page(entries: &[EntryRow], q: &PageQuery<'_>) -> (Vec<i64>, bool) {
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in entries
            .iter()
            .filter(|e| e.seq > q.after)
            .filter(|e| q.types.is_none_or(|t| t.contains(&e.context_type)))
        {
            let cost = super::super::encoded_cost(&e.content);
            if out.len() == q.limit as usize || (!out.is_empty() && bytes + cost > q.max_bytes) {
                return (out, true);
            }
            bytes += cost;
            out.push(e.seq);
        }
        (out, false)
    }

    #[tokio::test]
    async fn pages_keep_the_encoded_size_budget() {
        let (scratch, db) = Scratch::open().await;
        let id = Uuid::now_v7();
        let entries: Vec<EntryRow> = (1..=40)
            .map(|i| {
                let mut e = entry(id, i, &"ab\"\n".repeat((i as usize * 7) % 23 + 1));
                if i % 3 == 0 {
                    e.context_type = ContextType::File;
                }
                e
            })
            .collect();
        db.commit(&[&unit(Some(session(id, "k", 40)), entries.clone())])
            .await
            .unwrap();
        let files = [ContextType::File];
        for types in [None, Some(&files[..])] {
            for after in [0, 7] {
                for limit in [1, 3, 1000] {
                    for max_bytes in [0, 1, 20, 64, 200, 1000, 100_000] {
                        let q = PageQuery {
                            after,
                            limit,
                            types,
                            max_bytes,
                        };
                        let want = reference_page(&entries, &q);
                        let page = db.context_page("t", "k", q).await.unwrap().unwrap();
                        let got: Vec<i64> =
                            page.entries.iter().map(|e| e.sequence_number).collect();
                        assert_eq!(
                            (got, page.has_more),
                            want,
                            "after {after} limit {limit} max {max_bytes} {types:?}"
                        );
                    }
                }
            }
        }
        scratch.drop_now().await;
    }

    #[tokio::test]
    async fn a_lost_database_is_unavailable() {
        let (scratch, db) = Scratch::open().await;
        db.ping().await.unwrap();
        scratch.drop_now().await; // terminates our connections too
        let id = Uuid::now_v7();
        let r = db.commit(&[&unit(Some(session(id, "k", 0)), vec![])]).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        assert!(matches!(db.ping().await, Err(StoreError::Unavailable(_))));
    }

    /// The search words travel in tsvector's binary form: PostgreSQL must
    /// read back exactly the vector that its own text input gives for the
    /// same words (sorted lexemes, positions, limits), with no error.
    #[tokio::test]
    async fn binary_search_words_are_the_vectors_text_input_gives() {
        let (scratch, db) = Scratch::open().await;
        let texts = [
            String::new(),
            "Fix src/auth.ts: auth TOKEN, then auth again".to_string(),
            "Ünïcødé 東京 zebra Zebra apple ÄPFEL 10 9 a1 1a".to_string(),
            "w ".repeat(20_000),
            format!("{}z z tail", "y ".repeat(17_000)),
            format!("a {} b", "x".repeat(3000)),
        ];
        for text in &texts {
            let v = crate::storage::search_words::tsvector(text);
            let row = sqlx::query(
                "SELECT $1::tsvector::text AS bin, $2::tsvector::text AS txt, \
                        $1::tsvector = $2::tsvector AS same",
            )
            .bind(&v)
            .bind(v.to_text())
            .fetch_one(&db.reader)
            .await
            .expect("PostgreSQL reads the binary form");
            let (bin, txt): (String, String) = (row.get("bin"), row.get("txt"));
            assert!(
                row.get::<bool, _>("same"),
                "{text:.40}: {bin:.200} vs {txt:.200}"
            );
            assert_eq!(bin, txt, "{text:.40}");
            assert_eq!(bin, v.to_text(), "{text:.40}");
        }
        scratch.drop_now().await;
    }

    #[tokio::test]
    async fn tenants_see_only_their_own_rows() {
        let (scratch, db) = Scratch::open().await;
        crate::storage::analytics::isolation::check(&db).await;
        scratch.drop_now().await;
    }

    #[test]
    fn tls_only_when_the_url_names_an_ssl_mode() {
        assert!(!asks_for_ssl_mode("postgres://u@h/db"));
        assert!(!asks_for_ssl_mode("postgres://u@h/db?application_name=x"));
        assert!(asks_for_ssl_mode("postgres://u@h/db?sslmode=require"));
        assert!(asks_for_ssl_mode(
            "postgres://u@h/db?a=b&SSLMODE=verify-full"
        ));
        assert!(asks_for_ssl_mode("postgres://u@h/db?ssl-mode=prefer"));
    }

    #[test]
    fn descriptions_never_show_a_password() {
        for url in [
            "postgres://app:s3cret@db.example:6543/handoff",
            "postgresql://app@db.example:6543/handoff?password=s3cret",
        ] {
            let d = describe_opts(&PgConnectOptions::from_str(url).unwrap());
            assert_eq!(d, "postgres://app@db.example:6543/handoff");
        }
    }
}
