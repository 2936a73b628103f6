//! Runtime configuration overrides and backups on PostgreSQL
//! (migrations/postgres/0004_configuration.sql): the SQLite adapter's
//! methods in PostgreSQL types. Each write is its own transaction on the
//! shared pool, not on the writer connection: configuration changes are
//! rare and must not queue behind the persistence actor's batches.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use handoff_actors::model::rfc3339;
use handoff_actors::StoreError;
use serde_json::Value;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::types::Json;
use sqlx::Row;
use uuid::Uuid;

use super::{classify, PgDb};
use crate::storage::Configuration;
use crate::storage::{ConfigBackup, ConfigBackupInfo, ConfigOverride};

/// Times arrive as the RFC 3339 strings the service writes.
fn time(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::Rejected(format!("not an RFC 3339 time: {s}")))
}

/// Only a uuid's canonical spelling names a backup (in SQLite ids are that
/// text, so any other spelling finds nothing there either).
fn backup_id(id: &str) -> Option<Uuid> {
    Uuid::parse_str(id).ok().filter(|u| u.to_string() == id)
}

fn info_from_row(r: &PgRow) -> ConfigBackupInfo {
    ConfigBackupInfo {
        id: r.get::<Uuid, _>("id").to_string(),
        name: r.get("name"),
        description: r.get("description"),
        created_at: rfc3339(&r.get("created_at")),
        checksum: r.get("checksum"),
        size_bytes: r.get("size_bytes"),
    }
}

pub(super) async fn overrides(pool: &PgPool) -> Result<Vec<ConfigOverride>, StoreError> {
    let rows = sqlx::query(
        "SELECT section, key, value, updated_at, updated_by FROM configuration_overrides
         ORDER BY section, key",
    )
    .fetch_all(pool)
    .await
    .map_err(classify)?;
    Ok(rows
        .iter()
        .map(|r| ConfigOverride {
            section: r.get("section"),
            key: r.get("key"),
            value: r.get::<Json<Value>, _>("value").0,
            updated_at: rfc3339(&r.get("updated_at")),
            updated_by: r.get("updated_by"),
        })
        .collect())
}

pub(super) async fn replace_overrides(
    pool: &PgPool,
    rows: &[ConfigOverride],
) -> Result<(), StoreError> {
    let times = rows
        .iter()
        .map(|r| time(&r.updated_at))
        .collect::<Result<Vec<_>, _>>()?;
    let mut tx = pool.begin().await.map_err(classify)?;
    sqlx::query("DELETE FROM configuration_overrides")
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    sqlx::query(
        "INSERT INTO configuration_overrides (section, key, value, updated_at, updated_by)
         SELECT section, key, value::json, updated_at, updated_by
         FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[])
              AS t(section, key, value, updated_at, updated_by)",
    )
    .bind(rows.iter().map(|r| r.section.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.key.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.value.to_string()).collect::<Vec<_>>())
    .bind(times)
    .bind(
        rows.iter()
            .map(|r| r.updated_by.as_deref())
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await
    .map_err(classify)?;
    tx.commit().await.map_err(classify)
}

pub(super) async fn insert_backup(
    pool: &PgPool,
    b: &ConfigBackup,
    keep: u32,
) -> Result<Vec<String>, StoreError> {
    let id = backup_id(&b.info.id)
        .ok_or_else(|| StoreError::Rejected(format!("backup id is not a uuid: {}", b.info.id)))?;
    let created = time(&b.info.created_at)?;
    let mut tx = pool.begin().await.map_err(classify)?;
    sqlx::query(
        "INSERT INTO configuration_backups
         (id, name, description, created_at, checksum, size_bytes, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(&b.info.name)
    .bind(&b.info.description)
    .bind(created)
    .bind(&b.info.checksum)
    .bind(b.info.size_bytes)
    .bind(&b.body)
    .execute(&mut *tx)
    .await
    .map_err(classify)?;
    let pruned: Vec<Uuid> = sqlx::query_scalar(
        "DELETE FROM configuration_backups WHERE id IN (
             SELECT id FROM configuration_backups ORDER BY id DESC OFFSET $1)
         RETURNING id",
    )
    .bind(keep as i64)
    .fetch_all(&mut *tx)
    .await
    .map_err(classify)?;
    tx.commit().await.map_err(classify)?;
    let mut pruned: Vec<String> = pruned.iter().map(Uuid::to_string).collect();
    pruned.sort_unstable_by(|a, b| b.cmp(a)); // newest first, as SQLite lists them
    Ok(pruned)
}

pub(super) async fn backups(pool: &PgPool) -> Result<Vec<ConfigBackupInfo>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, name, description, created_at, checksum, size_bytes
         FROM configuration_backups ORDER BY id DESC",
    )
    .fetch_all(pool)
    .await
    .map_err(classify)?;
    Ok(rows.iter().map(info_from_row).collect())
}

pub(super) async fn backup(pool: &PgPool, id: &str) -> Result<Option<ConfigBackup>, StoreError> {
    let Some(id) = backup_id(id) else {
        return Ok(None);
    };
    let row = sqlx::query(
        "SELECT id, name, description, created_at, checksum, size_bytes, body
         FROM configuration_backups WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(classify)?;
    Ok(row.map(|r| ConfigBackup {
        info: info_from_row(&r),
        body: r.get("body"),
    }))
}

pub(super) async fn delete_backup(pool: &PgPool, id: &str) -> Result<bool, StoreError> {
    let Some(id) = backup_id(id) else {
        return Ok(false);
    };
    let r = sqlx::query("DELETE FROM configuration_backups WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .map_err(classify)?;
    Ok(r.rows_affected() > 0)
}

#[async_trait]
impl Configuration for PgDb {
    async fn setting_or_init(&self, key: &str, init: &str) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(init)
        .execute(&self.reader)
        .await
        .map_err(classify)?;
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(&self.reader)
            .await
            .map_err(classify)
    }

    async fn config_overrides(&self) -> Result<Vec<ConfigOverride>, StoreError> {
        overrides(&self.reader).await
    }

    async fn replace_config_overrides(&self, rows: &[ConfigOverride]) -> Result<(), StoreError> {
        replace_overrides(&self.reader, rows).await
    }

    async fn insert_config_backup(
        &self,
        backup: &ConfigBackup,
        keep: u32,
    ) -> Result<Vec<String>, StoreError> {
        insert_backup(&self.reader, backup, keep).await
    }

    async fn config_backups(&self) -> Result<Vec<ConfigBackupInfo>, StoreError> {
        backups(&self.reader).await
    }

    async fn config_backup(&self, id: &str) -> Result<Option<ConfigBackup>, StoreError> {
        backup(&self.reader, id).await
    }

    async fn delete_config_backup(&self, id: &str) -> Result<bool, StoreError> {
        delete_backup(&self.reader, id).await
    }
}
