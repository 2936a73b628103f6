//! The API key format, its stored hash, and the `handoff keys` commands.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use handoff_actors::audit::AuditKey;

use crate::storage::{ApiKeyRow, Database};

const PREFIX: &str = "hnd_";
const HASH_CONTEXT: &str = "handoff 2026 api key hash";

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn subkey(key: &AuditKey) -> [u8; 32] {
    key.derive(HASH_CONTEXT)
}

/// `hnd_{32 hex id}_{secret}` → (id, secret); `None` for any other form.
pub fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let ok_id = id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    let ok_secret = (40..=64).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (ok_id && ok_secret).then_some((id, secret))
}

/// A new key: (the key to hand out once, its row).
pub fn mint(
    key: &AuditKey,
    tenant: &str,
    admin: bool,
    agent: Option<String>,
    name: Option<String>,
    expires_ms: Option<i64>,
) -> (String, ApiKeyRow) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    // 244 random bits from the OS generator (two v4 uuids).
    let mut raw = [0u8; 32];
    raw[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    raw[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = key.tag(&subkey(key), &[&id, &secret]);
    let row = ApiKeyRow {
        id: id.clone(),
        tenant: tenant.to_string(),
        scope: if admin { "admin" } else { "agent" }.to_string(),
        agent,
        name,
        hash,
        created_ms: now_ms(),
        last_used_ms: None,
        expires_ms,
        revoked_ms: None,
        replaced_by: None,
    };
    (format!("{PREFIX}{id}_{secret}"), row)
}

fn rfc3339(ms: Option<i64>) -> serde_json::Value {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| serde_json::Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(serde_json::Value::Null)
}

/// What `keys list` shows of a key: never the key, nor its hash.
pub fn listing(row: &ApiKeyRow) -> serde_json::Value {
    let now = now_ms();
    let state = if row.revoked_ms.is_some_and(|t| t <= now) {
        "revoked"
    } else if row.expires_ms.is_some_and(|t| t <= now) {
        "expired"
    } else if row.replaced_by.is_some() {
        "rotating"
    } else {
        "active"
    };
    serde_json::json!({
        "id": row.id,
        "tenant": row.tenant,
        "scope": row.scope,
        "agent": row.agent,
        "name": row.name,
        "created_at": rfc3339(Some(row.created_ms)),
        "last_used_at": rfc3339(row.last_used_ms),
        "expires_at": rfc3339(row.expires_ms),
        "state": state,
        "replaced_by": row.replaced_by,
    })
}

/// `keys rotate`: a new key with the old one's tenant, scope, agent and
/// name; the old one keeps working until `grace_ms` from now.
pub async fn rotate(
    db: &dyn Database,
    key: &AuditKey,
    id: &str,
    grace_ms: i64,
) -> anyhow::Result<Option<(String, ApiKeyRow)>> {
    let Some(old) = db.api_key(id).await? else {
        return Ok(None);
    };
    let (token, row) = mint(
        key,
        &old.tenant,
        old.scope == "admin",
        old.agent.clone(),
        old.name.clone(),
        old.expires_ms,
    );
    db.insert_api_key(&row).await?;
    let until = now_ms() + grace_ms;
    let until = old.expires_ms.map_or(until, |e| e.min(until));
    db.update_api_key(id, None, Some(until), Some(&row.id))
        .await?;
    Ok(Some((token, row)))
}
