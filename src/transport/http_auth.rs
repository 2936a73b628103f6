//! `Authorization: Bearer` on every `/mcp` request: an API key or an OAuth
//! access token (`crate::auth`). A verified caller's `Principal` rides in
//! the request's extensions to the MCP server (which takes the tenant and
//! capabilities from it).
//!
//! Refusals: 401 with nothing said about which check failed (with OAuth on,
//! the standard challenge naming the Protected Resource Metadata); 403
//! `insufficient_scope` for a valid token without the scope a call needs;
//! 400 for a token in the query string, which is never accepted. Each is
//! audited and logged with the method, the key or subject id (never the
//! credential), the remote address and the reason, at most
//! `FAILURES_PER_SECOND` a second: a flood of bad credentials must not
//! flood the log or the audit table.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method as HttpMethod, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use handoff_actors::audit::{AuditEvent, Auditor};

use crate::auth::oauth::metadata::Metadata;
use crate::auth::{keys, Authenticator, Failure, Method, Refusal};
use crate::transport::http_log::Caller;
use crate::transport::http_peer::ClientAddr;

const FAILURES_PER_SECOND: u32 = 20;
/// `last_used_at` is written at most this often per key.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct AuthState {
    auth: Authenticator,
    /// With OAuth on: the metadata the challenges point to.
    metadata: Option<Arc<Metadata>>,
    /// The largest body read to see whether a call needs admin.
    max_body: usize,
    touched: moka::sync::Cache<String, ()>,
    audit: Auditor,
    /// (window start, failures reported in it, failures suppressed).
    budget: Arc<Mutex<(Instant, u32, u64)>>,
}

impl AuthState {
    pub fn new(
        auth: Authenticator,
        metadata: Option<Arc<Metadata>>,
        max_body: usize,
        audit: Auditor,
    ) -> Self {
        Self {
            auth,
            audit,
            metadata,
            max_body,
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

    fn refuse(&self, f: Failure, remote: IpAddr) {
        count(&f);
        if let Some(suppressed) = self.report() {
            failure(&self.audit, &f, remote, suppressed);
        }
    }
}

pub async fn require_auth(State(s): State<AuthState>, mut req: Request, next: Next) -> Response {
    let remote = req
        .extensions()
        .get::<ClientAddr>()
        .map(|c| c.0)
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    // Never in the URL (OAuth 2.1 §5.2.2): proxies log URLs, browsers
    // keep them.
    if token_in_query(req.uri()) {
        s.refuse(
            Failure {
                reason: Refusal::TokenInQuery,
                method: None,
                id: None,
            },
            remote,
        );
        return refusal(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            s.metadata.as_ref().map(|m| m.invalid_request()),
        );
    }
    let raw = req.headers().get(header::AUTHORIZATION);
    let presented = raw.is_some();
    // A header that is not visible ASCII is malformed, not missing.
    let header = raw.map(|v| v.to_str().unwrap_or("\u{0}"));
    let verified = match s.auth.verify(header).await {
        Ok(v) => v,
        // The key (or the provider's signing keys) could not be looked up:
        // the client is not at fault, and may retry.
        Err(f) if f.reason == Refusal::Unavailable => {
            s.refuse(f, remote);
            return unavailable();
        }
        Err(f) => {
            s.refuse(f, remote);
            let challenge = match &s.metadata {
                Some(m) => m.unauthorized(presented),
                None => "Bearer".to_string(),
            };
            return refusal(StatusCode::UNAUTHORIZED, "unauthorized", Some(challenge));
        }
    };
    let principal = verified.principal;
    if principal.method == Method::ApiKey && s.touched.get(&principal.id).is_none() {
        s.touched.insert(principal.id.clone(), ());
        if let Some(k) = &s.auth.api_keys {
            k.touch(&principal.id, keys::now_ms());
        }
    }
    // A token's scopes are checked here, where the standard 403 can say
    // which scope to ask for; an API key's scope is checked by the tools
    // (FORBIDDEN), as before tokens existed.
    if principal.method == Method::OAuth {
        let metadata = s.metadata.as_ref().expect("OAuth on without metadata");
        let needed = if !verified.may_act {
            Some(&metadata.agent_scope)
        } else if !principal.admin {
            let (back, admin) = match admin_call(req, s.max_body).await {
                Ok(r) => r,
                Err(response) => return response,
            };
            req = back;
            admin.then_some(&metadata.admin_scope)
        } else {
            None
        };
        if let Some(scope) = needed {
            s.refuse(
                Failure {
                    reason: Refusal::InsufficientScope,
                    method: Some(Method::OAuth),
                    id: Some(principal.id.clone()),
                },
                remote,
            );
            return refusal(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                Some(metadata.insufficient_scope(scope)),
            );
        }
    }
    let caller = Caller::from(&principal);
    req.extensions_mut().insert(principal);
    let mut response = next.run(req).await;
    response.extensions_mut().insert(caller);
    response
}

fn token_in_query(uri: &axum::http::Uri) -> bool {
    uri.query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "access_token")
    })
}

/// Read a POST's body to see whether it calls for admin; hand the request
/// back whole. The body limit outside bounds what is read.
async fn admin_call(req: Request, max: usize) -> Result<(Request, bool), Response> {
    if req.method() != HttpMethod::POST {
        return Ok((req, false));
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, max).await.map_err(|_| {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"payload_too_large"}"#,
        )
            .into_response()
    })?;
    // Not JSON: rmcp answers that; it needs no admin.
    let admin = serde_json::from_slice::<serde_json::Value>(&bytes)
        .is_ok_and(|m| crate::mcp::admin_calls::needs_admin(&m));
    Ok((Request::from_parts(parts, Body::from(bytes)), admin))
}

/// Counted every time (the metric is cheap); logged and audited within
/// the budget.
fn count(f: &Failure) {
    handoff_actors::metrics::metrics()
        .auth_failures
        .with_label_values(&[
            f.method.map_or("unknown", Method::as_str),
            f.reason.as_str(),
        ])
        .inc();
}

fn failure(audit: &Auditor, f: &Failure, remote: IpAddr, suppressed: u64) {
    let method = f.method.map(Method::as_str);
    tracing::warn!(
        reason = f.reason.as_str(),
        method,
        id = f.id.as_deref(),
        remote = %remote,
        suppressed,
        "authentication failed"
    );
    let actor =
        f.id.as_deref()
            .map(|id| crate::auth::label(f.method.unwrap_or(Method::ApiKey), id));
    audit.record(AuditEvent {
        action: "auth.failed",
        tenant: String::new(),
        actor,
        subject_hash: None,
        details: serde_json::json!({
            "method": method.unwrap_or("unknown"),
            "reason": f.reason.as_str(),
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

fn refusal(status: StatusCode, error: &'static str, challenge: Option<String>) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"error":"{error}"}}"#),
    )
        .into_response();
    if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}
