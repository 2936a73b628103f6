//! MCP-over-HTTP sessions that outlive the replica which started them.
//!
//! On the handshake revisions (2025-03-26 … 2025-11-25) a client keeps an
//! `Mcp-Session-Id`; behind a load balancer without affinity its next
//! request may reach another replica. rmcp's session store carries that:
//! a replica that does not know the id loads the session's `initialize`
//! parameters from the store and replays the handshake, so the client
//! notices nothing. The store is the database (PostgreSQL when replicas
//! share one), not Redis: Redis is this service's cache and may be flushed,
//! which would end every client's session at once.
//!
//! The store also holds the session's tenant, set by the key of the request
//! that opened it. [`guard`] refuses any other tenant's request on that id
//! on every replica with 403, before rmcp routes it: the server checks tool
//! calls itself, but the standalone SSE stream (`GET`, where subscription
//! notices go) and `DELETE` never reach it. A session id seen by someone
//! else is worth nothing to them.
//!
//! Only a hash of the id is stored (the id is a bearer secret). Entries
//! live `TTL` after their last restore or bind.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use handoff_actors::breaker::{BreakerHandle, Dependency, Report};
use rmcp::transport::streamable_http_server::session::store::{
    SessionState, SessionStore, SessionStoreError,
};

use crate::auth::keys::now_ms;
use crate::storage::Database;

/// How long an idle session can still be taken over by another replica.
const TTL: Duration = Duration::from_secs(24 * 60 * 60);
const HEADER: &str = "mcp-session-id";

pub struct SharedSessions {
    db: Arc<dyn Database>,
    timeout: Duration,
    breaker: BreakerHandle,
    /// id hash → tenant: a binding never changes, so replicas remember it.
    tenants: moka::sync::Cache<String, Arc<str>>,
}

impl SharedSessions {
    pub fn new(db: Arc<dyn Database>, timeout: Duration, breaker: BreakerHandle) -> Arc<Self> {
        Arc::new(Self {
            db,
            timeout,
            breaker,
            tenants: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(TTL)
                .build(),
        })
    }

    fn hash(id: &str) -> String {
        blake3::Hash::from(blake3::derive_key(
            "handoff 2026 mcp session id",
            id.as_bytes(),
        ))
        .to_hex()
        .to_string()
    }

    /// One call to the session table, through the database breaker's guard.
    async fn bounded<T>(
        &self,
        what: &'static str,
        f: impl std::future::Future<Output = Result<T, handoff_actors::StoreError>>,
    ) -> Result<T, SessionStoreError> {
        let r = self
            .breaker
            .guard(
                Dependency::Database,
                Report::FailuresOnly,
                self.timeout,
                what,
                f,
            )
            .await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("session store {what}: {e}").into()),
            Err(e) => Err(format!("session store {what}: {}", e.message).into()),
        }
    }

    /// Record the tenant of a session just opened (first one wins).
    async fn bind(&self, id: &str, tenant: &str) -> Result<(), SessionStoreError> {
        let hash = Self::hash(id);
        let now = now_ms();
        self.bounded(
            "bind",
            self.db
                .put_http_session(&hash, Some(tenant), None, expiry(now), now),
        )
        .await?;
        self.tenants.insert(hash, Arc::from(tenant));
        Ok(())
    }

    /// The tenant a session is bound to; `None` for an id nobody opened.
    async fn tenant_of(&self, id: &str) -> Result<Option<Arc<str>>, SessionStoreError> {
        let hash = Self::hash(id);
        if let Some(t) = self.tenants.get(&hash) {
            return Ok(Some(t));
        }
        let row = self
            .bounded("load", self.db.http_session(&hash, now_ms()))
            .await?;
        let tenant = row.and_then(|(tenant, _)| tenant).map(Arc::<str>::from);
        if let Some(t) = &tenant {
            self.tenants.insert(hash, t.clone());
        }
        Ok(tenant)
    }
}

#[async_trait::async_trait]
impl SessionStore for SharedSessions {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        let hash = Self::hash(session_id);
        let now = now_ms();
        let Some((_, Some(init))) = self
            .bounded("load", self.db.http_session(&hash, now))
            .await?
        else {
            return Ok(None);
        };
        let params = serde_json::from_str(&init)?;
        // Taken over: it lives another TTL from now.
        self.bounded(
            "refresh",
            self.db
                .put_http_session(&hash, None, None, expiry(now), now),
        )
        .await?;
        Ok(Some(SessionState::new(params)))
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        let init = serde_json::to_string(&state.initialize_params)?;
        let now = now_ms();
        self.bounded(
            "store",
            self.db
                .put_http_session(&Self::hash(session_id), None, Some(&init), expiry(now), now),
        )
        .await
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        let hash = Self::hash(session_id);
        self.tenants.invalidate(&hash);
        self.bounded("delete", self.db.delete_http_session(&hash))
            .await
    }
}

/// Axum middleware on `/mcp`, inside the key check: a request on a session
/// of another tenant gets 403; a response that opens a session binds it to
/// the request's tenant before the client learns the id.
pub async fn guard(
    State(sessions): State<Arc<SharedSessions>>,
    req: Request,
    next: Next,
) -> Response {
    let tenant: Arc<str> = req
        .extensions()
        .get::<crate::auth::Principal>()
        .map(|p| Arc::from(p.tenant.as_str()))
        .unwrap_or_else(|| Arc::from("local"));
    let asked = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(id) = &asked {
        match sessions.tenant_of(id).await {
            Ok(Some(owner)) if owner != tenant => {
                tracing::warn!(tenant = %tenant, "request on another tenant's MCP session refused");
                return forbidden();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "MCP session lookup failed");
                return unavailable();
            }
        }
    }
    let response = next.run(req).await;
    if asked.is_none() {
        let opened = response
            .headers()
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(id) = opened {
            if let Err(e) = sessions.bind(&id, &tenant).await {
                // Unbound, another tenant could claim it on another
                // replica: the client must not get this session.
                tracing::warn!(error = %e, "MCP session could not be recorded");
                let _ = sessions.delete(&id).await;
                return unavailable();
            }
        }
    }
    response
}

/// As the MCP server answers a tool call in such a session.
fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        [(CONTENT_TYPE, "application/json")],
        r#"{"error":"forbidden"}"#,
    )
        .into_response()
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(RETRY_AFTER, "1"), (CONTENT_TYPE, "application/json")],
        r#"{"error":"unavailable, retry"}"#,
    )
        .into_response()
}

fn expiry(now: i64) -> i64 {
    now + TTL.as_millis() as i64
}
