//! The Streamable HTTP transport actor: MCP on `/mcp`, through rmcp's
//! server-side transport mounted in axum. Sessions (`Mcp-Session-Id`) on
//! the handshake revisions, one stateless exchange per request on
//! 2026-07-28 (rmcp decides by the negotiated revision), SSE for
//! notifications. Each session gets its own connection state
//! (`HandoffServer::for_new_connection`) over the shared core.

use std::net::SocketAddr;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::auth::oauth::metadata::Metadata;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::mcp::HandoffServer;
use crate::transport::drain::{self, InFlight};
use crate::transport::http_sessions::{self, SharedSessions};
use crate::transport::json_replies;
use crate::transport::tls::Tls;
use crate::transport::{http_auth, http_caps, http_limits, http_log, http_peer, serve};

pub const NAME: &str = "transport.http";

pub enum HttpMsg {
    /// The listener stopped (shutdown, or an accept loop error).
    Stopped(String),
}

pub struct HttpTransport;

pub struct HttpArgs {
    pub server: HandoffServer,
    pub listen: SocketAddr,
    pub cfg: Arc<Config>,
    /// API key and token verification; `None` with `http.auth = none`.
    pub auth: Option<Authenticator>,
    /// The sessions' shared store (any replica serves any session).
    pub sessions: Arc<SharedSessions>,
}

pub struct HttpState {
    /// Stops accepting connections (open ones finish their request).
    accepting: CancellationToken,
    /// Closes every MCP session and its SSE streams.
    sessions: CancellationToken,
    inflight: Arc<InFlight>,
    grace: std::time::Duration,
    served: Option<tokio::task::JoinHandle<()>>,
}

/// The daemon's own origins: a page it would serve itself is not another
/// site. On a loopback address every loopback name with its port (a browser
/// at `http://localhost:PORT` reached the same listener), else the address.
fn own_origins(local: SocketAddr, scheme: &str) -> Vec<String> {
    let port = local.port();
    let mut own = vec![format!("{scheme}://{local}")];
    if local.ip().is_loopback() {
        for name in ["localhost", "127.0.0.1", "[::1]"] {
            let origin = format!("{scheme}://{name}:{port}");
            if !own.contains(&origin) {
                own.push(origin);
            }
        }
    }
    own
}

/// What `/mcp` on `local` accepts, from the configuration.
fn mcp_config(
    cfg: &Config,
    local: SocketAddr,
    scheme: &str,
    sessions: Arc<SharedSessions>,
    cancel: CancellationToken,
) -> StreamableHttpServerConfig {
    let mut c = StreamableHttpServerConfig::default();
    c.session_store = Some(sessions);
    let mut c = c
        .with_cancellation_token(cancel)
        // A body over the limit is refused before it is buffered whole.
        .with_max_request_body_bytes(cfg.max_message_bytes);
    if !cfg.http.allowed_hosts.is_empty() {
        c = c.with_allowed_hosts(cfg.http.allowed_hosts.iter().cloned());
    }
    // Browsers send `Origin`; other clients do not. Validation is on even
    // with no configured origin, so a page on any other site cannot drive a
    // local daemon; the daemon's own origin is not another site.
    let origins = own_origins(local, scheme)
        .into_iter()
        .chain(cfg.http.allowed_origins.iter().cloned());
    c = c.with_allowed_origins(origins).enforce_origin_validation();
    c
}

/// RFC 9728's document at its root path and at the path-suffixed form for
/// `/mcp`. Any origin may read it (browser-based clients discover the
/// authorization server from it); it holds nothing secret.
fn protected_resource_metadata(m: Arc<Metadata>) -> axum::Router {
    use axum::http::header;
    let mut r = axum::Router::new();
    for path in &m.paths {
        let doc = m.document.clone();
        r = r.route(
            path,
            axum::routing::get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                        (header::CACHE_CONTROL, "max-age=3600"),
                    ],
                    doc,
                )
            }),
        );
    }
    r
}

impl Actor for HttpTransport {
    type Msg = HttpMsg;
    type State = HttpState;
    type Arguments = HttpArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HttpMsg>,
        args: HttpArgs,
    ) -> Result<HttpState, ActorProcessingErr> {
        let tls = match (&args.cfg.http.tls_cert, &args.cfg.http.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(Tls::load(cert, key)?)),
            (None, None) => None,
            _ => return Err("http.tls_cert and http.tls_key go together".into()),
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let local = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let sessions = CancellationToken::new();
        let accepting = CancellationToken::new();
        let inflight = InFlight::new();
        let auditor = args.server.auditor();
        let server = args.server;
        let service = StreamableHttpService::new(
            move || Ok(server.for_new_connection()),
            Arc::new(LocalSessionManager::default()),
            mcp_config(
                &args.cfg,
                local,
                scheme,
                args.sessions.clone(),
                sessions.child_token(),
            ),
        );
        // A declared length over the limit gets 413 before any of the body
        // is read (rmcp's own limit, above, catches undeclared lengths).
        // Layers run outermost last-added: the body limit, then the key,
        // then the caller's rate limit (which needs the key).
        // Innermost: a session is its tenant's only (needs the key's tenant).
        let mut app = axum::Router::new()
            .nest_service("/mcp", service)
            .layer(axum::middleware::from_fn(json_replies::prefer_json))
            .layer(axum::middleware::from_fn_with_state(
                args.sessions,
                http_sessions::guard,
            ));
        if let Some(caps) = http_caps::Caps::new(
            args.cfg.http.max_in_flight_per_key,
            args.cfg.http.max_streams_per_key,
        ) {
            app = app.layer(axum::middleware::from_fn_with_state(caps, http_caps::limit));
        }
        if let Some(limiter) =
            http_limits::Limiter::new(args.cfg.http.rate_limit, args.cfg.http.rate_burst)
        {
            app = app.layer(axum::middleware::from_fn_with_state(
                limiter,
                http_limits::limit,
            ));
        }
        let metadata = match &args.auth {
            Some(auth) if auth.oauth.is_some() => {
                Some(Arc::new(Metadata::new(&args.cfg.auth.oauth)?))
            }
            _ => None,
        };
        if let Some(auth) = args.auth {
            app = app.layer(axum::middleware::from_fn_with_state(
                http_auth::AuthState::new(
                    auth,
                    metadata.clone(),
                    args.cfg.max_message_bytes,
                    auditor,
                ),
                http_auth::require_auth,
            ));
        }
        // The Protected Resource Metadata: public, beside the credentials'
        // layers rather than behind them.
        if let Some(m) = metadata {
            app = app.merge(protected_resource_metadata(m));
        }
        // Counted from here in: a refused request is no call to wait for.
        app = app.layer(axum::middleware::from_fn_with_state(
            inflight.clone(),
            drain::track,
        ));
        // The client's address (and the allowlist) before anything else
        // looks at the request; the body limit, the id and the log line
        // outside that, so refusals have them too.
        let peers =
            http_peer::Peers::new(&args.cfg.http.allow_ips, &args.cfg.http.trusted_proxies)?;
        let mut app = app
            .layer(axum::middleware::from_fn_with_state(
                peers,
                http_peer::check,
            ))
            .layer(tower_http::limit::RequestBodyLimitLayer::new(
                args.cfg.max_message_bytes,
            ))
            .layer(axum::middleware::from_fn(http_log::log));
        if let Some(tls) = &tls {
            // Outermost, so refusals (401, 413, 429) carry it too.
            app = app.layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
                axum::http::header::STRICT_TRANSPORT_SECURITY,
                axum::http::HeaderValue::from_static("max-age=31536000"),
            ));
            tls.clone().reload_on_sighup(sessions.clone())?;
        }
        // Printed for scripts and tests that bind port 0.
        tracing::info!(address = %local, scheme, "MCP Streamable HTTP listening on /mcp");
        eprintln!("handoff: MCP on {scheme}://{local}/mcp");
        let stop = accepting.clone();
        let limits = serve::Limits {
            header_timeout: args.cfg.http.header_timeout,
            max_connections: args.cfg.http.max_connections,
            grace: args.cfg.http.shutdown_grace,
        };
        let served = tokio::spawn(async move {
            serve::serve(listener, app, limits, tls, stop).await;
            let _ = myself.cast(HttpMsg::Stopped("listener closed".into()));
        });
        Ok(HttpState {
            accepting,
            sessions,
            inflight,
            grace: limits.grace,
            served: Some(served),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<HttpMsg>,
        msg: HttpMsg,
        _state: &mut HttpState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HttpMsg::Stopped(reason) => {
                tracing::info!(reason, "HTTP transport stopped");
                myself.stop(Some(reason));
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<HttpMsg>,
        state: &mut HttpState,
    ) -> Result<(), ActorProcessingErr> {
        // The drain: no new connections; the calls in flight finish (their
        // writes are acknowledged to the client, not cut off) within the
        // grace; then the sessions and their SSE streams close, and with
        // them the connections.
        state.accepting.cancel();
        let started = tokio::time::Instant::now();
        let waiting = state.inflight.count();
        if tokio::time::timeout(state.grace, state.inflight.idle())
            .await
            .is_err()
        {
            tracing::warn!(left = state.inflight.count(), grace = ?state.grace, "requests still in flight after the shutdown grace; closing");
        } else if waiting > 0 {
            tracing::info!(requests = waiting, took = ?started.elapsed(), "requests in flight finished");
        }
        state.sessions.cancel();
        if let Some(served) = state.served.take() {
            let left =
                state.grace.saturating_sub(started.elapsed()) + std::time::Duration::from_secs(1);
            let _ = tokio::time::timeout(left, served).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::own_origins;

    #[test]
    fn own_origins_on_loopback_name_every_loopback_host_at_the_port() {
        assert_eq!(
            own_origins("127.0.0.1:8080".parse().unwrap(), "http"),
            [
                "http://127.0.0.1:8080",
                "http://localhost:8080",
                "http://[::1]:8080"
            ]
        );
        assert_eq!(
            own_origins("[::1]:9".parse().unwrap(), "http"),
            ["http://[::1]:9", "http://localhost:9", "http://127.0.0.1:9"]
        );
        // Elsewhere (`--insecure`): the address itself only.
        assert_eq!(
            own_origins("192.0.2.7:80".parse().unwrap(), "http"),
            ["http://192.0.2.7:80"]
        );
    }
}
