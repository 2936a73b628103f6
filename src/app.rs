//! Wiring: open the database, start the supervision tree, attach the
//! transports, and wait for the one shutdown path to finish.

use std::sync::Arc;

use handoff_actors::breaker::{BreakerConfig, BreakerHandle};
use handoff_actors::persistence::PersistenceConfig;
use handoff_actors::root::{Addresses, ChildSpec, RootArgs};
use handoff_actors::session::SessionDeps;
use handoff_actors::store::Store;
use handoff_actors::Core;
use ractor::Actor;

use crate::config::Config;
use crate::mcp::HandoffServer;
use crate::storage::{self, Database, Storage};
use crate::transport::admin::{self, AdminArgs, AdminListener};
use crate::transport::http::{self, HttpArgs, HttpTransport};
use crate::transport::stdio::{self, StdioArgs, StdioTransport};

/// Open the configured database (applying migrations).
pub async fn open_db(cfg: &Config) -> anyhow::Result<Arc<dyn Database>> {
    let url = cfg.database_url()?;
    let db = storage::open(&url, cfg.migrate_on_start).await?;
    tracing::info!(database = %db.describe(), "database ready");
    Ok(db)
}

/// The key behind every session-key hash: configured, or a random secret
/// kept in the database so hashes stay stable across restarts.
async fn hash_key(cfg: &Config, db: &Arc<dyn Database>) -> anyhow::Result<[u8; 32]> {
    let secret = match &cfg.log_hash_key {
        Some(k) => k.clone(),
        None => {
            let fresh = blake3::hash(uuid::Uuid::new_v4().as_bytes())
                .to_hex()
                .to_string();
            db.setting_or_init("log_hash_key", &fresh).await?
        }
    };
    Ok(blake3::derive_key(
        "handoff 2026 session key hash",
        secret.as_bytes(),
    ))
}

/// Refuse what would expose sessions to the network: on a non-loopback
/// address MCP over HTTP needs TLS and API keys unless the operator says
/// `--insecure` (logged as a warning); without keys (`http.auth = none`)
/// it is refused even then.
fn check_listen(cfg: &Config) -> anyhow::Result<()> {
    if let Some(addr) = cfg.http.listen {
        if !addr.ip().is_loopback() {
            if cfg.http.auth == crate::config::HttpAuth::None {
                anyhow::bail!(
                    "refusing to serve MCP on {addr} without authentication: http.auth = none \
                     is for loopback addresses only"
                );
            }
            let tls = cfg.http.tls_cert.is_some() && cfg.http.tls_key.is_some();
            if !tls && !cfg.http.insecure {
                anyhow::bail!(
                    "refusing to serve MCP on {addr} without TLS: not a loopback address; give \
                     --tls-cert and --tls-key, use 127.0.0.1, or --insecure \
                     (HANDOFF_HTTP__INSECURE) behind a TLS-terminating proxy"
                );
            }
            if !tls {
                tracing::warn!(address = %addr, "serving MCP on a non-loopback address without TLS (--insecure)");
            }
        }
    }
    Ok(())
}

/// The daemon's credential checks, as `[auth]` switches them on; `None`
/// without an HTTP listener or with `http.auth = none`.
fn authenticator(
    cfg: &Config,
    db: &Arc<dyn crate::storage::Database>,
    audit_key: &handoff_actors::audit::AuditKey,
    breaker: &BreakerHandle,
) -> anyhow::Result<Option<crate::auth::Authenticator>> {
    if cfg.http.listen.is_none() || cfg.http.auth == crate::config::HttpAuth::None {
        return Ok(None);
    }
    let api_keys = cfg.auth.api_keys.then(|| {
        crate::auth::ApiKeys::new(
            db.clone(),
            audit_key.clone(),
            cfg.db_timeout,
            breaker.clone(),
        )
    });
    let oauth = if cfg.auth.oauth.enabled() {
        let oauth = Arc::new(crate::auth::OAuth::new(
            &cfg.auth.oauth,
            cfg.max_agent_id_bytes,
        )?);
        oauth.prefetch();
        Some(oauth)
    } else {
        None
    };
    Ok(Some(crate::auth::Authenticator { api_keys, oauth }))
}

pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    crate::mcp::analytics::mark_start();
    check_listen(&cfg)?;
    // Caught from the start, before any listener prints its address: a
    // SIGTERM that arrives while the service starts must be a clean stop,
    // not the default action's kill.
    let signals = StopSignals::install()?;
    let cfg = Arc::new(cfg);
    let db = open_db(&cfg).await?;
    let key = hash_key(&cfg, &db).await?;
    let (audit_key, audit_on_head) = crate::audit::prepare(
        &cfg.database_url()?,
        cfg.audit_key.as_ref().map(|k| k.expose()),
        &db,
    )
    .await?;
    let breaker = BreakerHandle::new();
    let sessions = crate::transport::http_sessions::SharedSessions::new(
        db.clone(),
        cfg.db_timeout,
        breaker.clone(),
    );
    let authenticator = authenticator(&cfg, &db, &audit_key, &breaker)?;
    crate::mcp::configuration::init(&cfg, &db).await;
    crate::logging::set_hash_key(key);
    let cache = Arc::new(crate::cache::Cache::new(
        crate::cache::Settings {
            redis_url: cfg.redis_url.as_deref(),
            capacity: cfg.cache_capacity,
            ttl: cfg.cache_ttl,
            timeout: cfg.cache_timeout,
        },
        breaker.clone(),
        key,
    )?);
    let changes = handoff_actors::changes::Changes::default();
    let store: Arc<dyn Store> = db.clone();
    let addresses = Addresses::default();
    let (core, root) = Core::start(RootArgs {
        addresses: addresses.clone(),
        store: store.clone(),
        breaker: breaker.clone(),
        breaker_config: BreakerConfig {
            failure_threshold: cfg.breaker_failures,
            open_for: cfg.breaker_open_for,
        },
        persistence: PersistenceConfig {
            max_batch: cfg.batch_max,
            timeout: cfg.db_timeout,
        },
        sessions: SessionDeps {
            store,
            persistence: addresses.persistence.clone(),
            audit: addresses.audit.clone(),
            breaker: breaker.clone(),
            idle: cfg.session_idle,
            max_live: cfg.max_live_sessions,
            db_timeout: cfg.db_timeout,
            hash_key: key,
            fences: Default::default(),
            changes: changes.clone(),
            refresh_after: cfg.replica_refresh,
            cache: cache.clone(),
        },
        audit_key,
        audit_on_head,
        extra: Vec::new(),
    })
    .await?;
    let storage = Storage {
        db,
        breaker,
        timeout: cfg.db_timeout,
        cache,
    };
    core.start_jobs(
        crate::jobs::specs(crate::jobs::JobDeps {
            core: core.clone(),
            storage: storage.clone(),
            cfg: cfg.clone(),
        })
        .await,
    );
    let server = HandoffServer::new(
        core.clone(),
        storage,
        cfg.clone(),
        changes,
        "local",
        if cfg.http.listen.is_some() {
            crate::mcp::context::Caller::anonymous()
        } else {
            crate::mcp::context::Caller::stdio(cfg.stdio.admin)
        },
    );
    core.start_children(transports(&cfg, server, authenticator, sessions));

    let on_signal = core.clone();
    tokio::spawn(async move {
        signals.recv().await;
        tracing::info!("signal received");
        on_signal.shutdown();
    });

    root.await.ok();
    Ok(())
}

/// MCP on stdio, or on HTTP when `http.listen` is set; the operators'
/// listener beside either when `http.admin` is set. The MCP transport's
/// end is the service's end.
fn transports(
    cfg: &Arc<Config>,
    server: HandoffServer,
    auth: Option<crate::auth::Authenticator>,
    sessions: Arc<crate::transport::http_sessions::SharedSessions>,
) -> Vec<ChildSpec> {
    let mut specs = Vec::new();
    if let Some(listen) = cfg.http.listen {
        let (server, cfg) = (server.clone(), cfg.clone());
        specs.push(ChildSpec {
            name: http::NAME.into(),
            shutdown_on_exit: true,
            start: Arc::new(move |sup| {
                let args = HttpArgs {
                    server: server.clone(),
                    listen,
                    cfg: cfg.clone(),
                    auth: auth.clone(),
                    sessions: sessions.clone(),
                };
                Box::pin(async move {
                    Actor::spawn_linked(None, HttpTransport, args, sup)
                        .await
                        .map(|(a, _)| a.get_cell())
                })
            }),
        });
    } else {
        let (server, max) = (server.clone(), cfg.max_message_bytes);
        specs.push(ChildSpec {
            name: stdio::NAME.into(),
            shutdown_on_exit: true,
            start: Arc::new(move |sup| {
                let args = StdioArgs {
                    server: server.clone(),
                    max_message_bytes: max,
                };
                Box::pin(async move {
                    Actor::spawn_linked(None, StdioTransport, args, sup)
                        .await
                        .map(|(a, _)| a.get_cell())
                })
            }),
        });
    }
    if let Some(listen) = cfg.http.admin {
        specs.push(ChildSpec {
            name: admin::NAME.into(),
            shutdown_on_exit: true,
            start: Arc::new(move |sup| {
                let args = AdminArgs {
                    server: server.clone(),
                    listen,
                };
                Box::pin(async move {
                    Actor::spawn_linked(None, AdminListener, args, sup)
                        .await
                        .map(|(a, _)| a.get_cell())
                })
            }),
        });
    }
    specs
}

/// SIGTERM and SIGINT: both stop the service cleanly.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
