//! `accept_handoff`: the target takes the handoff, once.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{push_entry, Draft, Kind, Operation, Rules, Staged};
use crate::error::HandoffError;
use crate::model::{ContextType, HandoffAccept, SessionStatus};

/// The caller (the MCP surface) has checked that the handoff exists, is of
/// this session and is addressed to `agent`; the session decides "once".
#[derive(Clone)]
pub struct Accept {
    pub handoff_id: Uuid,
    pub agent: String,
}

#[derive(Debug, Clone)]
pub struct Accepted {
    pub handoff_id: Uuid,
    pub accepted_at: DateTime<Utc>,
    pub session_status: SessionStatus,
}

impl Operation for Accept {
    type Output = Accepted;

    fn kind(&self) -> Kind {
        Kind::Accept(self.handoff_id)
    }

    fn apply(self, rules: &Rules<'_>, d: &mut Draft) -> Result<Staged<Accepted>, HandoffError> {
        let Some(row) = d.spec.as_mut() else {
            return Err(HandoffError::session_not_found(&rules.key.key));
        };
        // A second accept that raced the first past the caller's status
        // check is refused here.
        if rules.accepted.contains(&self.handoff_id)
            || d.unit.accepts.iter().any(|a| a.id == self.handoff_id)
        {
            return Err(
                HandoffError::validation("this handoff has already been accepted")
                    .detail("handoff_id", self.handoff_id.to_string()),
            );
        }
        // A completed session (full handoff) takes no more entries; the
        // acceptance is still recorded on the handoff.
        if matches!(row.status, SessionStatus::Active | SessionStatus::Dormant) {
            row.status = SessionStatus::Active;
            let text = format!("Handoff {} accepted by {}", self.handoff_id, self.agent);
            push_entry(row, &mut d.unit, ContextType::System, text, None, rules.at);
        }
        d.unit.accepts.push(HandoffAccept {
            id: self.handoff_id,
            agent: self.agent.clone(),
            at: rules.at,
        });
        d.audits.push(rules.audit(
            "handoff.accepted",
            Some(&self.agent),
            json!({"handoff_id": self.handoff_id}),
        ));
        Ok(Staged::AfterCommit(Accepted {
            handoff_id: self.handoff_id,
            accepted_at: rules.at,
            session_status: row.status,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::error::ErrorCode;
    use crate::session::ops::testing::{draft_with, key, rules};

    #[test]
    fn a_handoff_is_accepted_once() {
        let key = key();
        let id = Uuid::now_v7();
        let accept = Accept {
            handoff_id: id,
            agent: "bob".into(),
        };
        let none = HashSet::new();
        let mut d = draft_with(SessionStatus::Active, 1);
        assert!(accept.clone().apply(&rules(&key, &none), &mut d).is_ok());
        // Twice in one unit, and again once the first committed.
        let Err(e) = accept.clone().apply(&rules(&key, &none), &mut d) else {
            panic!("accepted twice in one unit");
        };
        assert_eq!(e.code, ErrorCode::ValidationError);
        let committed = HashSet::from([id]);
        let mut d = draft_with(SessionStatus::Active, 1);
        let Err(e) = accept.apply(&rules(&key, &committed), &mut d) else {
            panic!("accepted again after commit");
        };
        assert_eq!(e.code, ErrorCode::ValidationError);
        assert!(d.unit.is_empty());
    }

    #[test]
    fn a_completed_session_records_the_acceptance_without_an_entry() {
        let (key, none) = (key(), HashSet::new());
        let mut d = draft_with(SessionStatus::Completed, 1);
        let accept = Accept {
            handoff_id: Uuid::now_v7(),
            agent: "bob".into(),
        };
        let Ok(Staged::AfterCommit(a)) = accept.apply(&rules(&key, &none), &mut d) else {
            panic!("refused");
        };
        assert_eq!(a.session_status, SessionStatus::Completed);
        assert_eq!((d.unit.accepts.len(), d.unit.entries.len()), (1, 0));
    }
}
