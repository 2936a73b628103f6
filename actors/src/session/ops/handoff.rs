//! `request_handoff`: a handoff row carrying a snapshot of the summary, and
//! what the handoff type does to the session.

use serde_json::{json, Value};
use uuid::Uuid;

use super::{push_entry, writable, Draft, Kind, Operation, Rules, Staged};
use crate::error::{ErrorCode, HandoffError};
use crate::model::summary::SummaryView;
use crate::model::{ContextType, HandoffRow, HandoffType, SessionStatus};

#[derive(Clone)]
pub struct Handoff {
    pub target_agent: String,
    pub request_type: HandoffType,
    pub request_data: Option<Value>,
    /// The agent the caller is bound to (an API key bound to one): the
    /// handoff's source is the session's registering agent, so a caller
    /// bound to another agent is refused (`FORBIDDEN`).
    pub as_agent: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HandoffCreated {
    pub handoff: HandoffRow,
    pub session_status: SessionStatus,
}

impl Operation for Handoff {
    type Output = HandoffCreated;

    fn kind(&self) -> Kind {
        Kind::Handoff
    }

    /// A full handoff completes the session; a collaboration adds the
    /// target as a participant; a context transfer changes nothing else.
    fn apply(
        self,
        rules: &Rules<'_>,
        d: &mut Draft,
    ) -> Result<Staged<HandoffCreated>, HandoffError> {
        if let (Some(bound), Some(row)) = (&self.as_agent, d.spec.as_ref()) {
            if *bound != row.agent_from {
                return Err(HandoffError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "this API key acts as agent '{bound}' only; the session's handoffs come from its registering agent"
                    ),
                )
                .detail("field", "session_key"));
            }
        }
        let row = writable(&mut d.spec, &rules.key.key)?;
        let at = rules.at;
        let source = row.agent_from.clone();
        let text = format!(
            "Handoff requested: {} -> {} ({})",
            source,
            self.target_agent,
            self.request_type.as_str()
        );
        push_entry(row, &mut d.unit, ContextType::System, text, None, at);
        match self.request_type {
            HandoffType::FullHandoff => row.status = SessionStatus::Completed,
            HandoffType::Collaboration => row.summary.add_participant(&self.target_agent),
            HandoffType::ContextTransfer => {}
        }
        row.summary.handoffs += 1;
        let context_summary = serde_json::to_value(SummaryView::of(row, at)).unwrap_or(Value::Null);
        let handoff = HandoffRow {
            id: Uuid::now_v7(),
            tenant: rules.key.tenant.clone(),
            session_id: row.id,
            session_key: rules.key.key.clone(),
            source_agent: source.clone(),
            target_agent: self.target_agent,
            request_type: self.request_type,
            status: "pending".into(),
            request_data: self.request_data,
            context_summary,
            context_entries: row.summary.total_entries,
            created_at: at,
        };
        d.unit.handoffs.push(handoff.clone());
        d.audits.push(rules.audit(
            "handoff.requested",
            Some(&source),
            json!({"handoff_id": handoff.id, "target_agent": handoff.target_agent,
                   "request_type": handoff.request_type.as_str()}),
        ));
        Ok(Staged::AfterCommit(HandoffCreated {
            handoff,
            session_status: row.status,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::session::ops::testing::{draft_with, key, rules};

    fn handoff(kind: HandoffType, as_agent: Option<&str>) -> Handoff {
        Handoff {
            target_agent: "bob".into(),
            request_type: kind,
            request_data: None,
            as_agent: as_agent.map(str::to_string),
        }
    }

    #[test]
    fn each_type_does_what_it_says_to_the_session() {
        let (key, accepted) = (key(), HashSet::new());
        let cases = [
            (HandoffType::FullHandoff, SessionStatus::Completed, false),
            (HandoffType::Collaboration, SessionStatus::Active, true),
            (HandoffType::ContextTransfer, SessionStatus::Active, false),
        ];
        for (kind, status, joins) in cases {
            let mut d = draft_with(SessionStatus::Active, 2);
            let Ok(Staged::AfterCommit(h)) =
                handoff(kind, None).apply(&rules(&key, &accepted), &mut d)
            else {
                panic!("{kind:?} refused");
            };
            assert_eq!(h.session_status, status);
            assert_eq!(
                (h.handoff.source_agent.as_str(), h.handoff.context_entries),
                ("alice", 4)
            );
            let row = d.spec.expect("row");
            assert_eq!(
                row.summary.participants.iter().any(|p| p == "bob"),
                joins,
                "{kind:?}"
            );
            assert_eq!(row.summary.handoffs, 1);
            assert_eq!(h.handoff.context_summary["total_entries"], 4);
            assert_eq!((d.unit.handoffs.len(), d.unit.entries.len()), (1, 1));
        }
    }

    #[test]
    fn a_caller_bound_to_another_agent_is_forbidden() {
        let (key, accepted) = (key(), HashSet::new());
        let mut d = draft_with(SessionStatus::Active, 0);
        let Err(e) = handoff(HandoffType::FullHandoff, Some("mallory"))
            .apply(&rules(&key, &accepted), &mut d)
        else {
            panic!("handed off as another agent");
        };
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert_eq!(d.spec.expect("row").status, SessionStatus::Active);
        assert!(d.unit.is_empty());
        let mut d = draft_with(SessionStatus::Active, 0);
        let ok =
            handoff(HandoffType::FullHandoff, Some("alice")).apply(&rules(&key, &accepted), &mut d);
        assert!(ok.is_ok());
    }

    #[test]
    fn a_completed_session_hands_off_no_more() {
        let (key, accepted) = (key(), HashSet::new());
        let mut d = draft_with(SessionStatus::Completed, 0);
        let Err(e) =
            handoff(HandoffType::ContextTransfer, None).apply(&rules(&key, &accepted), &mut d)
        else {
            panic!("handed off a completed session");
        };
        assert_eq!(e.code, ErrorCode::SessionNotActive);
    }
}
