//! `[auth]`: which credentials `/mcp` accepts when `http.auth` asks for
//! them. API keys (`hnd_…`, on by default) and OAuth 2.1 access tokens
//! (`[auth.oauth]`, on when `issuer` is set) work side by side; either can
//! be switched off.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// API keys from `handoff keys create` (`HANDOFF_AUTH__API_KEYS`).
    pub api_keys: bool,
    /// An OAuth 2.1 resource server (`HANDOFF_AUTH__OAUTH__*`).
    pub oauth: OAuthConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            api_keys: true,
            oauth: OAuthConfig::default(),
        }
    }
}

/// Access tokens (JWTs) issued for this server by an identity provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthConfig {
    /// The provider's issuer identifier (the tokens' `iss`, exactly).
    /// Unset (the default): OAuth is off.
    pub issuer: Option<String>,
    /// The canonical URI of this server's MCP endpoint
    /// (`https://handoff.example.com/mcp`): tokens must name it in `aud`
    /// (RFC 8707), and the Protected Resource Metadata says it.
    pub resource: Option<String>,
    /// Where the provider publishes its signing keys (HTTPS; plain HTTP to
    /// a loopback host only). Unset, with no `jwks_file`: found through the
    /// issuer's discovery document.
    pub jwks_url: Option<String>,
    /// A JWKS file instead of `jwks_url` (re-read when the cache lapses).
    pub jwks_file: Option<PathBuf>,
    /// Authorization servers the metadata names. Empty: the issuer.
    pub authorization_servers: Vec<String>,
    /// The claim that names the caller's tenant; a token without it is
    /// refused.
    pub tenant_claim: String,
    /// The claim that names the agent the caller acts as (as an agent-bound
    /// API key does). Unset: tokens are not bound to an agent.
    pub agent_claim: Option<String>,
    /// Claims holding the granted scopes, as a space-separated string or
    /// an array (`scope` in RFC 9068, `scp` at Okta and Entra ID; Entra ID's
    /// application permissions come as `roles`).
    pub scope_claims: Vec<String>,
    /// The scope that lets a caller use the session tools.
    pub agent_scope: String,
    /// The scope that adds the admin tools and process-wide resources.
    pub admin_scope: String,
    /// Signature algorithms accepted; asymmetric only (RS256, PS256, ES256,
    /// EdDSA).
    pub algorithms: Vec<String>,
    /// Tolerance on `exp` and `nbf` for clocks that disagree (at most 5 min).
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// How long fetched signing keys are used before they are fetched
    /// again. A token with an unknown `kid` fetches them sooner (at most
    /// once per `crate::auth::oauth::REFETCH_AFTER`).
    #[serde(with = "humantime_serde")]
    pub jwks_cache: Duration,
}

/// Algorithms that may be configured: the asymmetric ones the
/// specification names. HS* and `none` can never be.
pub const ALGORITHMS: [&str; 4] = ["RS256", "PS256", "ES256", "EdDSA"];

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            resource: None,
            jwks_url: None,
            jwks_file: None,
            authorization_servers: Vec::new(),
            tenant_claim: "tenant".into(),
            agent_claim: None,
            scope_claims: vec!["scope".into(), "scp".into()],
            agent_scope: "handoff:agent".into(),
            admin_scope: "handoff:admin".into(),
            algorithms: ALGORITHMS.iter().map(|a| a.to_string()).collect(),
            clock_skew: Duration::from_secs(60),
            jwks_cache: Duration::from_secs(10 * 60),
        }
    }
}

impl OAuthConfig {
    pub fn enabled(&self) -> bool {
        self.issuer.is_some()
    }

    /// What is wrong with it, one message per problem (each names the
    /// setting). Nothing when OAuth is off.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Some(issuer) = &self.issuer else {
            return out;
        };
        let mut need_plain_url = |name: &str, value: &str| {
            let plain = check_url(value).and_then(|u| {
                if u.query().is_some() || u.fragment().is_some() {
                    Err("must have no query or fragment")
                } else {
                    Ok(u)
                }
            });
            if let Err(m) = plain {
                out.push(format!("auth.oauth.{name} ({}) {m}", env(name)));
            }
        };
        // RFC 8414 §2 (issuer) and RFC 8707 §2 (resource): no query, no
        // fragment; either would make the exact comparison ambiguous.
        need_plain_url("issuer", issuer);
        match &self.resource {
            Some(r) => need_plain_url("resource", r),
            None => out.push(format!(
                "auth.oauth.resource ({}) is required with auth.oauth.issuer: the URI of this \
                 server's MCP endpoint, which tokens must carry as their audience",
                env("resource")
            )),
        }
        if let Some(u) = &self.jwks_url {
            if let Err(m) = check_url(u) {
                out.push(format!("auth.oauth.jwks_url ({}) {m}", env("jwks_url")));
            }
            if self.jwks_file.is_some() {
                out.push("auth.oauth.jwks_url and auth.oauth.jwks_file exclude each other".into());
            }
        }
        for s in &self.authorization_servers {
            if let Err(m) = check_url(s) {
                out.push(format!("auth.oauth.authorization_servers: {s:?} {m}"));
            }
        }
        if self.tenant_claim.trim().is_empty() {
            out.push("auth.oauth.tenant_claim must name a claim".into());
        }
        if self.scope_claims.is_empty() {
            out.push("auth.oauth.scope_claims must name at least one claim".into());
        }
        let scope_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        };
        if !scope_ok(&self.agent_scope)
            || !scope_ok(&self.admin_scope)
            || self.agent_scope == self.admin_scope
        {
            out.push(
                "auth.oauth.agent_scope and auth.oauth.admin_scope must be two different scope \
                 names (printable, no spaces or quotes)"
                    .into(),
            );
        }
        if self.algorithms.is_empty() {
            out.push("auth.oauth.algorithms must name at least one algorithm".into());
        }
        for a in &self.algorithms {
            if !ALGORITHMS.contains(&a.as_str()) {
                out.push(format!(
                    "auth.oauth.algorithms: {a:?} is not accepted (only {})",
                    ALGORITHMS.join(", ")
                ));
            }
        }
        if self.clock_skew > Duration::from_secs(300) {
            out.push("auth.oauth.clock_skew must be at most 5m".into());
        }
        if self.jwks_cache < Duration::from_secs(30)
            || self.jwks_cache > Duration::from_secs(86_400)
        {
            out.push("auth.oauth.jwks_cache must be between 30s and 24h".into());
        }
        out
    }
}

fn env(name: &str) -> String {
    format!("HANDOFF_AUTH__OAUTH__{}", name.to_ascii_uppercase())
}

/// An absolute `https` URL, or `http` to a loopback host (a provider on
/// the same machine, or a test's).
pub fn check_url(value: &str) -> Result<url::Url, &'static str> {
    let u = url::Url::parse(value).map_err(|_| "must be an absolute URL")?;
    if u.cannot_be_a_base() || u.host().is_none() {
        return Err("must be an absolute URL");
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not carry credentials");
    }
    match u.scheme() {
        "https" => Ok(u),
        "http" if is_loopback(&u) => Ok(u),
        _ => Err("must be https (http only to a loopback host)"),
    }
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> OAuthConfig {
        OAuthConfig {
            issuer: Some("https://idp.example/realms/acme".into()),
            resource: Some("https://handoff.example/mcp".into()),
            ..OAuthConfig::default()
        }
    }

    #[test]
    fn off_has_no_problems_and_on_needs_a_resource() {
        assert!(OAuthConfig::default().problems().is_empty());
        assert!(on().problems().is_empty(), "{:?}", on().problems());
        let mut c = on();
        c.resource = None;
        assert!(c.problems()[0].contains("auth.oauth.resource"));
    }

    #[test]
    fn symmetric_algorithms_and_plain_http_elsewhere_are_refused() {
        let mut c = on();
        c.algorithms = vec!["HS256".into(), "none".into()];
        assert_eq!(c.problems().len(), 2);
        let mut c = on();
        c.jwks_url = Some("http://idp.example/jwks".into());
        assert!(c.problems()[0].contains("https"));
        c.jwks_url = Some("http://127.0.0.1:9/jwks".into());
        assert!(c.problems().is_empty());
        c.jwks_url = Some("https://user:pw@idp.example/jwks".into());
        assert!(c.problems()[0].contains("credentials"));
    }

    #[test]
    fn issuer_and_resource_have_no_query_or_fragment() {
        for bad in [
            "https://handoff.example/mcp?x=1",
            "https://handoff.example/mcp#f",
        ] {
            let mut c = on();
            c.resource = Some(bad.into());
            assert!(c.problems()[0].contains("auth.oauth.resource"), "{bad}");
            let mut c = on();
            c.issuer = Some(bad.into());
            assert!(c.problems()[0].contains("auth.oauth.issuer"), "{bad}");
        }
    }

    #[test]
    fn scope_names_must_differ_and_be_quotable() {
        let mut c = on();
        c.admin_scope = c.agent_scope.clone();
        assert_eq!(c.problems().len(), 1);
        c.admin_scope = "handoff admin".into();
        assert_eq!(c.problems().len(), 1);
        c.admin_scope = "a\"b".into();
        assert_eq!(c.problems().len(), 1);
    }
}
