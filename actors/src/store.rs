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

    /// Commit in one transaction, except units that register a session key
    /// another writer registered first: nothing of those is written, and
    /// their indexes are returned (the persistence actor answers them with a
    /// write conflict; their session actor reloads and applies again). An
    /// adapter that cannot tell fails the whole batch instead, as `commit`.
    async fn commit_partial(&self, units: &[&CommitUnit]) -> Result<Vec<usize>, StoreError> {
        self.commit(units).await.map(|()| Vec::new())
    }

    /// Whether a session actor may register a key it has not looked up:
    /// true when `commit_partial` leaves out a lost registration (so the
    /// common case, a new key, costs no read), false when a lost one would
    /// fail the batch of every other session.
    fn registers_blind(&self) -> bool {
        false
    }

    /// The last row of the audit chain, to continue it.
    async fn audit_head(&self) -> Result<Option<AuditRow>, StoreError>;

    /// Whether the handoff has been accepted (by any process). Asked only
    /// after an acceptance lost a write race.
    async fn handoff_accepted(&self, _tenant: &str, _id: uuid::Uuid) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// A cheap round trip, for health and half-open probes.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The session's write lock, taken in a transaction that holds it until
    /// `SessionLock::commit`, with the session read under it (as
    /// `load_session`). While it is held no other writer of the database —
    /// another replica or process, or this one's group commit — can add to
    /// the session: a unit built on what was read cannot lose a race for a
    /// sequence number. The session actor takes it only for a session that
    /// is hot across processes (see actors/src/session/state.rs). `None`: this
    /// store has no such lock (the actor stays optimistic).
    async fn lock_session(&self, _tenant: &str, _key: &str) -> Result<Option<Locked>, StoreError> {
        Ok(None)
    }
}

/// A session read under its write lock (`Store::lock_session`).
pub struct Locked {
    pub session: Option<(SessionRow, Vec<EntryRow>)>,
    pub lock: Box<dyn SessionLock>,
}

/// The open transaction that holds a session's write lock. Dropped without
/// `commit` or `release`, the adapter discards the transaction (closing its
/// connection if it must).
#[async_trait]
pub trait SessionLock: Send {
    /// Write the unit in the lock's transaction and commit, which releases
    /// the lock. All or nothing, like `Store::commit`.
    async fn commit(self: Box<Self>, unit: &CommitUnit) -> Result<(), StoreError>;

    /// Nothing to write after all: end the transaction.
    async fn release(self: Box<Self>);
}
