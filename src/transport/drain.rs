//! Requests in flight on `/mcp`, so a stop can let them finish.
//!
//! A request counts until its response body is done, not merely until its
//! head is sent: a tool call answered over SSE is only delivered when that
//! stream ends. Streams that never end on their own are not counted: the
//! standalone `GET` stream and `subscriptions/listen` (2026-07-28, which
//! names its method in `Mcp-Method`); the drain closes them after the calls.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::Notify;

#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Until no counted request is left (callers bound it in time).
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// Held by a counted request's response body.
struct Counted(Arc<InFlight>);

impl Drop for Counted {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A stream that never ends on its own: the standalone `GET` (SSE) and
/// `subscriptions/listen` (2026-07-28, its method named in `Mcp-Method`).
pub fn endless(req: &Request) -> bool {
    req.method() == Method::GET
        || req
            .headers()
            .get("mcp-method")
            .is_some_and(|m| m == "subscriptions/listen")
}

/// Axum middleware: count every request but the endless ones until its
/// body ends.
pub async fn track(State(inflight): State<Arc<InFlight>>, req: Request, next: Next) -> Response {
    if endless(&req) {
        return next.run(req).await;
    }
    inflight.count.fetch_add(1, Ordering::AcqRel);
    let guard = Counted(inflight);
    hold(next.run(req).await, guard)
}

/// `response`, keeping `guard` alive until its body is done (or dropped).
pub fn hold<G: Send + Sync + Unpin + 'static>(response: Response, guard: G) -> Response {
    response.map(|body| {
        Body::new(Held {
            inner: body,
            _guard: guard,
        })
    })
}

struct Held<G> {
    inner: Body,
    _guard: G,
}

impl<G: Send + Sync + Unpin + 'static> http_body::Body for Held<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
