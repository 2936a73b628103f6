//! The session-row cache behind `handoff_actors::cache::SessionCache`:
//! Redis when `HANDOFF_REDIS_URL` is set (shared by every replica), else a
//! bounded cache inside the process.
//!
//! Freshness. With Redis, session actors write every committed row through
//! (newest version wins, see `codec::version`), and a live actor answers its
//! own process's reads, so a read served here reflects every write this
//! process acknowledged — except when a cache write failed: that key is then
//! not served from the cache by this process until `cache_ttl` has passed,
//! by which time the stale copy has expired everywhere. Other replicas see a
//! write as soon as its write-through lands (normally well under a
//! millisecond after the acknowledgement), and at worst after `cache_ttl`.
//!
//! The cache inside the process is read by nobody else, so it holds only
//! sessions whose actor has stopped: a loading actor evicts its key and a
//! stopping one puts its final row (see `handoff_actors::cache`). A read
//! finds either the live actor or that final row.
//!
//! Failures never reach a client: every call is bounded by `cache_timeout`,
//! reported to the cache breaker, and skipped while that breaker is open.

mod codec;
mod local;
mod redis;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use handoff_actors::breaker::{BreakerHandle, Dependency, DependencyError, Report};
use handoff_actors::cache::SessionCache;
use handoff_actors::metrics::metrics;
use handoff_actors::model::{SessionKey, SessionRow};

/// The cache's part of the configuration (`redis_url`, `cache_*`).
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// Redis when set; otherwise an in-process cache of `capacity` sessions.
    pub redis_url: Option<&'a str>,
    pub capacity: usize,
    pub ttl: Duration,
    /// Deadline of one cache call.
    pub timeout: Duration,
}

enum Backend {
    Local(local::LocalCache),
    Redis(Box<redis::RedisCache>),
}

pub struct Cache {
    backend: Backend,
    breaker: BreakerHandle,
    timeout: Duration,
    ttl: Duration,
    /// Keys whose last write failed, and until when not to serve them.
    suspect: Mutex<HashMap<SessionKey, Instant>>,
}

impl Cache {
    /// Never fails: an unreachable Redis starts the cache disconnected (it
    /// connects when Redis comes up) rather than stopping the server.
    pub fn new(
        cfg: Settings<'_>,
        breaker: BreakerHandle,
        hash_key: [u8; 32],
    ) -> anyhow::Result<Self> {
        let backend = match cfg.redis_url {
            Some(url) => Backend::Redis(Box::new(redis::RedisCache::new(
                url,
                cfg.timeout,
                hash_key,
            )?)),
            None => Backend::Local(local::LocalCache::new(cfg.capacity, cfg.ttl)),
        };
        Ok(Cache {
            backend,
            breaker,
            timeout: cfg.timeout,
            ttl: cfg.ttl,
            suspect: Mutex::new(HashMap::new()),
        })
    }

    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Local(_) => "memory",
            Backend::Redis(_) => "redis",
        }
    }

    /// A round trip to the cache (health, readiness).
    pub async fn ping(&self) -> Result<(), String> {
        match &self.backend {
            Backend::Local(_) => Ok(()),
            Backend::Redis(r) => {
                let r = self.bounded(r.ping()).await;
                r.map_err(|e| e.to_string())
            }
        }
    }

    /// Drop expired bookkeeping (the `cache_maintenance` job). Returns
    /// (entries held, suspect keys dropped).
    pub fn maintain(&self) -> (u64, usize) {
        let now = Instant::now();
        let dropped = {
            let mut s = self.suspect.lock().unwrap_or_else(|p| p.into_inner());
            let before = s.len();
            s.retain(|_, until| *until > now);
            before - s.len()
        };
        let held = match &self.backend {
            Backend::Local(l) => l.maintain(),
            Backend::Redis(_) => 0,
        };
        (held, dropped)
    }

    fn is_suspect(&self, key: &SessionKey) -> bool {
        let mut s = self.suspect.lock().unwrap_or_else(|p| p.into_inner());
        match s.get(key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                s.remove(key);
                false
            }
            None => false,
        }
    }

    fn mark_suspect(&self, key: &SessionKey) {
        let mut s = self.suspect.lock().unwrap_or_else(|p| p.into_inner());
        s.insert(key.clone(), Instant::now() + self.ttl);
    }

    /// One Redis call: skipped while the breaker is open, bounded in time,
    /// reported to the breaker.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, ::redis::RedisError>>,
    ) -> Result<T, CacheError> {
        let call = async { call.await.map_err(|e| CacheError::Failed(e.to_string())) };
        self.breaker
            .guard(
                Dependency::Cache,
                Report::Both,
                self.timeout,
                "cache call",
                call,
            )
            .await
            .unwrap_or(Err(CacheError::Open))
    }

    fn count(op: &str, outcome: &str) {
        metrics().cache_ops.with_label_values(&[op, outcome]).inc();
    }
}

/// Every failure of a Redis call counts against the cache.
impl DependencyError for CacheError {
    fn timed_out(_: &'static str) -> Self {
        CacheError::Failed("timed out".into())
    }

    fn counts_against_dependency(&self) -> bool {
        true
    }
}

#[derive(Debug, thiserror::Error)]
enum CacheError {
    #[error("cache breaker open")]
    Open,
    #[error("cache call failed: {0}")]
    Failed(String),
}

#[async_trait]
impl SessionCache for Cache {
    async fn get(&self, key: &SessionKey) -> Option<SessionRow> {
        if self.is_suspect(key) {
            Self::count("get", "skipped");
            return None;
        }
        let found = match &self.backend {
            Backend::Local(l) => Ok(l.get(key)),
            Backend::Redis(r) => self.bounded(r.get(key)).await,
        };
        match found {
            Ok(Some(row)) => {
                Self::count("get", "hit");
                Some(row)
            }
            Ok(None) => {
                Self::count("get", "miss");
                None
            }
            Err(e) => {
                Self::count("get", "error");
                tracing::debug!(error = %e, "cache read skipped");
                None
            }
        }
    }

    async fn put(&self, key: &SessionKey, row: &SessionRow) {
        let r = match &self.backend {
            Backend::Local(l) => {
                l.put(key, Some(row));
                Ok(())
            }
            Backend::Redis(r) => self.bounded(r.put(key, Some(row), self.ttl)).await,
        };
        self.settle_write("put", key, r);
    }

    async fn forget(&self, key: &SessionKey) {
        let r = match &self.backend {
            Backend::Local(l) => {
                l.put(key, None);
                Ok(())
            }
            Backend::Redis(r) => self.bounded(r.put(key, None, self.ttl)).await,
        };
        self.settle_write("forget", key, r);
    }

    fn shared(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    async fn evict(&self, key: &SessionKey) {
        if let Backend::Local(l) = &self.backend {
            l.evict(key);
        }
    }
}

impl Cache {
    fn settle_write(&self, op: &str, key: &SessionKey, r: Result<(), CacheError>) {
        match r {
            Ok(()) => Self::count(op, "ok"),
            Err(e) => {
                // The cached copy may now be stale: do not serve it here
                // until it has expired everywhere.
                self.mark_suspect(key);
                Self::count(op, "error");
                tracing::debug!(error = %e, "cache write skipped");
            }
        }
    }
}
