//! Operator commands other than `serve`. Their output goes to stdout: they
//! are not MCP servers.

pub mod audit;
pub mod dump;
pub mod export;
pub mod import;
pub mod keys;
pub mod status;

use std::process::ExitCode;

use crate::app;
use crate::config::Config;

pub async fn migrate(cfg: &Config) -> anyhow::Result<ExitCode> {
    let db = crate::storage::open(&cfg.database_url()?, true).await?;
    println!("migrations applied: {}", db.describe());
    Ok(ExitCode::SUCCESS)
}

pub async fn sessions_list(cfg: &Config, tenant: &str, limit: u32) -> anyhow::Result<ExitCode> {
    let db = app::open_db(cfg).await?;
    let mut after: Option<String> = None;
    let mut left = limit;
    while left > 0 {
        let page = left.min(500);
        let (list, _) = db.list_sessions(tenant, after.as_deref(), page).await?;
        for s in &list {
            println!(
                "{}",
                serde_json::json!({"session_key": s.session_key, "status": s.status,
                    "agent_from": s.agent_from, "created_at": s.created_at,
                    "last_activity_at": s.last_activity_at})
            );
        }
        if list.len() < page as usize {
            break;
        }
        left -= page;
        after = list.last().map(|s| s.session_key.clone());
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn context_show(cfg: &Config, tenant: &str, key: &str) -> anyhow::Result<ExitCode> {
    let db = app::open_db(cfg).await?;
    let mut after = 0;
    loop {
        let q = crate::storage::PageQuery {
            after,
            limit: 1000,
            types: None,
            max_bytes: cfg.page_bytes_max,
        };
        let Some(page) = db.context_page(tenant, key, q).await? else {
            eprintln!("handoff: no session {key:?} in tenant {tenant:?}");
            return Ok(ExitCode::FAILURE);
        };
        for e in &page.entries {
            println!(
                "{}",
                serde_json::json!({"sequence_number": e.sequence_number, "context_type": e.context_type,
                    "content": e.content, "metadata": e.metadata, "created_at": e.created_at, "id": e.id})
            );
        }
        match page.entries.last() {
            Some(last) if page.has_more => after = last.sequence_number,
            _ => return Ok(ExitCode::SUCCESS),
        }
    }
}

pub async fn config_show(cfg: &Config) -> anyhow::Result<ExitCode> {
    let db = app::open_db(cfg).await?;
    crate::mcp::configuration::init(cfg, &db).await;
    let effective = cfg.live.get();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "settings": crate::mcp::configuration::sections_json(&effective.settings, None),
            "metadata": crate::mcp::configuration::metadata(&effective, None),
        }))?
    );
    Ok(ExitCode::SUCCESS)
}
