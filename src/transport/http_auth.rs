//! `Authorization: Bearer` on every `/mcp` request. A verified key's
//! `Principal` rides in the request's extensions to the MCP server (which
//! takes the tenant and capabilities from it); anything else gets a bare
//! 401. Failures are audited and logged with the key id (never the key),
//! the remote address and the reason, at most `FAILURES_PER_SECOND` a
//! second: a flood of bad keys must not flood the log or the audit table.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use handoff_actors::audit::{AuditEvent, AuditMsg};

use crate::auth::{keys, Authenticator, Refusal};
use crate::transport::http_log::Caller;
use crate::transport::http_peer::ClientAddr;

const FAILURES_PER_SECOND: u32 = 20;
/// `last_used_at` is written at most this often per key.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct AuthState {
    auth: Authenticator,
    touched: moka::sync::Cache<String, ()>,
    /// (window start, failures reported in it, failures suppressed).
    budget: Arc<Mutex<(Instant, u32, u64)>>,
}

impl AuthState {
    pub fn new(auth: Authenticator) -> Self {
        Self {
            auth,
            touched: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(TOUCH_EVERY)
                .build(),
            budget: Arc::new(Mutex::new((Instant::now(), 0, 0))),
        }
    }

    /// Whether this failure may be reported, and how many were not since
    /// the last one that was.
    fn report(&self) -> Option<u64> {
        let mut b = self.budget.lock().expect("auth budget");
        if b.0.elapsed() >= Duration::from_secs(1) {
            *b = (Instant::now(), 0, b.2);
        }
        if b.1 >= FAILURES_PER_SECOND {
            b.2 += 1;
            return None;
        }
        b.1 += 1;
        Some(std::mem::take(&mut b.2))
    }
}

pub async fn require_key(State(s): State<AuthState>, mut req: Request, next: Next) -> Response {
    let remote = req
        .extensions()
        .get::<ClientAddr>()
        .map(|c| c.0)
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match s.auth.verify(header).await {
        Ok(principal) => {
            if s.touched.get(&principal.key_id).is_none() {
                s.touched.insert(principal.key_id.clone(), ());
                s.auth.touch(&principal.key_id, keys::now_ms());
            }
            let caller = Caller::from(&principal);
            req.extensions_mut().insert(principal);
            let mut response = next.run(req).await;
            response.extensions_mut().insert(caller);
            response
        }
        // The key could not be looked up: the client is not at fault, and
        // may retry (the database breaker says when).
        Err((Refusal::Unavailable, _)) => unavailable(),
        Err((reason, key_id)) => {
            if let Some(suppressed) = s.report() {
                failure(reason, key_id, remote, suppressed);
            }
            unauthorized()
        }
    }
}

fn failure(reason: Refusal, key_id: Option<String>, remote: IpAddr, suppressed: u64) {
    tracing::warn!(
        reason = reason.as_str(),
        key_id = key_id.as_deref(),
        remote = %remote,
        suppressed,
        "authentication failed"
    );
    AuditMsg::record(AuditEvent {
        action: "auth.failed",
        tenant: String::new(),
        actor: key_id.map(|id| format!("key:{id}")),
        subject_hash: None,
        details: serde_json::json!({
            "method": "api_key",
            "reason": reason.as_str(),
            "remote": remote.to_string(),
            "suppressed_before": suppressed,
        }),
    });
}

fn unavailable() -> Response {
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"error":"unavailable","retryable":true}"#,
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// 401 and nothing else said: not which part was wrong.
fn unauthorized() -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"error":"unauthorized"}"#,
    )
        .into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}
