//! The audit key: 32 bytes from `audit_key` / `HANDOFF_AUDIT_KEY` (hex or
//! base64), or else a random key kept in a file outside the database (mode
//! 0600), created on first use. Never logged: only its id is.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use handoff_actors::audit::AuditKey;

/// The setting, as messages name it.
pub const SETTING: &str = "audit_key (HANDOFF_AUDIT_KEY)";

/// 32 bytes as 64 hex digits or base64 (standard or URL-safe, padded or not).
pub fn parse(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if let Ok(h) = blake3::Hash::from_hex(s) {
        return Some(*h.as_bytes());
    }
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
}

/// Where the key in use came from.
#[derive(Debug, Clone)]
pub enum Source {
    Setting,
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Setting => f.write_str(SETTING),
            Source::File(p) => write!(f, "key file {}", p.display()),
        }
    }
}

/// The configured key, else the one in `file`, else (`create`) a new one
/// written there; `None` when there is none and `create` is false.
pub fn load(
    configured: Option<&str>,
    file: &Path,
    create: bool,
) -> anyhow::Result<Option<(AuditKey, Source)>> {
    if let Some(s) = configured {
        let bytes = parse(s).ok_or_else(|| {
            anyhow::anyhow!("{SETTING} must be 32 bytes, as 64 hex digits or base64")
        })?;
        return Ok(Some((AuditKey::new(bytes), Source::Setting)));
    }
    if !file.exists() {
        if !create {
            return Ok(None);
        }
        create_file(file)?;
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read the audit key file {}: {e}", file.display()))?;
    let bytes = parse(&text).ok_or_else(|| {
        anyhow::anyhow!(
            "the audit key file {} does not hold 32 bytes as 64 hex digits",
            file.display()
        )
    })?;
    if let Ok(meta) = std::fs::metadata(file) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %file.display(),
                "the audit key file is readable by other users; chmod 600 it"
            );
        }
    }
    Ok(Some((
        AuditKey::new(bytes),
        Source::File(file.to_path_buf()),
    )))
}

/// A fresh random key, written to a temporary file (0600) and linked into
/// place: `link` fails if the name exists, so when two processes start at
/// once both end up reading the one that won, never a half-written file.
fn create_file(file: &Path) -> anyhow::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let mut key = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("audit-key"),
        std::process::id()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(f, "{}", blake3::Hash::from(key).to_hex())?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, file) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        // The key must outlive a crash as surely as the rows keyed with it.
        std::fs::File::open(dir)?.sync_all()
    })();
    let _ = std::fs::remove_file(&tmp);
    written.map_err(|e| anyhow::anyhow!("cannot write the audit key file {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base64_of_32_bytes_parse() {
        let bytes: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        let hex = blake3::Hash::from(bytes).to_hex().to_string();
        assert_eq!(parse(&hex), Some(bytes));
        assert_eq!(parse(&hex.to_uppercase()), Some(bytes));
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        assert_eq!(parse(&STANDARD.encode(bytes)), Some(bytes));
        assert_eq!(parse(&URL_SAFE_NO_PAD.encode(bytes)), Some(bytes));
        assert_eq!(parse(&hex[..62]), None);
        assert_eq!(parse(&STANDARD.encode([1u8; 31])), None);
        assert_eq!(parse("correct horse battery staple"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn a_key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub").join("db.audit-key");
        assert!(load(None, &file, false).unwrap().is_none());
        let (a, _) = load(None, &file, true).unwrap().unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (b, _) = load(None, &file, true).unwrap().unwrap();
        assert_eq!(a.id(), b.id());
        // The setting wins over the file.
        let (c, src) = load(Some(&"ab".repeat(32)), &file, true).unwrap().unwrap();
        assert!(matches!(src, Source::Setting));
        assert_ne!(c.id(), a.id());
        assert!(load(Some("nope"), &file, true).is_err());
    }
}
