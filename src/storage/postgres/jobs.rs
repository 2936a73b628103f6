//! What the lifecycle, retention, maintenance and roll-up jobs read and write on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use handoff_actors::StoreError;
use serde_json::Value;
use sqlx::Row;
use uuid::Uuid;

use super::rows::time_of;
use super::{classify, PgDb};
use crate::storage::Maintenance;
use crate::storage::{Candidate, LifecycleListing};

#[async_trait]
impl Maintenance for PgDb {
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
        let counts = crate::storage::rollup_json(
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
}
