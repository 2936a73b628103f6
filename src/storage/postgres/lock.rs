//! A hot session's write lock (see `Store::lock_session`).

use async_trait::async_trait;
use handoff_actors::model::CommitUnit;
use handoff_actors::StoreError;
use sqlx::{Executor, Postgres};

use super::batch::write_batch;
use super::classify;

/// A hot session's transaction (`Store::lock_session`). A connection whose
/// transaction did not end cleanly is closed, not pooled.
pub(super) struct PgLock {
    pub(super) conn: Option<sqlx::pool::PoolConnection<Postgres>>,
    pub(super) chunk_bytes: usize,
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
