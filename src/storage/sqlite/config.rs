//! Runtime configuration overrides, backups and settings on SQLite.

use async_trait::async_trait;
use handoff_actors::StoreError;
use sqlx::Row;

use super::rows::backup_info_from_row;
use super::{classify, SqliteDb};
use crate::storage::Configuration;
use crate::storage::{ConfigBackup, ConfigBackupInfo, ConfigOverride};

#[async_trait]
impl Configuration for SqliteDb {
    async fn setting_or_init(&self, key: &str, init: &str) -> Result<String, StoreError> {
        sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING")
            .bind(key)
            .bind(init)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_one(&self.writer)
            .await
            .map_err(classify)
    }

    async fn config_overrides(&self) -> Result<Vec<ConfigOverride>, StoreError> {
        let rows = sqlx::query(
            "SELECT section, key, value, updated_at, updated_by FROM configuration_overrides
             ORDER BY section, key",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let value: String = r.get("value");
                Ok(ConfigOverride {
                    section: r.get("section"),
                    key: r.get("key"),
                    value: serde_json::from_str(&value).map_err(|_| {
                        StoreError::Rejected("corrupt configuration override".into())
                    })?,
                    updated_at: r.get("updated_at"),
                    updated_by: r.get("updated_by"),
                })
            })
            .collect()
    }

    async fn replace_config_overrides(&self, rows: &[ConfigOverride]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await.map_err(classify)?;
        sqlx::query("DELETE FROM configuration_overrides")
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        for r in rows {
            sqlx::query(
                "INSERT INTO configuration_overrides (section, key, value, updated_at, updated_by)
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&r.section)
            .bind(&r.key)
            .bind(r.value.to_string())
            .bind(&r.updated_at)
            .bind(&r.updated_by)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    async fn insert_config_backup(
        &self,
        b: &ConfigBackup,
        keep: u32,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.writer.begin().await.map_err(classify)?;
        sqlx::query(
            "INSERT INTO configuration_backups
             (id, name, description, created_at, checksum, size_bytes, body)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&b.info.id)
        .bind(&b.info.name)
        .bind(&b.info.description)
        .bind(&b.info.created_at)
        .bind(&b.info.checksum)
        .bind(b.info.size_bytes)
        .bind(&b.body)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        let pruned: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM configuration_backups ORDER BY id DESC LIMIT -1 OFFSET ?",
        )
        .bind(keep as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        for id in &pruned {
            sqlx::query("DELETE FROM configuration_backups WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(pruned)
    }

    async fn config_backups(&self) -> Result<Vec<ConfigBackupInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, description, created_at, checksum, size_bytes
             FROM configuration_backups ORDER BY id DESC",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows.iter().map(backup_info_from_row).collect())
    }

    async fn config_backup(&self, id: &str) -> Result<Option<ConfigBackup>, StoreError> {
        let row = sqlx::query("SELECT * FROM configuration_backups WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(classify)?;
        Ok(row.map(|r| ConfigBackup {
            info: backup_info_from_row(&r),
            body: r.get("body"),
        }))
    }

    async fn delete_config_backup(&self, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM configuration_backups WHERE id = ?")
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(r.rows_affected() > 0)
    }
}
