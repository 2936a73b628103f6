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
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, Row};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::logging::redact;
use crate::storage::Diagnostics;
use batch::write_batch;
use lock::PgLock;
use rows::{entry_from_row, session_from_row};

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
        // ~88 ms each (figures in docs/operations.md).
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
        let reader = pool_options(4)
            .after_connect(|conn, _| Box::pin(async move { setup(conn).await }))
            .connect_lazy_with(opts.clone());
        let locker = pool_options(LOCKER_CONNECTIONS)
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
        Ok(row.as_ref().map(crate::storage::audit_from_row))
    }

    /// The same lookup `accept_handoff` makes (tenant-scoped).
    async fn handoff_accepted(&self, tenant: &str, id: uuid::Uuid) -> Result<bool, StoreError> {
        let h = crate::storage::Sessions::get_handoff(self, tenant, &id.to_string()).await?;
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

/// A lazily connecting pool of at most `max` connections. sqlx pings a
/// connection before handing it out by default: a round trip (and a
/// PostgreSQL wake-up) per read. Only a connection that sat idle long
/// enough to have been cut is checked; a busy one that broke fails its
/// query, which is retryable, and is then dropped.
fn pool_options(max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
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

#[async_trait]
impl Diagnostics for PgDb {
    async fn audit_rows(&self) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, ts, tenant, action, actor, subject_hash, details, prev_hash, hash
             FROM audit_log ORDER BY seq",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows.iter().map(crate::storage::audit_from_row).collect())
    }

    fn describe(&self) -> String {
        self.name.clone()
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
}

/// Adapter tests against a scratch database; they run in the PostgreSQL pass
/// of the suite (`HANDOFF_TEST_BACKEND=postgres`) and skip otherwise.
#[cfg(test)]
mod tests;
