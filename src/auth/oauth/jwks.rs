//! The identity provider's signing keys (a JWK Set), fetched and cached.
//!
//! Keys are used for `jwks_cache`; a token naming a `kid` the set does not
//! hold fetches the set again at once (the provider rotated its keys), but
//! at most once per `REFETCH_AFTER`, so a stream of forged `kid`s cannot
//! turn this server into a load generator against the provider. A failed
//! fetch keeps the keys already held: a provider that is briefly away does
//! not lock every client out — for `MAX_STALE` past the cache lifetime.
//!
//! Fetches run in a task of their own, recorded before they start: a
//! caller that gives up (a cancelled request) cancels nothing and cannot
//! reset the rate limit, and no request waits on the provider longer than
//! `WAIT_FOR_KEYS` (`WAIT_FOR_FIRST_KEYS` before any key is held).
//!
//! Each key carries the algorithms it may verify, from its own `alg` (or
//! its type when it has none), never from the token's header: an RSA key
//! cannot be used as an HMAC secret, whatever the header says.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::watch;

use crate::auth::config::check_url;

/// A JWK Set or discovery document larger than this is refused.
const MAX_DOCUMENT: usize = 1024 * 1024;
/// Fetches give up after this.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// An unknown `kid` fetches the keys again at most this often.
pub const REFETCH_AFTER: Duration = Duration::from_secs(5);
/// A request with a `kid` not held waits at most this long for a fetch;
/// then it is answered from what is held.
pub const WAIT_FOR_KEYS: Duration = Duration::from_secs(1);
/// Before any key has been fetched (just after start) there is nothing to
/// answer from, so a request waits longer for the first fetch.
pub const WAIT_FOR_FIRST_KEYS: Duration = Duration::from_secs(5);
/// Keys not confirmed by a fetch for this long past `jwks_cache` are no
/// longer trusted (a key the provider withdrew must stop working even
/// while the provider cannot be reached).
pub const MAX_STALE: Duration = Duration::from_secs(24 * 3600);

pub struct Key {
    pub decoding: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

/// Why no key was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The set (fetched again if allowed) holds no such key for that
    /// algorithm.
    Unknown,
    /// No keys could be fetched at all (or none recently enough).
    Unavailable,
}

enum Source {
    Url(url::Url),
    File(PathBuf),
    /// The `jwks_uri` of the issuer's discovery document, found on first
    /// use.
    Discover {
        issuer: String,
    },
}

#[derive(Default, Clone)]
struct Held {
    keys: HashMap<String, Arc<Key>>,
    /// Keys without a `kid` (usable only when the set has exactly one key).
    anonymous: Vec<Arc<Key>>,
    /// When the last successful fetch started.
    fetched: Option<Instant>,
    /// The discovered JWKS URL.
    url: Option<url::Url>,
}

/// The fetch in flight, if any, and when the last one started.
#[derive(Default)]
struct Fetching {
    started: Option<Instant>,
    /// Turns true when the running fetch has finished.
    done: Option<watch::Receiver<bool>>,
}

pub struct Jwks {
    source: Source,
    ttl: Duration,
    allowed: Vec<Algorithm>,
    http: reqwest::Client,
    held: RwLock<Arc<Held>>,
    fetching: Mutex<Fetching>,
}

impl Jwks {
    pub fn new(
        cfg: &crate::auth::config::OAuthConfig,
        allowed: Vec<Algorithm>,
    ) -> anyhow::Result<Self> {
        let source = match (&cfg.jwks_url, &cfg.jwks_file) {
            (Some(u), _) => {
                Source::Url(check_url(u).map_err(|m| anyhow::anyhow!("auth.oauth.jwks_url {m}"))?)
            }
            (None, Some(f)) => Source::File(f.clone()),
            (None, None) => Source::Discover {
                issuer: cfg.issuer.clone().unwrap_or_default(),
            },
        };
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            // A redirect could lead anywhere; providers serve keys in place.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("handoff/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            source,
            ttl: cfg.jwks_cache,
            allowed,
            http,
            held: RwLock::new(Arc::new(Held::default())),
            fetching: Mutex::new(Fetching::default()),
        })
    }

    fn held(&self) -> Arc<Held> {
        self.held.read().expect("jwks lock").clone()
    }

    /// Fetch the keys now, in the background (at start, so the first
    /// request finds them).
    pub fn prefetch(self: &Arc<Self>) {
        self.start_fetch();
    }

    /// The key that verifies a token with this `kid` and `alg`.
    pub async fn key(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<Key>, Miss> {
        let held = self.held();
        let age = held.fetched.map(|t| t.elapsed());
        if age.is_some_and(|a| a >= self.ttl + MAX_STALE) {
            // Too old to trust; fetch, and answer once that is done.
            self.wait_for(self.start_fetch()).await;
            return self.answer(kid, alg);
        }
        if let Some(k) = find(&held, kid, alg) {
            // A known key answers at once; when the set is stale it is
            // fetched again in the background, so no request waits on the
            // provider for a key it already has.
            if age.is_none_or(|a| a >= self.ttl) {
                self.start_fetch();
            }
            return Ok(k);
        }
        // Not there: the provider may have rotated. Fetch (unless one was
        // just tried), wait a little for it, then answer from what is held.
        self.wait_for(self.start_fetch()).await;
        self.answer(kid, alg)
    }

    fn answer(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<Key>, Miss> {
        let held = self.held();
        let usable = held
            .fetched
            .is_some_and(|t| t.elapsed() < self.ttl + MAX_STALE);
        if !usable {
            return Err(Miss::Unavailable);
        }
        find(&held, kid, alg).ok_or(Miss::Unknown)
    }

    async fn wait_for(&self, done: Option<watch::Receiver<bool>>) {
        let Some(mut done) = done else { return };
        let limit = if self.held().fetched.is_some() {
            WAIT_FOR_KEYS
        } else {
            WAIT_FOR_FIRST_KEYS
        };
        let _ = tokio::time::timeout(limit, done.wait_for(|d| *d)).await;
    }

    /// Start a fetch unless one is running (then join it) or one started
    /// less than `REFETCH_AFTER` ago (then `None`: use what is held). The
    /// start is recorded before the fetch runs, in a task no caller owns.
    fn start_fetch(self: &Arc<Self>) -> Option<watch::Receiver<bool>> {
        let mut f = self.fetching.lock().expect("jwks fetch lock");
        // Running: not yet done, and its task still holds the sender (a
        // task that died without saying so must not block every later
        // fetch).
        let running = |d: &&watch::Receiver<bool>| !*d.borrow() && d.has_changed().is_ok();
        if let Some(done) = f.done.as_ref().filter(running) {
            return Some(done.clone());
        }
        if f.started.is_some_and(|t| t.elapsed() < REFETCH_AFTER) {
            return None;
        }
        let (tx, rx) = watch::channel(false);
        f.started = Some(Instant::now());
        f.done = Some(rx.clone());
        drop(f);
        let me = self.clone();
        tokio::spawn(async move {
            me.refresh().await;
            let _ = tx.send(true);
        });
        Some(rx)
    }

    async fn refresh(&self) {
        let started = Instant::now();
        let mut next = Held::clone(&self.held());
        match self.fetch(&mut next.url).await {
            Ok(set) => {
                let (keys, anonymous) = self.usable(&set);
                tracing::info!(
                    keys = keys.len() + anonymous.len(),
                    "OAuth signing keys fetched"
                );
                next.keys = keys;
                next.anonymous = anonymous;
                next.fetched = Some(started);
            }
            Err(e) => {
                tracing::warn!(error = %e, held = next.keys.len() + next.anonymous.len(), "OAuth signing keys could not be fetched; keeping the keys held");
            }
        }
        *self.held.write().expect("jwks lock") = Arc::new(next);
    }

    async fn fetch(&self, url: &mut Option<url::Url>) -> anyhow::Result<JwkSet> {
        let body = match &self.source {
            Source::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the JWKS file: {}", e.kind()))?,
            Source::Url(u) => self.get(u).await?,
            Source::Discover { issuer } => {
                if url.is_none() {
                    *url = Some(self.discover(issuer).await?);
                }
                self.get(url.as_ref().expect("discovered")).await?
            }
        };
        if body.len() > MAX_DOCUMENT {
            anyhow::bail!("JWKS larger than {MAX_DOCUMENT} bytes");
        }
        // Parsed key by key: one key of a kind this crate does not know must
        // not hide the others.
        #[derive(serde::Deserialize)]
        struct Loose {
            keys: Vec<serde_json::Value>,
        }
        let loose: Loose =
            serde_json::from_slice(&body).map_err(|_| anyhow::anyhow!("not a JWK Set"))?;
        Ok(JwkSet {
            keys: loose
                .keys
                .into_iter()
                .filter_map(|k| serde_json::from_value(k).ok())
                .collect(),
        })
    }

    /// The issuer's `jwks_uri`, from its OpenID Connect discovery document
    /// or its RFC 8414 metadata; the document must name the same issuer.
    async fn discover(&self, issuer: &str) -> anyhow::Result<url::Url> {
        let base = issuer.trim_end_matches('/');
        let parsed = check_url(issuer).map_err(|m| anyhow::anyhow!("issuer {m}"))?;
        let path = parsed.path().trim_end_matches('/');
        let origin = parsed.origin().ascii_serialization();
        let candidates = [
            format!("{base}/.well-known/openid-configuration"),
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
        ];
        let mut last = anyhow::anyhow!("no discovery document");
        for c in candidates {
            let Ok(u) = url::Url::parse(&c) else { continue };
            let doc = match self.get(&u).await {
                Ok(d) => d,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let v: serde_json::Value = serde_json::from_slice(&doc)
                .map_err(|_| anyhow::anyhow!("discovery document is not JSON"))?;
            if v["issuer"].as_str() != Some(issuer) {
                anyhow::bail!("the discovery document names another issuer");
            }
            let jwks = v["jwks_uri"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("no jwks_uri in the discovery document"))?;
            return check_url(jwks).map_err(|m| anyhow::anyhow!("jwks_uri {m}"));
        }
        Err(last)
    }

    async fn get(&self, u: &url::Url) -> anyhow::Result<Vec<u8>> {
        let mut resp = self
            .http
            .get(u.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("fetch failed: {}", e.without_url()))?;
        if !resp.status().is_success() {
            anyhow::bail!("fetch answered {}", resp.status());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| anyhow::anyhow!("fetch failed: {}", e.without_url()))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                anyhow::bail!("document larger than {MAX_DOCUMENT} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The keys of `set` this server may verify with.
    fn usable(&self, set: &JwkSet) -> (HashMap<String, Arc<Key>>, Vec<Arc<Key>>) {
        let mut keys = HashMap::new();
        let mut anonymous = Vec::new();
        for jwk in &set.keys {
            let Some(key) = self.key_of(jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.insert(kid.clone(), Arc::new(key));
                }
                None => anonymous.push(Arc::new(key)),
            }
        }
        (keys, anonymous)
    }

    fn key_of(&self, jwk: &Jwk) -> Option<Key> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        // What the key type can verify; its `alg`, when given, narrows it.
        let by_type: &[Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => &[Algorithm::RS256, Algorithm::PS256],
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                &[Algorithm::ES256]
            }
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                &[Algorithm::EdDSA]
            }
            // Symmetric keys and curves not accepted here.
            _ => return None,
        };
        let declared = match jwk.common.key_algorithm {
            None => None,
            Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
            Some(KeyAlgorithm::PS256) => Some(Algorithm::PS256),
            Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
            Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
            Some(_) => return None,
        };
        let algorithms: Vec<Algorithm> = by_type
            .iter()
            .copied()
            .filter(|a| declared.is_none_or(|d| d == *a) && self.allowed.contains(a))
            .collect();
        if algorithms.is_empty() {
            return None;
        }
        let decoding = DecodingKey::from_jwk(jwk).ok()?;
        Some(Key {
            decoding,
            algorithms,
        })
    }
}

fn find(held: &Held, kid: Option<&str>, alg: Algorithm) -> Option<Arc<Key>> {
    let key = match kid {
        Some(kid) => held.keys.get(kid)?.clone(),
        // No `kid`: only unambiguous with a single key.
        None if held.keys.len() + held.anonymous.len() == 1 => held
            .keys
            .values()
            .chain(held.anonymous.iter())
            .next()?
            .clone(),
        None => return None,
    };
    key.algorithms.contains(&alg).then_some(key)
}
