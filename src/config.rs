//! Configuration: defaults, overridden by an optional TOML file
//! (`HANDOFF_CONFIG`), overridden by `HANDOFF_*` environment variables.
//! One typed struct is the source of truth; an invalid value stops start-up
//! with a message naming the setting.

use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::settings::{
    AnalyticsConfig, BackupsConfig, Live, MonitoringConfig, RetentionPolicy, Settings,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownFields {
    Reject,
    Ignore,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `sqlite://path` (default: a file in the platform data directory) or
    /// `postgres://…`.
    pub database_url: Option<String>,
    /// A session actor stops after this long without activity.
    #[serde(with = "humantime_serde")]
    pub session_idle: Duration,
    /// Live session actors at most; beyond it the oldest passivate (so
    /// memory stays bounded whatever the idle timeout).
    pub max_live_sessions: usize,
    /// Unknown argument fields: `reject` (VALIDATION_ERROR) or `ignore`.
    pub unknown_fields: UnknownFields,
    pub max_content_bytes: usize,
    pub max_metadata_bytes: usize,
    pub max_metadata_depth: usize,
    pub max_batch_entries: usize,
    pub max_message_bytes: usize,
    pub max_session_key_bytes: usize,
    pub max_agent_id_bytes: usize,
    pub page_size_default: u32,
    pub page_size_max: u32,
    /// Content bytes one context page carries at most (at least one entry).
    pub page_bytes_max: usize,
    /// Consecutive database failures that open the breaker.
    pub breaker_failures: u32,
    #[serde(with = "humantime_serde")]
    pub breaker_open_for: Duration,
    /// A database call slower than this fails (and counts for the breaker).
    #[serde(with = "humantime_serde")]
    pub db_timeout: Duration,
    /// Session units per group-commit transaction at most.
    pub batch_max: usize,
    /// Apply pending PostgreSQL migrations at start. `false` when the server
    /// runs as a role with DML rights only (`ops/postgres/roles.sql`): it
    /// then refuses to start until `handoff migrate` has run.
    pub migrate_on_start: bool,
    /// A live session answers reads from memory; when its state is older
    /// than this it reloads first, so writes by another replica (or another
    /// process on the same SQLite file) show within this bound.
    #[serde(with = "humantime_serde")]
    pub replica_refresh: Duration,
    /// `redis://…` (`rediss://…` for TLS): the shared cache of session
    /// summaries. Unset: a cache inside the process.
    pub redis_url: Option<String>,
    /// How long a cached summary may be served: the staleness bound across
    /// replicas when a cache write failed (normally writes update it).
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// A cache call slower than this is abandoned (the read falls back to
    /// the database) and counts against the cache breaker.
    #[serde(with = "humantime_serde")]
    pub cache_timeout: Duration,
    /// Entries the in-process cache holds at most.
    pub cache_capacity: usize,
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `handoff=debug`.
    pub log: String,
    /// Key for the keyed hashes of session keys in logs and audit rows. When
    /// unset, one is generated and kept in the database.
    pub log_hash_key: Option<String>,
    /// Key of the audit chain and of the configuration backup checksums: 32
    /// bytes as 64 hex digits or base64. Kept out of the database so its
    /// role cannot forge hashes. Unset: a random key in a file (mode 0600)
    /// beside the SQLite file, or in the data directory for PostgreSQL
    /// (replicas must then share this setting instead). See `crate::audit`.
    pub audit_key: Option<Secret>,
    /// Tokio worker threads: 0 one per core (default), 1 everything on one
    /// thread (less CPU per call, lower peak throughput), n that many.
    pub runtime_threads: usize,
    /// Enables test-only tools (`debug_crash_session`) and lets durations
    /// go below their production floors (see `crate::settings::Bounds`).
    /// Only a build with the `test-hooks` cargo feature (the test suite's)
    /// accepts it; a release build refuses to start with it.
    pub test_hooks: bool,
    /// The stdio transport (`[stdio]`, `HANDOFF_STDIO__ADMIN`).
    pub stdio: StdioConfig,
    /// The network daemon (`[http]`, `HANDOFF_HTTP__LISTEN`, …): MCP over
    /// Streamable HTTP instead of stdio, and the operators' listener.
    pub http: HttpConfig,
    /// The daemon's credentials (`[auth]`, `[auth.oauth]`,
    /// `HANDOFF_AUTH__OAUTH__ISSUER`, …): API keys and OAuth tokens.
    pub auth: crate::auth::config::AuthConfig,
    /// The directory `analyze_codebase` may read in (and below). Unset (the
    /// default): the tool refuses every call with FORBIDDEN.
    pub workspace_root: Option<PathBuf>,
    /// Session lifecycle thresholds (`[retention]`,
    /// `HANDOFF_RETENTION__DORMANT_AFTER`, …). Runtime-managed: see
    /// `crate::settings` and the `live` cell.
    pub retention: RetentionPolicy,
    pub monitoring: MonitoringConfig,
    pub analytics: AnalyticsConfig,
    pub backups: BackupsConfig,
    /// Start-up schedule of the background jobs (`[jobs]`,
    /// `HANDOFF_JOBS__LIFECYCLE_INTERVAL`, …); `update_job_config` changes
    /// them at run time.
    pub jobs: JobsConfig,
    /// The effective runtime-managed sections (start-up values overlaid with
    /// the overrides stored in the database), shared by every clone of this
    /// `Config`. Read these, not the start-up fields above, at run time.
    #[serde(skip)]
    pub live: Live,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: None,
            session_idle: Duration::from_secs(300),
            max_live_sessions: 10_000,
            unknown_fields: UnknownFields::Reject,
            max_content_bytes: 1024 * 1024,
            max_metadata_bytes: 16 * 1024,
            max_metadata_depth: 8,
            max_batch_entries: 100,
            max_message_bytes: 4 * 1024 * 1024,
            max_session_key_bytes: 255,
            max_agent_id_bytes: 100,
            page_size_default: 100,
            page_size_max: 1000,
            page_bytes_max: 4 * 1024 * 1024,
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(5),
            db_timeout: Duration::from_secs(5),
            batch_max: 256,
            migrate_on_start: true,
            replica_refresh: Duration::from_secs(1),
            redis_url: None,
            cache_ttl: Duration::from_secs(30),
            cache_timeout: Duration::from_millis(100),
            cache_capacity: 10_000,
            log: "info".into(),
            log_hash_key: None,
            audit_key: None,
            runtime_threads: 0,
            test_hooks: false,
            stdio: StdioConfig::default(),
            http: HttpConfig::default(),
            auth: Default::default(),
            workspace_root: None,
            retention: RetentionPolicy::default(),
            monitoring: MonitoringConfig::default(),
            analytics: AnalyticsConfig::default(),
            backups: BackupsConfig::default(),
            jobs: JobsConfig::default(),
            live: Live::default(),
        }
    }
}

/// A secret setting: serialised as given, but never shown by `Debug` (and so
/// never in a log line that formats the configuration).
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What the one local client on stdio may do.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StdioConfig {
    /// Grants the stdio client the admin capability: the tools that change
    /// what the server does to everyone's data (`update_configuration`,
    /// backup create/restore/delete, `run_job_now`, `update_job_config`) and
    /// the process-wide resources. Off by default: an agent steered by a
    /// prompt injection must not be able to purge the database.
    pub admin: bool,
}

/// The network daemon's listeners and what they accept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// MCP Streamable HTTP on `/mcp` at this address (`serve --http`).
    /// Unset (the default): MCP on stdio.
    pub listen: Option<std::net::SocketAddr>,
    /// `/health`, `/ready` and `/metrics` at this address (`serve --admin`),
    /// never behind the MCP credentials: keep it on loopback or a private
    /// network. Unset: no admin listener.
    pub admin: Option<std::net::SocketAddr>,
    /// `Host` header values `/mcp` accepts (a DNS-rebinding guard), as
    /// `name` or `name:port`. Empty (the default): loopback names only.
    pub allowed_hosts: Vec<String>,
    /// Browser origins `/mcp` accepts (`https://app.example:443`). A request
    /// with any other `Origin` is refused; requests without one (every
    /// non-browser client) pass.
    pub allowed_origins: Vec<String>,
    /// Whether `/mcp` authenticates: `required` (the default; also spelt
    /// `api_keys`): `Authorization: Bearer` with an API key or an OAuth
    /// token, as `[auth]` switches them on; or `none` (every client is the
    /// tenant `local` without the admin capability; loopback only, for
    /// local tools and the conformance suite).
    pub auth: HttpAuth,
    /// Requests a second each caller (API key; remote address without
    /// keys) may make on `/mcp`, sustained; over it, 429 with
    /// `Retry-After`. 0: no limit.
    pub rate_limit: u32,
    /// Requests a caller may make at once above the sustained rate.
    pub rate_burst: u32,
    /// A client must send a request's head within this (slow-header
    /// clients are dropped).
    #[serde(with = "humantime_serde")]
    pub header_timeout: std::time::Duration,
    /// Connections open at once on `/mcp`; the next is closed on accept.
    pub max_connections: usize,
    /// On SIGTERM/SIGINT: how long open connections may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: std::time::Duration,
    /// Client addresses (`10.0.0.0/8`, `192.0.2.7`) that may reach `/mcp`;
    /// anyone else gets 403 before the key is checked. Empty: any.
    pub allow_ips: Vec<String>,
    /// Proxies (addresses or blocks) whose `X-Forwarded-For` names the
    /// client; from any other peer that header is ignored.
    pub trusted_proxies: Vec<String>,
    /// Requests one caller (API key; address without keys) may have in
    /// flight at once; over it, 429. 0: no cap.
    pub max_in_flight_per_key: usize,
    /// Endless streams (SSE `GET`, `subscriptions/listen`) one caller may
    /// hold open at once; over it, 429. 0: no cap.
    pub max_streams_per_key: usize,
    /// Serve `/mcp` over TLS with this PEM certificate chain
    /// (`serve --tls-cert`); needs `tls_key`. Reloaded on SIGHUP.
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of `tls_cert` (`serve --tls-key`).
    pub tls_key: Option<std::path::PathBuf>,
    /// Start on a non-loopback address without TLS or without API keys
    /// (`serve --insecure`), e.g. behind a TLS-terminating proxy. Without
    /// it, such a listener is refused: keys and context would cross the
    /// network in clear, or unauthenticated.
    pub insecure: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: None,
            admin: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            auth: HttpAuth::default(),
            rate_limit: 200,
            rate_burst: 400,
            header_timeout: std::time::Duration::from_secs(10),
            max_connections: 1024,
            shutdown_grace: std::time::Duration::from_secs(10),
            allow_ips: Vec::new(),
            trusted_proxies: Vec::new(),
            max_in_flight_per_key: 64,
            max_streams_per_key: 8,
            tls_cert: None,
            tls_key: None,
            insecure: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpAuth {
    #[default]
    #[serde(alias = "api_keys")]
    Required,
    None,
}

/// The jobs' start-up schedule. `analytics_rollup` runs every
/// `analytics.rollup_interval`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    #[serde(with = "humantime_serde")]
    pub lifecycle_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub cache_maintenance_interval: Duration,
    /// Further attempts after a failed one, in the same run.
    pub max_retries: u32,
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            lifecycle_interval: Duration::from_secs(60 * 60),
            retention_interval: Duration::from_secs(6 * 60 * 60),
            cache_maintenance_interval: Duration::from_secs(15 * 60),
            max_retries: 3,
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// The setting names, from the struct itself: each top-level key, and
/// `section.key` for the nested sections (`HANDOFF_SECTION__KEY`, which
/// figment's `split("__")` turns into `section.key`).
fn known_keys() -> Vec<String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        if let serde_json::Value::Object(m) = v {
            for (k, inner) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(&key, inner, out);
                out.push(key);
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::to_value(Config::default()) {
        walk("", &v, &mut out);
    }
    out
}

/// The environment variable that sets `key` (`retention.dormant_after` →
/// `HANDOFF_RETENTION__DORMANT_AFTER`).
pub fn env_name(key: &str) -> String {
    format!("HANDOFF_{}", key.replace('.', "__").to_ascii_uppercase())
}

impl Config {
    /// Defaults ← TOML file (`HANDOFF_CONFIG` or `--config`) ← environment.
    /// Also returns the unknown `HANDOFF_*` variables it ignored, to be
    /// logged once logging is up.
    pub fn load(file: Option<PathBuf>) -> anyhow::Result<(Config, Vec<String>)> {
        let file = file.or_else(|| std::env::var_os("HANDOFF_CONFIG").map(PathBuf::from));
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &file {
            if !path.exists() {
                anyhow::bail!("configuration file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        // Unknown keys in the file are mistakes worth stopping for; unknown
        // HANDOFF_* variables may belong to other tools sharing the prefix
        // (a test runner, a wrapper), so they are only reported.
        let known = known_keys();
        // Nested keys: `HANDOFF_RETENTION__DORMANT_AFTER` → `retention.dormant_after`.
        let ignored_env: Vec<String> = std::env::vars()
            .filter_map(|(k, _)| {
                let key = k.strip_prefix("HANDOFF_")?.to_ascii_lowercase();
                let key = key.replace("__", ".");
                (key != "config" && !known.contains(&key)).then_some(k)
            })
            .collect();
        fig = fig.merge(
            Env::prefixed("HANDOFF_")
                .split("__")
                .filter(move |k| known.iter().any(|n| n.eq_ignore_ascii_case(k.as_str()))),
        );
        let mut cfg: Config = fig
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        // `HANDOFF_WORKSPACE_ROOT=` (empty) means unset.
        if cfg
            .workspace_root
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            cfg.workspace_root = None;
        }
        // `HANDOFF_AUDIT_KEY=` (empty) too.
        if cfg
            .audit_key
            .as_ref()
            .is_some_and(|k| k.expose().trim().is_empty())
        {
            cfg.audit_key = None;
        }
        crate::settings::bounds::use_test_floors(cfg.test_hooks);
        cfg.validate()?;
        Ok((cfg, ignored_env))
    }

    fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if self.test_hooks && !cfg!(feature = "test-hooks") {
            problems.push("test_hooks (HANDOFF_TEST_HOOKS) needs a build with the test-hooks feature; this one has none");
        }
        if self.max_live_sessions == 0 {
            problems.push("max_live_sessions (HANDOFF_MAX_LIVE_SESSIONS) must be at least 1");
        }
        if self.session_idle.is_zero() {
            problems.push("session_idle (HANDOFF_SESSION_IDLE) must be greater than 0");
        }
        if self.page_size_default == 0 || self.page_size_default > self.page_size_max {
            problems.push("page_size_default must be between 1 and page_size_max");
        }
        if self.max_batch_entries == 0 {
            problems.push("max_batch_entries must be at least 1");
        }
        if self.batch_max == 0 {
            problems.push("batch_max (HANDOFF_BATCH_MAX) must be at least 1");
        }
        if self.breaker_failures == 0 {
            problems.push("breaker_failures (HANDOFF_BREAKER_FAILURES) must be at least 1");
        }
        if self.cache_timeout.is_zero() || self.cache_ttl.is_zero() {
            problems.push("cache_ttl and cache_timeout (HANDOFF_CACHE_*) must be greater than 0");
        }
        if self.db_timeout.is_zero() {
            problems.push("db_timeout (HANDOFF_DB_TIMEOUT) must be greater than 0");
        }
        if self.max_content_bytes == 0 || self.max_content_bytes >= self.max_message_bytes {
            problems.push("max_content_bytes must be above 0 and below max_message_bytes");
        }
        if self.workspace_root.as_ref().is_some_and(|p| !p.is_dir()) {
            problems.push("workspace_root (HANDOFF_WORKSPACE_ROOT) must be an existing directory");
        }
        if self
            .audit_key
            .as_ref()
            .is_some_and(|k| crate::audit::key::parse(k.expose()).is_none())
        {
            // Never the value itself.
            problems
                .push("audit_key (HANDOFF_AUDIT_KEY) must be 32 bytes, as 64 hex digits or base64");
        }
        let mut problems: Vec<String> = problems.into_iter().map(String::from).collect();
        problems.extend(self.auth.oauth.problems());
        if self.http.auth == HttpAuth::Required && !self.auth.api_keys && !self.auth.oauth.enabled()
        {
            problems.push(
                "auth.api_keys is off and auth.oauth.issuer unset: no way to authenticate \
                 (http.auth = none serves without credentials, on loopback only)"
                    .into(),
            );
        }
        let j = &self.jobs;
        for (d, what) in [
            (
                j.lifecycle_interval,
                "jobs.lifecycle_interval (HANDOFF_JOBS__LIFECYCLE_INTERVAL)",
            ),
            (
                j.retention_interval,
                "jobs.retention_interval (HANDOFF_JOBS__RETENTION_INTERVAL)",
            ),
            (
                j.cache_maintenance_interval,
                "jobs.cache_maintenance_interval (HANDOFF_JOBS__CACHE_MAINTENANCE_INTERVAL)",
            ),
        ] {
            if let Some(m) = crate::settings::bounds::check("jobs.interval", d) {
                problems.push(format!("{what} {m}"));
            }
        }
        if let Some(m) = crate::settings::bounds::check("jobs.retry_delay", j.retry_delay) {
            problems.push(format!("jobs.retry_delay (HANDOFF_JOBS__RETRY_DELAY) {m}"));
        }
        if j.max_retries > crate::settings::bounds::MAX_JOB_RETRIES {
            problems.push(format!(
                "jobs.max_retries (HANDOFF_JOBS__MAX_RETRIES) must be 0–{}",
                crate::settings::bounds::MAX_JOB_RETRIES
            ));
        }
        problems.extend(
            self.settings()
                .validate()
                .into_iter()
                .map(|p| format!("{} ({}) {}", p.field, env_name(&p.field), p.message)),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid configuration: {}", problems.join("; "))
        }
    }

    /// The runtime-managed sections as given at start-up (defaults ← file ←
    /// environment), before stored overrides; `live` has the effective ones.
    pub fn settings(&self) -> Settings {
        Settings {
            retention: self.retention.clone(),
            monitoring: self.monitoring.clone(),
            analytics: self.analytics.clone(),
            backups: self.backups.clone(),
        }
    }

    /// The database URL in effect: the configured one, or the embedded
    /// SQLite file in the platform data directory.
    pub fn database_url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        let dir = crate::paths::data_dir()?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        Ok(format!("sqlite://{}", dir.join("handoff.db").display()))
    }
}
