//! The network daemon as a child process: `serve --http 127.0.0.1:0
//! --admin 127.0.0.1:0`, with the addresses it printed.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use super::{DbDir, BIN};

/// A running daemon and the addresses it printed.
pub struct Daemon {
    child: Child,
    /// `http` or `https`.
    pub scheme: &'static str,
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
            // `env` may name another database (one behind a proxy).
            .env("HANDOFF_DATABASE_URL", db.url())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn handoff serve --http");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (mut mcp, mut admin, mut scheme) = (None, None, "http");
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
            if let Some(a) = line.strip_prefix("handoff: MCP on https://") {
                mcp = Some(a.trim_end_matches("/mcp").to_string());
                scheme = "https";
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
            scheme,
            mcp: mcp.unwrap(),
            admin: admin.unwrap(),
            stderr,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}/mcp", self.scheme, self.mcp)
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the daemon is running")
    }

    /// Send `signal` to the daemon.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id().unwrap() as libc::pid_t;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, signal) };
    }

    /// SIGTERM, and the exit status.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
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

/// One POST to /mcp: (status, head, body).
pub async fn post(
    addr: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    let body = body.to_string();
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("no answer in 10 s"))??;
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no complete head"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    Ok((status, head.to_string(), body.to_string()))
}

pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The JSON-RPC message with `id` in a JSON or SSE (possibly chunked) body.
pub fn try_message(body: &str, id: i64) -> Option<Value> {
    body.lines()
        .filter_map(|l| {
            let l = l.trim();
            let json = l.strip_prefix("data:").map(str::trim).unwrap_or(l);
            serde_json::from_str::<Value>(json).ok()
        })
        .find(|v| v["id"] == id)
}

/// An MCP session (2025-06-18) over raw HTTP, with a bearer key or none.
pub struct McpHttp {
    pub addr: String,
    pub key: Option<String>,
    pub session: Option<String>,
    pub next: i64,
}

impl McpHttp {
    pub async fn open(addr: &str, key: Option<&str>) -> McpHttp {
        let mut c = McpHttp {
            addr: addr.to_string(),
            key: key.map(str::to_string),
            session: None,
            next: 0,
        };
        let init = c
            .rpc(
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "auth-test", "version": "0"}}),
            )
            .await;
        assert_eq!(init["result"]["serverInfo"]["name"], "handoff", "{init}");
        let headers = c.headers();
        let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, head, _) = post(
            &c.addr,
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            &refs,
        )
        .await
        .expect("initialized");
        assert_eq!(status, 202, "{head}");
        c
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        if let Some(k) = &self.key {
            h.push(("Authorization", format!("Bearer {k}")));
        }
        if let Some(s) = &self.session {
            h.push(("Mcp-Session-Id", s.clone()));
            h.push(("Mcp-Protocol-Version", "2025-06-18".to_string()));
        }
        h
    }

    /// A request and its reply; `None` when the connection failed (the
    /// daemon went away).
    pub async fn try_rpc(&mut self, method: &str, params: Value) -> Option<Value> {
        self.next += 1;
        let id = self.next;
        let headers = self.headers();
        let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let (status, head, body) = post(&self.addr, &body, &refs).await.ok()?;
        if status != 200 {
            return None;
        }
        if let Some(s) = header(&head, "mcp-session-id") {
            self.session = Some(s.to_string());
        }
        try_message(&body, id)
    }

    /// A request as sent on this session: (status, head, body), whatever
    /// the status.
    pub async fn exchange(&mut self, method: &str, params: Value) -> (u16, String, String) {
        self.next += 1;
        let headers = self.headers();
        let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = json!({"jsonrpc": "2.0", "id": self.next, "method": method, "params": params});
        post(&self.addr, &body, &refs).await.expect("POST /mcp")
    }

    pub async fn rpc(&mut self, method: &str, params: Value) -> Value {
        self.try_rpc(method, params)
            .await
            .unwrap_or_else(|| panic!("{method}: no reply"))
    }

    /// A tool's result body (structuredContent, or the error body).
    pub async fn call(&mut self, tool: &str, args: Value) -> Value {
        let r = self
            .rpc("tools/call", json!({"name": tool, "arguments": args}))
            .await;
        r["result"]["structuredContent"].clone()
    }

    pub async fn read(&mut self, uri: &str) -> Value {
        self.rpc("resources/read", json!({"uri": uri})).await
    }
}
