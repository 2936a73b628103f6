//! The storage port. The actors own the write path and know nothing of SQL;
//! an adapter (SQLite, PostgreSQL) in the binary implements this trait.

use async_trait::async_trait;

use crate::error::StoreError;
use crate::model::{AuditRow, CommitUnit, EntryRow, SessionRow};

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The session row for (tenant, key), if any, with the entries committed
    /// after its checkpoint (`last_seq`) in sequence order. The session row
    /// is a checkpoint: the actor folds the tail in to get the live state.
    /// `summary.handoffs` must be the current number of the session's
    /// handoffs (a handoff does not always rewrite the row).
    async fn load_session(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<(SessionRow, Vec<EntryRow>)>, StoreError>;

    /// Commit every unit in one transaction: all or nothing.
    async fn commit(&self, units: &[&CommitUnit]) -> Result<(), StoreError>;

    /// The last row of the audit chain, to continue it.
    async fn audit_head(&self) -> Result<Option<AuditRow>, StoreError>;

    /// Whether the handoff has been accepted (by any process). Asked only
    /// after an acceptance lost a write race.
    async fn handoff_accepted(&self, _tenant: &str, _id: uuid::Uuid) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// A cheap round trip, for health and half-open probes.
    async fn ping(&self) -> Result<(), StoreError>;
}
