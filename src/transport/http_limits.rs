//! A rate limit per caller on `/mcp`: a token bucket (governor's GCRA) per
//! API key, or per remote address when keys are off. Over the limit the
//! request is answered 429 with `Retry-After` before it reaches the MCP
//! service, so one client cannot take the daemon from the others.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::transport::http_peer;

/// Idle callers' buckets are dropped this often (a bucket per remote
/// address would otherwise grow with every address ever seen).
const FORGET_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Limiter {
    buckets: Arc<DefaultKeyedRateLimiter<String>>,
}

impl Limiter {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        let buckets = Arc::new(RateLimiter::keyed(
            Quota::per_second(rate).allow_burst(burst),
        ));
        let weak = Arc::downgrade(&buckets);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FORGET_EVERY).await;
                let Some(b) = weak.upgrade() else { return };
                b.retain_recent();
                b.shrink_to_fit();
            }
        });
        Some(Self { buckets })
    }
}

pub async fn limit(State(l): State<Limiter>, req: Request, next: Next) -> Response {
    let caller = http_peer::caller(&req);
    match l.buckets.check_key(&caller) {
        Ok(()) => next.run(req).await,
        Err(not_until) => {
            handoff_actors::metrics::metrics()
                .rate_limited
                .with_label_values(&["rate"])
                .inc();
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"error":"rate_limited"}"#,
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
    }
}
