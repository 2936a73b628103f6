//! Who a request over HTTP is. Two kinds of credential, told apart by
//! form: API keys from `handoff keys create` (`hnd_…`, see `api_keys`) and
//! OAuth 2.1 access tokens from the organisation's identity provider (JWTs,
//! see `oauth`). Either names a tenant (whose sessions it reaches, and no
//! other's), whether it holds the admin capability (the configuration,
//! backup and job tools and the process-wide resources) and optionally the
//! one agent it may act as.

pub mod api_keys;
pub mod config;
pub mod keys;
pub mod oauth;

use std::sync::Arc;

pub use api_keys::{ApiKeys, CACHE_FOR};
pub use oauth::OAuth;

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    ApiKey,
    OAuth,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::ApiKey => "api_key",
            Method::OAuth => "oauth",
        }
    }
}

/// The caller behind a verified credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's id, or for a token an opaque hash of issuer and subject.
    pub id: String,
    pub method: Method,
    pub tenant: String,
    pub admin: bool,
    /// The agent this caller acts as, when it is bound to one.
    pub agent: Option<String>,
}

impl Principal {
    /// How logs, limits and the audit log name the caller.
    pub fn label(&self) -> String {
        label(self.method, &self.id)
    }
}

/// `key:{id}` or `token:{id}`: a caller's name in logs and the audit log.
pub fn label(method: Method, id: &str) -> String {
    match method {
        Method::ApiKey => format!("key:{id}"),
        Method::OAuth => format!("token:{id}"),
    }
}

/// Why a request was refused. The client sees only the status (and, for
/// tokens, the standard challenge); the reason goes to the audit log and
/// the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed,
    Unknown,
    Revoked,
    Expired,
    Unavailable,
    NotYetValid,
    BadSignature,
    /// A `kid` the provider's key set does not hold (after a refetch).
    UnknownKey,
    /// An algorithm not accepted (`none`, HS*, or not configured).
    Algorithm,
    WrongIssuer,
    /// The token was issued for another resource.
    WrongAudience,
    /// No valid tenant in the tenant claim.
    Tenant,
    /// The agent claim is missing or not a usable agent name.
    Agent,
    /// No subject (`sub`, `client_id`, `azp`) to tell the caller by.
    Subject,
    /// A valid token without the scope the call needs (403).
    InsufficientScope,
    /// An access token in the query string (400).
    TokenInQuery,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Unknown => "unknown_key",
            Refusal::Revoked => "revoked",
            Refusal::Expired => "expired",
            Refusal::Unavailable => "store_unavailable",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::BadSignature => "bad_signature",
            Refusal::UnknownKey => "unknown_signing_key",
            Refusal::Algorithm => "algorithm_refused",
            Refusal::WrongIssuer => "wrong_issuer",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::Tenant => "tenant_claim",
            Refusal::Agent => "agent_claim",
            Refusal::Subject => "subject_claim",
            Refusal::InsufficientScope => "insufficient_scope",
            Refusal::TokenInQuery => "token_in_query",
        }
    }
}

/// A refusal, with the method it concerned and the key or subject id when
/// one is known.
pub struct Failure {
    pub reason: Refusal,
    pub method: Option<Method>,
    pub id: Option<String>,
}

/// A verified caller; `may_act` is false for a token without the agent or
/// admin scope (which reaches nothing: 403, not 401).
pub struct Verified {
    pub principal: Principal,
    pub may_act: bool,
}

/// Verifies `Authorization` headers with the methods switched on.
#[derive(Clone)]
pub struct Authenticator {
    pub api_keys: Option<ApiKeys>,
    pub oauth: Option<Arc<OAuth>>,
}

impl Authenticator {
    /// The principal behind an `Authorization` header value, or why not.
    pub async fn verify(&self, header: Option<&str>) -> Result<Verified, Failure> {
        let fail = |reason, method, id| Failure { reason, method, id };
        let header = header.ok_or(fail(Refusal::Missing, None, None))?;
        // The scheme is case-insensitive (RFC 7235 §2.1).
        let token = match header.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => return Err(fail(Refusal::Malformed, None, None)),
        };
        if let Some(keys) = self.api_keys.as_ref().filter(|_| token.starts_with("hnd_")) {
            let m = Some(Method::ApiKey);
            return match keys.verify(token).await {
                Ok(principal) => Ok(Verified {
                    principal,
                    may_act: true,
                }),
                Err((reason, id)) => Err(fail(reason, m, id)),
            };
        }
        if let Some(oauth) = self.oauth.as_ref().filter(|_| OAuth::looks_like_jwt(token)) {
            let m = Some(Method::OAuth);
            return match oauth.verify(token).await {
                Ok(v) => Ok(Verified {
                    principal: v.principal,
                    may_act: v.may_act,
                }),
                Err((reason, id)) => Err(fail(reason, m, id)),
            };
        }
        Err(fail(Refusal::Malformed, None, None))
    }
}
