//! `handoff import`: load a `handoff export` file (format in `dump.rs`) into
//! a database of either backend, through the adapters' batch write
//! (`Store::commit`, the path the persistence actor uses) rather than tool
//! calls: ids, sequence numbers, times, content bytes and summaries are kept
//! exactly, which the tools (that allocate all of these) cannot do.
//!
//! Atomicity is per session: a session whose entries fit in one batch
//! (`BATCH_ENTRIES`, `BATCH_BYTES`) is written in one transaction. A larger
//! one is written in several, the first with a provisional session row
//! (`last_seq` 0): if the import stops half way, loading the session folds
//! in the entries that did arrive, as after any crash. Its final row is
//! written with its last entries.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use clap::ValueEnum;
use handoff_actors::model::summary::Summary;
use handoff_actors::model::{
    CommitUnit, ContextType, EntryRow, HandoffAccept, HandoffRow, HandoffType, SessionRow,
    SessionStatus,
};
use serde_json::Value;
use uuid::Uuid;

use super::dump::{self, Line};
use super::export::progress;
use crate::app;
use crate::config::Config;
use crate::mcp::args;
use crate::storage::{Database, PageQuery};

const BATCH_ENTRIES: usize = 1000;
const BATCH_BYTES: usize = 16 << 20;

/// What to do with a session whose key the target tenant already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnConflict {
    /// Leave the existing session alone and skip the imported one.
    Skip,
    /// Stop the import (sessions before it stay imported).
    Fail,
}

fn time(s: &str, what: &str) -> anyhow::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| anyhow!("{what} is not an RFC 3339 time: {s:?}"))
}

fn uuid(s: &str, what: &str) -> anyhow::Result<Uuid> {
    Uuid::parse_str(s).map_err(|_| anyhow!("{what} is not a uuid: {s:?}"))
}

/// The session being read: its final row and what is not yet written.
struct Pending {
    row: SessionRow,
    skip: bool,
    /// Whether a provisional row and some entries are already written.
    started: bool,
    last_seq: i64,
    entries: Vec<EntryRow>,
    bytes: usize,
    handoffs: Vec<HandoffRow>,
    accepts: Vec<HandoffAccept>,
}

struct Importer {
    db: Arc<dyn Database>,
    /// The tools' limits, which an import must not get around.
    cfg: Config,
    tenant: Arc<str>,
    on_conflict: OnConflict,
    counts: dump::End,
    skipped: u64,
}

impl Importer {
    async fn exists(&self, key: &str) -> anyhow::Result<bool> {
        // A page after the last possible sequence number: empty, but `Some`
        // exactly when the session exists.
        let q = PageQuery {
            after: i64::MAX,
            limit: 1,
            types: None,
            max_bytes: 0,
        };
        Ok(self.db.context_page(&self.tenant, key, q).await?.is_some())
    }

    async fn begin(&mut self, s: dump::Session) -> anyhow::Result<Pending> {
        let key = &s.session_key;
        checked(key, args::session_key(&self.cfg, key))?;
        checked(key, args::agent_id(&self.cfg, "agent_from", &s.agent_from))?;
        checked(key, args::metadata(&self.cfg, "metadata", &s.metadata))?;
        let status = SessionStatus::parse(&s.status)
            .ok_or_else(|| anyhow!("unknown session status {:?}", s.status))?;
        let summary: Summary = serde_json::from_value(s.summary)
            .map_err(|e| anyhow!("session {:?}: invalid summary: {e}", s.session_key))?;
        let row = SessionRow {
            id: uuid(&s.id, "session id")?,
            tenant: self.tenant.clone(),
            session_key: Arc::from(s.session_key.as_str()),
            agent_from: s.agent_from,
            status,
            metadata: s.metadata,
            created_at: time(&s.created_at, "created_at")?,
            last_activity_at: time(&s.last_activity_at, "last_activity_at")?,
            last_seq: s.last_seq,
            summary,
        };
        let skip = if self.exists(&s.session_key).await? {
            match self.on_conflict {
                OnConflict::Skip => {
                    self.skipped += 1;
                    true
                }
                OnConflict::Fail => bail!(
                    "session {:?} already exists in tenant {:?} (--on-conflict fail); \
                     {} sessions were imported before it",
                    s.session_key,
                    self.tenant,
                    self.counts.sessions
                ),
            }
        } else {
            false
        };
        Ok(Pending {
            row,
            skip,
            started: false,
            last_seq: 0,
            entries: Vec::new(),
            bytes: 0,
            handoffs: Vec::new(),
            accepts: Vec::new(),
        })
    }

    async fn entry(&mut self, p: &mut Pending, e: dump::Entry) -> anyhow::Result<()> {
        if e.sequence_number != p.last_seq + 1 {
            bail!(
                "session {:?}: sequence number {} follows {} (entries must be 1, 2, 3, … in order)",
                e.session_key,
                e.sequence_number,
                p.last_seq
            );
        }
        p.last_seq = e.sequence_number;
        checked(
            &e.session_key,
            args::content(&self.cfg, "content", &e.content),
        )?;
        checked(
            &e.session_key,
            args::metadata(&self.cfg, "metadata", &e.metadata),
        )?;
        let context_type = ContextType::parse(&e.context_type)
            .ok_or_else(|| anyhow!("unknown context_type {:?}", e.context_type))?;
        let row = EntryRow {
            session_id: p.row.id,
            seq: e.sequence_number,
            id: uuid(&e.id, "entry id")?,
            context_type,
            content: e.content,
            metadata: e.metadata,
            created_at: time(&e.created_at, "created_at")?,
        };
        if p.skip {
            return Ok(());
        }
        p.bytes += row.content.len();
        p.entries.push(row);
        if p.entries.len() >= BATCH_ENTRIES || p.bytes >= BATCH_BYTES {
            // Not the last batch of this session: a provisional row that
            // covers no entries, so a reader folds in what is written.
            let mut provisional = p.row.clone();
            provisional.last_seq = 0;
            provisional.summary = Summary::with_participant(&p.row.agent_from);
            let unit = CommitUnit {
                session_is_new: !p.started,
                session: (!p.started).then_some(provisional),
                entries: std::mem::take(&mut p.entries),
                ..Default::default()
            };
            self.db.commit(&[&unit]).await?;
            p.started = true;
            p.bytes = 0;
        }
        Ok(())
    }

    fn handoff(&mut self, p: &mut Pending, h: crate::storage::HandoffRecord) -> anyhow::Result<()> {
        let request_type: HandoffType =
            serde_json::from_value(Value::String(h.request_type.clone()))
                .map_err(|_| anyhow!("unknown request_type {:?}", h.request_type))?;
        let id = uuid(&h.id, "handoff id")?;
        let key = p.row.session_key.clone();
        checked(
            &key,
            args::agent_id(&self.cfg, "source_agent", &h.source_agent),
        )?;
        checked(
            &key,
            args::agent_id(&self.cfg, "target_agent", &h.target_agent),
        )?;
        let mut status = h.status;
        if let (Some(at), Some(agent)) = (&h.accepted_at, &h.accepted_by) {
            p.accepts.push(HandoffAccept {
                id,
                agent: agent.clone(),
                at: time(at, "accepted_at")?,
            });
            // Stored pending, then accepted by the same update the server
            // uses (which refuses to accept a handoff twice).
            status = "pending".into();
        }
        p.handoffs.push(HandoffRow {
            id,
            tenant: self.tenant.clone(),
            session_id: p.row.id,
            session_key: p.row.session_key.clone(),
            source_agent: h.source_agent,
            target_agent: h.target_agent,
            request_type,
            status,
            request_data: h.request_data,
            context_summary: h.context_summary,
            context_entries: h.context_entries,
            created_at: time(&h.created_at, "created_at")?,
        });
        Ok(())
    }

    async fn finish(&mut self, p: Pending) -> anyhow::Result<()> {
        if p.skip {
            return Ok(());
        }
        self.counts.sessions += 1;
        self.counts.entries += p.last_seq as u64;
        self.counts.handoffs += p.handoffs.len() as u64;
        let unit = CommitUnit {
            // The provisional row of a long session exists already.
            session_is_new: !p.started,
            session: Some(p.row),
            entries: p.entries,
            handoffs: p.handoffs,
            ..Default::default()
        };
        self.db.commit(&[&unit]).await?;
        // After the handoffs are stored: an acceptance updates a stored row.
        if !p.accepts.is_empty() {
            let unit = CommitUnit {
                accepts: p.accepts,
                ..Default::default()
            };
            self.db.commit(&[&unit]).await?;
        }
        Ok(())
    }
}

pub async fn run(
    cfg: &Config,
    input: &Path,
    tenant: Option<&str>,
    on_conflict: OnConflict,
) -> anyhow::Result<ExitCode> {
    let reader: Box<dyn Read> = if input == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(input)
                .with_context(|| format!("cannot open {}", input.display()))?,
        )
    };
    let db = app::open_db(cfg).await?;
    let mut lines = BufReader::new(reader).lines();
    let bar = progress(None, "importing lines");

    let parse = |n: usize, text: std::io::Result<String>| -> anyhow::Result<Line> {
        let text = text.with_context(|| format!("reading line {n}"))?;
        serde_json::from_str(&text).with_context(|| format!("line {n} is not a valid export line"))
    };
    let header = match lines.next() {
        None => bail!("empty input: not a handoff export"),
        Some(l) => match parse(1, l)? {
            Line::Header(h) => h,
            _ => bail!("line 1 must be the header (kind \"header\")"),
        },
    };
    if header.format != dump::FORMAT || header.version != dump::VERSION {
        bail!(
            "unsupported export: format {:?} version {} (this handoff reads {:?} version {})",
            header.format,
            header.version,
            dump::FORMAT,
            dump::VERSION
        );
    }
    let tenant = tenant.unwrap_or(&header.tenant);
    if !handoff_actors::model::valid_tenant(tenant) {
        bail!("{}", handoff_actors::model::tenant_rule(tenant));
    }
    let mut imp = Importer {
        db,
        cfg: cfg.clone(),
        tenant: Arc::from(tenant),
        on_conflict,
        counts: dump::End::default(),
        skipped: 0,
    };
    let mut read = dump::End::default();
    let mut current: Option<Pending> = None;
    let mut end: Option<dump::End> = None;
    for (i, text) in lines.enumerate() {
        let n = i + 2;
        bar.inc(1);
        let line = parse(n, text)?;
        if end.is_some() {
            bail!("line {n}: data after the end line");
        }
        let in_session = |p: &Option<Pending>, key: &str| -> anyhow::Result<()> {
            match p {
                Some(p) if *p.row.session_key == *key => Ok(()),
                _ => bail!("line {n}: {key:?} does not follow its session line"),
            }
        };
        let step: anyhow::Result<()> = async {
            match line {
                Line::Header(_) => bail!("a second header"),
                Line::Session(s) => {
                    read.sessions += 1;
                    if let Some(p) = current.take() {
                        imp.finish(p).await?;
                    }
                    current = Some(imp.begin(s).await?);
                }
                Line::Entry(e) => {
                    read.entries += 1;
                    in_session(&current, &e.session_key)?;
                    if let Some(p) = current.as_mut() {
                        imp.entry(p, e).await?;
                    }
                }
                Line::Handoff(h) => {
                    read.handoffs += 1;
                    in_session(&current, &h.session_key)?;
                    if let Some(p) = current.as_mut() {
                        imp.handoff(p, h)?;
                    }
                }
                Line::End(e) => {
                    if let Some(p) = current.take() {
                        imp.finish(p).await?;
                    }
                    end = Some(e);
                }
            }
            Ok(())
        }
        .await;
        step.with_context(|| format!("line {n}"))?;
    }
    bar.finish_and_clear();
    match end {
        None => bail!("the input ends without its end line: truncated export, the last session was not imported"),
        Some(e) if e != read => bail!(
            "the end line counts {} sessions, {} entries, {} handoffs but the file holds {}, {}, {}",
            e.sessions, e.entries, e.handoffs, read.sessions, read.entries, read.handoffs
        ),
        Some(_) => {}
    }
    eprintln!(
        "handoff: imported {} sessions, {} entries, {} handoffs into tenant {:?}; skipped {} existing sessions",
        imp.counts.sessions, imp.counts.entries, imp.counts.handoffs, imp.tenant, imp.skipped
    );
    Ok(ExitCode::SUCCESS)
}

/// A tool's check applied to an imported value: its message, naming the
/// session, stops the import.
fn checked(session_key: &str, r: Result<(), handoff_actors::HandoffError>) -> anyhow::Result<()> {
    r.map_err(|e| {
        let key: String = session_key.chars().take(80).collect();
        anyhow!("session {key:?}: {}", e.message)
    })
}
