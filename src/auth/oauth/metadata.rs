//! OAuth 2.0 Protected Resource Metadata (RFC 9728): what a client reads to
//! learn which authorization server issues tokens for this server and with
//! which scopes, and the `WWW-Authenticate` challenges that point to it.

use serde_json::json;

use crate::auth::config::OAuthConfig;

/// The metadata document and the challenge parameters, built once.
#[derive(Clone)]
pub struct Metadata {
    /// The document's JSON.
    pub document: String,
    /// Where the document is served, as a client reaches it (from
    /// `resource`: `https://host/.well-known/oauth-protected-resource/mcp`).
    pub url: String,
    /// The document's paths on this server: the root form and the one
    /// suffixed with the resource's path (RFC 9728 §3.1).
    pub paths: Vec<String>,
    pub agent_scope: String,
    pub admin_scope: String,
}

pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

impl Metadata {
    pub fn new(cfg: &OAuthConfig) -> anyhow::Result<Self> {
        let resource = cfg.resource.clone().unwrap_or_default();
        let r = url::Url::parse(&resource)?;
        let path = r.path().trim_end_matches('/');
        let origin = r.origin().ascii_serialization();
        let servers = if cfg.authorization_servers.is_empty() {
            vec![cfg.issuer.clone().unwrap_or_default()]
        } else {
            cfg.authorization_servers.clone()
        };
        let document = json!({
            "resource": resource,
            "authorization_servers": servers,
            "scopes_supported": [cfg.agent_scope, cfg.admin_scope],
            "bearer_methods_supported": ["header"],
            "resource_name": "handoff",
        })
        .to_string();
        let mut paths = vec![WELL_KNOWN.to_string()];
        if !path.is_empty() {
            paths.push(format!("{WELL_KNOWN}{path}"));
        }
        Ok(Self {
            document,
            url: format!("{origin}{WELL_KNOWN}{path}"),
            paths,
            agent_scope: cfg.agent_scope.clone(),
            admin_scope: cfg.admin_scope.clone(),
        })
    }

    /// The 401 challenge: where the metadata is and the scope to ask for;
    /// with `error="invalid_token"` when a token was presented (RFC 6750
    /// §3: none when the request had no credentials). Nothing says which
    /// check failed.
    pub fn unauthorized(&self, presented: bool) -> String {
        let mut c = format!(
            r#"Bearer resource_metadata="{}", scope="{}""#,
            self.url, self.agent_scope
        );
        if presented {
            c.push_str(r#", error="invalid_token""#);
        }
        c
    }

    /// The 403 challenge for a valid token without the scope a call needs.
    pub fn insufficient_scope(&self, scope: &str) -> String {
        format!(
            r#"Bearer error="insufficient_scope", scope="{scope}", resource_metadata="{}""#,
            self.url
        )
    }

    /// The 400 challenge for a malformed request (a token in the query).
    pub fn invalid_request(&self) -> String {
        format!(
            r#"Bearer error="invalid_request", resource_metadata="{}""#,
            self.url
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_and_its_url_follow_the_resource() {
        let cfg = OAuthConfig {
            issuer: Some("https://idp.example/realms/acme".into()),
            resource: Some("https://handoff.example:8443/mcp".into()),
            ..OAuthConfig::default()
        };
        let m = Metadata::new(&cfg).unwrap();
        assert_eq!(
            m.url,
            "https://handoff.example:8443/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            m.paths,
            [WELL_KNOWN.to_string(), format!("{WELL_KNOWN}/mcp")]
        );
        let doc: serde_json::Value = serde_json::from_str(&m.document).unwrap();
        assert_eq!(doc["resource"], "https://handoff.example:8443/mcp");
        assert_eq!(
            doc["authorization_servers"][0],
            "https://idp.example/realms/acme"
        );
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
        assert_eq!(
            doc["scopes_supported"],
            json!(["handoff:agent", "handoff:admin"])
        );
        assert!(m.unauthorized(false).starts_with(
            r#"Bearer resource_metadata="https://handoff.example:8443/.well-known/oauth-protected-resource/mcp", scope="handoff:agent""#
        ));
        assert!(m.unauthorized(true).ends_with(r#"error="invalid_token""#));
    }
}
