//! Operator commands other than `serve`. Their output goes to stdout: they
//! are not MCP servers.

use std::process::ExitCode;

use crate::app;
use crate::config::Config;

pub async fn migrate(cfg: &Config) -> anyhow::Result<ExitCode> {
    let db = app::open_db(cfg).await?;
    println!("migrations applied: {}", db.describe());
    Ok(ExitCode::SUCCESS)
}

pub async fn audit_verify(cfg: &Config) -> anyhow::Result<ExitCode> {
    let db = app::open_db(cfg).await?;
    let rows = db.audit_rows().await?;
    match handoff_actors::audit::verify_chain(&rows) {
        Ok(n) => {
            println!("audit chain intact: {n} rows");
            Ok(ExitCode::SUCCESS)
        }
        Err((seq, why)) => {
            println!("audit chain BROKEN at row {seq}: {why}");
            Ok(ExitCode::FAILURE)
        }
    }
}
