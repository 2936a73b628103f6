//! A hot session's write lock (see `Store::lock_session`).

use async_trait::async_trait;
use handoff_actors::model::CommitUnit;
use handoff_actors::StoreError;
use sqlx::Sqlite;

use super::batch::write_batch;

/// A hot session's transaction (`Store::lock_session`): `BEGIN IMMEDIATE`
/// on the writer connection, so the lock is SQLite's write lock on the
/// whole file — every other writer, in this process or another on the same
/// file, waits for it (`busy_timeout`). A connection whose transaction did
/// not end cleanly is closed, not pooled.
pub(super) struct SqliteLock {
    pub(super) conn: Option<sqlx::pool::PoolConnection<Sqlite>>,
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
