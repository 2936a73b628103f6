//! An OAuth 2.1 resource server: access tokens (JWTs) issued for this
//! server by the organisation's identity provider, verified with the
//! `jsonwebtoken` crate against the provider's published keys.
//!
//! What a token must be to pass: signed by a key of the provider's JWK Set
//! with an allowed asymmetric algorithm (the key decides which, see
//! `jwks`), from the configured issuer, for this resource (`aud`, RFC
//! 8707), inside `exp`/`nbf` give or take the skew, naming a valid tenant,
//! and granting the agent or admin scope. The token itself is never kept,
//! logged or sent on: the principal's id is a hash of issuer and subject.

pub mod jwks;
pub mod metadata;

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use crate::auth::config::OAuthConfig;
use crate::auth::{Method, Principal, Refusal, Verified};
use jwks::{Jwks, Miss};

pub use jwks::REFETCH_AFTER;

pub struct OAuth {
    issuer: String,
    resource: String,
    tenant_claim: String,
    agent_claim: Option<String>,
    scope_claims: Vec<String>,
    pub agent_scope: String,
    pub admin_scope: String,
    allowed: Vec<Algorithm>,
    skew: u64,
    max_agent_bytes: usize,
    jwks: Arc<Jwks>,
}

impl OAuth {
    pub fn new(cfg: &OAuthConfig, max_agent_bytes: usize) -> anyhow::Result<Self> {
        let problems = cfg.problems();
        if !problems.is_empty() {
            anyhow::bail!("invalid configuration: {}", problems.join("; "));
        }
        let allowed: Vec<Algorithm> = cfg
            .algorithms
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        Ok(Self {
            issuer: cfg.issuer.clone().unwrap_or_default(),
            resource: cfg.resource.clone().unwrap_or_default(),
            tenant_claim: cfg.tenant_claim.clone(),
            agent_claim: cfg.agent_claim.clone(),
            scope_claims: cfg.scope_claims.clone(),
            agent_scope: cfg.agent_scope.clone(),
            admin_scope: cfg.admin_scope.clone(),
            skew: cfg.clock_skew.as_secs(),
            max_agent_bytes,
            jwks: Arc::new(Jwks::new(cfg, allowed.clone())?),
            allowed,
        })
    }

    /// Whether `token` has a JWT's form (three base64url parts), which no
    /// API key has: the two are told apart by form, never by trial.
    pub fn looks_like_jwt(token: &str) -> bool {
        let mut parts = 0;
        for part in token.split('.') {
            parts += 1;
            if parts > 3
                || !part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return false;
            }
        }
        parts == 3
    }

    /// Fetch the provider's keys now, so the first request finds them.
    pub fn prefetch(&self) {
        self.jwks.prefetch();
    }

    pub async fn verify(&self, token: &str) -> Result<Verified, (Refusal, Option<String>)> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| (unparsed(token), None))?;
        if !self.allowed.contains(&header.alg) {
            return Err((Refusal::Algorithm, None));
        }
        // RFC 9068 access tokens say `at+jwt`; most providers say `JWT`.
        // Any other type (a logout token, a DPoP proof) is not one.
        if header.typ.as_deref().is_some_and(|t| {
            !["jwt", "at+jwt", "application/at+jwt"].contains(&t.to_ascii_lowercase().as_str())
        }) || has_crit(token)
        {
            return Err((Refusal::Malformed, None));
        }
        let key = match self.jwks.key(header.kid.as_deref(), header.alg).await {
            Ok(k) => k,
            Err(Miss::Unknown) => return Err((Refusal::UnknownKey, None)),
            Err(Miss::Unavailable) => return Err((Refusal::Unavailable, None)),
        };
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.leeway = self.skew;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.resource]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &v)
            .map_err(|e| (refusal(e.kind()), None))?;
        let claims = data.claims;
        // The crate skips an `nbf` that is not a whole non-negative number
        // (a float, -1, 1e300) and an `iss` that is not a string; a token
        // that odd is refused here.
        let numeric = |c: &str| claims.get(c).is_none_or(Value::is_u64);
        if !numeric("nbf") || !numeric("exp") || !numeric("iat") {
            return Err((Refusal::Malformed, None));
        }
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err((Refusal::WrongIssuer, None));
        }
        let (claim, subject) = subject(&claims).ok_or((Refusal::Subject, None))?;
        let Some(tenant) = claims
            .get(&self.tenant_claim)
            .and_then(Value::as_str)
            .filter(|t| handoff_actors::model::valid_tenant(t))
        else {
            return Err((Refusal::Tenant, Some(self.caller_id(claim, subject, ""))));
        };
        let id = self.caller_id(claim, subject, tenant);
        let tenant = tenant.to_string();
        let scopes = self.scopes(&claims);
        let admin = scopes.iter().any(|s| *s == self.admin_scope);
        // Without the agent (or admin) scope a token reaches nothing: 403
        // `insufficient_scope`, not 401, for it is a valid token.
        let may_act = admin || scopes.iter().any(|s| *s == self.agent_scope);
        let agent = match &self.agent_claim {
            None => None,
            Some(c) => match claims.get(c) {
                // With the claim configured, an agent token without it
                // would act as any agent: only an operator's may.
                None | Some(Value::Null) if admin || !may_act => None,
                Some(Value::String(a))
                    if !a.trim().is_empty()
                        && a.len() <= self.max_agent_bytes
                        && !a.chars().any(char::is_control) =>
                {
                    Some(a.clone())
                }
                _ => return Err((Refusal::Agent, Some(id))),
            },
        };
        Ok(Verified {
            principal: Principal {
                id,
                method: Method::OAuth,
                tenant,
                admin,
                agent,
            },
            may_act,
        })
    }

    /// Scopes from every configured claim, each a space-separated string
    /// or an array of strings.
    fn scopes<'a>(&self, claims: &'a Map<String, Value>) -> Vec<&'a str> {
        let mut out = Vec::new();
        for c in &self.scope_claims {
            match claims.get(c) {
                Some(Value::String(s)) => out.extend(s.split_ascii_whitespace()),
                Some(Value::Array(a)) => out.extend(a.iter().filter_map(Value::as_str)),
                _ => {}
            }
        }
        out
    }

    /// A stable, opaque id for the caller (logs, rate limits, audit): a
    /// hash of issuer, subject claim, subject and tenant, never the claims.
    /// Each part is length-prefixed, so no two tuples hash alike.
    fn caller_id(&self, claim: &str, subject: &str, tenant: &str) -> String {
        let mut h = blake3::Hasher::new_derive_key("handoff 2026 oauth caller id");
        for part in [self.issuer.as_str(), claim, subject, tenant] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        format!("tok_{}", &h.finalize().to_hex()[..16])
    }
}

/// Who the token is about: `sub`, else the client (`client_id`, `azp`).
fn subject(claims: &Map<String, Value>) -> Option<(&'static str, &str)> {
    ["sub", "client_id", "azp"].into_iter().find_map(|c| {
        claims
            .get(c)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| (c, s))
    })
}

/// Whether the header lists critical extensions (RFC 7515 §4.1.11): none
/// is understood here, so any makes the token unusable.
fn has_crit(token: &str) -> bool {
    header_json(token).is_some_and(|h| h.get("crit").is_some())
}

/// Why a header the crate could not parse was refused: an `alg` it does
/// not know (`none` above all) is an algorithm refusal, for the audit log.
fn unparsed(token: &str) -> Refusal {
    if header_json(token).is_some_and(|h| h["alg"].is_string()) {
        Refusal::Algorithm
    } else {
        Refusal::Malformed
    }
}

/// The token's header as JSON, whatever it holds.
fn header_json(token: &str) -> Option<Value> {
    use base64::Engine;
    let h = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn refusal(kind: &ErrorKind) -> Refusal {
    match kind {
        ErrorKind::ExpiredSignature => Refusal::Expired,
        ErrorKind::ImmatureSignature => Refusal::NotYetValid,
        ErrorKind::InvalidIssuer => Refusal::WrongIssuer,
        ErrorKind::InvalidAudience => Refusal::WrongAudience,
        ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => Refusal::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Refusal::Algorithm,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => Refusal::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => Refusal::WrongIssuer,
        _ => Refusal::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::OAuth;

    #[test]
    fn caller_ids_differ_by_subject_claim_and_tenant() {
        let cfg = crate::auth::config::OAuthConfig {
            issuer: Some("https://idp.example".into()),
            resource: Some("https://handoff.example/mcp".into()),
            jwks_url: Some("https://idp.example/jwks".into()),
            ..Default::default()
        };
        let o = OAuth::new(&cfg, 256).unwrap();
        let ids = [
            o.caller_id("sub", "x", "acme"),
            o.caller_id("sub", "x", "globex"),
            o.caller_id("client_id", "x", "acme"),
            // Length-prefixed: moving a byte between parts changes the id.
            o.caller_id("sub", "xa", "cme"),
        ];
        for (i, a) in ids.iter().enumerate() {
            assert!(a.starts_with("tok_"));
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn jwts_and_api_keys_differ_by_form() {
        assert!(OAuth::looks_like_jwt(
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
        ));
        // `alg: none` tokens end with an empty signature: still the form.
        assert!(OAuth::looks_like_jwt(
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."
        ));
        assert!(!OAuth::looks_like_jwt("hnd_0123456789abcdef_secret"));
        assert!(!OAuth::looks_like_jwt("a.b.c.d"));
        assert!(!OAuth::looks_like_jwt("a.b"));
        assert!(!OAuth::looks_like_jwt("a.b=.c"));
    }
}
