//! The Redis cache: one multiplexed connection (the redis crate's
//! `ConnectionManager`, which reconnects by itself), keys hashed so no
//! session key is stored in clear, and a small script so a write only
//! replaces an older version.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use handoff_actors::model::{SessionKey, SessionRow};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

use super::codec::{self, VERSION_LEN};

/// SET unless the stored value carries a newer version prefix.
const PUT_NEWER: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, tonumber(ARGV[3])) > string.sub(ARGV[1], 1, tonumber(ARGV[3])) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

pub struct RedisCache {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// Set once the first connection succeeded; the manager then
    /// reconnects on its own.
    conn: Arc<Mutex<Option<ConnectionManager>>>,
    connecting: Arc<AtomicBool>,
    script: Script,
    hash_key: [u8; 32],
}

impl RedisCache {
    pub fn new(url: &str, timeout: Duration, hash_key: [u8; 32]) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("redis_url (HANDOFF_REDIS_URL) is not usable: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        Ok(RedisCache {
            client,
            config,
            conn: Default::default(),
            connecting: Default::default(),
            script: Script::new(PUT_NEWER),
            hash_key,
        })
    }

    /// The shared connection, or an error while there is none yet (a
    /// connection attempt then runs in the background).
    fn conn(&self) -> Result<ConnectionManager, RedisError> {
        if let Some(c) = self.conn.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(c.clone());
        }
        if !self.connecting.swap(true, Ordering::AcqRel) {
            let client = self.client.clone();
            let config = self.config.clone();
            let (slot, connecting) = (self.conn.clone(), self.connecting.clone());
            tokio::spawn(async move {
                match ConnectionManager::new_with_config(client, config).await {
                    Ok(c) => *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(c),
                    Err(e) => tracing::warn!(error = %e, "redis not reachable yet"),
                }
                connecting.store(false, Ordering::Release);
            });
        }
        Err(RedisError::from((
            redis::ErrorKind::Io,
            "not connected to redis yet",
        )))
    }

    fn redis_key(&self, key: &SessionKey) -> String {
        redis_key(&self.hash_key, key)
    }

    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut c = self.conn()?;
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map(|_| ())
    }

    pub async fn get(&self, key: &SessionKey) -> Result<Option<SessionRow>, RedisError> {
        let mut c = self.conn()?;
        let v: Option<String> = redis::cmd("GET")
            .arg(self.redis_key(key))
            .query_async(&mut c)
            .await?;
        Ok(v.and_then(|v| codec::decode(&key.tenant, &key.key, &v)))
    }

    pub async fn put(
        &self,
        key: &SessionKey,
        row: Option<&SessionRow>,
        ttl: Duration,
    ) -> Result<(), RedisError> {
        let mut c = self.conn()?;
        self.script
            .key(self.redis_key(key))
            .arg(codec::encode(row))
            .arg(ttl.as_millis() as u64)
            .arg(VERSION_LEN)
            .invoke_async::<i64>(&mut c)
            .await
            .map(|_| ())
    }
}

/// The Redis key of a session: a keyed hash of its tenant and key.
/// Length-prefixed parts: no (tenant, key) pair hashes as another.
fn redis_key(hash_key: &[u8; 32], key: &SessionKey) -> String {
    let mut h = blake3::Hasher::new_keyed(hash_key);
    h.update(&(key.tenant.len() as u64).to_le_bytes());
    h.update(key.tenant.as_bytes());
    h.update(key.key.as_bytes());
    format!("handoff:session:{}", &h.finalize().to_hex()[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_pairs_share_a_key() {
        let k = [7u8; 32];
        let pairs = handoff_actors::model::tests_support::colliding_pairs();
        let keys: std::collections::HashSet<String> =
            pairs.iter().map(|p| redis_key(&k, p)).collect();
        assert_eq!(keys.len(), pairs.len());
    }
}
