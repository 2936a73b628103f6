//! Storage adapters. The write path belongs to the actors (through the
//! `Store` port); reads that need no session state (context pages, listings)
//! come straight here, behind the same breaker and timeout.

pub mod analytics;
pub mod credentials;
pub mod postgres;
mod search_words;

pub use credentials::{api_key_from_row, ApiKeyRow, API_KEY_COLUMNS};
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use handoff_actors::breaker::{BreakerHandle, Dependency, Report};
use handoff_actors::model::{AuditRow, ContextType};
use handoff_actors::store::Store;
use handoff_actors::{HandoffError, StoreError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::analytics::{ContextAnalytics, Counted, HandoffAnalytics, SessionAnalytics};

/// One entry as read back.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    pub id: String,
    pub sequence_number: i64,
    pub context_type: String,
    pub content: String,
    pub metadata: Option<Value>,
    pub created_at: String,
}

#[derive(Debug, Clone)]
pub struct ContextPage {
    pub entries: Vec<StoredEntry>,
    pub has_more: bool,
}

#[derive(Debug, Clone)]
pub struct SessionListing {
    pub session_key: String,
    pub status: String,
    pub agent_from: String,
    pub created_at: String,
    pub last_activity_at: String,
}

/// A handoff as read back: the one record that storage returns, listings
/// and `accept_handoff` show, and the export writes (one line each). The
/// session actor writes its own `HandoffRow`, typed for the write.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffRecord {
    pub id: String,
    pub session_key: String,
    pub source_agent: String,
    pub target_agent: String,
    pub request_type: String,
    pub status: String,
    pub request_data: Option<Value>,
    /// The session's summary when the handoff was requested.
    pub context_summary: Value,
    pub context_entries: i64,
    pub created_at: String,
    pub accepted_at: Option<String>,
    pub accepted_by: Option<String>,
}

/// The `search_context` filters, the same clause on both adapters: the
/// session key, and an agent that registered the session or was the target
/// of one of its handoffs (`s` is the sessions row of the match).
fn push_search_filters<DB>(
    q: &mut sqlx::QueryBuilder<DB>,
    session_key: Option<&str>,
    agent: Option<&str>,
) where
    DB: sqlx::Database,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    if let Some(k) = session_key {
        q.push(" AND s.session_key = ").push_bind(k);
    }
    if let Some(a) = agent {
        q.push(" AND (s.agent_from = ")
            .push_bind(a)
            .push(" OR EXISTS (SELECT 1 FROM handoffs h WHERE h.session_id = s.id AND h.target_agent = ")
            .push_bind(a)
            .push("))");
    }
}

/// One full-text match (`Database::search`).
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub session_key: String,
    pub sequence_number: i64,
    pub context_type: String,
    /// An excerpt of the content around the matches, each match between
    /// `«` and `»`, elisions marked `…`.
    pub snippet: String,
    /// Relevance, higher is better (comparable within one result only).
    pub score: f64,
    pub created_at: String,
}

/// A stored override of one runtime-managed setting.
#[derive(Debug, Clone)]
pub struct ConfigOverride {
    /// `retention`, `monitoring`, …
    pub section: String,
    pub key: String,
    /// The JSON value (canonical form).
    pub value: Value,
    pub updated_at: String,
    pub updated_by: Option<String>,
}

/// A configuration backup without its body.
#[derive(Debug, Clone)]
pub struct ConfigBackupInfo {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: String,
    /// Keyed blake3 of `id` and `body` (`crate::audit::backup_checksum`).
    pub checksum: String,
    pub size_bytes: i64,
}

/// A configuration backup: the canonical JSON of every runtime-managed
/// section at the time it was taken.
#[derive(Debug, Clone)]
pub struct ConfigBackup {
    pub info: ConfigBackupInfo,
    pub body: String,
}

/// An optional JSON column's text, as both adapters bind it.
fn json_text(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(handoff_actors::model::json_string)
}

/// Bytes an entry's content costs in a reply line: once escaped in
/// `structuredContent` and twice in the text item that carries the same JSON
/// as a string. A page budget in raw bytes let a page of quote-heavy entries
/// grow past what clients accept in one line.
pub fn encoded_cost(content: &str) -> usize {
    let mut once = 0usize;
    let mut twice = 0usize;
    for b in content.bytes() {
        match b {
            b'"' | b'\\' => {
                once += 2; // \"
                twice += 4; // \\\"
            }
            b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => {
                once += 2; // \n
                twice += 3; // \\n
            }
            0..=0x1f => {
                once += 6; // \u0001
                twice += 7; // \\u0001
            }
            _ => {
                once += 1;
                twice += 1;
            }
        }
    }
    once + twice
}

/// Whether a database error is the dependency's fault (down, out of
/// resources, timing out, shutting down) rather than the request's (a
/// statement its shape made invalid, a value out of range, a constraint).
/// Only the dependency's failures count against the breaker: a client must
/// not be able to open it for everyone with requests of a hostile shape.
pub fn dependency_failed(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            match code.parse::<u32>() {
                // SQLite (numeric result codes; the low byte is the primary
                // code): busy, locked, out of memory, read-only file, I/O,
                // corrupt, disk full, cannot open, lock protocol, not a
                // database, permission denied.
                Ok(n) if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
                    matches!(n & 0xff, 3 | 5 | 6 | 7 | 8 | 10 | 11 | 13 | 14 | 15 | 26)
                }
                // PostgreSQL SQLSTATE classes: connection (08), transaction
                // rollback (40: serialization, deadlock), insufficient
                // resources (53), object not in prerequisite state (55: lock
                // not available), operator intervention (57: cancelled,
                // shutting down), system error (58), internal (XX); and a
                // read-only standby (25006). Data (22), integrity (23),
                // syntax or access (42) and program limits (54) are the
                // request's.
                _ => {
                    matches!(
                        code.get(..2),
                        Some("08" | "40" | "53" | "55" | "57" | "58" | "XX")
                    ) || code == "25006"
                }
            }
        }
        // sqlx refuses a statement with more bind arguments than the wire
        // protocol carries before sending it: the request's shape.
        sqlx::Error::Protocol(m) if m.contains("too many arguments") => false,
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Configuration(_) => true,
        // Decoding, encoding, a missing column or row: about the data.
        _ => false,
    }
}

/// A lifecycle transition as `handoff://sessions/lifecycle` shows it.
#[derive(Debug, Clone)]
pub struct LifecycleListing {
    /// `None` for a purge (the key is erased with the session).
    pub session_key: Option<String>,
    pub from: String,
    pub to: String,
    pub at: String,
    pub reason: String,
}

/// A session the lifecycle job may move on: (tenant, session_key).
pub type Candidate = (String, String);

/// What a page of context may hold.
#[derive(Debug, Clone)]
pub struct PageQuery<'a> {
    pub after: i64,
    pub limit: u32,
    pub types: Option<&'a [ContextType]>,
    /// Budget for the page's encoded size (see `encoded_cost`).
    pub max_bytes: usize,
}

/// Everything the server asks of a database beyond the actors' `Store`
/// port, one trait per concern; each adapter implements them in files of
/// the same names (`postgres/`, `sqlite/`).
pub trait Database:
    Store + Sessions + Search + Configuration + Maintenance + Analytics + Credentials + Diagnostics
{
}

impl<T> Database for T where
    T: Store
        + Sessions
        + Search
        + Configuration
        + Maintenance
        + Analytics
        + Credentials
        + Diagnostics
{
}

/// Sessions, their context pages, handoffs and agents' listings (read; writes go through the actors' `Store`).
#[async_trait]
pub trait Sessions: Send + Sync {
    /// `None` when the session does not exist.
    async fn context_page(
        &self,
        tenant: &str,
        key: &str,
        q: PageQuery<'_>,
    ) -> Result<Option<ContextPage>, StoreError>;

    /// Sessions of a tenant ordered by key, after `after_key`; and the total.
    async fn list_sessions(
        &self,
        tenant: &str,
        after_key: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<SessionListing>, i64), StoreError>;

    /// Handoffs addressed to `target`, newest first, older than `before_id`
    /// (uuid v7 ids sort by creation).
    async fn list_handoffs(
        &self,
        _tenant: &str,
        _target: &str,
        _status: Option<&str>,
        _before_id: Option<&str>,
        _limit: u32,
    ) -> Result<Vec<HandoffRecord>, StoreError>;

    async fn get_handoff(
        &self,
        _tenant: &str,
        _id: &str,
    ) -> Result<Option<HandoffRecord>, StoreError>;

    /// Every handoff of one session, oldest first (export).
    async fn session_handoffs(
        &self,
        _tenant: &str,
        _session_key: &str,
    ) -> Result<Vec<HandoffRecord>, StoreError>;

    /// Sessions the agent registered or joined (as a collaborator), by key.
    async fn agent_sessions(
        &self,
        _tenant: &str,
        _agent: &str,
        _after_key: Option<&str>,
        _limit: u32,
    ) -> Result<Vec<SessionListing>, StoreError>;
}

/// Full-text search of a tenant's context entries.
#[async_trait]
pub trait Search: Send + Sync {
    /// Full-text search over the tenant's context entries, best match first.
    /// `query` is the user's text as given: each whitespace-separated term
    /// must occur (terms are words, not a query language). `agent` keeps
    /// sessions the agent registered or was handed. `Err(Rejected)` means
    /// the query itself was refused (reported as a validation error).
    async fn search(
        &self,
        _tenant: &str,
        _query: &str,
        _session_key: Option<&str>,
        _agent: Option<&str>,
        _limit: u32,
    ) -> Result<Vec<SearchHit>, StoreError>;
}

/// Runtime configuration overrides, backups and process settings.
#[async_trait]
pub trait Configuration: Send + Sync {
    // ---- configuration (runtime overrides and backups) --------------------
    // Configuration changes are rare and small: each write below runs in its
    // own transaction on the writer connection, outside the persistence
    // actor's group commit (which exists for the hot context-entry path).

    /// The stored configuration overrides.
    async fn config_overrides(&self) -> Result<Vec<ConfigOverride>, StoreError>;

    /// Replace every stored override with `rows`, atomically.
    async fn replace_config_overrides(&self, _rows: &[ConfigOverride]) -> Result<(), StoreError>;

    /// Store a backup, then delete the oldest ones beyond `keep`; returns
    /// the ids deleted.
    async fn insert_config_backup(
        &self,
        _backup: &ConfigBackup,
        _keep: u32,
    ) -> Result<Vec<String>, StoreError>;

    /// Every backup, newest first, without bodies.
    async fn config_backups(&self) -> Result<Vec<ConfigBackupInfo>, StoreError>;

    async fn config_backup(&self, _id: &str) -> Result<Option<ConfigBackup>, StoreError>;

    /// `false` when there was no such backup.
    async fn delete_config_backup(&self, _id: &str) -> Result<bool, StoreError>;

    /// A per-deployment secret kept in the database (created on first use).
    async fn setting_or_init(&self, key: &str, init: &str) -> Result<String, StoreError>;
}

/// What the supervised jobs read and write.
#[async_trait]
pub trait Maintenance: Send + Sync {
    // ---- jobs ---------------------------------------------------------------

    /// Sessions in one of `statuses` whose stored `last_activity_at` is
    /// before `idle_before`, oldest first. The stored time lags a busy
    /// session, so these are candidates: the session actor decides.
    async fn lifecycle_candidates(
        &self,
        _statuses: &[&str],
        _idle_before: chrono::DateTime<chrono::Utc>,
        _limit: u32,
    ) -> Result<Vec<Candidate>, StoreError>;

    /// The tenant's lifecycle transitions, newest first.
    async fn lifecycle_events(
        &self,
        _tenant: &str,
        _limit: u32,
    ) -> Result<Vec<LifecycleListing>, StoreError>;

    /// Delete lifecycle events and analytics roll-ups older than `before`;
    /// returns (events, roll-ups) deleted.
    async fn prune_job_records(
        &self,
        _before: chrono::DateTime<chrono::Utc>,
    ) -> Result<(u64, u64), StoreError>;

    /// Storage housekeeping for `cache_maintenance` (SQLite: a WAL
    /// checkpoint); a report of what it did.
    async fn maintenance(&self) -> Result<Value, StoreError>;

    /// Count sessions by status, entries by type, handoffs by status and
    /// type; store the snapshot and return it.
    async fn analytics_rollup(&self) -> Result<Value, StoreError>;

    /// Stored job config overrides: (job name, config JSON).
    async fn job_configs(&self) -> Result<Vec<(String, Value)>, StoreError>;

    async fn save_job_config(
        &self,
        _job: &str,
        _config: &Value,
        _updated_at: &str,
    ) -> Result<(), StoreError>;
}

/// The analytics aggregates of a tenant, and the database's size.
#[async_trait]
pub trait Analytics: Send + Sync {
    // ---- analytics (handoff://analytics/{type}; see analytics.rs) ---------
    // `since` bounds the per-day series (RFC 3339 UTC).

    async fn session_analytics(
        &self,
        _tenant: &str,
        _since: &str,
    ) -> Result<SessionAnalytics, StoreError>;

    async fn handoff_analytics(&self, _tenant: &str) -> Result<HandoffAnalytics, StoreError>;

    async fn context_analytics(
        &self,
        _tenant: &str,
        _since: &str,
    ) -> Result<ContextAnalytics, StoreError>;

    /// Bytes on disk, per file (SQLite: the database and its WAL) or for
    /// the whole database (PostgreSQL).
    async fn database_size(&self) -> Result<Vec<Counted>, StoreError>;
}

/// API keys and the MCP-over-HTTP sessions replicas share.
#[async_trait]
pub trait Credentials: Send + Sync {
    /// API keys (`handoff keys`, the daemon's authentication).
    async fn insert_api_key(&self, k: &ApiKeyRow) -> Result<(), StoreError>;

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRow>, StoreError>;

    async fn api_keys(&self) -> Result<Vec<ApiKeyRow>, StoreError>;

    /// Revoke (`revoked_ms`) or shorten (`expires_ms`, with the key that
    /// replaces it) a key; false when there is no such key.
    async fn update_api_key(
        &self,
        id: &str,
        revoked_ms: Option<i64>,
        expires_ms: Option<i64>,
        replaced_by: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// Record a use (at most once a minute per key; see `auth`).
    async fn touch_api_key(&self, id: &str, at_ms: i64) -> Result<(), StoreError>;

    /// MCP-over-HTTP sessions shared by replicas (`transport::http_sessions`).
    /// Upsert: `tenant` only where none is set yet, `init_params` when
    /// given, the expiry always; expired rows are pruned on the way.
    async fn put_http_session(
        &self,
        id_hash: &str,
        tenant: Option<&str>,
        init_params: Option<&str>,
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// (tenant, init_params) of a session not expired at `now_ms`.
    async fn http_session(
        &self,
        id_hash: &str,
        now_ms: i64,
    ) -> Result<Option<(Option<String>, Option<String>)>, StoreError>;

    async fn delete_http_session(&self, id_hash: &str) -> Result<(), StoreError>;
}

/// What operators and the audit verifier read.
#[async_trait]
pub trait Diagnostics: Send + Sync {
    async fn audit_rows(&self) -> Result<Vec<AuditRow>, StoreError>;

    fn describe(&self) -> String;

    /// The durability setting of the connection that commits batches, read
    /// from that connection (`{"synchronous": "full"}` on SQLite,
    /// `{"synchronous_commit": "on"}` on PostgreSQL): health reports it, so
    /// an operator (and the tests) see that acknowledged means on disk.
    async fn writer_durability(&self) -> Result<Value, StoreError>;
}

/// An audit row, as both adapters store it (text, integers).
pub fn audit_from_row<R: sqlx::Row>(r: &R) -> AuditRow
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
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

/// The analytics roll-up document both adapters store and report.
pub fn rollup_json(
    sessions: Vec<(String, i64)>,
    entries: Vec<(String, i64)>,
    handoffs_by_status: Vec<(String, i64)>,
    handoffs_by_type: Vec<(String, i64)>,
) -> Value {
    let obj = |v: Vec<(String, i64)>| -> serde_json::Map<String, Value> {
        v.into_iter().map(|(k, n)| (k, Value::from(n))).collect()
    };
    let total = |v: &[(String, i64)]| v.iter().map(|(_, n)| n).sum::<i64>();
    serde_json::json!({
        "sessions": {"total": total(&sessions), "by_status": obj(sessions)},
        "context_entries": {"total": total(&entries), "by_type": obj(entries)},
        "handoffs": {"total": total(&handoffs_by_status), "by_status": obj(handoffs_by_status),
                     "by_type": obj(handoffs_by_type)},
    })
}

/// Open the database at `url`. `migrate`: apply pending migrations (the
/// embedded SQLite file always is); otherwise PostgreSQL is only checked to
/// be fully migrated, so the server can run as a role without DDL rights.
pub async fn open(url: &str, migrate: bool) -> anyhow::Result<Arc<dyn Database>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteDb::open(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(postgres::PgDb::open(url, migrate).await?))
    } else {
        anyhow::bail!("HANDOFF_DATABASE_URL must start with sqlite: or postgres:")
    }
}

/// The database and the cache for every call that is not a session's write:
/// the reads of tools, resources and jobs, and the operator-rate writes
/// (configuration, backups, job records; why these skip the persistence
/// actor: docs/decisions.md). `run` takes each call through the breaker's
/// guard.
#[derive(Clone)]
pub struct Storage {
    pub db: Arc<dyn Database>,
    pub breaker: BreakerHandle,
    pub timeout: Duration,
    /// The session-row cache (health reports it; the actors write it).
    pub cache: Arc<crate::cache::Cache>,
}

impl Storage {
    /// One database call: refused while the breaker is open, given up after
    /// `timeout`, failures reported (a success proves no more than a read).
    pub async fn run<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, HandoffError> {
        self.breaker
            .guard(
                Dependency::Database,
                Report::FailuresOnly,
                self.timeout,
                "database call",
                fut,
            )
            .await?
            .map_err(HandoffError::from)
    }
}
