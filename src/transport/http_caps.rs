//! Caps per caller (API key; remote address without keys) on what it holds
//! open at once: requests in flight (`http.max_in_flight_per_key`) and
//! endless streams, the SSE `GET` and `subscriptions/listen`
//! (`http.max_streams_per_key`). The rate limit bounds how fast a caller
//! starts requests; these bound how many it keeps, so one slow or greedy
//! client cannot hold every connection, task and session of the daemon.
//! Over a cap: 429 with `Retry-After: 1` before the MCP service runs. A
//! request counts until its response body ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::transport::drain;
use crate::transport::http_peer;

pub struct Caps {
    in_flight: usize,
    streams: usize,
    /// caller → (requests in flight, streams open); entries at (0, 0) go.
    open: Mutex<HashMap<String, (usize, usize)>>,
}

impl Caps {
    /// `None` when both caps are 0 (off).
    pub fn new(in_flight: usize, streams: usize) -> Option<Arc<Self>> {
        (in_flight > 0 || streams > 0).then(|| {
            Arc::new(Self {
                in_flight,
                streams,
                open: Mutex::new(HashMap::new()),
            })
        })
    }

    fn take(self: &Arc<Self>, caller: String, stream: bool) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let entry = open.entry(caller.clone()).or_default();
        let (count, cap) = if stream {
            (&mut entry.1, self.streams)
        } else {
            (&mut entry.0, self.in_flight)
        };
        if cap > 0 && *count >= cap {
            if *entry == (0, 0) {
                open.remove(&caller);
            }
            return None;
        }
        *count += 1;
        Some(Slot {
            caps: self.clone(),
            caller,
            stream,
        })
    }
}

/// One counted request; released when its response body is done.
struct Slot {
    caps: Arc<Caps>,
    caller: String,
    stream: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.caps.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = open.get_mut(&self.caller) {
            let count = if self.stream {
                &mut entry.1
            } else {
                &mut entry.0
            };
            *count = count.saturating_sub(1);
            if *entry == (0, 0) {
                open.remove(&self.caller);
            }
        }
    }
}

/// Axum middleware, inside the key check (the caller is the key).
pub async fn limit(State(caps): State<Arc<Caps>>, req: Request, next: Next) -> Response {
    let caller = http_peer::caller(&req);
    let stream = drain::endless(&req);
    let Some(slot) = caps.take(caller, stream) else {
        handoff_actors::metrics::metrics()
            .rate_limited
            .with_label_values(&[if stream { "streams" } else { "in_flight" }])
            .inc();
        tracing::warn!(
            what = if stream {
                "streams"
            } else {
                "requests in flight"
            },
            "request refused: at the caller's cap"
        );
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::RETRY_AFTER, "1"),
            ],
            if stream {
                r#"{"error":"too_many_streams"}"#
            } else {
                r#"{"error":"too_many_requests_in_flight"}"#
            },
        )
            .into_response();
    };
    drain::hold(next.run(req).await, slot)
}
