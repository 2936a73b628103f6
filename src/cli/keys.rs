//! `handoff keys create|list|revoke|rotate`: the daemon's API keys. A key
//! is printed once, at creation (or rotation); only its keyed hash is
//! stored, under a subkey of the audit key (so every replica, sharing
//! `HANDOFF_AUDIT_KEY`, verifies it).

use std::process::ExitCode;
use std::time::Duration;

use crate::app;
use crate::audit;
use crate::auth::keys;
use crate::config::Config;

async fn audit_key(cfg: &Config) -> anyhow::Result<handoff_actors::audit::AuditKey> {
    let files = audit::files(&cfg.database_url()?)?;
    let (key, _) = audit::key::load(cfg.audit_key.as_ref().map(|k| k.expose()), &files.key, true)?
        .ok_or_else(|| anyhow::anyhow!("no audit key"))?;
    Ok(key)
}

pub async fn create(
    cfg: &Config,
    tenant: &str,
    admin: bool,
    agent: Option<String>,
    expires: Option<Duration>,
    name: Option<String>,
) -> anyhow::Result<ExitCode> {
    if let Some(a) = &agent {
        if a.is_empty() || a.len() > cfg.max_agent_id_bytes || a.chars().any(char::is_control) {
            anyhow::bail!(
                "--agent must be 1 to {} bytes without control characters",
                cfg.max_agent_id_bytes
            );
        }
    }
    if name
        .as_ref()
        .is_some_and(|n| n.len() > 200 || n.chars().any(char::is_control))
    {
        anyhow::bail!("--name must be at most 200 bytes without control characters");
    }
    let db = app::open_db(cfg).await?;
    let key = audit_key(cfg).await?;
    let expires_ms = expires.map(|d| keys::now_ms().saturating_add(d.as_millis() as i64));
    let (token, row) = keys::mint(&key, tenant, admin, agent, name, expires_ms);
    db.insert_api_key(&row).await?;
    eprintln!(
        "key {} for tenant {}: shown once, store it now",
        row.id, row.tenant
    );
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

pub async fn list(cfg: &Config) -> anyhow::Result<ExitCode> {
    let db = app::open_db(cfg).await?;
    for row in db.api_keys().await? {
        println!("{}", keys::listing(&row));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn revoke(cfg: &Config, id: &str) -> anyhow::Result<ExitCode> {
    let db = app::open_db(cfg).await?;
    if db
        .update_api_key(id, Some(keys::now_ms()), None, None)
        .await?
    {
        eprintln!(
            "key {id} revoked (every replica refuses it within {:?})",
            crate::auth::CACHE_FOR
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("no key {id}");
        Ok(ExitCode::FAILURE)
    }
}

pub async fn rotate(cfg: &Config, id: &str, grace: Duration) -> anyhow::Result<ExitCode> {
    let db = app::open_db(cfg).await?;
    let key = audit_key(cfg).await?;
    match keys::rotate(db.as_ref(), &key, id, grace.as_millis() as i64).await? {
        Some((token, row)) => {
            eprintln!(
                "key {} replaces {id}, which works for {} more: shown once, store it now",
                row.id,
                humantime::format_duration(grace)
            );
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("no key {id}");
            Ok(ExitCode::FAILURE)
        }
    }
}
