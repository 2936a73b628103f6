//! One log line per `/mcp` request, under an id the client also gets.
//!
//! The id (a UUIDv7) is made here, returned as `x-request-id`, and handed
//! to the MCP server in the request's extensions, which uses it as the
//! `request_id` of a tool error or a failed read: a client quoting either
//! finds the same log lines. The line says who (tenant, key id, address),
//! what (method, path, and `Mcp-Method` when the client names it), the
//! status and how long the answer's head took; never a header's value or
//! the body.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use uuid::Uuid;

use crate::auth::Principal;
use crate::logging::RequestId;
use crate::transport::http_peer::ClientAddr;

/// Who the key check found, handed back out on the response for the log.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: String,
    pub key_id: String,
}

impl From<&Principal> for Caller {
    fn from(p: &Principal) -> Self {
        Caller {
            tenant: p.tenant.clone(),
            key_id: p.id.clone(),
        }
    }
}

/// Axum middleware, outermost but for HSTS: every answer, refusals
/// included, has an id and a log line.
pub async fn log(mut req: Request, next: Next) -> Response {
    let id = Uuid::now_v7();
    req.extensions_mut().insert(RequestId(id));
    let method = req.method().clone();
    let path = crate::logging::client_str(req.uri().path());
    let mcp_method = req
        .headers()
        .get("mcp-method")
        .and_then(|v| v.to_str().ok())
        .map(crate::logging::client_str);
    let started = Instant::now();
    let mut response = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-request-id", v);
    }
    let route = route(&path);
    let m = handoff_actors::metrics::metrics();
    m.http_requests
        .with_label_values(&[route, response.status().as_str()])
        .inc();
    m.http_seconds
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    let caller = response.extensions().get::<Caller>();
    let remote = response.extensions().get::<ClientAddr>().map(|c| c.0);
    tracing::info!(
        request_id = %id,
        method = %method,
        path,
        mcp_method,
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        tenant = caller.map(|c| c.tenant.as_str()),
        key_id = caller.map(|c| c.key_id.as_str()),
        remote = remote.map(|r| r.to_string()),
        "http request"
    );
    response
}

/// A bounded label for a path: what clients send is not a label value.
fn route(path: &str) -> &'static str {
    if path == "/mcp" || path.starts_with("/mcp/") {
        "mcp"
    } else if path.starts_with("/.well-known/") {
        "metadata"
    } else {
        "other"
    }
}
