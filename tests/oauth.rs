//! The daemon as an OAuth 2.1 resource server, against a real authorization
//! server (tests/ts/oauth_provider.mjs: npm oauth2-mock-server, real keys,
//! its own discovery document and JWK Set). Each case asserts the status,
//! the `WWW-Authenticate` challenge and the body; every refusal is audited
//! with the method and reason, and no token reaches the log.

mod common;

use std::time::Duration;

use common::daemon::{create_key, header, post, Daemon, McpHttp};
use common::oauth::{Provider, AGENT_CLAIM, RESOURCE};
use common::DbDir;
use serde_json::{json, Value};

const METADATA_URL: &str = "https://handoff.test/.well-known/oauth-protected-resource/mcp";

async fn start(db: &DbDir, p: &Provider, more: &[(&'static str, &str)]) -> Daemon {
    let mut env: Vec<(&str, String)> = p.env();
    env.extend(more.iter().map(|(k, v)| (*k, v.to_string())));
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Daemon::start_env(db, &[], &refs).await
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
           "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                      "clientInfo": {"name": "oauth-test", "version": "0"}}})
}

/// An `initialize` with this bearer token: (status, challenge, body).
async fn try_token(d: &Daemon, token: &str) -> (u16, Option<String>, String) {
    let auth = format!("Bearer {token}");
    let (status, head, body) = post(&d.mcp, &initialize(), &[("Authorization", &auth)])
        .await
        .unwrap();
    (
        status,
        header(&head, "www-authenticate").map(str::to_string),
        body,
    )
}

fn refused_401(label: &str, got: (u16, Option<String>, String)) {
    assert_eq!(got.0, 401, "{label}: {got:?}");
    assert_eq!(
        got.1.as_deref(),
        Some(
            format!(
                r#"Bearer resource_metadata="{METADATA_URL}", scope="handoff:agent", error="invalid_token""#
            )
            .as_str()
        ),
        "{label}"
    );
    assert_eq!(got.2, r#"{"error":"unauthorized"}"#, "{label}");
}

fn accepted(label: &str, got: (u16, Option<String>, String)) {
    assert_eq!(got.0, 200, "{label}: {got:?}");
    assert!(got.2.contains(r#""serverInfo""#), "{label}: {}", got.2);
}

/// Flip one character in the middle of the signature.
fn tamper(token: &str) -> String {
    let cut = token.rfind('.').unwrap() + 20;
    let mut b = token.as_bytes().to_vec();
    b[cut] = if b[cut] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

async fn audited(db: &DbDir) -> Vec<(Option<String>, Value)> {
    common::sql_rows(
        db,
        "SELECT actor, details FROM audit_log WHERE action = 'auth.failed' ORDER BY seq",
    )
    .await
    .into_iter()
    .map(|r| {
        (
            r[0].clone(),
            serde_json::from_str(r[1].as_deref().unwrap()).unwrap(),
        )
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_resource_metadata_and_the_401_challenge() {
    let p = Provider::start().await;
    let db = DbDir::new();
    let d = start(&db, &p, &[]).await;
    let http = reqwest::Client::new();
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let r = http
            .get(format!("http://{}{path}", d.mcp))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json");
        let doc: Value = r.json().await.unwrap();
        assert_eq!(doc["resource"], RESOURCE, "{doc}");
        assert_eq!(doc["authorization_servers"], json!([p.issuer]), "{doc}");
        assert_eq!(
            doc["scopes_supported"],
            json!(["handoff:agent", "handoff:admin"])
        );
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    }
    // No credentials: the challenge names the metadata and the scope, and
    // no error (RFC 6750 §3.1).
    let (status, head, body) = post(&d.mcp, &initialize(), &[]).await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(
        header(&head, "www-authenticate"),
        Some(
            format!(r#"Bearer resource_metadata="{METADATA_URL}", scope="handoff:agent""#).as_str()
        )
    );
    assert_eq!(body, r#"{"error":"unauthorized"}"#);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_verified_as_the_specification_requires() {
    let p = Provider::start().await;
    let db = DbDir::new();
    let d = start(&db, &p, &[AGENT_CLAIM]).await;
    // Agent tokens acting as alice unless `extra` says otherwise.
    let agent = |extra: Value| {
        let mut claims = json!({"agent": "alice"});
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        p.token("acme", "handoff:agent", claims)
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    let valid = agent(json!({})).await;
    accepted("valid", try_token(&d, &valid).await);
    // An audience list that names this resource among others.
    let listed = agent(json!({"aud": ["https://other.example/api", RESOURCE]})).await;
    accepted("audience list", try_token(&d, &listed).await);
    // The scheme is case-insensitive.
    let (status, _, _) = post(
        &d.mcp,
        &initialize(),
        &[("Authorization", &format!("bearer {valid}"))],
    )
    .await
    .unwrap();
    assert_eq!(status, 200);

    let mut cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            p.mint(json!({"expires_in": -600, "claims": {"aud": RESOURCE, "tenant": "acme", "scope": "handoff:agent"}}))
                .await,
            "expired",
        ),
        (
            "not yet valid",
            agent(json!({"nbf": now + 600})).await,
            "not_yet_valid",
        ),
        (
            "wrong issuer",
            agent(json!({"iss": "http://127.0.0.1:9/other-realm"})).await,
            "wrong_issuer",
        ),
        (
            "audience of another resource",
            agent(json!({"aud": "https://other.example/mcp"})).await,
            "wrong_audience",
        ),
        (
            "no audience",
            agent(json!({"aud": null})).await,
            "wrong_audience",
        ),
        ("bad signature", tamper(&valid), "bad_signature"),
        (
            "alg none",
            p.mint(json!({"signer": "none", "claims": {"aud": RESOURCE, "tenant": "acme", "scope": "handoff:agent"}}))
                .await,
            "algorithm_refused",
        ),
        (
            "HS256 keyed with the public key",
            p.mint(json!({"signer": "hs256-public-key", "claims": {"aud": RESOURCE, "tenant": "acme", "scope": "handoff:agent"}}))
                .await,
            "algorithm_refused",
        ),
        (
            "missing tenant claim",
            agent(json!({"tenant": null})).await,
            "tenant_claim",
        ),
        (
            "tenant claim outside the tenant charset",
            agent(json!({"tenant": "Acme/../x"})).await,
            "tenant_claim",
        ),
        (
            "agent claim not a name",
            agent(json!({"agent": ["alice", "bob"]})).await,
            "agent_claim",
        ),
        (
            // Unbound, it could act as any agent.
            "agent claim missing from an agent token",
            agent(json!({"agent": null})).await,
            "agent_claim",
        ),
        (
            // Two such callers could not be told apart.
            "no subject",
            agent(json!({"sub": null})).await,
            "subject_claim",
        ),
        (
            // The crate skips an `nbf` it cannot read as whole seconds.
            "fractional nbf in the future",
            agent(json!({"nbf": now as f64 + 600.5})).await,
            "malformed",
        ),
        ("negative nbf", agent(json!({"nbf": -1})).await, "malformed"),
        (
            "a logout token",
            p.mint(json!({"header": {"typ": "logout+jwt"}, "claims": {"aud": RESOURCE, "tenant": "acme", "scope": "handoff:agent", "agent": "alice", "sub": "u"}}))
                .await,
            "malformed",
        ),
    ];
    for (label, token, _) in &cases {
        refused_401(label, try_token(&d, token).await);
    }

    // The provider rotates: a new key, published; tokens signed with it
    // work at once (one refetch), and the old key's tokens still do.
    // (A refetch follows at most one other within REFETCH_AFTER, 5 s.)
    tokio::time::sleep(Duration::from_millis(5200)).await;
    p.add_key("ES256", "k2").await;
    let before = p.jwks_fetches().await;
    let rotated = p
        .mint(json!({"kid": "k2", "claims": {"aud": RESOURCE, "tenant": "acme", "scope": "handoff:agent", "agent": "alice", "sub": "u"}}))
        .await;
    accepted("signed with the new key", try_token(&d, &rotated).await);
    accepted("signed with the old key", try_token(&d, &valid).await);
    assert_eq!(
        p.jwks_fetches().await,
        before + 1,
        "one refetch for the new kid"
    );
    // The key decides the algorithm: an ES256 token naming the RSA key's
    // kid finds no key for ES256.
    let crossed = p
        .mint(json!({"kid": "k2", "header": {"kid": "k1"}, "claims": {"aud": RESOURCE, "tenant": "acme", "scope": "handoff:agent", "agent": "alice"}}))
        .await;
    refused_401("ES256 header on the RSA key", try_token(&d, &crossed).await);
    cases.push((
        "ES256 header on the RSA key",
        crossed,
        "unknown_signing_key",
    ));

    // A kid the provider never published: fetched again once, then
    // refused; a second such token within REFETCH_AFTER fetches nothing.
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let before = p.jwks_fetches().await;
    let rogue = p
        .mint(json!({"signer": "rogue", "claims": {"aud": RESOURCE, "tenant": "acme", "scope": "handoff:agent", "agent": "alice"}}))
        .await;
    refused_401("unknown kid", try_token(&d, &rogue).await);
    assert_eq!(
        p.jwks_fetches().await,
        before + 1,
        "one refetch for an unknown kid"
    );
    refused_401("unknown kid again", try_token(&d, &rogue).await);
    assert_eq!(
        p.jwks_fetches().await,
        before + 1,
        "refetches are rate-limited"
    );
    cases.push(("unknown kid", rogue, "unknown_signing_key"));

    // Never in the query string, even when valid.
    let (status, head, body) = {
        let r = reqwest::Client::new()
            .post(format!("http://{}/mcp?access_token={valid}", d.mcp))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(initialize().to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let challenge = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        (status, challenge, r.text().await.unwrap())
    };
    assert_eq!(status, 400);
    assert_eq!(
        head,
        format!(r#"Bearer error="invalid_request", resource_metadata="{METADATA_URL}""#)
    );
    assert_eq!(body, r#"{"error":"invalid_request"}"#);

    // A valid token without any of this server's scopes reaches nothing.
    let unscoped = p.token("acme", "openid profile", json!({})).await;
    let got = try_token(&d, &unscoped).await;
    assert_eq!(got.0, 403, "{got:?}");
    assert_eq!(
        got.1.as_deref(),
        Some(format!(r#"Bearer error="insufficient_scope", scope="handoff:agent", resource_metadata="{METADATA_URL}""#).as_str())
    );
    assert_eq!(got.2, r#"{"error":"insufficient_scope"}"#);

    // The agent scope: the session tools work, the admin ones get 403
    // naming the admin scope; the admin scope (`scp` array, as Okta sends
    // it) runs them.
    let mut a = McpHttp::open(&d.mcp, Some(&valid)).await;
    let r = a
        .call(
            "register_session",
            json!({"session_key": "s1", "agent_from": "alice"}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let (status, head, body) = a
        .exchange(
            "tools/call",
            json!({"name": "run_job_now", "arguments": {"job_name": "retention"}}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        header(&head, "www-authenticate"),
        Some(format!(r#"Bearer error="insufficient_scope", scope="handoff:admin", resource_metadata="{METADATA_URL}""#).as_str())
    );
    assert_eq!(body, r#"{"error":"insufficient_scope"}"#);
    let (status, _, body) = a
        .exchange("resources/read", json!({"uri": "handoff://metrics"}))
        .await;
    assert_eq!(status, 403, "{body}");
    let admin = p
        .mint(json!({"claims": {"aud": RESOURCE, "tenant": "acme", "scp": ["handoff:admin"], "sub": "ops"}}))
        .await;
    let mut ops = McpHttp::open(&d.mcp, Some(&admin)).await;
    let r = ops
        .call("run_job_now", json!({"job_name": "analytics_rollup"}))
        .await;
    assert_eq!(r["success"], true, "{r}");

    // Tenant and agent from the claims: an agent-bound token acts as that
    // agent only; its tenant is the claim's, which an API key of the same
    // tenant shares and another tenant's token does not.
    let bound = agent(json!({"agent": "alice", "sub": "alice-user"})).await;
    let mut alice = McpHttp::open(&d.mcp, Some(&bound)).await;
    let r = alice
        .call(
            "register_session",
            json!({"session_key": "s2", "agent_from": "mallory"}),
        )
        .await;
    assert_eq!(r["error_code"], "FORBIDDEN", "{r}");
    let r = alice
        .call(
            "register_session",
            json!({"session_key": "s2", "agent_from": "alice"}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let r = alice
        .call(
            "request_handoff",
            json!({"session_key": "s2", "target_agent": "bob"}),
        )
        .await;
    let handoff = r["handoff"]["id"].as_str().unwrap().to_string();
    let r = alice
        .call(
            "accept_handoff",
            json!({"handoff_id": handoff, "agent": "bob"}),
        )
        .await;
    assert_eq!(r["error_code"], "FORBIDDEN", "{r}");
    let key = create_key(&db, "acme", "agent", &[]);
    let mut by_key = McpHttp::open(&d.mcp, Some(&key)).await;
    let sessions = by_key.read("handoff://sessions").await;
    let text = sessions["result"]["contents"][0]["text"].as_str().unwrap();
    assert!(
        text.contains(r#""s1""#) && text.contains(r#""s2""#),
        "{text}"
    );
    let other = p
        .token("globex", "handoff:agent", json!({"agent": "alice"}))
        .await;
    let mut globex = McpHttp::open(&d.mcp, Some(&other)).await;
    let sessions = globex.read("handoff://sessions").await;
    let v: Value =
        serde_json::from_str(sessions["result"]["contents"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(v["total"], 0, "{v}");

    // Every refusal audited, with the method and the reason; the chain
    // verifies; no token in the audit log or the daemon's log.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = audited(&db).await;
    for (label, _, reason) in &cases {
        assert!(
            rows.iter()
                .any(|(_, d)| d["reason"] == *reason && d["method"] == "oauth"),
            "{label}: no audited {reason} in {rows:?}"
        );
    }
    for reason in ["token_in_query", "insufficient_scope"] {
        assert!(
            rows.iter().any(|(_, d)| d["reason"] == reason),
            "{reason}: {rows:?}"
        );
    }
    let log = d.stderr.lock().unwrap().join("\n");
    let audit_text = format!("{rows:?}");
    for (label, token, _) in cases.iter().chain([("valid", valid.clone(), "")].iter()) {
        let signature = token.rsplit('.').next().unwrap();
        let body = token.split('.').nth(1).unwrap();
        for part in [signature, body].into_iter().filter(|s| s.len() > 8) {
            assert!(!log.contains(part), "{label}: token in the log");
            assert!(
                !audit_text.contains(part),
                "{label}: token in the audit log"
            );
        }
    }
    d.stop().await;
    common::audit_verify(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_tokens_are_refused_exactly_the_calls_agent_keys_are() {
    // For every tool (with arguments that get past validation), what an
    // agent-scope key is FORBIDDEN to do an agent-scope token gets 403
    // `insufficient_scope` for, and nothing else.
    let p = Provider::start().await;
    let db = DbDir::new();
    let d = start(&db, &p, &[]).await;
    let key = create_key(&db, "acme", "agent", &[]);
    let token = p.token("acme", "handoff:agent", json!({})).await;
    let mut k = McpHttp::open(&d.mcp, Some(&key)).await;
    let mut t = McpHttp::open(&d.mcp, Some(&token)).await;
    let tools = k.rpc("tools/list", json!({})).await;
    let names: Vec<String> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    let args = |tool: &str| match handoff::mcp::args::snake_case(tool).as_str() {
        "update_configuration" => {
            json!({"config_section": "monitoring", "monitoring_config": {"slow_call_threshold": "750ms"}})
        }
        "update_job_config" => {
            json!({"job_name": "cache_maintenance", "config": {"max_retries": 2}})
        }
        "run_job_now" => json!({"job_name": "analytics_rollup"}),
        "manage_configuration_backup" => json!({"action": "create", "backup_name": "b"}),
        _ => json!({}),
    };
    // And the original server's camelCase names, which reach the same tools.
    let camel = |n: &str| {
        let mut parts = n.split('_');
        let mut out = parts.next().unwrap().to_string();
        for p in parts {
            out.push_str(&p[..1].to_ascii_uppercase());
            out.push_str(&p[1..]);
        }
        out
    };
    let names: Vec<String> = names.iter().flat_map(|n| [n.clone(), camel(n)]).collect();
    let mut forbidden_to_key = Vec::new();
    let mut forbidden_to_token = Vec::new();
    for name in &names {
        let r = k.call(name, args(name)).await;
        if r["error_code"] == "FORBIDDEN" && r["details"]["required_capability"] == "admin" {
            forbidden_to_key.push(name.clone());
        }
        let (status, _, body) = t
            .exchange("tools/call", json!({"name": name, "arguments": args(name)}))
            .await;
        if status == 403 {
            assert_eq!(body, r#"{"error":"insufficient_scope"}"#);
            forbidden_to_token.push(name.clone());
        } else {
            assert_eq!(status, 200, "{name}: {body}");
        }
    }
    assert!(forbidden_to_key.len() >= 8, "{forbidden_to_key:?}");
    assert_eq!(forbidden_to_key, forbidden_to_token);
    // Listing backups is no change: both may.
    let r = t
        .exchange(
            "tools/call",
            json!({"name": "manage_configuration_backup", "arguments": {"action": "list"}}),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.2);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_tokens_side_by_side_and_either_switched_off() {
    let p = Provider::start().await;
    let db = DbDir::new();
    let key = create_key(&db, "acme", "agent", &[]);
    let token = p.token("acme", "handoff:agent", json!({})).await;
    // Both on: both work.
    let d = start(&db, &p, &[]).await;
    accepted("key", try_token(&d, &key).await);
    accepted("token", try_token(&d, &token).await);
    d.stop().await;
    // API keys off: a key is refused (as a malformed credential), a token
    // works.
    let d = start(&db, &p, &[("HANDOFF_AUTH__API_KEYS", "false")]).await;
    refused_401("key with keys off", try_token(&d, &key).await);
    accepted("token with keys off", try_token(&d, &token).await);
    d.stop().await;
    // OAuth off (the default): a token is refused with the bare challenge,
    // and there is no metadata.
    let d = Daemon::start_with_keys(&db).await;
    accepted("key without OAuth", try_token(&d, &key).await);
    let got = try_token(&d, &token).await;
    assert_eq!((got.0, got.1.as_deref()), (401, Some("Bearer")), "{got:?}");
    let r = reqwest::get(format!(
        "http://{}/.well-known/oauth-protected-resource",
        d.mcp
    ))
    .await
    .unwrap();
    // Not served (the credential check answers first: nothing but
    // `/mcp` behind it exists to an anonymous caller).
    assert_eq!(r.status(), 401);
    d.stop().await;
    // Neither: refused at start, naming the settings.
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--http", "127.0.0.1:0"])
        .env("HANDOFF_DATABASE_URL", db.url())
        .env("HANDOFF_AUTH__API_KEYS", "false")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.api_keys") && err.contains("auth.oauth.issuer"),
        "{err}"
    );
    // A symmetric algorithm cannot even be configured.
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--http", "127.0.0.1:0"])
        .env("HANDOFF_DATABASE_URL", db.url())
        .env("HANDOFF_AUTH__OAUTH__ISSUER", &p.issuer)
        .env("HANDOFF_AUTH__OAUTH__RESOURCE", RESOURCE)
        .env("HANDOFF_AUTH__OAUTH__ALGORITHMS", "[HS256]")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HS256"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_connects_with_a_client_credentials_token() {
    let p = Provider::start().await;
    let db = DbDir::new();
    let d = start(&db, &p, &[]).await;
    // As a client would: client credentials at the provider's token
    // endpoint, for this resource (RFC 8707); tenant "acme" from the client.
    let token = p
        .client_credentials("acme.ts-client", "handoff:agent")
        .await;
    let script = common::ts::script("client_check.mjs");
    let log = db.path().join("ts-client.log");
    let out = std::process::Command::new("node")
        .arg(&script)
        .args([
            "--url",
            &d.url(),
            "--header",
            &format!("Authorization: Bearer {token}"),
        ])
        .stderr(std::fs::File::create(&log).unwrap())
        .output()
        .expect("run node client_check.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "client_check.mjs: {e}: {stdout}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert!(out.status.success() && r["ok"] == true, "{}", r["error"]);
    let acked = r["writes"]["acked"].as_u64().unwrap();
    assert!(acked > 0, "{}", r["writes"]);
    let v = &r["verification"];
    assert_eq!(v["found"].as_u64(), Some(acked), "{v}");
    for bad in ["lost", "duplicated", "misordered", "unacknowledged"] {
        assert_eq!(v[bad], 0, "{bad}: {v}");
    }
    // What it wrote is the token's tenant's, and no one else's.
    let exported = std::process::Command::new(common::BIN)
        .args(["export", "--tenant", "acme"])
        .env("HANDOFF_DATABASE_URL", db.url())
        .output()
        .unwrap();
    assert!(exported.status.success());
    let acme = String::from_utf8_lossy(&exported.stdout);
    assert!(acme.contains("session_key"), "{acme}");
    let other = p.token("globex", "handoff:agent", json!({})).await;
    let mut globex = McpHttp::open(&d.mcp, Some(&other)).await;
    let v: Value = serde_json::from_str(
        globex.read("handoff://sessions").await["result"]["contents"][0]["text"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v["total"], 0, "{v}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_goes_away_leaves_the_keys_held() {
    let p = Provider::start().await;
    let db = DbDir::new();
    let env = p.env();
    let d = start(&db, &p, &[]).await;
    let valid = p.token("acme", "handoff:agent", json!({})).await;
    let rogue = p
        .mint(json!({"signer": "rogue", "claims": {"aud": RESOURCE, "tenant": "acme", "scope": "handoff:agent"}}))
        .await;
    accepted("provider up", try_token(&d, &valid).await);
    drop(p);
    tokio::time::sleep(Duration::from_millis(5200)).await;
    // The keys fetched before still verify; an unknown kid is refused
    // (the refetch fails), not held up.
    accepted("provider down, key held", try_token(&d, &valid).await);
    refused_401("provider down, unknown kid", try_token(&d, &rogue).await);
    d.stop().await;
    // A daemon that never fetched any key: 503, retry later.
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let d = Daemon::start_env(&db, &[], &refs).await;
    let auth = format!("Bearer {valid}");
    let (status, head, _) = post(&d.mcp, &initialize(), &[("Authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(status, 503, "{head}");
    assert_eq!(header(&head, "retry-after"), Some("1"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_fetches_are_bounded_whatever_clients_do() {
    let p = Provider::start().await;
    let db = DbDir::new();
    let d = start(&db, &p, &[]).await;
    let valid = p.token("acme", "handoff:agent", json!({})).await;
    accepted("keys fetched at start", try_token(&d, &valid).await);
    let rogue = p
        .mint(json!({"signer": "rogue", "claims": {"aud": RESOURCE, "tenant": "acme", "scope": "handoff:agent"}}))
        .await;

    // A provider that answers in 4 s: a request naming an unknown kid
    // waits about a second for the refetch, not the whole fetch; a known
    // kid does not wait at all, even while that fetch runs.
    p.slow(4000).await;
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let t = std::time::Instant::now();
    refused_401("unknown kid, slow provider", try_token(&d, &rogue).await);
    let waited = t.elapsed();
    accepted("known kid during the fetch", try_token(&d, &valid).await);
    assert!(
        waited < Duration::from_millis(3000),
        "waited {waited:?} for a 4 s provider"
    );

    // Clients that hang up mid-request cannot start more fetches: 100
    // unknown-kid requests abandoned after 20 ms, over 6 s, start at most
    // one fetch per 5 s (before the fix: one per abandoned request).
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let before = p.jwks_fetches().await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let auth = format!("Bearer {rogue}");
    let t = std::time::Instant::now();
    for _ in 0..100 {
        let _ = impatient
            .post(format!("http://{}/mcp", d.mcp))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("authorization", &auth)
            .body(initialize().to_string())
            .send()
            .await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let spent = t.elapsed();
    // Let the last fetch reach the provider's counter.
    p.slow(0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fetches = p.jwks_fetches().await - before;
    let allowed = spent.as_millis() as u64 / 5000 + 1;
    assert!(
        (1..=allowed).contains(&fetches),
        "{fetches} fetches in {spent:?} (at most {allowed})"
    );

    // A header that is not ASCII is refused as malformed, not missing.
    let r = reqwest::Client::new()
        .post(format!("http://{}/mcp", d.mcp))
        .header("content-type", "application/json")
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .body(initialize().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    d.stop().await;
    let rows = audited(&db).await;
    assert!(
        rows.iter()
            .any(|(_, d)| d["reason"] == "malformed" && d["method"] == "unknown"),
        "{rows:?}"
    );
    assert!(
        !rows.iter().any(|(_, d)| d["reason"] == "missing"),
        "{rows:?}"
    );
}
