//! Keying the audit chain (and the configuration backup checksums) with a
//! secret the application's database role cannot read, and anchoring the
//! chain's head outside the database. The chain itself is in
//! `handoff_actors::audit`; `handoff audit verify` is in `crate::cli::audit`.
//!
//! A database's files: beside a SQLite file `handoff.db`, `handoff.db.audit-key`
//! (when `HANDOFF_AUDIT_KEY` is unset) and `handoff.db.audit-anchor`; for
//! PostgreSQL the same two in the platform data directory, named for the
//! server and database (`postgres-{host}-{port}-{db}.audit-key`).

pub mod anchor;
pub mod key;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use handoff_actors::audit::{head_key_id, Mismatch, OnHead};
use handoff_actors::HandoffError;

pub use handoff_actors::audit::AuditKey;

use crate::storage::Database;

/// Where a database's audit key file and anchor are.
#[derive(Debug, Clone)]
pub struct Files {
    pub key: PathBuf,
    pub anchor: PathBuf,
    pub postgres: bool,
}

pub fn files(url: &str) -> anyhow::Result<Files> {
    let (dir, name, postgres) = if url.starts_with("sqlite:") {
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
        let db = opts.get_filename();
        let name = db
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "handoff.db".into());
        match db.parent() {
            Some(dir) if db.to_str() != Some(":memory:") => (dir.to_path_buf(), name, false),
            _ => (crate::paths::data_dir()?, "memory".into(), false),
        }
    } else {
        let opts = sqlx::postgres::PgConnectOptions::from_str(url)
            .map_err(|_| anyhow::anyhow!("invalid PostgreSQL URL"))?;
        let name: String = format!(
            "postgres-{}-{}-{}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or(opts.get_username())
        )
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
        (crate::paths::data_dir()?, name, true)
    };
    Ok(Files {
        key: dir.join(format!("{name}.audit-key")),
        anchor: dir.join(format!("{name}.audit-anchor")),
        postgres,
    })
}

/// The key `serve` installed, for the backup checksums.
static KEY: OnceLock<AuditKey> = OnceLock::new();

pub fn installed() -> Result<&'static AuditKey, HandoffError> {
    KEY.get()
        .ok_or_else(|| HandoffError::internal("the audit key is not loaded"))
}

const BACKUP_CONTEXT: &str = "handoff 2026 configuration backup checksum";

/// A backup's checksum: keyed blake3 over its id and body (`k1:{key id}:{hex}`),
/// so a body rewritten in the database cannot be given a checksum that passes,
/// nor moved under another backup's id.
pub fn backup_checksum(key: &AuditKey, id: &str, body: &str) -> String {
    key.tag(&key.derive(BACKUP_CONTEXT), &[id, body])
}

pub fn check_backup(key: &AuditKey, id: &str, body: &str, checksum: &str) -> Result<(), Mismatch> {
    key.check(&key.derive(BACKUP_CONTEXT), &[id, body], checksum)
}

/// Start-up of `serve`: load (or create) the key, refuse a log another key
/// wrote, and check the log against the anchor. Returns the key and the
/// anchor writer for the audit actor (none when the log disagrees with the
/// anchor: the evidence stays until an operator looks).
pub async fn prepare(
    database_url: &str,
    setting: Option<&str>,
    db: &Arc<dyn Database>,
) -> anyhow::Result<(AuditKey, Option<OnHead>)> {
    let files = files(database_url)?;
    let (key, source) =
        key::load(setting, &files.key, true)?.ok_or_else(|| anyhow::anyhow!("no audit key"))?;
    if files.postgres && !matches!(source, key::Source::Setting) {
        tracing::warn!(
            key_file = %files.key.display(),
            "HANDOFF_AUDIT_KEY is not set: the audit chain is keyed with a key file on this \
             machine; replicas must share one key, so set HANDOFF_AUDIT_KEY on every replica"
        );
    }
    let head = db.audit_head().await?;
    if let Some(h) = &head {
        if let Some(id) = head_key_id(h).filter(|id| *id != key.id()) {
            anyhow::bail!(
                "the audit log was written with audit key {id}, but the key in use ({source}) is \
                 {}: set {} to the key that wrote it (replicas must share one key)",
                key.id(),
                key::SETTING
            );
        }
    }
    tracing::info!(key_id = key.id(), source = %source, "audit chain keyed");
    let _ = KEY.set(key.clone());
    let on_head: Option<OnHead> = match anchor::read(&files.anchor) {
        Ok(Some(a))
            if !anchor::head_agrees(&a, head.as_ref().map(|h| (h.seq, h.hash.as_str()))) =>
        {
            handoff_actors::metrics::metrics().audit_anchor_ok.set(0);
            tracing::error!(
                anchor = %files.anchor.display(),
                anchor_seq = a.seq,
                head_seq = head.as_ref().map(|h| h.seq),
                "the audit log does not reach its anchor: its newest rows were deleted or \
                 rewritten, and `handoff audit verify` will fail. If the database was restored \
                 from a backup on purpose, remove the anchor file"
            );
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "audit anchor left as it is");
            None
        }
        Ok(_) => {
            let w = Arc::new(anchor::Writer::new(files.anchor));
            Some(Arc::new(move |seq, hash: &str| w.advance(seq, hash)))
        }
    };
    Ok((key, on_head))
}
