//! The audit actor: an append-only log of registrations, handoffs, deletions,
//! lifecycle transitions, breaker transitions and auth failures. Each row
//! carries a keyed blake3 hash over its fields and the hash of the row before
//! it, so an edit or a deletion anywhere breaks the chain (`handoff audit
//! verify`), and whoever can write the table but lacks the key (the
//! application's database role) cannot forge hashes that verify. Rows are
//! written through the persistence actor, in order, one batch in flight at a
//! time.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{json, Value};

use crate::address::Address;
use crate::model::{now, rfc3339, AuditRow, CommitUnit};
use crate::persistence::PersistenceHandle;
use crate::store::Store;

/// The audit actor's name (logs, the root's list of children).
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

/// How the rest of the tree reaches the audit actor: an address the root
/// binds to each audit actor it starts, handed down to whoever records.
#[derive(Clone, Default)]
pub struct Auditor(Address<AuditMsg>);

impl Auditor {
    pub fn bind(&self, actor: ActorRef<AuditMsg>) {
        self.0.bind(actor);
    }

    /// Fire-and-forget: events are not on any client's path.
    pub fn record(&self, event: AuditEvent) {
        match self.0.send(AuditMsg::Record(event)) {
            Ok(()) => crate::metrics::metrics()
                .mailbox_backlog
                .with_label_values(&["audit"])
                .inc(),
            Err(e) => {
                let action = match &e {
                    ractor::MessagingErr::SendErr(AuditMsg::Record(event)) => event.action,
                    _ => "unknown",
                };
                tracing::warn!(action, "audit actor not running; event dropped");
            }
        }
    }
}

/// Derivation contexts (blake3 `derive_key`): each use of the master key
/// gets its own subkey.
const CHAIN_CONTEXT: &str = "handoff 2026 audit chain";
const KEY_ID_CONTEXT: &str = "handoff 2026 audit key id";
/// A keyed hash is written `k1:{key id}:{64 hex}`; 64 hex digits alone are
/// a row written before the chain was keyed (unkeyed blake3).
const KEYED_PREFIX: &str = "k1";

/// The secret behind the chain's keyed hashes (and the configuration backup
/// checksums). It never goes to the database, so the application's database
/// role cannot read it; its id (a fingerprint, safe to show) is written into
/// every hash, so a wrong key is told apart from a tampered row.
#[derive(Clone)]
pub struct AuditKey {
    master: [u8; 32],
    chain: [u8; 32],
    id: String,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey").field("id", &self.id).finish()
    }
}

impl AuditKey {
    pub fn new(master: [u8; 32]) -> Self {
        Self {
            chain: blake3::derive_key(CHAIN_CONTEXT, &master),
            id: blake3::Hash::from(blake3::derive_key(KEY_ID_CONTEXT, &master)).to_hex()[..8]
                .to_string(),
            master,
        }
    }

    /// The key's public fingerprint (8 hex digits).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A subkey for another use (`context` is a blake3 derivation context).
    pub fn derive(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.master)
    }

    /// `k1:{id}:{hex}`: the keyed hash of `fields` under `subkey`.
    pub fn tag(&self, subkey: &[u8; 32], fields: &[&str]) -> String {
        let h = fields_hash(blake3::Hasher::new_keyed(subkey), fields);
        format!("{KEYED_PREFIX}:{}:{}", self.id, h.to_hex())
    }

    /// Whether `tag` is this key's tag of `fields` under `subkey`.
    pub fn check(&self, subkey: &[u8; 32], fields: &[&str], tag: &str) -> Result<(), Mismatch> {
        match parse_tag(tag) {
            None => Err(Mismatch::Malformed),
            Some(Tag::Unkeyed(_)) => Err(Mismatch::Unkeyed),
            Some(Tag::Keyed { key_id, .. }) if key_id != self.id => {
                Err(Mismatch::OtherKey(key_id.to_string()))
            }
            // blake3::Hash compares in constant time.
            Some(Tag::Keyed { hash, .. }) => {
                if fields_hash(blake3::Hasher::new_keyed(subkey), fields) == hash {
                    Ok(())
                } else {
                    Err(Mismatch::Differs)
                }
            }
        }
    }
}

/// Why a tag does not verify.
#[derive(Debug, Clone, PartialEq)]
pub enum Mismatch {
    /// Not a hash this code writes.
    Malformed,
    /// Unkeyed blake3 (written before keying, or by someone without the key).
    Unkeyed,
    /// Keyed, with the key of this id.
    OtherKey(String),
    /// Keyed with this key, over other contents.
    Differs,
}

/// A stored hash, parsed.
pub enum Tag<'a> {
    Keyed { key_id: &'a str, hash: blake3::Hash },
    Unkeyed(blake3::Hash),
}

pub fn parse_tag(s: &str) -> Option<Tag<'_>> {
    match s.split_once(':') {
        None => blake3::Hash::from_hex(s).ok().map(Tag::Unkeyed),
        Some((KEYED_PREFIX, rest)) => {
            let (key_id, hex) = rest.split_once(':')?;
            Some(Tag::Keyed {
                key_id,
                hash: blake3::Hash::from_hex(hex).ok()?,
            })
        }
        Some(_) => None,
    }
}

/// Every field length-prefixed, so no two field lists hash alike.
fn fields_hash(mut h: blake3::Hasher, fields: &[&str]) -> blake3::Hash {
    for f in fields {
        h.update(&(f.len() as u64).to_le_bytes());
        h.update(f.as_bytes());
    }
    h.finalize()
}

fn row_fields(row: &AuditRow) -> [String; 8] {
    [
        row.prev_hash.clone(),
        row.seq.to_string(),
        row.ts.clone(),
        row.tenant.clone(),
        row.action.clone(),
        row.actor.clone().unwrap_or_default(),
        row.subject_hash.clone().unwrap_or_default(),
        row.details.clone(),
    ]
}

/// The chain link: the keyed hash over the previous hash and every field.
pub fn row_hash(key: &AuditKey, row: &AuditRow) -> String {
    let f = row_fields(row);
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    let h = fields_hash(blake3::Hasher::new_keyed(&key.chain), &f);
    format!("{KEYED_PREFIX}:{}:{}", key.id, h.to_hex())
}

/// The link rows had before the chain was keyed: plain blake3 over the same
/// fields. Anyone can compute it, so it only proves something about rows
/// a keyed row links to (see `verify_chain`).
pub fn unkeyed_row_hash(row: &AuditRow) -> String {
    let f = row_fields(row);
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    fields_hash(blake3::Hasher::new(), &f).to_hex().to_string()
}

/// The id of the key a row's hash was made with; `None` for an unkeyed or
/// malformed hash.
pub fn head_key_id(head: &AuditRow) -> Option<&str> {
    match parse_tag(&head.hash)? {
        Tag::Keyed { key_id, .. } => Some(key_id),
        Tag::Unkeyed(_) => None,
    }
}

/// What a verified chain holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub rows: u64,
    /// Rows at the start written before the chain was keyed. The first keyed
    /// row's hash covers the last of them, so they cannot be changed either
    /// (as long as a keyed row follows them).
    pub unkeyed: u64,
    /// The last row's sequence number and hash.
    pub head: Option<(i64, String)>,
}

/// Where and why a chain does not verify.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainError {
    pub seq: i64,
    pub why: String,
    /// The rows from `seq` on were keyed and no key was given: not checked,
    /// rather than found broken.
    pub no_key: bool,
}

impl ChainError {
    fn broken(seq: i64, why: impl Into<String>) -> Self {
        Self {
            seq,
            why: why.into(),
            no_key: false,
        }
    }
}

/// Check a chain read back in `seq` order, from row 1: sequence numbers
/// without gaps, each row linked to the one before, each hash keyed with
/// `key` (unkeyed rows only before the first keyed one).
pub fn verify_chain<'a>(
    key: Option<&AuditKey>,
    rows: impl IntoIterator<Item = &'a AuditRow>,
) -> Result<Verified, ChainError> {
    let mut prev = GENESIS.to_string();
    let mut expected_seq = 1;
    let mut out = Verified {
        rows: 0,
        unkeyed: 0,
        head: None,
    };
    for row in rows {
        if row.seq != expected_seq {
            return Err(ChainError::broken(
                row.seq.min(expected_seq),
                format!("expected row {expected_seq}, found row {}", row.seq),
            ));
        }
        if row.prev_hash != prev {
            return Err(ChainError::broken(
                row.seq,
                "prev_hash does not match the previous row",
            ));
        }
        match parse_tag(&row.hash) {
            None => return Err(ChainError::broken(row.seq, "malformed hash")),
            Some(Tag::Unkeyed(_)) => {
                if out.rows > out.unkeyed {
                    return Err(ChainError::broken(
                        row.seq,
                        "unkeyed hash after keyed rows (rewritten without the key)",
                    ));
                }
                if unkeyed_row_hash(row) != row.hash {
                    return Err(ChainError::broken(
                        row.seq,
                        "row hash does not match its contents",
                    ));
                }
                out.unkeyed += 1;
            }
            Some(Tag::Keyed { key_id, .. }) => {
                let Some(key) = key else {
                    return Err(ChainError {
                        seq: row.seq,
                        why: format!("keyed with audit key {key_id}, and no audit key was given"),
                        no_key: true,
                    });
                };
                if key_id != key.id {
                    return Err(ChainError::broken(
                        row.seq,
                        format!(
                            "keyed with audit key {key_id}, not with the key given ({}): \
                             tampered, or the wrong key",
                            key.id
                        ),
                    ));
                }
                if row_hash(key, row) != row.hash {
                    return Err(ChainError::broken(
                        row.seq,
                        "row hash does not match its contents (edited, or rehashed without the key)",
                    ));
                }
            }
        }
        prev = row.hash.clone();
        expected_seq = row.seq + 1;
        out.rows += 1;
        out.head = Some((row.seq, row.hash.clone()));
    }
    Ok(out)
}

/// Told the new head after each committed flush (the binary keeps it as an
/// anchor outside the database, to detect later truncation).
pub type OnHead = Arc<dyn Fn(i64, &str) + Send + Sync>;

pub struct AuditActor;

pub struct AuditArgs {
    pub store: Arc<dyn Store>,
    pub persistence: PersistenceHandle,
    pub key: AuditKey,
    pub on_head: Option<OnHead>,
}

pub struct AuditState {
    store: Arc<dyn Store>,
    persistence: PersistenceHandle,
    key: AuditKey,
    on_head: Option<OnHead>,
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
        myself: ActorRef<AuditMsg>,
        args: AuditArgs,
    ) -> Result<AuditState, ActorProcessingErr> {
        // Whatever a failed predecessor had queued died with it.
        crate::metrics::metrics()
            .mailbox_backlog
            .with_label_values(&["audit"])
            .set(0);
        let head = args.store.audit_head().await?;
        // Rows from before the chain was keyed: seal them with a keyed row
        // at once, so nobody can rewrite them unnoticed from now on.
        let seal = head.as_ref().is_some_and(|h| head_key_id(h).is_none());
        let (next_seq, head) = match head {
            Some(r) => (r.seq + 1, r.hash),
            None => (1, GENESIS.to_string()),
        };
        let mut st = AuditState {
            store: args.store,
            persistence: args.persistence,
            key: args.key,
            on_head: args.on_head,
            next_seq,
            head,
            buffer: Vec::new(),
            flush_scheduled: false,
        };
        if seal {
            st.buffer.push(AuditEvent::system(
                "audit.keyed",
                json!({"key_id": st.key.id(), "unkeyed_rows": next_seq - 1}),
            ));
            st.flush_scheduled = true;
            myself.send_after(LINGER, || AuditMsg::Flush);
        }
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<AuditMsg>,
        msg: AuditMsg,
        st: &mut AuditState,
    ) -> Result<(), ActorProcessingErr> {
        let _handling = crate::metrics::handling(
            "audit",
            match msg {
                AuditMsg::Record(_) => "record",
                AuditMsg::Flush => "flush",
            },
        );
        match msg {
            AuditMsg::Record(e) => {
                crate::metrics::metrics()
                    .mailbox_backlog
                    .with_label_values(&["audit"])
                    .dec();
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
                row.hash = row_hash(&self.key, &row);
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
                if let Some(f) = &self.on_head {
                    f(self.next_seq - 1, &prev);
                }
                self.head = prev;
                Flushed::Done
            }
            // Several processes share one chain: the one that lost the race
            // for these sequence numbers rereads the head and chains again.
            Err(e) if e.is_write_conflict() => match self.store.audit_head().await {
                Ok(Some(head)) => {
                    if head_key_id(&head) != Some(self.key.id()) {
                        tracing::error!(
                            seq = head.seq,
                            key_id = self.key.id(),
                            "another process extends the audit chain with another audit key \
                             (replicas must share HANDOFF_AUDIT_KEY); audit verify will fail"
                        );
                    }
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
mod tests;
