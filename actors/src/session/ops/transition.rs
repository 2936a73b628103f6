//! A lifecycle step asked for by the lifecycle and retention jobs, decided
//! on the live state: the in-memory `last_activity_at` is current even when
//! the stored row lags behind it.

use serde_json::json;
use uuid::Uuid;

use super::{Draft, Kind, Operation, Rules, Staged};
use crate::error::HandoffError;
use crate::model::{LifecycleEvent, LifecycleTarget, TransitionRequest};

#[derive(Clone)]
pub struct Transition(pub TransitionRequest);

impl Operation for Transition {
    /// `None`: the session no longer qualifies (or is gone); nothing changed.
    type Output = Option<LifecycleEvent>;

    fn kind(&self) -> Kind {
        match self.0.to {
            LifecycleTarget::Purged => Kind::Purge,
            LifecycleTarget::Status(_) => Kind::Transition,
        }
    }

    fn apply(self, rules: &Rules<'_>, d: &mut Draft) -> Result<Staged<Self::Output>, HandoffError> {
        let request = self.0;
        let at = rules.at;
        let Some(row) = d.spec.as_mut() else {
            return Ok(Staged::Now(None));
        };
        if !request.from.contains(&row.status) || at - row.last_activity_at < request.idle_for {
            return Ok(Staged::Now(None));
        }
        let from = row.status;
        let mut event = LifecycleEvent {
            id: Uuid::now_v7(),
            tenant: rules.key.tenant.clone(),
            session_id: Some(row.id),
            session_key: Some(rules.key.key.clone()),
            from,
            to: request.to,
            at,
            reason: request.reason,
        };
        let details = json!({"session_id": row.id, "from": from.as_str(),
                             "to": request.to.as_str(), "reason": event.reason});
        match request.to {
            LifecycleTarget::Status(to) => {
                row.status = to;
                d.audits
                    .push(rules.audit("session.lifecycle", Some("system"), details));
            }
            LifecycleTarget::Purged => {
                let id = row.id;
                d.spec = None;
                d.unit.delete = Some(id);
                // A purge keeps neither the session's id nor its key.
                event.session_id = None;
                event.session_key = None;
                d.audits
                    .push(rules.audit("session.purged", Some("system"), details));
            }
        }
        d.unit.lifecycle.push(event.clone());
        Ok(Staged::AfterCommit(Some(event)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::model::SessionStatus;
    use crate::session::ops::testing::{draft_with, key, rules};

    fn request(from: SessionStatus, to: LifecycleTarget, idle_secs: i64) -> Transition {
        Transition(TransitionRequest {
            from: vec![from],
            to,
            idle_for: chrono::Duration::seconds(idle_secs),
            reason: "test".into(),
        })
    }

    #[test]
    fn a_session_used_recently_or_in_another_status_is_left_alone() {
        let (key, none) = (key(), HashSet::new());
        let dormant = LifecycleTarget::Status(SessionStatus::Dormant);
        for (status, idle) in [(SessionStatus::Active, 3600), (SessionStatus::Completed, 0)] {
            let mut d = draft_with(status, 1);
            let r =
                request(SessionStatus::Active, dormant, idle).apply(&rules(&key, &none), &mut d);
            assert!(matches!(r, Ok(Staged::Now(None))));
            assert_eq!(d.spec.expect("row").status, status);
            assert!(d.unit.is_empty() && d.audits.is_empty());
        }
        let mut d = Draft::default();
        let r = request(SessionStatus::Active, dormant, 0).apply(&rules(&key, &none), &mut d);
        assert!(matches!(r, Ok(Staged::Now(None))));
    }

    #[test]
    fn an_idle_session_moves_and_a_purge_forgets_its_key() {
        let (key, none) = (key(), HashSet::new());
        let mut d = draft_with(SessionStatus::Active, 1);
        let dormant = LifecycleTarget::Status(SessionStatus::Dormant);
        let Ok(Staged::AfterCommit(Some(e))) =
            request(SessionStatus::Active, dormant, 0).apply(&rules(&key, &none), &mut d)
        else {
            panic!("not moved");
        };
        assert_eq!((e.from, e.to), (SessionStatus::Active, dormant));
        assert_eq!(d.spec.as_ref().expect("row").status, SessionStatus::Dormant);

        let mut d = draft_with(SessionStatus::Archived, 1);
        let id = d.spec.as_ref().expect("row").id;
        let Ok(Staged::AfterCommit(Some(e))) =
            request(SessionStatus::Archived, LifecycleTarget::Purged, 0)
                .apply(&rules(&key, &none), &mut d)
        else {
            panic!("not purged");
        };
        assert_eq!((e.session_id, e.session_key), (None, None));
        assert!(d.spec.is_none());
        assert_eq!(d.unit.delete, Some(id));
        assert_eq!(d.audits[0].action, "session.purged");
    }
}
