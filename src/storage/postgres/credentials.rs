//! API keys and the MCP-over-HTTP sessions replicas share on PostgreSQL.

use async_trait::async_trait;
use handoff_actors::StoreError;

use super::{classify, PgDb};
use crate::storage::Credentials;

#[async_trait]
impl Credentials for PgDb {
    async fn insert_api_key(&self, k: &crate::storage::ApiKeyRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant, scope, agent, name, hash, created_ms, \
             last_used_ms, expires_ms, revoked_ms, replaced_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&k.id)
        .bind(&k.tenant)
        .bind(&k.scope)
        .bind(&k.agent)
        .bind(&k.name)
        .bind(&k.hash)
        .bind(k.created_ms)
        .bind(k.last_used_ms)
        .bind(k.expires_ms)
        .bind(k.revoked_ms)
        .bind(&k.replaced_by)
        .execute(&self.reader)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn api_key(&self, id: &str) -> Result<Option<crate::storage::ApiKeyRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM api_keys WHERE id = $1",
            crate::storage::API_KEY_COLUMNS
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(classify)?;
        row.map(|r| crate::storage::api_key_from_row(&r).map_err(classify))
            .transpose()
    }

    async fn api_keys(&self) -> Result<Vec<crate::storage::ApiKeyRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM api_keys ORDER BY tenant, created_ms, id",
            crate::storage::API_KEY_COLUMNS
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| crate::storage::api_key_from_row(r).map_err(classify))
            .collect()
    }

    async fn update_api_key(
        &self,
        id: &str,
        revoked_ms: Option<i64>,
        expires_ms: Option<i64>,
        replaced_by: Option<&str>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE api_keys SET revoked_ms = COALESCE($1, revoked_ms), \
             expires_ms = COALESCE($2, expires_ms), replaced_by = COALESCE($3, replaced_by) \
             WHERE id = $4",
        )
        .bind(revoked_ms)
        .bind(expires_ms)
        .bind(replaced_by)
        .bind(id)
        .execute(&self.reader)
        .await
        .map_err(classify)?;
        Ok(r.rows_affected() > 0)
    }

    async fn put_http_session(
        &self,
        id_hash: &str,
        tenant: Option<&str>,
        init_params: Option<&str>,
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM http_sessions WHERE expires_ms < $1")
            .bind(now_ms)
            .execute(&self.reader)
            .await
            .map_err(classify)?;
        sqlx::query(
            "INSERT INTO http_sessions (id_hash, tenant, init_params, expires_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id_hash) DO UPDATE SET \
             tenant = COALESCE(http_sessions.tenant, excluded.tenant), \
             init_params = COALESCE(excluded.init_params, http_sessions.init_params), \
             expires_ms = excluded.expires_ms",
        )
        .bind(id_hash)
        .bind(tenant)
        .bind(init_params)
        .bind(expires_ms)
        .execute(&self.reader)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn http_session(
        &self,
        id_hash: &str,
        now_ms: i64,
    ) -> Result<Option<(Option<String>, Option<String>)>, StoreError> {
        sqlx::query_as(
            "SELECT tenant, init_params FROM http_sessions WHERE id_hash = $1 AND expires_ms > $2",
        )
        .bind(id_hash)
        .bind(now_ms)
        .fetch_optional(&self.reader)
        .await
        .map_err(classify)
    }

    async fn delete_http_session(&self, id_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM http_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.reader)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn touch_api_key(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET last_used_ms = $1 WHERE id = $2")
            .bind(at_ms)
            .bind(id)
            .execute(&self.reader)
            .await
            .map_err(classify)?;
        Ok(())
    }
}
