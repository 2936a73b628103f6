//! The audit actor: an append-only log of registrations, handoffs, deletions,
//! lifecycle transitions, breaker transitions and auth failures. Each row
//! carries the blake3 hash of the row before it, so an edit or a deletion
//! anywhere breaks the chain (`handoff audit verify`). Rows are written
//! through the persistence actor, in order, one batch in flight at a time.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;

use crate::model::{now, rfc3339, AuditRow, CommitUnit};
use crate::persistence::PersistenceHandle;
use crate::store::Store;

pub const AUDIT_NAME: &str = "audit";
/// Audit rows wait this long to be written together. A row written on its
/// own costs a commit (an fsync) that client writes would queue behind; the
/// rows are not on any client's path, so they can wait. Shutdown flushes.
const LINGER: Duration = Duration::from_millis(50);
/// …unless this many are waiting.
const LINGER_MAX: usize = 256;
/// How long a stopping audit actor keeps trying to write its last rows
/// (inside the root's drain timeout).
const SHUTDOWN_RETRY: Duration = Duration::from_secs(5);
/// The hash the first row links to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub action: &'static str,
    pub tenant: String,
    /// Who asked (agent id, key id, "system").
    pub actor: Option<String>,
    /// A keyed hash of the session key, never the key itself.
    pub subject_hash: Option<String>,
    pub details: Value,
}

impl AuditEvent {
    pub fn system(action: &'static str, details: Value) -> Self {
        Self {
            action,
            tenant: "system".into(),
            actor: Some("system".into()),
            subject_hash: None,
            details,
        }
    }
}

pub enum AuditMsg {
    Record(AuditEvent),
    /// Write what is buffered (self-sent, so it runs after queued records).
    Flush,
}

impl AuditMsg {
    /// Fire-and-forget from anywhere: the audit actor is found by name, so a
    /// restarted one is found too.
    pub fn record(event: AuditEvent) {
        if let Some(cell) = ractor::registry::where_is(AUDIT_NAME) {
            let _ = cell.send_message(AuditMsg::Record(event));
        } else {
            tracing::warn!(
                action = event.action,
                "audit actor not running; event dropped"
            );
        }
    }
}

/// The chain link: blake3 over the previous hash and every field,
/// length-prefixed so no two rows can serialise alike.
pub fn row_hash(row: &AuditRow) -> String {
    let mut h = blake3::Hasher::new();
    let fields: [&str; 8] = [
        &row.prev_hash,
        &row.seq.to_string(),
        &row.ts,
        &row.tenant,
        &row.action,
        row.actor.as_deref().unwrap_or(""),
        row.subject_hash.as_deref().unwrap_or(""),
        &row.details,
    ];
    for f in fields {
        h.update(&(f.len() as u64).to_le_bytes());
        h.update(f.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// Check a chain read back in `seq` order. Returns the number of rows, or the
/// first sequence number where it breaks and why.
pub fn verify_chain<'a>(
    rows: impl IntoIterator<Item = &'a AuditRow>,
) -> Result<u64, (i64, String)> {
    let mut prev = GENESIS.to_string();
    let mut expected_seq: Option<i64> = None;
    let mut n = 0;
    for row in rows {
        if let Some(e) = expected_seq {
            if row.seq != e {
                return Err((row.seq, format!("expected row {e}, found {}", row.seq)));
            }
        }
        if row.prev_hash != prev {
            return Err((row.seq, "prev_hash does not match the previous row".into()));
        }
        if row_hash(row) != row.hash {
            return Err((row.seq, "row hash does not match its contents".into()));
        }
        prev = row.hash.clone();
        expected_seq = Some(row.seq + 1);
        n += 1;
    }
    Ok(n)
}

pub struct AuditActor;

pub struct AuditArgs {
    pub store: Arc<dyn Store>,
    pub persistence: PersistenceHandle,
}

pub struct AuditState {
    store: Arc<dyn Store>,
    persistence: PersistenceHandle,
    next_seq: i64,
    head: String,
    buffer: Vec<AuditEvent>,
    flush_scheduled: bool,
}

impl Actor for AuditActor {
    type Msg = AuditMsg;
    type State = AuditState;
    type Arguments = AuditArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<AuditMsg>,
        args: AuditArgs,
    ) -> Result<AuditState, ActorProcessingErr> {
        let head = args.store.audit_head().await?;
        let (next_seq, head) = match head {
            Some(r) => (r.seq + 1, r.hash),
            None => (1, GENESIS.to_string()),
        };
        Ok(AuditState {
            store: args.store,
            persistence: args.persistence,
            next_seq,
            head,
            buffer: Vec::new(),
            flush_scheduled: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AuditMsg>,
        msg: AuditMsg,
        st: &mut AuditState,
    ) -> Result<(), ActorProcessingErr> {
        crate::metrics::metrics()
            .actor_messages
            .with_label_values(&["audit"])
            .inc();
        match msg {
            AuditMsg::Record(e) => {
                st.buffer.push(e);
                if st.buffer.len() >= LINGER_MAX {
                    st.flush_scheduled = true;
                    // Refused only while draining; post_stop writes the
                    // buffer then. An error here would fail the actor and
                    // lose the buffer instead.
                    let _ = myself.cast(AuditMsg::Flush);
                } else if !st.flush_scheduled {
                    st.flush_scheduled = true;
                    myself.send_after(LINGER, || AuditMsg::Flush);
                }
            }
            AuditMsg::Flush => {
                st.flush_scheduled = false;
                match st.flush().await {
                    Flushed::Done => {}
                    // Another process extended the chain first: continue
                    // from its head at once.
                    Flushed::Conflict => {
                        st.flush_scheduled = true;
                        let _ = myself.cast(AuditMsg::Flush);
                    }
                    // Keep the rows and try again: the chain must not skip.
                    Flushed::Failed => {
                        st.flush_scheduled = true;
                        myself.send_after(Duration::from_secs(1), || AuditMsg::Flush);
                    }
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AuditMsg>,
        st: &mut AuditState,
    ) -> Result<(), ActorProcessingErr> {
        // The last rows have no later flush to retry them: keep trying (lost
        // races at once, failures after a pause) until the drain deadline
        // is near, and say so if they could not be written.
        let pending = st.buffer.len();
        let deadline = std::time::Instant::now() + SHUTDOWN_RETRY;
        while std::time::Instant::now() < deadline {
            match st.flush().await {
                Flushed::Done => break,
                Flushed::Conflict => {}
                Flushed::Failed => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        if !st.buffer.is_empty() {
            tracing::error!(rows = st.buffer.len(), "audit rows not written at shutdown");
        } else {
            tracing::info!(rows = pending, next_seq = st.next_seq, "audit log flushed");
        }
        Ok(())
    }
}

enum Flushed {
    Done,
    Failed,
    Conflict,
}

impl AuditState {
    /// Chain and commit the buffer.
    async fn flush(&mut self) -> Flushed {
        if self.buffer.is_empty() {
            return Flushed::Done;
        }
        let ts = rfc3339(&now());
        let mut prev = self.head.clone();
        let rows: Vec<AuditRow> = self
            .buffer
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut row = AuditRow {
                    seq: self.next_seq + i as i64,
                    ts: ts.clone(),
                    tenant: e.tenant.clone(),
                    action: e.action.to_string(),
                    actor: e.actor.clone(),
                    subject_hash: e.subject_hash.clone(),
                    details: e.details.to_string(),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                row.hash = row_hash(&row);
                prev = row.hash.clone();
                row
            })
            .collect();
        let n = rows.len() as i64;
        let unit = CommitUnit {
            audit: rows,
            ..Default::default()
        };
        match self.persistence.commit(unit).await {
            Ok(()) => {
                self.buffer.clear();
                self.next_seq += n;
                self.head = prev;
                Flushed::Done
            }
            // Several processes share one chain: the one that lost the race
            // for these sequence numbers rereads the head and chains again.
            Err(e) if e.is_write_conflict() => match self.store.audit_head().await {
                Ok(Some(head)) => {
                    self.next_seq = head.seq + 1;
                    self.head = head.hash;
                    Flushed::Conflict
                }
                _ => Flushed::Failed,
            },
            Err(e) => {
                tracing::warn!(error = %e, rows = n, "audit rows not written yet; will retry");
                Flushed::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRow> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let mut row = AuditRow {
                    seq,
                    ts: "2026-11-25T00:00:00.000000Z".into(),
                    tenant: "local".into(),
                    action: "session.registered".into(),
                    actor: Some("agent".into()),
                    subject_hash: Some("abc".into()),
                    details: format!("{{\"n\":{seq}}}"),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                row.hash = row_hash(&row);
                prev = row.hash.clone();
                row
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify_chain(&chain(5)), Ok(5));
        assert_eq!(verify_chain(&[]), Ok(0));
    }

    #[test]
    fn edits_deletions_and_reordering_are_detected() {
        let mut edited = chain(5);
        edited[2].details = "{}".into();
        assert_eq!(verify_chain(&edited).unwrap_err().0, 3);

        let mut deleted = chain(5);
        deleted.remove(1);
        assert_eq!(verify_chain(&deleted).unwrap_err().0, 3);

        let mut rehashed = chain(5);
        // Rewriting a row and its own hash still breaks the next link.
        rehashed[1].details = "{}".into();
        rehashed[1].hash = row_hash(&rehashed[1]);
        assert_eq!(verify_chain(&rehashed).unwrap_err().0, 3);
    }
}
