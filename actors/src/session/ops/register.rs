//! `register_session`: a new session, or a dormant one woken up.

use serde_json::{json, Value};
use uuid::Uuid;

use super::{push_entry, session_json, Draft, Kind, Operation, Rules, Staged};
use crate::error::{ErrorCode, HandoffError};
use crate::model::summary::Summary;
use crate::model::{ContextType, SessionRow, SessionStatus};

#[derive(Clone)]
pub struct Register {
    pub agent_from: String,
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct Registered {
    /// The row as registered; its `summary` is left empty (the reply shows
    /// the session's own fields only).
    pub session: SessionRow,
    pub reactivated: bool,
}

impl Operation for Register {
    type Output = Registered;

    fn kind(&self) -> Kind {
        Kind::Register
    }

    /// A key that is taken is refused (SESSION_EXISTS, naming the session)
    /// unless its session is dormant: registering it again reactivates it.
    fn apply(self, rules: &Rules<'_>, d: &mut Draft) -> Result<Staged<Registered>, HandoffError> {
        let Register {
            agent_from,
            metadata,
        } = self;
        let reactivated = match &mut d.spec {
            Some(row) if row.status == SessionStatus::Dormant => {
                row.status = SessionStatus::Active;
                if metadata.is_some() {
                    row.metadata = metadata;
                }
                row.summary.add_participant(&agent_from);
                true
            }
            Some(row) => {
                return Err(HandoffError::new(
                    ErrorCode::SessionExists,
                    format!(
                        "a session with this key already exists ({})",
                        row.status.as_str()
                    ),
                )
                .detail("existing_session", session_json(row)))
            }
            None => {
                d.spec = Some(SessionRow {
                    id: Uuid::now_v7(),
                    tenant: rules.key.tenant.clone(),
                    session_key: rules.key.key.clone(),
                    agent_from: agent_from.clone(),
                    status: SessionStatus::Active,
                    metadata,
                    created_at: rules.at,
                    last_activity_at: rules.at,
                    last_seq: 0,
                    summary: Summary::with_participant(&agent_from),
                });
                false
            }
        };
        let row = d.spec.as_mut().expect("set above");
        let text = if reactivated {
            format!("Session reactivated by agent {agent_from}")
        } else {
            format!("Session registered by agent {agent_from}")
        };
        push_entry(row, &mut d.unit, ContextType::System, text, None, rules.at);
        d.audits.push(rules.audit(
            if reactivated {
                "session.reactivated"
            } else {
                "session.registered"
            },
            Some(&agent_from),
            json!({"session_id": row.id}),
        ));
        Ok(Staged::AfterCommit(Registered {
            session: row.without_summary(),
            reactivated,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::session::ops::testing::{draft_with, key, rules};

    fn register(agent: &str) -> Register {
        Register {
            agent_from: agent.into(),
            metadata: Some(json!({"k": 1})),
        }
    }

    #[test]
    fn a_new_key_is_registered_with_its_first_entry() {
        let (key, accepted) = (key(), HashSet::new());
        let mut d = Draft::default();
        let Ok(Staged::AfterCommit(r)) = register("alice").apply(&rules(&key, &accepted), &mut d)
        else {
            panic!("refused");
        };
        assert!(!r.reactivated);
        let row = d.spec.expect("registered");
        assert_eq!(
            (row.status, row.last_seq, row.agent_from.as_str()),
            (SessionStatus::Active, 1, "alice")
        );
        assert_eq!(d.unit.entries.len(), 1);
        assert_eq!(d.unit.entries[0].context_type, ContextType::System);
        assert_eq!(d.audits[0].action, "session.registered");
    }

    #[test]
    fn a_taken_key_is_refused_and_nothing_changes() {
        let (key, accepted) = (key(), HashSet::new());
        for status in [
            SessionStatus::Active,
            SessionStatus::Completed,
            SessionStatus::Archived,
        ] {
            let mut d = draft_with(status, 3);
            let before = d.spec.clone().expect("row");
            let Err(e) = register("bob").apply(&rules(&key, &accepted), &mut d) else {
                panic!("accepted over a {status:?} session");
            };
            assert_eq!(e.code, ErrorCode::SessionExists);
            let after = d.spec.expect("row");
            assert_eq!(
                (after.last_seq, after.status),
                (before.last_seq, before.status)
            );
            assert!(d.unit.is_empty() && d.audits.is_empty());
        }
    }

    #[test]
    fn a_dormant_key_is_reactivated_and_joined() {
        let (key, accepted) = (key(), HashSet::new());
        let mut d = draft_with(SessionStatus::Dormant, 2);
        let Ok(Staged::AfterCommit(r)) = register("bob").apply(&rules(&key, &accepted), &mut d)
        else {
            panic!("refused");
        };
        assert!(r.reactivated);
        let row = d.spec.expect("row");
        assert_eq!(row.status, SessionStatus::Active);
        assert_eq!(row.last_seq, 4);
        assert!(row.summary.participants.iter().any(|p| p == "bob"));
        assert_eq!(row.metadata, Some(json!({"k": 1})));
        assert_eq!(d.audits[0].action, "session.reactivated");
    }
}
