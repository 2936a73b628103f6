//! Where `handoff` keeps files when no setting says otherwise: the embedded
//! database, and the audit key and anchor of a PostgreSQL database.

use std::path::PathBuf;

/// `handoff` in the platform data directory (not created here).
pub fn data_dir() -> anyhow::Result<PathBuf> {
    Ok(dirs::data_dir()
        .or_else(|| dirs::home_dir().map(|h| h.join(".local/share")))
        .ok_or_else(|| anyhow::anyhow!("no data directory; set HANDOFF_DATABASE_URL"))?
        .join("handoff"))
}
