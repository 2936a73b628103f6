//! API keys (`hnd_{id}_{secret}`): the id finds the row, a keyed blake3 of
//! id and secret (under a subkey of the audit key) is what is stored and
//! compared, in constant time. A verified key is remembered for
//! `CACHE_FOR`, which bounds how long a revocation takes to reach every
//! replica.

use std::sync::Arc;
use std::time::Duration;

use handoff_actors::audit::AuditKey;
use handoff_actors::breaker::{BreakerHandle, Dependency, Report};

use crate::auth::{keys, Method, Principal, Refusal};
use crate::storage::Database;

/// How long a verified (or refused) key is remembered: a revocation or
/// expiry takes effect on every replica within this bound.
pub const CACHE_FOR: Duration = Duration::from_secs(1);

/// Verifies API keys against the stored ones.
#[derive(Clone)]
pub struct ApiKeys {
    db: Arc<dyn Database>,
    subkey: [u8; 32],
    key: AuditKey,
    /// A lookup that takes longer is `Unavailable` (a dead database must
    /// not hold requests until the pool gives up).
    timeout: Duration,
    /// Lookups go through the database breaker's guard.
    breaker: BreakerHandle,
    /// key id -> row as read. Short-lived: see `CACHE_FOR`.
    cache: moka::sync::Cache<String, Arc<crate::storage::ApiKeyRow>>,
}

impl ApiKeys {
    pub fn new(
        db: Arc<dyn Database>,
        key: AuditKey,
        timeout: Duration,
        breaker: BreakerHandle,
    ) -> Self {
        Self {
            db,
            breaker,
            subkey: keys::subkey(&key),
            key,
            timeout,
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(CACHE_FOR)
                .build(),
        }
    }

    /// Record a use of `id` (in the background: never on the request's path).
    pub fn touch(&self, id: &str, at_ms: i64) {
        let (db, id, breaker, timeout) = (
            self.db.clone(),
            id.to_string(),
            self.breaker.clone(),
            self.timeout,
        );
        tokio::spawn(async move {
            let touch = db.touch_api_key(&id, at_ms);
            let r = breaker
                .guard(
                    Dependency::Database,
                    Report::Both,
                    timeout,
                    "api key touch",
                    touch,
                )
                .await;
            if let Err(e) = r
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
            {
                tracing::debug!(error = %crate::logging::redact(&e), "api key last-use not recorded");
            }
        });
    }

    /// The principal behind a key, or why not.
    pub async fn verify(&self, token: &str) -> Result<Principal, (Refusal, Option<String>)> {
        let (id, secret) = keys::split(token).ok_or((Refusal::Malformed, None))?;
        let row = match self.cache.get(id) {
            Some(row) => row,
            None => {
                let unavailable = || (Refusal::Unavailable, Some(id.to_string()));
                let lookup = self.db.api_key(id);
                let row = self
                    .breaker
                    .guard(
                        Dependency::Database,
                        Report::FailuresOnly,
                        self.timeout,
                        "api key lookup",
                        lookup,
                    )
                    .await
                    .map_err(|_| unavailable())?
                    .map_err(|_| unavailable())?
                    .ok_or((Refusal::Unknown, Some(id.to_string())))?;
                let row = Arc::new(row);
                self.cache.insert(id.to_string(), row.clone());
                row
            }
        };
        if self
            .key
            .check(&self.subkey, &[id, secret], &row.hash)
            .is_err()
        {
            return Err((Refusal::Unknown, Some(id.to_string())));
        }
        let now = keys::now_ms();
        if row.revoked_ms.is_some_and(|t| t <= now) {
            return Err((Refusal::Revoked, Some(id.to_string())));
        }
        if row.expires_ms.is_some_and(|t| t <= now) {
            return Err((Refusal::Expired, Some(id.to_string())));
        }
        Ok(Principal {
            id: row.id.clone(),
            method: Method::ApiKey,
            tenant: row.tenant.clone(),
            admin: row.scope == "admin",
            agent: row.agent.clone(),
        })
    }
}
