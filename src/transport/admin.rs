//! The operators' listener: `/health` (the process answers), `/ready`
//! (the database answers and its breaker is not open: send traffic here)
//! and `/metrics` (Prometheus text). Plain HTTP without the MCP
//! credentials, so it binds where only operators reach (loopback by
//! default).

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::sync::CancellationToken;

use crate::mcp::HandoffServer;
use crate::transport::status;

pub const NAME: &str = "transport.admin";

pub enum AdminMsg {
    Stopped(String),
}

pub struct AdminListener;

pub struct AdminArgs {
    pub server: HandoffServer,
    pub listen: SocketAddr,
}

pub struct AdminState {
    cancel: CancellationToken,
}

async fn health() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

/// Ready when the database answers and its breaker is closed: a replica
/// whose database is away takes no traffic, and says why.
async fn ready(State(server): State<HandoffServer>) -> impl IntoResponse {
    let report = server.health().await;
    let ready = status::ready(&report);
    let body = serde_json::json!({"ready": ready, "health": report});
    (
        code(ready),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

/// The supervision tree, breakers and dependencies (`handoff status`);
/// 503 when not ready, like `/ready`.
async fn status_doc(State(server): State<HandoffServer>) -> impl IntoResponse {
    let view = status::view(&server.health().await);
    (
        code(view["ready"] == true),
        [(header::CONTENT_TYPE, "application/json")],
        view.to_string(),
    )
}

fn code(ready: bool) -> StatusCode {
    if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// The text exposition; `handoff_ready` is refreshed first (a scrape
/// asks the database once, as a `/ready` probe does).
async fn metrics(State(server): State<HandoffServer>) -> impl IntoResponse {
    let ready = status::ready(&server.health().await);
    handoff_actors::metrics::metrics()
        .ready
        .set(i64::from(ready));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handoff_actors::metrics::render(),
    )
}

impl Actor for AdminListener {
    type Msg = AdminMsg;
    type State = AdminState;
    type Arguments = AdminArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AdminMsg>,
        args: AdminArgs,
    ) -> Result<AdminState, ActorProcessingErr> {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let local = listener.local_addr()?;
        let app = axum::Router::new()
            .route("/health", get(health))
            .route("/ready", get(ready))
            .route("/metrics", get(metrics))
            .route("/status", get(status_doc))
            .with_state(args.server);
        tracing::info!(address = %local, "admin listener (/health /ready /metrics /status)");
        eprintln!("handoff: admin on http://{local}/");
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        // Scrapers and probes: few connections, short requests.
        let limits = crate::transport::serve::Limits {
            header_timeout: std::time::Duration::from_secs(10),
            max_connections: 64,
            grace: std::time::Duration::from_secs(2),
        };
        tokio::spawn(async move {
            crate::transport::serve::serve(listener, app, limits, None, stop).await;
            let _ = myself.cast(AdminMsg::Stopped("listener closed".into()));
        });
        Ok(AdminState { cancel })
    }

    async fn handle(
        &self,
        myself: ActorRef<AdminMsg>,
        msg: AdminMsg,
        _state: &mut AdminState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AdminMsg::Stopped(reason) => myself.stop(Some(reason)),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AdminMsg>,
        state: &mut AdminState,
    ) -> Result<(), ActorProcessingErr> {
        state.cancel.cancel();
        Ok(())
    }
}
