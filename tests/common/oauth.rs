//! A real OAuth 2 authorization server for the daemon's token tests:
//! tests/ts/oauth_provider.mjs (npm oauth2-mock-server) as a child process.
//! It publishes a discovery document and a JWK Set and issues tokens signed
//! with real keys; its control listener mints the tokens a test needs.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// Binds tokens to the agent their `agent` claim names.
pub const AGENT_CLAIM: (&str, &str) = ("HANDOFF_AUTH__OAUTH__AGENT_CLAIM", "agent");

/// The audience the daemons under test are configured with.
pub const RESOURCE: &str = "https://handoff.test/mcp";

pub struct Provider {
    _child: Child,
    /// Closing it stops the provider.
    _stdin: ChildStdin,
    pub issuer: String,
    control: String,
    http: reqwest::Client,
}

impl Provider {
    pub async fn start() -> Provider {
        let script = super::ts::script("oauth_provider.mjs");
        let mut child = Command::new("node")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("run node oauth_provider.mjs");
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the provider printed its addresses in time")
            .unwrap()
            .expect("the provider exited");
        let v: Value = serde_json::from_str(&line).expect("provider JSON line");
        Provider {
            _child: child,
            _stdin: stdin,
            issuer: v["issuer"].as_str().unwrap().to_string(),
            control: v["control"].as_str().unwrap().to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// The daemon's environment for this provider: OAuth on, tokens not
    /// bound to agents (see `AGENT_CLAIM`).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HANDOFF_AUTH__OAUTH__ISSUER", self.issuer.clone()),
            ("HANDOFF_AUTH__OAUTH__RESOURCE", RESOURCE.to_string()),
        ]
    }

    /// Make the provider answer JWK Set requests `ms` late.
    pub async fn slow(&self, ms: u64) {
        let r = self
            .http
            .post(format!("{}/slow", self.control))
            .json(&json!({ "ms": ms }))
            .send()
            .await
            .expect("slow");
        assert!(r.status().is_success());
    }

    /// A token from the control listener (see oauth_provider.mjs for `spec`).
    pub async fn mint(&self, spec: Value) -> String {
        let r: Value = self
            .http
            .post(format!("{}/mint", self.control))
            .json(&spec)
            .send()
            .await
            .expect("mint")
            .json()
            .await
            .expect("mint JSON");
        r["token"]
            .as_str()
            .unwrap_or_else(|| panic!("mint {spec}: {r}"))
            .to_string()
    }

    /// A provider-signed token for `tenant` with `scope` (and `extra` claims)
    /// for this server.
    pub async fn token(&self, tenant: &str, scope: &str, extra: Value) -> String {
        let mut claims = json!({"aud": RESOURCE, "tenant": tenant, "scope": scope,
                                "sub": format!("user-of-{tenant}")});
        for (k, v) in extra.as_object().into_iter().flatten() {
            claims[k] = v.clone();
        }
        self.mint(json!({ "claims": claims })).await
    }

    /// Publish a new signing key (the provider rotates).
    pub async fn add_key(&self, alg: &str, kid: &str) {
        let r = self
            .http
            .post(format!("{}/keys", self.control))
            .json(&json!({"alg": alg, "kid": kid}))
            .send()
            .await
            .expect("add key");
        assert!(r.status().is_success());
    }

    /// How often the JWK Set was fetched.
    pub async fn jwks_fetches(&self) -> u64 {
        let r: Value = self
            .http
            .get(format!("{}/stats", self.control))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats JSON");
        r["jwks_fetches"].as_u64().unwrap()
    }

    /// A token from the provider's token endpoint (client credentials),
    /// as a client would get one.
    pub async fn client_credentials(&self, client_id: &str, scope: &str) -> String {
        let r: Value = self
            .http
            .post(format!("{}/token", self.issuer))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("scope", scope),
                ("resource", RESOURCE),
            ])
            .send()
            .await
            .expect("token endpoint")
            .json()
            .await
            .expect("token JSON");
        r["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("token endpoint: {r}"))
            .to_string()
    }
}
