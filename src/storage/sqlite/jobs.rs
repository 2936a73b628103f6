//! What the lifecycle, retention, maintenance and roll-up jobs read and write on SQLite.

use async_trait::async_trait;
use handoff_actors::model::rfc3339;
use handoff_actors::StoreError;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{classify, SqliteDb};
use crate::storage::Maintenance;
use crate::storage::{Candidate, LifecycleListing};

#[async_trait]
impl Maintenance for SqliteDb {
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
        let counts = crate::storage::rollup_json(
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
}
