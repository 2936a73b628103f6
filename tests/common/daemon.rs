//! The network daemon as a child process: `serve --http 127.0.0.1:0
//! --admin 127.0.0.1:0`, with the addresses it printed.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{DbDir, BIN};

/// A running daemon and the addresses it printed.
pub struct Daemon {
    child: Child,
    pub mcp: String,
    pub admin: String,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// A daemon without API keys (`http.auth = none`, loopback).
    pub async fn start(db: &DbDir, extra: &[&str]) -> Daemon {
        Daemon::start_env(db, extra, &[("HANDOFF_HTTP__AUTH", "none")]).await
    }

    /// A daemon with API keys (the default).
    pub async fn start_with_keys(db: &DbDir) -> Daemon {
        Daemon::start_env(db, &[], &[]).await
    }

    pub async fn start_env(db: &DbDir, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(BIN)
            .args(["serve", "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .env("HANDOFF_DATABASE_URL", db.url())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn handoff serve --http");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (mut mcp, mut admin) = (None, None);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while mcp.is_none() || admin.is_none() {
            let line = tokio::time::timeout_at(deadline, lines.next_line())
                .await
                .expect("the daemon printed its addresses in time")
                .unwrap()
                .unwrap_or_else(|| panic!("the daemon exited: {:?}", stderr.lock().unwrap()));
            if let Some(a) = line.strip_prefix("handoff: MCP on http://") {
                mcp = Some(a.trim_end_matches("/mcp").to_string());
            }
            if let Some(a) = line.strip_prefix("handoff: admin on http://") {
                admin = Some(a.trim_end_matches('/').to_string());
            }
            stderr.lock().unwrap().push(line);
        }
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Daemon {
            child,
            mcp: mcp.unwrap(),
            admin: admin.unwrap(),
            stderr,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.mcp)
    }

    /// SIGTERM, and the exit status.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap() as libc::pid_t;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the daemon exits on SIGTERM")
            .unwrap()
    }
}

/// `handoff keys <args>` on `db`: (success, stdout, stderr).
pub fn keys(db: &DbDir, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .arg("keys")
        .args(args)
        .env("HANDOFF_DATABASE_URL", db.url())
        .stdin(Stdio::null())
        .output()
        .expect("run handoff keys");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A new key (`keys create --tenant T --scope S` plus `extra`).
pub fn create_key(db: &DbDir, tenant: &str, scope: &str, extra: &[&str]) -> String {
    let mut args = vec!["create", "--tenant", tenant, "--scope", scope];
    args.extend_from_slice(extra);
    let (ok, key, err) = keys(db, &args);
    assert!(ok && key.starts_with("hnd_"), "keys create: {key} {err}");
    key
}

/// The id part of a key (`hnd_{id}_{secret}`).
pub fn key_id(key: &str) -> &str {
    &key[4..36]
}
