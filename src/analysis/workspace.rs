//! Confinement: files are read only inside the workspace root. A path is
//! taken relative to the root; `..` that leaves it, an absolute path outside
//! it and a symlink that resolves outside it are `FORBIDDEN`. Both the root
//! and the target are canonicalised (symlinks resolved) before the
//! `starts_with` check, and the opened file is checked again after `open`
//! so a path swapped for a symlink in between is caught too.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use handoff_actors::{ErrorCode, HandoffError};

/// A requested path after confinement.
#[derive(Debug, PartialEq)]
pub enum Resolved {
    /// Exists and lies inside the root (canonical path).
    Found(PathBuf),
    /// Nothing there (its nearest existing ancestor lies inside the root).
    Missing,
    /// Exists, but cannot be examined (e.g. permission denied).
    Unreadable(String),
}

/// Why a file's text was not analysed.
#[derive(Debug, PartialEq)]
pub enum Unread {
    /// Over the content limit: skipped, with the reason.
    TooLarge {
        size: u64,
        limit: usize,
    },
    /// Not a regular file (a directory, a socket, a FIFO, …).
    NotAFile,
    /// A regular file with more than one name: a hard link, whose other
    /// name may lie outside the root, where no path check can see it.
    HardLinked,
    Io(String),
}

/// Open for reading without following a final symlink and without
/// blocking on a FIFO or a device.
fn open_no_follow(path: &Path) -> std::io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    o.open(path)
}

/// The number of names (hard links) a file has.
fn links(m: &std::fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        m.nlink()
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        1
    }
}

pub struct Workspace {
    root: PathBuf,
}

fn forbidden(field: &str, given: &str, why: &str) -> HandoffError {
    HandoffError::new(
        ErrorCode::Forbidden,
        format!("{field} ('{given}') {why}; analyze_codebase reads only inside the workspace root"),
    )
    .detail("field", field)
    .detail("path", given)
}

/// `..` and `.` folded without touching the file system. `None` if `..`
/// climbs above the file system root.
fn lexical(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::Normal(_) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() || out.as_os_str().is_empty() {
                    return None;
                }
            }
        }
    }
    Some(out)
}

impl Workspace {
    /// The configured root, canonicalised.
    pub fn open(root: &Path) -> Result<Workspace, HandoffError> {
        let root = std::fs::canonicalize(root).map_err(|e| {
            HandoffError::internal(format!(
                "the workspace root (HANDOFF_WORKSPACE_ROOT) cannot be resolved: {}",
                e.kind()
            ))
        })?;
        Ok(Workspace { root })
    }

    #[cfg(test)]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Confine `given` (the argument `field`) to the root.
    pub fn resolve(&self, field: &str, given: &str) -> Result<Resolved, HandoffError> {
        let joined = self.root.join(given); // an absolute `given` replaces the root
        match lexical(&joined) {
            Some(p) if p.starts_with(&self.root) => {}
            _ => {
                let why = if Path::new(given).is_absolute() {
                    "is outside the workspace root"
                } else {
                    "escapes the workspace root"
                };
                return Err(forbidden(field, given, why));
            }
        }
        match std::fs::canonicalize(&joined) {
            Ok(real) if real.starts_with(&self.root) => Ok(Resolved::Found(real)),
            Ok(_) => Err(forbidden(
                field,
                given,
                "resolves (through a symlink) outside the workspace root",
            )),
            Err(e) => {
                // Nothing to read there; but the answer must not tell what
                // exists outside the root either: the nearest existing
                // ancestor must itself lie inside.
                for anc in joined.ancestors().skip(1) {
                    if let Ok(real) = std::fs::canonicalize(anc) {
                        if !real.starts_with(&self.root) {
                            return Err(forbidden(
                                field,
                                given,
                                "resolves (through a symlink) outside the workspace root",
                            ));
                        }
                        break;
                    }
                }
                match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
                        Ok(Resolved::Missing)
                    }
                    k => Ok(Resolved::Unreadable(k.to_string())),
                }
            }
        }
    }

    /// The path relative to the root, `/`-separated, for display.
    pub fn relative(&self, real: &Path) -> String {
        let rel = real.strip_prefix(&self.root).unwrap_or(real);
        let s = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if s.is_empty() {
            ".".into()
        } else {
            s
        }
    }

    /// Read a resolved file, at most `limit` bytes. `Err` only when the file
    /// turned out to lie outside the root after all (swapped in between).
    pub fn read(
        &self,
        field: &str,
        given: &str,
        real: &Path,
        limit: usize,
    ) -> Result<Result<Vec<u8>, Unread>, HandoffError> {
        // lstat: `real` is canonical, so a symlink here was swapped in.
        let meta = match std::fs::symlink_metadata(real) {
            Ok(m) => m,
            Err(e) => return Ok(Err(Unread::Io(e.kind().to_string()))),
        };
        if !meta.is_file() {
            return Ok(Err(Unread::NotAFile));
        }
        if meta.len() > limit as u64 {
            return Ok(Err(Unread::TooLarge {
                size: meta.len(),
                limit,
            }));
        }
        // What is opened is checked again on its descriptor: a symlink
        // swapped in is not followed (O_NOFOLLOW), a FIFO swapped in does
        // not block the open (O_NONBLOCK) and is refused by the fstat below.
        let file = match open_no_follow(real) {
            Ok(f) => f,
            Err(e) => return Ok(Err(Unread::Io(e.kind().to_string()))),
        };
        let opened = match file.metadata() {
            Ok(m) => m,
            Err(e) => return Ok(Err(Unread::Io(e.kind().to_string()))),
        };
        if !self.still_inside(&file, &meta, &opened) {
            return Err(forbidden(
                field,
                given,
                "changed to point outside the workspace root while being read",
            ));
        }
        if !opened.is_file() {
            return Ok(Err(Unread::NotAFile));
        }
        if links(&opened) > 1 {
            return Ok(Err(Unread::HardLinked));
        }
        let mut buf = Vec::with_capacity(opened.len().min(limit as u64) as usize);
        if let Err(e) = file.take(limit as u64 + 1).read_to_end(&mut buf) {
            return Ok(Err(Unread::Io(e.kind().to_string())));
        }
        if buf.len() > limit {
            // It grew after the size check.
            return Ok(Err(Unread::TooLarge {
                size: buf.len() as u64,
                limit,
            }));
        }
        Ok(Ok(buf))
    }

    /// Is the opened file the one that was checked, inside the root? Both:
    /// the descriptor's path is under the root, and it is the same file
    /// (device and inode) as the one the path checks saw.
    #[allow(unused_variables)]
    fn still_inside(
        &self,
        file: &File,
        checked: &std::fs::Metadata,
        opened: &std::fs::Metadata,
    ) -> bool {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
                if !real.starts_with(&self.root) {
                    return false;
                }
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            checked.dev() == opened.dev() && checked.ino() == opened.ino()
        }
        #[cfg(not(unix))]
        {
            true
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, Workspace) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("src")).unwrap();
        std::fs::write(root.path().join("src/lib.rs"), "fn a() {}\n").unwrap();
        std::fs::write(outside.path().join("secret.txt"), "secret\n").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.txt"),
            root.path().join("link.txt"),
        )
        .unwrap();
        std::os::unix::fs::symlink(root.path().join("src/lib.rs"), root.path().join("ok.rs"))
            .unwrap();
        let ws = Workspace::open(root.path()).unwrap();
        (root, outside, ws)
    }

    fn code(r: Result<Resolved, HandoffError>) -> Option<ErrorCode> {
        r.err().map(|e| e.code)
    }

    #[test]
    fn inside_paths_resolve() {
        let (_r, _o, ws) = setup();
        let Resolved::Found(p) = ws.resolve("f", "src/lib.rs").unwrap() else {
            panic!("not found")
        };
        assert_eq!(ws.relative(&p), "src/lib.rs");
        // `..` that stays inside is fine; so is a symlink to a file inside.
        assert!(matches!(
            ws.resolve("f", "src/../src/./lib.rs").unwrap(),
            Resolved::Found(_)
        ));
        let Resolved::Found(p) = ws.resolve("f", "ok.rs").unwrap() else {
            panic!("symlink inside")
        };
        assert_eq!(ws.relative(&p), "src/lib.rs");
        let abs = ws.root().join("src/lib.rs");
        assert!(matches!(
            ws.resolve("f", abs.to_str().unwrap()).unwrap(),
            Resolved::Found(_)
        ));
        assert_eq!(ws.resolve("f", "nope.rs").unwrap(), Resolved::Missing);
        assert_eq!(ws.resolve("f", "src/lib.rs/x").unwrap(), Resolved::Missing);
    }

    #[test]
    fn escapes_are_forbidden() {
        let (_r, o, ws) = setup();
        let forbidden = Some(ErrorCode::Forbidden);
        assert_eq!(code(ws.resolve("f", "../x")), forbidden);
        assert_eq!(code(ws.resolve("f", "src/../../x")), forbidden);
        assert_eq!(code(ws.resolve("f", "/etc/passwd")), forbidden);
        assert_eq!(code(ws.resolve("f", "link.txt")), forbidden);
        assert_eq!(code(ws.resolve("f", "out/secret.txt")), forbidden);
        // Missing behind a symlink that leaves: still forbidden, so the
        // answer does not reveal what exists outside.
        assert_eq!(code(ws.resolve("f", "out/missing.txt")), forbidden);
        let outside = o.path().join("secret.txt");
        assert_eq!(code(ws.resolve("f", outside.to_str().unwrap())), forbidden);
        let e = ws.resolve("file_paths[0]", "../x").unwrap_err();
        assert_eq!(e.details["field"], "file_paths[0]");
        assert!(!e.message.contains(o.path().to_str().unwrap()));
    }

    #[test]
    fn read_limits_and_non_files() {
        let (_r, _o, ws) = setup();
        let Resolved::Found(p) = ws.resolve("f", "src/lib.rs").unwrap() else {
            panic!()
        };
        assert_eq!(ws.read("f", "x", &p, 100).unwrap().unwrap(), b"fn a() {}\n");
        assert_eq!(
            ws.read("f", "x", &p, 4).unwrap().unwrap_err(),
            Unread::TooLarge { size: 10, limit: 4 }
        );
        let Resolved::Found(d) = ws.resolve("f", "src").unwrap() else {
            panic!()
        };
        assert_eq!(
            ws.read("f", "x", &d, 100).unwrap().unwrap_err(),
            Unread::NotAFile
        );
    }

    /// A FIFO swapped in after the checks does not block the open, and a
    /// symlink swapped in is not followed (the old `File::open` blocked a
    /// blocking-pool thread for ever on the first and followed the second).
    #[test]
    fn the_open_neither_blocks_nor_follows() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let f = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(open_no_follow(&f).map(|f| f.metadata().unwrap().is_file()));
        });
        let opened = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("opening a FIFO blocked");
        assert!(!opened.unwrap(), "a FIFO is not a regular file");
        std::fs::write(dir.path().join("target"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join("link")).unwrap();
        assert!(open_no_follow(&dir.path().join("link")).is_err());
    }

    #[test]
    fn hard_links_are_not_read() {
        let (root, outside, ws) = setup();
        std::fs::write(outside.path().join("secret"), "top secret").unwrap();
        std::fs::hard_link(outside.path().join("secret"), root.path().join("h.rs")).unwrap();
        let Resolved::Found(p) = ws.resolve("f", "h.rs").unwrap() else {
            panic!()
        };
        assert_eq!(
            ws.read("f", "h.rs", &p, 100).unwrap().unwrap_err(),
            Unread::HardLinked
        );
    }
}
