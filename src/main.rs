//! `handoff`: an MCP server that lets AI agents hand work to each other
//! without losing context. See README.md.

/// jemalloc, not glibc's malloc: less server CPU per call, and freed memory
/// goes back to the OS, so memory follows the active sessions (figures in
/// docs/decisions.md). `malloc_conf` has a background thread purge freed
/// pages within about a second, without a trim call.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Read by jemalloc at start-up (the unprefixed build exports this name).
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "malloc_conf")]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use handoff::config::Config;
use handoff::{app, cli, logging};

/// Printed under every `--help`: where the data lives and what a tenant is.
const DATABASE_HELP: &str = "\
Database:
  HANDOFF_DATABASE_URL  sqlite://PATH or postgres://USER@HOST:PORT/DB.
                        Default: the embedded SQLite file handoff.db in the
                        platform data directory (Linux:
                        ~/.local/share/handoff/handoff.db, or under
                        $XDG_DATA_HOME), created on first use.
Tenants:
  Sessions belong to a tenant, and no tenant sees another's. Over stdio
  the tenant is `local`; the tenant options of the commands below choose
  which tenant's sessions they read or write. A tenant id is 1-63
  characters of a-z 0-9 _ - starting with a letter or digit.
Configuration: --config FILE or HANDOFF_CONFIG, then HANDOFF_* variables
(docs/configuration.md).";

#[derive(Parser)]
#[command(
    name = "handoff",
    version,
    about = "MCP server for handing work between AI agents without losing context",
    after_help = DATABASE_HELP
)]
struct Cli {
    /// TOML configuration file (default: $HANDOFF_CONFIG, if set).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve MCP on stdio (the default for local agent clients), on the
    /// database HANDOFF_DATABASE_URL names (default: the embedded SQLite
    /// file); migrations are applied at start.
    #[command(after_help = DATABASE_HELP)]
    Serve {
        /// Serve MCP over Streamable HTTP on `/mcp` at this address instead
        /// of stdio (config `http.listen`, HANDOFF_HTTP__LISTEN).
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
        /// Serve /health, /ready and /metrics at this address (config
        /// `http.admin`, HANDOFF_HTTP__ADMIN).
        #[arg(long, value_name = "ADDR")]
        admin: Option<std::net::SocketAddr>,
        /// Serve `--http` over TLS with this PEM certificate chain (config
        /// `http.tls_cert`); reloaded on SIGHUP.
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// The PEM private key for `--tls-cert` (config `http.tls_key`).
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
        /// Allow `--http` on a non-loopback address without TLS or without
        /// API keys (config `http.insecure`).
        #[arg(long)]
        insecure: bool,
    },
    /// A running daemon's supervision tree, breakers and dependencies, from
    /// `/status` on its admin listener; exit 0 ready, 1 not ready, 2
    /// unreachable.
    Status {
        /// The admin listener (`127.0.0.1:9090` or a URL); default
        /// `http.admin` (HANDOFF_HTTP__ADMIN).
        #[arg(long, value_name = "ADDR")]
        admin: Option<String>,
        /// Print the status document as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply the schema migrations to the database HANDOFF_DATABASE_URL
    /// names (default: the embedded SQLite file, created if missing) and
    /// exit; prints which database it migrated.
    #[command(after_help = DATABASE_HELP)]
    Migrate,
    /// API keys of the HTTP daemon (each bound to one tenant).
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Sessions in the database.
    Sessions {
        #[command(subcommand)]
        cmd: SessionsCmd,
    },
    /// A session's context.
    Context {
        #[command(subcommand)]
        cmd: ContextCmd,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Write sessions, their entries and handoffs as JSON Lines (see README,
    /// "Export and import").
    Export {
        /// Only this session (repeatable); default: every session of the tenant.
        #[arg(long = "session", value_name = "KEY")]
        sessions: Vec<String>,
        /// Where to write (`-` for stdout, the default).
        #[arg(long, short, value_name = "FILE|-")]
        output: Option<PathBuf>,
        /// Tenant to export (`local` is the stdio tenant; see "Tenants" in
        /// `handoff --help`).
        #[arg(long, default_value = "local", value_parser = tenant_arg)]
        tenant: String,
    },
    /// Read a `handoff export` file into this database, keeping ids, sequence
    /// numbers and content exactly.
    Import {
        /// The export file, or `-` for stdin.
        #[arg(value_name = "FILE|-")]
        input: PathBuf,
        /// A session key that already exists: skip that session, or stop.
        #[arg(long, value_enum, default_value = "fail")]
        on_conflict: cli::import::OnConflict,
        /// Import into this tenant (default: the tenant in the file's header).
        #[arg(long, value_parser = tenant_arg)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a key and print it (once; only a keyed hash is stored).
    Create {
        /// The tenant whose sessions the key reaches (see "Tenants" below).
        #[arg(long, value_parser = tenant_arg)]
        tenant: String,
        /// `agent`, or `admin` (also the configuration, backup and job tools).
        #[arg(long, value_enum)]
        scope: KeyScope,
        /// Bind the key to this agent: it may act as no other.
        #[arg(long)]
        agent: Option<String>,
        /// Expire after this long (`90d`, `12h`).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
        /// A label for `keys list`.
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys (one JSON object per line; never the key itself).
    List,
    /// Revoke a key: every replica refuses it within a second.
    Revoke { id: String },
    /// Replace a key: prints the new one; the old one works until the grace ends.
    Rotate {
        id: String,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
        grace: std::time::Duration,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KeyScope {
    Agent,
    Admin,
}

#[derive(Subcommand)]
enum SessionsCmd {
    /// List sessions (one JSON object per line).
    List {
        /// Tenant to list (`local` is the stdio tenant).
        #[arg(long, default_value = "local", value_parser = tenant_arg)]
        tenant: String,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum ContextCmd {
    /// Print a session's entries in order (one JSON object per line).
    Show {
        /// The session key.
        key: String,
        #[arg(long, default_value = "local", value_parser = tenant_arg)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the effective configuration (start-up values and stored overrides) as JSON.
    Show,
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the audit log's keyed hash chain from the first row to the last,
    /// and that it still reaches the newest row this machine saw written.
    Verify,
}

/// A tenant id on the command line: the same strict charset as everywhere
/// else (`handoff_actors::model::valid_tenant`).
fn tenant_arg(s: &str) -> Result<String, String> {
    if handoff_actors::model::valid_tenant(s) {
        Ok(s.to_string())
    } else {
        Err(handoff_actors::model::tenant_rule(s))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (cfg, ignored_env) = match Config::load(cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("handoff: {e:#}");
            return ExitCode::from(2);
        }
    };
    logging::init(&cfg.log);
    if !ignored_env.is_empty() {
        tracing::warn!(variables = ?ignored_env, "ignoring unknown HANDOFF_* environment variables");
    }
    let rt = match runtime(cfg.runtime_threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("handoff: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Its exit code has three values (ready, not ready, unreachable).
    if let Cmd::Status { admin, json } = &cli.cmd {
        let admin = admin
            .clone()
            .or_else(|| cfg.http.admin.map(|a| a.to_string()));
        std::process::exit(rt.block_on(cli::status::run(admin, *json)).into());
    }
    let code = rt.block_on(async move {
        let r = match cli.cmd {
            Cmd::Serve {
                http,
                admin,
                tls_cert,
                tls_key,
                insecure,
            } => {
                let mut cfg = cfg;
                // Flags win over the file and the environment.
                cfg.http.listen = http.or(cfg.http.listen);
                cfg.http.admin = admin.or(cfg.http.admin);
                cfg.http.insecure |= insecure;
                cfg.http.tls_cert = tls_cert.or(cfg.http.tls_cert);
                cfg.http.tls_key = tls_key.or(cfg.http.tls_key);
                app::serve(cfg).await.map(|_| ExitCode::SUCCESS)
            }
            Cmd::Migrate => cli::migrate(&cfg).await,
            Cmd::Status { .. } => unreachable!("handled above"),
            Cmd::Keys { cmd } => match cmd {
                KeysCmd::Create {
                    tenant,
                    scope,
                    agent,
                    expires,
                    name,
                } => {
                    let admin = matches!(scope, KeyScope::Admin);
                    cli::keys::create(&cfg, &tenant, admin, agent, expires, name).await
                }
                KeysCmd::List => cli::keys::list(&cfg).await,
                KeysCmd::Revoke { id } => cli::keys::revoke(&cfg, &id).await,
                KeysCmd::Rotate { id, grace } => cli::keys::rotate(&cfg, &id, grace).await,
            },
            Cmd::Audit {
                cmd: AuditCmd::Verify,
            } => cli::audit::verify(&cfg).await,
            Cmd::Sessions {
                cmd: SessionsCmd::List { tenant, limit },
            } => cli::sessions_list(&cfg, &tenant, limit).await,
            Cmd::Context {
                cmd: ContextCmd::Show { key, tenant },
            } => cli::context_show(&cfg, &tenant, &key).await,
            Cmd::Config {
                cmd: ConfigCmd::Show,
            } => cli::config_show(&cfg).await,
            Cmd::Export {
                sessions,
                output,
                tenant,
            } => cli::export::run(&cfg, &tenant, &sessions, output.as_deref()).await,
            Cmd::Import {
                input,
                on_conflict,
                tenant,
            } => cli::import::run(&cfg, &input, tenant.as_deref(), on_conflict).await,
        };
        r.unwrap_or_else(|e| {
            tracing::error!(error = %logging::redact(&format!("{e:#}")), "fatal");
            eprintln!("handoff: {}", logging::redact(&format!("{e:#}")));
            ExitCode::FAILURE
        })
    });
    // The blocking stdin reader (terminal fallback) cannot be cancelled;
    // do not let runtime shutdown wait for it.
    std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 });
}

/// `runtime_threads`: 0 (default) a multi-thread runtime with a worker per
/// core; 1 everything on this one thread; n > 1 that many workers. Measured
/// on the PostgreSQL bench (2 cores): one thread costs less CPU per call
/// (0.084 vs 0.102 ms) and answers faster alone (c=1: 990 vs 884 calls/s),
/// but two workers carry more at c=32 (7,380 vs 7,048 calls/s).
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}
