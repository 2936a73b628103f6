//! The session's operations, one type each. An operation checks itself
//! against the session's state and, when it is allowed, folds itself into
//! that state and into the unit being built; the session actor only queues
//! operations and commits what they built. No actor and no database here:
//! the tests drive each rule on a plain `Option<SessionRow>`.

mod accept;
mod append;
mod delete;
mod handoff;
mod register;
mod transition;

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::error::{ErrorCode, HandoffError};
use crate::model::{
    CommitUnit, ContextType, EntryRow, LifecycleEvent, LifecycleTarget, SessionKey, SessionRow,
    SessionStatus,
};

pub use accept::{Accept, Accepted};
pub use append::{Append, Appended, AppendedEntry};
pub use delete::{Delete, Deleted};
pub use handoff::{Handoff, HandoffCreated};
pub use register::{Register, Registered};
pub use transition::Transition;

use super::Reply;

/// What an operation may consult besides the session itself.
pub struct Rules<'a> {
    pub key: &'a SessionKey,
    /// Keyed-hash key for the session key in audit rows.
    pub hash_key: &'a [u8; 32],
    /// Handoffs already accepted through this actor (committed).
    pub accepted: &'a HashSet<Uuid>,
    /// The time the operation is applied at.
    pub at: DateTime<Utc>,
}

impl Rules<'_> {
    fn audit(&self, action: &'static str, actor: Option<&str>, details: Value) -> AuditEvent {
        AuditEvent {
            action,
            tenant: self.key.tenant.to_string(),
            actor: actor.map(str::to_string),
            subject_hash: Some(crate::key_hash(self.hash_key, &self.key.key)),
            details,
        }
    }
}

/// What the operations of one unit build: the session as it will be once
/// the unit commits, the unit's rows, and the audit events recorded then.
#[derive(Default)]
pub struct Draft {
    /// `None`: no session with this key (new, or erased by this unit).
    pub spec: Option<SessionRow>,
    pub unit: CommitUnit,
    pub audits: Vec<AuditEvent>,
}

/// How an applied operation is answered.
pub enum Staged<T> {
    /// Once the unit carrying it commits (with the commit's error if not).
    AfterCommit(T),
    /// Now: nothing was staged (a lifecycle step that no longer applies).
    Now(T),
}

/// What the actor needs to know of an operation without applying it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Register,
    Append,
    Handoff,
    Accept(Uuid),
    Delete,
    Transition,
    /// A lifecycle step that erases the session.
    Purge,
}

impl Kind {
    /// The operation's name, a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Register => "register",
            Kind::Append => "append",
            Kind::Handoff => "handoff",
            Kind::Accept(_) => "accept",
            Kind::Delete => "delete",
            Kind::Transition | Kind::Purge => "transition",
        }
    }

    /// Erases the session: it travels alone in its unit, since nothing of
    /// the session may be written beside its erasure.
    pub fn erases(self) -> bool {
        matches!(self, Kind::Delete | Kind::Purge)
    }

    /// Only adds rows (entries, a handoff, an acceptance), which a load
    /// folds back in; the others change the session row's own fields.
    pub fn adds_rows_only(self) -> bool {
        matches!(self, Kind::Append | Kind::Handoff | Kind::Accept(_))
    }
}

/// One operation of the session: how it checks and applies itself.
pub trait Operation: Clone + Send + Sync + 'static {
    /// What its caller gets.
    type Output: Clone + Send + Sync + 'static;

    fn kind(&self) -> Kind;

    /// Check the operation against `draft.spec` and fold it in. An error
    /// is answered at once and must leave the draft as it was.
    fn apply(
        self,
        rules: &Rules<'_>,
        draft: &mut Draft,
    ) -> Result<Staged<Self::Output>, HandoffError>;
}

/// An operation and the port its caller waits on: what the mailbox and the
/// actor's queue hold, whatever the operation.
pub struct Pending(Box<dyn Queued>);

impl Pending {
    pub fn new<O: Operation>(op: O, reply: Reply<O::Output>) -> Self {
        Pending(Box::new(Call { op, reply }))
    }

    pub fn kind(&self) -> Kind {
        self.0.kind()
    }

    /// Answer with an error; nothing was applied.
    pub fn fail(self, e: HandoffError) {
        self.0.fail(e)
    }

    /// Apply to the draft. A refusal, or an answer that needs no commit, is
    /// sent now and gives `None`; otherwise the answer waits for the commit.
    /// Activity on a dormant session wakes it up, recorded as a lifecycle
    /// transition (dormant → active).
    pub fn apply(self, rules: &Rules<'_>, draft: &mut Draft) -> Option<Prepared> {
        let kind = self.kind();
        let was = draft.spec.as_ref().map(|r| (r.status, r.id));
        let prepared = self.0.apply(rules, draft)?;
        let now_active = draft
            .spec
            .as_ref()
            .is_some_and(|r| r.status == SessionStatus::Active);
        if let (Some((SessionStatus::Dormant, id)), true) = (was, now_active) {
            let reason = "activity on a dormant session".to_string();
            // A registration audits its reactivation itself.
            if kind != Kind::Register {
                draft.audits.push(rules.audit(
                    "session.lifecycle",
                    None,
                    json!({"session_id": id, "from": "dormant", "to": "active", "reason": reason}),
                ));
            }
            draft.unit.lifecycle.push(LifecycleEvent {
                id: Uuid::now_v7(),
                tenant: rules.key.tenant.clone(),
                session_id: Some(id),
                session_key: Some(rules.key.key.clone()),
                from: SessionStatus::Dormant,
                to: LifecycleTarget::Status(SessionStatus::Active),
                at: rules.at,
                reason,
            });
        }
        Some(Prepared(prepared))
    }
}

/// An applied operation whose answer waits for its unit to settle.
pub struct Prepared(Box<dyn Answer>);

impl Prepared {
    pub fn kind(&self) -> Kind {
        self.0.kind()
    }

    /// Answer with the commit's result.
    pub fn send(self, result: &Result<(), HandoffError>) {
        self.0.send(result)
    }

    /// The operation again, to apply on fresh state after its unit lost a
    /// write race (nothing of it was stored and its caller was not answered).
    pub fn retry(self) -> Pending {
        self.0.retry()
    }
}

trait Queued: Send + Sync {
    fn kind(&self) -> Kind;
    fn fail(self: Box<Self>, e: HandoffError);
    fn apply(self: Box<Self>, rules: &Rules<'_>, draft: &mut Draft) -> Option<Box<dyn Answer>>;
}

trait Answer: Send + Sync {
    fn kind(&self) -> Kind;
    fn send(self: Box<Self>, result: &Result<(), HandoffError>);
    fn retry(self: Box<Self>) -> Pending;
}

struct Call<O: Operation> {
    op: O,
    reply: Reply<O::Output>,
}

impl<O: Operation> Queued for Call<O> {
    fn kind(&self) -> Kind {
        self.op.kind()
    }

    fn fail(self: Box<Self>, e: HandoffError) {
        let _ = self.reply.send(Err(e));
    }

    fn apply(self: Box<Self>, rules: &Rules<'_>, draft: &mut Draft) -> Option<Box<dyn Answer>> {
        let Call { op, reply } = *self;
        // Kept so a unit that lost a write race can apply it again.
        match op.clone().apply(rules, draft) {
            Ok(Staged::AfterCommit(value)) => Some(Box::new(Ready { op, reply, value })),
            Ok(Staged::Now(value)) => {
                let _ = reply.send(Ok(value));
                None
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                None
            }
        }
    }
}

struct Ready<O: Operation> {
    op: O,
    reply: Reply<O::Output>,
    value: O::Output,
}

impl<O: Operation> Answer for Ready<O> {
    fn kind(&self) -> Kind {
        self.op.kind()
    }

    fn send(self: Box<Self>, result: &Result<(), HandoffError>) {
        let Ready { reply, value, .. } = *self;
        let _ = reply.send(result.clone().map(|_| value));
    }

    fn retry(self: Box<Self>) -> Pending {
        Pending::new(self.op, self.reply)
    }
}

/// The session, if it may take writes; a dormant one wakes up.
fn writable<'a>(
    spec: &'a mut Option<SessionRow>,
    key: &str,
) -> Result<&'a mut SessionRow, HandoffError> {
    let row = spec
        .as_mut()
        .ok_or_else(|| HandoffError::session_not_found(key))?;
    match row.status {
        SessionStatus::Active => Ok(row),
        SessionStatus::Dormant => {
            row.status = SessionStatus::Active;
            Ok(row)
        }
        other => Err(HandoffError::new(
            ErrorCode::SessionNotActive,
            format!(
                "the session is {} and takes no further writes",
                other.as_str()
            ),
        )
        .detail("session_key", key)
        .detail("current_status", other.as_str())),
    }
}

/// Append one entry at the next sequence number. Returns (id, seq).
fn push_entry(
    row: &mut SessionRow,
    unit: &mut CommitUnit,
    context_type: ContextType,
    content: String,
    metadata: Option<Value>,
    at: DateTime<Utc>,
) -> (Uuid, i64) {
    row.last_seq += 1;
    row.last_activity_at = at;
    let entry = EntryRow {
        session_id: row.id,
        seq: row.last_seq,
        id: Uuid::now_v7(),
        context_type,
        content,
        metadata,
        created_at: at,
    };
    row.summary.apply(&entry);
    let out = (entry.id, entry.seq);
    unit.entries.push(entry);
    out
}

/// A session's own fields as a JSON object (SESSION_EXISTS names them).
pub fn session_json(row: &SessionRow) -> Value {
    json!({
        "id": row.id,
        "session_key": &*row.session_key,
        "agent_from": row.agent_from,
        "status": row.status.as_str(),
        "created_at": crate::model::rfc3339(&row.created_at),
        "last_activity_at": crate::model::rfc3339(&row.last_activity_at),
        "metadata": row.metadata.clone().unwrap_or_else(|| json!({})),
    })
}

/// Shared by the operations' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn key() -> SessionKey {
        SessionKey::new("acme", "s1")
    }

    pub fn rules<'a>(key: &'a SessionKey, accepted: &'a HashSet<Uuid>) -> Rules<'a> {
        Rules {
            key,
            hash_key: &[7; 32],
            accepted,
            at: crate::model::now(),
        }
    }

    /// A draft holding a registered session in `status`, with `entries`
    /// entries after its registration.
    pub fn draft_with(status: SessionStatus, entries: usize) -> Draft {
        let key = key();
        let accepted = HashSet::new();
        let mut d = Draft::default();
        let op = Register {
            agent_from: "alice".into(),
            metadata: None,
        };
        assert!(matches!(
            op.apply(&rules(&key, &accepted), &mut d),
            Ok(Staged::AfterCommit(_))
        ));
        let row = d.spec.as_mut().expect("registered");
        for i in 0..entries {
            push_entry(
                row,
                &mut d.unit,
                ContextType::Message,
                format!("m{i}"),
                None,
                crate::model::now(),
            );
        }
        row.status = status;
        Draft {
            spec: d.spec,
            ..Draft::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{draft_with, key, rules};
    use super::*;
    use crate::model::NewEntry;

    fn port<T>() -> (
        Reply<T>,
        ractor::concurrency::OneshotReceiver<Result<T, HandoffError>>,
    ) {
        let (tx, rx) = ractor::concurrency::oneshot();
        (tx.into(), rx)
    }

    fn one_entry() -> Append {
        Append {
            entries: vec![NewEntry {
                context_type: ContextType::Message,
                content: "hello".into(),
                metadata: None,
            }],
        }
    }

    #[test]
    fn activity_wakes_a_dormant_session_and_records_the_transition() {
        let (key, none) = (key(), HashSet::new());
        let mut d = draft_with(SessionStatus::Dormant, 1);
        let (reply, _rx) = port();
        let prepared = Pending::new(one_entry(), reply).apply(&rules(&key, &none), &mut d);
        assert!(prepared.is_some());
        assert_eq!(d.spec.as_ref().expect("row").status, SessionStatus::Active);
        let woke: Vec<_> = d.unit.lifecycle.iter().map(|e| (e.from, e.to)).collect();
        assert_eq!(
            woke,
            [(
                SessionStatus::Dormant,
                LifecycleTarget::Status(SessionStatus::Active)
            )]
        );
        assert_eq!(
            d.audits.last().expect("audited").action,
            "session.lifecycle"
        );
    }

    #[tokio::test]
    async fn a_refusal_is_answered_at_once_and_stages_nothing() {
        let (key, none) = (key(), HashSet::new());
        let mut d = draft_with(SessionStatus::Completed, 1);
        let (reply, rx) = port();
        assert!(Pending::new(one_entry(), reply)
            .apply(&rules(&key, &none), &mut d)
            .is_none());
        let answer = rx.await.expect("answered");
        assert_eq!(
            answer.expect_err("refused").code,
            ErrorCode::SessionNotActive
        );
        assert!(d.unit.is_empty() && d.audits.is_empty());
    }

    #[tokio::test]
    async fn an_answer_waits_for_the_commit_and_a_lost_race_applies_again() {
        let (key, none) = (key(), HashSet::new());
        let mut d = draft_with(SessionStatus::Active, 1);
        let (reply, mut rx) = port();
        let prepared = Pending::new(one_entry(), reply)
            .apply(&rules(&key, &none), &mut d)
            .expect("staged");
        assert!(rx.try_recv().is_err(), "answered before the commit");
        // The unit lost a write race: the same operation, on fresh state
        // where another writer took sequence number 3 first.
        let mut fresh = draft_with(SessionStatus::Active, 2);
        let again = prepared
            .retry()
            .apply(&rules(&key, &none), &mut fresh)
            .expect("staged again");
        assert_eq!(fresh.unit.entries[0].seq, 4);
        again.send(&Ok(()));
        let appended = rx.await.expect("answered").expect("committed");
        assert_eq!(appended.entries[0].sequence_number, 4);
    }
}
