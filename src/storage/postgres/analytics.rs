//! The analytics aggregates (`analytics.rs`) on PostgreSQL. Days are UTC,
//! as on SQLite; content bytes are `octet_length` of the bytea (read from
//! the stored length, the content itself is not fetched).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use handoff_actors::StoreError;
use sqlx::postgres::PgPool;
use sqlx::Row;

use super::rows::since_time;
use super::{classify, PgDb};
use crate::storage::analytics::{
    ContextAnalytics, Counted, HandoffAnalytics, SessionAnalytics, TypeStats, TOP,
};
use crate::storage::Analytics;

async fn counted(
    pool: &PgPool,
    sql: &'static str,
    tenant: &str,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<Counted>, StoreError> {
    let mut q = sqlx::query(sql).bind(tenant);
    if let Some(t) = since {
        q = q.bind(t);
    }
    let rows = q.fetch_all(pool).await.map_err(classify)?;
    Ok(rows
        .iter()
        .map(|r| Counted {
            name: r.get(0),
            count: r.get(1),
        })
        .collect())
}

pub(super) async fn sessions(
    pool: &PgPool,
    tenant: &str,
    since: DateTime<Utc>,
) -> Result<SessionAnalytics, StoreError> {
    let by_status = counted(
        pool,
        "SELECT status, count(*) FROM sessions WHERE tenant = $1
         GROUP BY status ORDER BY status COLLATE \"C\"",
        tenant,
        None,
    )
    .await?;
    let created_per_day = counted(
        pool,
        "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, count(*)
         FROM sessions WHERE tenant = $1 AND created_at >= $2 GROUP BY day ORDER BY day",
        tenant,
        Some(since),
    )
    .await?;
    let top_agents = counted(
        pool,
        "SELECT agent_from, count(*) AS n FROM sessions WHERE tenant = $1
         GROUP BY agent_from ORDER BY n DESC, agent_from COLLATE \"C\" LIMIT 10",
        tenant,
        None,
    )
    .await?;
    debug_assert_eq!(TOP, 10);
    let entries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM context_entries e JOIN sessions s ON s.id = e.session_id
         WHERE s.tenant = $1",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .map_err(classify)?;
    Ok(SessionAnalytics {
        total: by_status.iter().map(|c| c.count).sum(),
        by_status,
        created_per_day,
        entries,
        top_agents,
    })
}

pub(super) async fn handoffs(pool: &PgPool, tenant: &str) -> Result<HandoffAnalytics, StoreError> {
    let by_status = counted(
        pool,
        "SELECT status, count(*) FROM handoffs WHERE tenant = $1
         GROUP BY status ORDER BY status COLLATE \"C\"",
        tenant,
        None,
    )
    .await?;
    let by_request_type = counted(
        pool,
        "SELECT request_type, count(*) FROM handoffs WHERE tenant = $1
         GROUP BY request_type ORDER BY request_type COLLATE \"C\"",
        tenant,
        None,
    )
    .await?;
    let by_target_agent = counted(
        pool,
        "SELECT target_agent, count(*) AS n FROM handoffs WHERE tenant = $1
         GROUP BY target_agent ORDER BY n DESC, target_agent COLLATE \"C\" LIMIT 10",
        tenant,
        None,
    )
    .await?;
    let accept_latencies_ms: Vec<f64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM accepted_at - created_at) * 1000)::float8 AS ms
         FROM handoffs WHERE tenant = $1 AND accepted_at IS NOT NULL ORDER BY ms",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await
    .map_err(classify)?;
    Ok(HandoffAnalytics {
        total: by_status.iter().map(|c| c.count).sum(),
        by_status,
        by_request_type,
        by_target_agent,
        accept_latencies_ms,
    })
}

pub(super) async fn context(
    pool: &PgPool,
    tenant: &str,
    since: DateTime<Utc>,
) -> Result<ContextAnalytics, StoreError> {
    let rows = sqlx::query(
        "SELECT e.context_type, count(*) AS n, coalesce(sum(octet_length(e.content)), 0)::int8
         FROM context_entries e JOIN sessions s ON s.id = e.session_id
         WHERE s.tenant = $1 GROUP BY e.context_type ORDER BY e.context_type COLLATE \"C\"",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await
    .map_err(classify)?;
    let by_type = rows
        .iter()
        .map(|r| TypeStats {
            context_type: r.get(0),
            count: r.get(1),
            bytes: r.get(2),
        })
        .collect();
    let per_day = counted(
        pool,
        "SELECT to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, count(*)
         FROM context_entries e JOIN sessions s ON s.id = e.session_id
         WHERE s.tenant = $1 AND e.created_at >= $2 GROUP BY day ORDER BY day",
        tenant,
        Some(since),
    )
    .await?;
    Ok(ContextAnalytics { by_type, per_day })
}

pub(super) async fn size(pool: &PgPool) -> Result<Vec<Counted>, StoreError> {
    let row =
        sqlx::query("SELECT current_database()::text, pg_database_size(current_database())::int8")
            .fetch_one(pool)
            .await
            .map_err(classify)?;
    Ok(vec![Counted {
        name: row.get(0),
        count: row.get(1),
    }])
}

#[async_trait]
impl Analytics for PgDb {
    async fn session_analytics(
        &self,
        tenant: &str,
        since: &str,
    ) -> Result<SessionAnalytics, StoreError> {
        sessions(&self.reader, tenant, since_time(since)?).await
    }

    async fn handoff_analytics(&self, tenant: &str) -> Result<HandoffAnalytics, StoreError> {
        handoffs(&self.reader, tenant).await
    }

    async fn context_analytics(
        &self,
        tenant: &str,
        since: &str,
    ) -> Result<ContextAnalytics, StoreError> {
        context(&self.reader, tenant, since_time(since)?).await
    }

    async fn database_size(&self) -> Result<Vec<Counted>, StoreError> {
        size(&self.reader).await
    }
}
