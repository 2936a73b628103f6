//! Test harness: runs the real `handoff` binary as a child process and talks
//! to it through rmcp's MCP client over the child's stdin/stdout.
//!
//! Every server gets its own database in its own temporary directory, so
//! tests run in parallel without colliding.

#![allow(dead_code)]

pub mod daemon;
pub mod oauth;
pub mod ts;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, ReadResourceRequestParams, ResourceContents};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value};
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_handoff");

/// True when the suite runs against PostgreSQL
/// (`HANDOFF_TEST_BACKEND=postgres`); SQLite otherwise.
pub fn postgres_backend() -> bool {
    match std::env::var("HANDOFF_TEST_BACKEND").as_deref() {
        Ok("postgres") | Ok("postgresql") => true,
        Ok("") | Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("HANDOFF_TEST_BACKEND must be sqlite or postgres, not {other:?}"),
    }
}

/// A database that outlives one server process (for restarts), with a
/// directory for its logs: a SQLite file in the directory by default, or a
/// fresh PostgreSQL database with `HANDOFF_TEST_BACKEND=postgres`.
pub struct DbDir {
    pub dir: tempfile::TempDir,
    pg: Option<PgTestDb>,
}

impl DbDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            pg: postgres_backend().then(PgTestDb::create),
        }
    }
    /// A fresh PostgreSQL database whatever `HANDOFF_TEST_BACKEND` says
    /// (for tests about PostgreSQL itself).
    pub fn postgres() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            pg: Some(PgTestDb::create()),
        }
    }
    /// The database's name on the test PostgreSQL server.
    pub fn pg_name(&self) -> Option<&str> {
        self.pg.as_ref().map(|p| p.name.as_str())
    }
    /// A SQLite database whatever `HANDOFF_TEST_BACKEND` says (for tests
    /// that move data between backends).
    pub fn sqlite() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            pg: None,
        }
    }
    pub fn url(&self) -> String {
        match &self.pg {
            Some(pg) => pg.url(),
            None => format!("sqlite://{}", self.dir.path().join("handoff.db").display()),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn stderr_log(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }
}

/// A uniquely named database on the test PostgreSQL server
/// (`HANDOFF_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432`),
/// created with psql and dropped (with any sessions still on it) on drop.
struct PgTestDb {
    server: String,
    name: String,
}

/// The test PostgreSQL server's URL, without a database
/// (`HANDOFF_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432`).
pub fn pg_server_url() -> String {
    std::env::var("HANDOFF_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
        .trim_end_matches('/')
        .to_string()
}

/// The test Redis (`HANDOFF_TEST_REDIS_URL`, default
/// `redis://127.0.0.1:6379/`); it must answer, or the test fails saying so.
pub fn redis_url() -> String {
    let url = std::env::var("HANDOFF_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let out = std::process::Command::new("redis-cli")
        .args(["-u", &url, "ping"])
        .stdin(Stdio::null())
        .output();
    let pong = out
        .as_ref()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG");
    assert!(
        pong,
        "no Redis answers at {url} (set HANDOFF_TEST_REDIS_URL, or start one: \
         redis-server --port 6379 --save '' --appendonly no)"
    );
    url
}

/// `host:port` of the test PostgreSQL server (for a proxy in front of it).
pub fn pg_server_addr() -> String {
    let url = pg_server_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = host_port.split(['/', '?']).next().unwrap_or(host_port);
    if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    }
}

/// The test PostgreSQL server's URL with the user info kept and the host
/// replaced by `addr` (a proxy), for database `name`.
pub fn pg_url_via(addr: &str, name: &str) -> String {
    let url = pg_server_url();
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url.as_str()));
    let user = rest
        .rsplit_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    format!("{scheme}://{user}{addr}/{name}")
}

impl PgTestDb {
    fn create() -> Self {
        let server = pg_server_url();
        let name = format!("handoff_test_{}", uuid::Uuid::new_v4().simple());
        let db = PgTestDb { server, name };
        db.psql(&format!("CREATE DATABASE {}", db.name))
            .unwrap_or_else(|e| panic!("HANDOFF_TEST_BACKEND=postgres: {e}"));
        db
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    fn psql(&self, sql: &str) -> Result<(), String> {
        let out = std::process::Command::new("psql")
            .arg(format!("{}/postgres", self.server))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "psql {} -c {sql:?} failed: {}",
                self.server,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        if let Err(e) = self.psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )) {
            eprintln!("warning: {e}");
        }
    }
}

pub struct Server {
    pub child: Child,
    pub client: RunningService<RoleClient, ()>,
    /// Compiled outputSchema of every listed tool, fetched on first call.
    validators: tokio::sync::OnceCell<std::collections::HashMap<String, jsonschema::Validator>>,
}

/// What a tool call returned: the structured content and the error flag.
#[derive(Debug, Clone)]
pub struct ToolOut {
    pub is_error: bool,
    pub body: Value,
}

impl ToolOut {
    pub fn ok(&self) -> &Value {
        assert!(!self.is_error, "expected success, got {}", self.body);
        assert_eq!(self.body["success"], true, "{}", self.body);
        &self.body
    }
    /// Asserts an error with this code and the contract's error shape.
    pub fn err(&self, code: &str) -> &Value {
        assert!(self.is_error, "expected {code}, got success {}", self.body);
        assert_eq!(self.body["success"], false);
        assert_eq!(self.body["error_code"], code, "{}", self.body);
        assert!(self.body["error"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(self.body["request_id"]
            .as_str()
            .is_some_and(|s| s.len() == 36));
        assert!(self.body["timestamp"].is_string());
        assert!(self.body["retryable"].is_boolean());
        assert!(self.body["details"].is_object());
        &self.body
    }
}

impl Server {
    /// Start a server on `db` with extra environment variables.
    pub async fn start(db: &DbDir, env: &[(&str, &str)]) -> Server {
        Server::start_with(db, env, |_| {}).await
    }

    /// `start`, with a last say over the command (e.g. a `pre_exec`).
    pub async fn start_with(
        db: &DbDir,
        env: &[(&str, &str)],
        setup: impl FnOnce(&mut Command),
    ) -> Server {
        // `HANDOFF_TEST_BIN` runs another build of the server (benchmarks
        // that compare two revisions with the same test code).
        let bin = std::env::var("HANDOFF_TEST_BIN").unwrap_or_else(|_| BIN.to_string());
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env("HANDOFF_DATABASE_URL", db.url())
            .env("HANDOFF_LOG", "info")
            // Most tests exercise the admin tools; the ones about the
            // capability itself pass HANDOFF_STDIO__ADMIN=false.
            .env("HANDOFF_STDIO__ADMIN", "true")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(db.stderr_log())
                    .expect("stderr log"),
            )
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        setup(&mut cmd);
        let mut child = cmd.spawn().expect("spawn handoff");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take().expect("stdin");
        let client = tokio::time::timeout(Duration::from_secs(20), ().serve((stdout, stdin)))
            .await
            .expect("initialize timed out")
            .expect("initialize");
        Server::from_parts(child, client)
    }

    /// A server whose client was connected by the caller.
    pub fn from_parts(child: Child, client: RunningService<RoleClient, ()>) -> Server {
        Server {
            child,
            client,
            validators: tokio::sync::OnceCell::new(),
        }
    }

    /// Every tool result of the suite is checked against the tool's
    /// published outputSchema, successes and errors alike.
    async fn check_output_schema(&self, tool: &str, body: &Value) {
        let validators = self
            .validators
            .get_or_init(|| async {
                tool_schemas(self)
                    .await
                    .into_iter()
                    .map(|(name, (_, output))| {
                        let v = jsonschema::validator_for(&output).unwrap_or_else(|e| {
                            panic!("{name}: the published outputSchema does not compile: {e}")
                        });
                        (name, v)
                    })
                    .collect()
            })
            .await;
        let validator = validators
            .get(tool)
            .unwrap_or_else(|| panic!("{tool} is not in tools/list"));
        let problems = validation_problems(validator, body);
        assert!(
            problems.is_empty(),
            "{tool}: result does not match its outputSchema: {problems:?}\n{body}"
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("pid")
    }

    /// Call a tool; returns structured content (asserting it equals the
    /// JSON in the text content, as the contract requires).
    pub async fn call(&self, name: &str, args: Value) -> ToolOut {
        self.try_call(name, args)
            .await
            .expect("tools/call failed at protocol level")
    }

    pub async fn try_call(&self, name: &str, args: Value) -> Result<ToolOut, rmcp::ServiceError> {
        let args: Map<String, Value> = match args {
            Value::Object(m) => m,
            other => panic!("arguments must be an object, got {other}"),
        };
        let r = self
            .client
            .call_tool(CallToolRequestParams::new(name.to_string()).with_arguments(args))
            .await?;
        let body = r.structured_content.clone().expect("structuredContent");
        let text = r
            .content
            .first()
            .and_then(|c| c.as_text())
            .map(|t| t.text.clone())
            .expect("one text content item");
        // The contract asks for the JSON in a text item too (for clients
        // that ignore structuredContent); the server writes one from the
        // other, so this is a shape check, and the schema check below is
        // the one that can catch a wrong result.
        let parsed: Value = serde_json::from_str(&text).expect("text content is JSON");
        assert_eq!(parsed, body, "text content and structuredContent differ");
        self.check_output_schema(name, &body).await;
        Ok(ToolOut {
            is_error: r.is_error.unwrap_or(false),
            body,
        })
    }

    /// Read a JSON resource.
    pub async fn read(&self, uri: &str) -> Result<Value, rmcp::ServiceError> {
        let text = self.read_text(uri).await?;
        Ok(serde_json::from_str(&text).expect("resource is JSON"))
    }

    pub async fn read_text(&self, uri: &str) -> Result<String, rmcp::ServiceError> {
        let r = self
            .client
            .read_resource(ReadResourceRequestParams::new(uri.to_string()))
            .await?;
        match r.contents.first() {
            Some(ResourceContents::TextResourceContents { text, .. }) => Ok(text.clone()),
            other => panic!("expected text contents, got {other:?}"),
        }
    }

    /// Close stdin (EOF) and wait for the process to exit.
    pub async fn close(self) -> std::process::ExitStatus {
        let Server {
            mut child, client, ..
        } = self;
        let _ = client.cancel().await;
        tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect("server did not exit after EOF")
            .expect("wait")
    }

    /// SIGKILL, no chance to flush anything.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }
}

/// Register `key` for the agent `writer`.
pub async fn register(s: &Server, key: &str) {
    s.call(
        "register_session",
        serde_json::json!({"session_key": key, "agent_from": "writer"}),
    )
    .await
    .ok();
}

/// Append one message to `key`; returns the acknowledged sequence number.
pub async fn append(s: &Server, key: &str, content: &str) -> i64 {
    let r = s
        .call(
            "update_context",
            serde_json::json!({"session_key": key, "context_type": "message", "content": content}),
        )
        .await;
    let body = r.ok();
    assert_eq!(body["context_entry"]["content_length"], content.len());
    body["context_entry"]["sequence_number"]
        .as_i64()
        .expect("sequence_number")
}

/// All entries of a session, following pages.
pub async fn all_entries(s: &Server, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let r = s
            .call(
                "get_context",
                serde_json::json!({"session_key": key, "after_sequence": after, "limit": 1000}),
            )
            .await;
        let body = r.ok().clone();
        let entries = body["entries"].as_array().expect("entries").clone();
        after = body["next_after_sequence"]
            .as_i64()
            .expect("next_after_sequence");
        out.extend(entries);
        if body["has_more"] != true {
            return out;
        }
    }
}

// ---- Helpers for the concurrency, lifecycle, durability and client tests
// ---- (appended; generic enough for any test file).

/// The component `name` (e.g. `actor.sessions`) of `handoff://health`.
pub async fn health_component(s: &Server, name: &str) -> Value {
    let h = s.read("handoff://health").await.expect("read health");
    h["components"]
        .as_array()
        .expect("health components")
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no health component {name} in {h}"))
}

/// The value of one sample in a Prometheus text exposition, e.g.
/// `prometheus_value(text, "handoff_actor_restarts_total", &[("kind", "session")])`.
/// Labels not given are not checked; the first matching sample wins.
pub fn prometheus_value(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let (label_part, value) = if let Some(r) = rest.strip_prefix('{') {
            let Some((l, v)) = r.split_once('}') else {
                continue;
            };
            (l, v.trim())
        } else if rest.starts_with(' ') {
            ("", rest.trim())
        } else {
            continue; // another metric sharing the prefix
        };
        let all = labels
            .iter()
            .all(|(k, v)| label_part.split(',').any(|p| p == format!("{k}=\"{v}\"")));
        if all {
            return value.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

/// Asserts the entries' sequence numbers are exactly 1..=len, in order.
pub fn assert_gap_free(key: &str, entries: &[Value]) {
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(
            e["sequence_number"].as_i64(),
            Some(i as i64 + 1),
            "session {key}: entry at position {i} has sequence_number {} (expected {}); {} entries read back",
            e["sequence_number"],
            i + 1,
            entries.len()
        );
    }
}

impl Server {
    /// SIGKILL the process without consuming the handle (so clones of an
    /// `Arc<Server>` may still be mid-call). Reap it with `reap`.
    pub fn sigkill_now(&self) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child.
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill({pid}, SIGKILL) failed");
    }

    /// Wait for the process to exit (after `sigkill_now`).
    pub async fn reap(self) -> std::process::ExitStatus {
        let Server {
            mut child, client, ..
        } = self;
        drop(client);
        tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect("server did not exit")
            .expect("wait")
    }
}

// ---- Direct SQL on the test database, for either backend (for tests that
// ---- inspect or tamper with stored rows). Values are formatted into the
// ---- SQL by the test: only for trusted literals (ids, fixed strings).

/// Run one or more statements.
pub async fn sql_execute(db: &DbDir, sql: &str) {
    if let Some(pg) = &db.pg {
        let out = std::process::Command::new("psql")
            .arg(pg.url())
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&db.url())
            .await
            .expect("open the test database");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{sql:?}: {e}"));
        c.close().await.ok();
    }
}

/// Rows of a query, each column as text (NULL as `None`).
pub async fn sql_rows(db: &DbDir, sql: &str) -> Vec<Vec<Option<String>>> {
    if let Some(pg) = &db.pg {
        // Unit and record separators cannot occur in what the tests read.
        let out = std::process::Command::new("psql")
            .arg(pg.url())
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-P",
                "null=\u{1}",
                "-F",
                "\u{1f}",
                "-R",
                "\u{1e}",
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8");
        text.trim_end_matches('\n')
            .split('\u{1e}')
            .filter(|r| !r.is_empty())
            .map(|r| {
                r.split('\u{1f}')
                    .map(|c| (c != "\u{1}").then(|| c.to_string()))
                    .collect()
            })
            .collect()
    } else {
        use sqlx::{Connection, Row};
        let mut c = sqlx::SqliteConnection::connect(&db.url())
            .await
            .expect("open the test database");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_all(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{sql:?}: {e}"));
        c.close().await.ok();
        rows.iter()
            .map(|r| {
                (0..r.columns().len())
                    .map(|i| {
                        r.try_get::<Option<String>, _>(i)
                            .or_else(|_| {
                                r.try_get::<Option<i64>, _>(i)
                                    .map(|v| v.map(|v| v.to_string()))
                            })
                            .or_else(|_| {
                                r.try_get::<Option<f64>, _>(i)
                                    .map(|v| v.map(|v| v.to_string()))
                            })
                            .expect("a text or numeric column")
                    })
                    .collect()
            })
            .collect()
    }
}

/// `handoff audit verify` on `db` must report an intact chain.
pub fn audit_verify(db: &DbDir) {
    let out = std::process::Command::new(BIN)
        .args(["audit", "verify"])
        .env("HANDOFF_DATABASE_URL", db.url())
        .stdin(Stdio::null())
        .output()
        .expect("run handoff audit verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("audit chain intact"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a JSON Schema validator (the `jsonschema` crate, the draft the
/// schema names or 2020-12) finds wrong with `v` against `schema`: one line
/// per problem, empty when `v` is valid. A schema that does not compile is
/// a problem too.
pub fn schema_problems(schema: &Value, v: &Value) -> Vec<String> {
    let validator = match jsonschema::validator_for(schema) {
        Ok(validator) => validator,
        Err(e) => return vec![format!("the schema itself is invalid: {e}")],
    };
    validation_problems(&validator, v)
}

fn validation_problems(validator: &jsonschema::Validator, v: &Value) -> Vec<String> {
    validator
        .iter_errors(v)
        .map(|e| format!("at {}: {e}", e.instance_path()))
        .collect()
}

/// Every tool's published (inputSchema, outputSchema), by name.
pub async fn tool_schemas(s: &Server) -> std::collections::HashMap<String, (Value, Value)> {
    s.client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| {
            let input = Value::Object((*t.input_schema).clone());
            let output = Value::Object(
                (*t.output_schema
                    .unwrap_or_else(|| panic!("{} has no outputSchema", t.name)))
                .clone(),
            );
            (t.name.to_string(), (input, output))
        })
        .collect()
}

/// A TCP proxy in front of a dependency. `cut` drops every connection and
/// swallows new ones without answering (a dead network, not a refusal);
/// `restore` forwards again.
pub struct Proxy {
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
            Default::default();
        let (c, l) = (cut.clone(), links.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    return;
                };
                let (c, upstream) = (c.clone(), upstream.clone());
                let link = tokio::spawn(async move {
                    while c.load(Ordering::Relaxed) {
                        // Hold the socket open and say nothing.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                l.lock().unwrap().push(link);
            }
        });
        Proxy { port, cut, links }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
        for l in self.links.lock().unwrap().drain(..) {
            l.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `promtool ARGS` (in `dir`, with `stdin`): (success, what it said).
pub fn promtool(args: &[&str], dir: Option<&Path>, stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut cmd = std::process::Command::new("promtool");
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let mut child = cmd
        .spawn()
        .expect("`promtool` is needed (Debian: apt install prometheus)");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
