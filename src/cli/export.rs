//! `handoff export`: a tenant's sessions, entries and handoffs as JSON Lines
//! (format in `dump.rs`), read straight from the database.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use handoff_actors::model::{now, rfc3339};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::dump::{self, Line};
use crate::app;
use crate::config::Config;
use crate::storage::{Database, PageQuery};

/// A progress bar on stderr when it is a terminal; hidden otherwise (logs,
/// pipes and tests get no escape sequences).
pub fn progress(len: Option<u64>, what: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = match len {
        Some(n) => ProgressBar::with_draw_target(Some(n), target).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::with_draw_target(None, target).with_style(
            ProgressStyle::with_template("{spinner} {msg} {pos}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(what.to_string());
    bar
}

fn write_line(out: &mut dyn Write, line: &Line) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Every session key of the tenant, in key order.
async fn all_keys(db: &dyn Database, tenant: &str) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    loop {
        let (page, _) = db
            .list_sessions(tenant, keys.last().map(String::as_str), 500)
            .await?;
        let done = page.len() < 500;
        keys.extend(page.into_iter().map(|s| s.session_key));
        if done {
            return Ok(keys);
        }
    }
}

pub async fn run(
    cfg: &Config,
    tenant: &str,
    only: &[String],
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let db = app::open_db(cfg).await?;
    let keys = if only.is_empty() {
        all_keys(db.as_ref(), tenant).await?
    } else {
        only.to_vec()
    };
    let mut out: Box<dyn Write> = match output {
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
        Some(p) if p == Path::new("-") => Box::new(BufWriter::new(std::io::stdout().lock())),
        Some(p) => Box::new(BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
    };
    write_line(
        &mut out,
        &Line::Header(dump::Header {
            format: dump::FORMAT.into(),
            version: dump::VERSION,
            tenant: tenant.into(),
            exported_at: rfc3339(&now()),
            source: db.describe(),
        }),
    )?;
    let bar = progress(Some(keys.len() as u64), "exporting sessions");
    let mut end = dump::End::default();
    for key in &keys {
        let Some((row, _)) = db.load_session(tenant, key).await? else {
            bar.abandon();
            anyhow::bail!("no session {key:?} in tenant {tenant:?}");
        };
        write_line(
            &mut out,
            &Line::Session(dump::Session {
                session_key: key.clone(),
                id: row.id.to_string(),
                agent_from: row.agent_from.clone(),
                status: row.status.as_str().into(),
                metadata: row.metadata.clone(),
                created_at: rfc3339(&row.created_at),
                last_activity_at: rfc3339(&row.last_activity_at),
                last_seq: row.last_seq,
                summary: serde_json::to_value(&row.summary)?,
            }),
        )?;
        end.sessions += 1;
        let mut after = 0;
        loop {
            let q = PageQuery {
                after,
                limit: 1000,
                types: None,
                max_bytes: 64 << 20,
            };
            let Some(page) = db.context_page(tenant, key, q).await? else {
                anyhow::bail!("session {key:?} disappeared during the export");
            };
            for e in &page.entries {
                write_line(
                    &mut out,
                    &Line::Entry(dump::Entry {
                        session_key: key.clone(),
                        sequence_number: e.sequence_number,
                        id: e.id.clone(),
                        context_type: e.context_type.clone(),
                        content: e.content.clone(),
                        metadata: e.metadata.clone(),
                        created_at: e.created_at.clone(),
                    }),
                )?;
                end.entries += 1;
            }
            match page.entries.last() {
                Some(last) if page.has_more => after = last.sequence_number,
                _ => break,
            }
        }
        for h in db.session_handoffs(tenant, key).await? {
            write_line(&mut out, &Line::Handoff(h))?;
            end.handoffs += 1;
        }
        bar.inc(1);
    }
    let summary = format!(
        "exported {} sessions, {} entries, {} handoffs",
        end.sessions, end.entries, end.handoffs
    );
    write_line(&mut out, &Line::End(end))?;
    out.flush()?;
    bar.finish_and_clear();
    eprintln!("handoff: {summary}");
    Ok(ExitCode::SUCCESS)
}
