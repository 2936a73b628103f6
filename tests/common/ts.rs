//! The Node.js harness in tests/ts (the official MCP TypeScript SDK client
//! and a real OAuth authorization server), installed under target/ with
//! `npm ci` from its lockfile; reinstalled when the lockfile changes. A
//! missing runtime fails the test, naming it: nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Fails, saying how to install it, unless `program` runs.
pub fn require(program: &str, install: &str) {
    let ok = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{program}` is needed by the MCP client tests and is not on PATH: {install}"
    );
}

/// The target directory (where the harness and virtualenvs live).
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

const FILES: [&str; 4] = [
    "client_check.mjs",
    "oauth_provider.mjs",
    "package.json",
    "package-lock.json",
];

/// The installed harness's `script` (one of tests/ts's files).
pub fn script(script: &str) -> PathBuf {
    require(
        "node",
        "install Node.js 20.19 or newer (e.g. apt install nodejs npm)",
    );
    require("npm", "install npm (e.g. apt install npm)");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ts");
    let copy = target_dir().join("ts-client");
    std::fs::create_dir_all(&copy).expect("mkdir target/ts-client");
    // Test binaries run at once; one installs, the others wait for it.
    let lock = std::fs::File::create(target_dir().join("ts-client.lock")).expect("lock file");
    // SAFETY: flock(2) on a descriptor we own; released when `lock` drops.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) },
        0
    );
    let wanted = std::fs::read(src.join("package-lock.json")).expect("tests/ts/package-lock.json");
    let installed = std::fs::read(copy.join("package-lock.json")).ok();
    for f in FILES {
        std::fs::copy(src.join(f), copy.join(f)).expect("copy tests/ts");
    }
    if installed.as_deref() != Some(&wanted[..])
        || !copy.join("node_modules/@modelcontextprotocol/sdk").is_dir()
        || !copy.join("node_modules/oauth2-mock-server").is_dir()
    {
        eprintln!("installing tests/ts: npm ci in {}", copy.display());
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&copy)
            .output()
            .expect("run npm");
        assert!(
            out.status.success(),
            "npm ci (the official MCP TypeScript SDK and oauth2-mock-server, from \
             registry.npmjs.org) failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(lock);
    copy.join(script)
}
