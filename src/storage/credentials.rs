//! API keys and the MCP-over-HTTP sessions replicas share: the row, and the
//! queries, which are the same text on both backends (`$N` placeholders:
//! sqlx binds them by number on SQLite too), so they are written once, in
//! `credentials_queries!`, and each adapter instantiates them.

/// A stored API key: everything but the key itself (`hash` is a keyed
/// blake3 of it, see `crate::auth::keys`). Times are Unix milliseconds.
#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub id: String,
    pub tenant: String,
    pub scope: String,
    pub agent: Option<String>,
    pub name: Option<String>,
    pub hash: String,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub replaced_by: Option<String>,
}

/// The columns of `api_keys`, in `ApiKeyRow` order.
pub const API_KEY_COLUMNS: &str = "id, tenant, scope, agent, name, hash, created_ms, \
     last_used_ms, expires_ms, revoked_ms, replaced_by";

pub fn api_key_from_row<R: sqlx::Row>(r: &R) -> Result<ApiKeyRow, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database>,
{
    Ok(ApiKeyRow {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        scope: r.try_get("scope")?,
        agent: r.try_get("agent")?,
        name: r.try_get("name")?,
        hash: r.try_get("hash")?,
        created_ms: r.try_get("created_ms")?,
        last_used_ms: r.try_get("last_used_ms")?,
        expires_ms: r.try_get("expires_ms")?,
        revoked_ms: r.try_get("revoked_ms")?,
        replaced_by: r.try_get("replaced_by")?,
    })
}

/// `impl Credentials` for an adapter: `$db` the adapter type, `$pool` its
/// pool for writes, `$classify` its `sqlx::Error` → `StoreError` mapping.
macro_rules! credentials_queries {
    ($db:ty, $pool:ident, $classify:path) => {
        #[async_trait::async_trait]
                impl $crate::storage::Credentials for $db {
            async fn insert_api_key(&self, k: &$crate::storage::ApiKeyRow) -> Result<(), handoff_actors::StoreError> {
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
                .execute(&self.$pool)
                .await
                .map_err($classify)?;
                Ok(())
            }

            async fn api_key(&self, id: &str) -> Result<Option<$crate::storage::ApiKeyRow>, handoff_actors::StoreError> {
                let sql = format!(
                    "SELECT {} FROM api_keys WHERE id = $1",
                    $crate::storage::API_KEY_COLUMNS
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(&self.reader)
                    .await
                    .map_err($classify)?;
                row.map(|r| $crate::storage::api_key_from_row(&r).map_err($classify))
                    .transpose()
            }

            async fn api_keys(&self) -> Result<Vec<$crate::storage::ApiKeyRow>, handoff_actors::StoreError> {
                let sql = format!(
                    "SELECT {} FROM api_keys ORDER BY tenant, created_ms, id",
                    $crate::storage::API_KEY_COLUMNS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&self.reader)
                    .await
                    .map_err($classify)?;
                rows.iter()
                    .map(|r| $crate::storage::api_key_from_row(r).map_err($classify))
                    .collect()
            }

            async fn update_api_key(
                &self,
                id: &str,
                revoked_ms: Option<i64>,
                expires_ms: Option<i64>,
                replaced_by: Option<&str>,
            ) -> Result<bool, handoff_actors::StoreError> {
                let r = sqlx::query(
                    "UPDATE api_keys SET revoked_ms = COALESCE($1, revoked_ms), \
                     expires_ms = COALESCE($2, expires_ms), replaced_by = COALESCE($3, replaced_by) \
                     WHERE id = $4",
                )
                .bind(revoked_ms)
                .bind(expires_ms)
                .bind(replaced_by)
                .bind(id)
                .execute(&self.$pool)
                .await
                .map_err($classify)?;
                Ok(r.rows_affected() > 0)
            }

            async fn put_http_session(
                &self,
                id_hash: &str,
                tenant: Option<&str>,
                init_params: Option<&str>,
                expires_ms: i64,
                now_ms: i64,
            ) -> Result<(), handoff_actors::StoreError> {
                sqlx::query("DELETE FROM http_sessions WHERE expires_ms < $1")
                    .bind(now_ms)
                    .execute(&self.$pool)
                    .await
                    .map_err($classify)?;
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
                .execute(&self.$pool)
                .await
                .map_err($classify)?;
                Ok(())
            }

            async fn http_session(
                &self,
                id_hash: &str,
                now_ms: i64,
            ) -> Result<Option<(Option<String>, Option<String>)>, handoff_actors::StoreError> {
                sqlx::query_as(
                    "SELECT tenant, init_params FROM http_sessions WHERE id_hash = $1 AND expires_ms > $2",
                )
                .bind(id_hash)
                .bind(now_ms)
                .fetch_optional(&self.reader)
                .await
                .map_err($classify)
            }

            async fn delete_http_session(&self, id_hash: &str) -> Result<(), handoff_actors::StoreError> {
                sqlx::query("DELETE FROM http_sessions WHERE id_hash = $1")
                    .bind(id_hash)
                    .execute(&self.$pool)
                    .await
                    .map_err($classify)?;
                Ok(())
            }

            async fn touch_api_key(&self, id: &str, at_ms: i64) -> Result<(), handoff_actors::StoreError> {
                sqlx::query("UPDATE api_keys SET last_used_ms = $1 WHERE id = $2")
                    .bind(at_ms)
                    .bind(id)
                    .execute(&self.$pool)
                    .await
                    .map_err($classify)?;
                Ok(())
            }
        }
    };
}
pub(crate) use credentials_queries;
