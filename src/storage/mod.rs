//! Storage adapters. The write path belongs to the actors (through the
//! `Store` port); reads that need no session state (context pages, listings)
//! come straight here, behind the same breaker and timeout.

pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use handoff_actors::breaker::{BreakerHandle, Dependency};
use handoff_actors::model::{AuditRow, ContextType};
use handoff_actors::store::Store;
use handoff_actors::{HandoffError, StoreError};
use serde_json::Value;

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

/// A handoff as read back.
#[derive(Debug, Clone)]
pub struct HandoffListing {
    pub id: String,
    pub session_key: String,
    pub source_agent: String,
    pub target_agent: String,
    pub request_type: String,
    pub status: String,
    pub request_data: Option<Value>,
    pub context_summary: Value,
    pub context_entries: i64,
    pub created_at: String,
    pub accepted_at: Option<String>,
    pub accepted_by: Option<String>,
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

/// What a page of context may hold.
#[derive(Debug, Clone)]
pub struct PageQuery<'a> {
    pub after: i64,
    pub limit: u32,
    pub types: Option<&'a [ContextType]>,
    /// Budget for the page's encoded size (see `encoded_cost`).
    pub max_bytes: usize,
}

#[async_trait]
pub trait Database: Store {
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

    async fn audit_rows(&self) -> Result<Vec<AuditRow>, StoreError>;

    /// Handoffs addressed to `target`, newest first, older than `before_id`
    /// (uuid v7 ids sort by creation).
    async fn list_handoffs(
        &self,
        _tenant: &str,
        _target: &str,
        _status: Option<&str>,
        _before_id: Option<&str>,
        _limit: u32,
    ) -> Result<Vec<HandoffListing>, StoreError> {
        Err(StoreError::Unavailable(format!(
            "handoff listings are not supported by {}",
            self.describe()
        )))
    }

    async fn get_handoff(
        &self,
        _tenant: &str,
        _id: &str,
    ) -> Result<Option<HandoffListing>, StoreError> {
        Err(StoreError::Unavailable(format!(
            "handoff lookups are not supported by {}",
            self.describe()
        )))
    }

    /// Sessions the agent registered or joined (as a collaborator), by key.
    async fn agent_sessions(
        &self,
        _tenant: &str,
        _agent: &str,
        _after_key: Option<&str>,
        _limit: u32,
    ) -> Result<Vec<SessionListing>, StoreError> {
        Err(StoreError::Unavailable(format!(
            "agent listings are not supported by {}",
            self.describe()
        )))
    }

    /// A per-deployment secret kept in the database (created on first use).
    async fn setting_or_init(&self, key: &str, init: &str) -> Result<String, StoreError>;

    fn describe(&self) -> String;
}

pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Database>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteDb::open(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        anyhow::bail!("PostgreSQL is not supported by this build yet (HANDOFF_DATABASE_URL)")
    } else {
        anyhow::bail!("HANDOFF_DATABASE_URL must start with sqlite: or postgres:")
    }
}

/// Reads guarded like writes: fail fast while the breaker is open, give up
/// after the timeout, and tell the breaker how it went.
#[derive(Clone)]
pub struct Reads {
    pub db: Arc<dyn Database>,
    pub breaker: BreakerHandle,
    pub timeout: Duration,
}

impl Reads {
    pub async fn run<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, HandoffError> {
        self.breaker.check(Dependency::Database)?;
        let r = tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("read timed out".into())));
        self.breaker.report_read(
            Dependency::Database,
            !matches!(r, Err(StoreError::Unavailable(_))),
        );
        r.map_err(HandoffError::from)
    }
}
