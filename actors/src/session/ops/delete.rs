//! `delete_session`: the session and everything of it erased.

use serde_json::json;
use uuid::Uuid;

use super::{Draft, Kind, Operation, Rules, Staged};
use crate::error::HandoffError;

#[derive(Clone)]
pub struct Delete {
    pub requested_by: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Deleted {
    pub session_id: Uuid,
    pub entries_removed: i64,
}

impl Operation for Delete {
    type Output = Deleted;

    fn kind(&self) -> Kind {
        Kind::Delete
    }

    fn apply(self, rules: &Rules<'_>, d: &mut Draft) -> Result<Staged<Deleted>, HandoffError> {
        let Some(row) = d.spec.take() else {
            return Err(HandoffError::session_not_found(&rules.key.key));
        };
        d.unit.delete = Some(row.id);
        d.audits.push(rules.audit(
            "session.deleted",
            self.requested_by.as_deref(),
            json!({"session_id": row.id, "entries": row.summary.total_entries}),
        ));
        Ok(Staged::AfterCommit(Deleted {
            session_id: row.id,
            entries_removed: row.last_seq,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::error::ErrorCode;
    use crate::model::SessionStatus;
    use crate::session::ops::testing::{draft_with, key, rules};

    #[test]
    fn a_session_is_erased_whatever_its_status_and_then_not_found() {
        let (key, none) = (key(), HashSet::new());
        let mut d = draft_with(SessionStatus::Archived, 3);
        let id = d.spec.as_ref().expect("row").id;
        let Ok(Staged::AfterCommit(del)) =
            Delete { requested_by: None }.apply(&rules(&key, &none), &mut d)
        else {
            panic!("refused");
        };
        assert_eq!((del.session_id, del.entries_removed), (id, 4));
        assert!(d.spec.is_none());
        assert_eq!(d.unit.delete, Some(id));
        let Err(e) = Delete { requested_by: None }.apply(&rules(&key, &none), &mut d) else {
            panic!("deleted twice");
        };
        assert_eq!(e.code, ErrorCode::SessionNotFound);
    }
}
