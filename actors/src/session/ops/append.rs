//! `update_context`: entries appended in order, each at the next sequence
//! number.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{push_entry, writable, Draft, Kind, Operation, Rules, Staged};
use crate::error::HandoffError;
use crate::model::{ContextType, NewEntry, SessionStatus};

#[derive(Clone)]
pub struct Append {
    pub entries: Vec<NewEntry>,
}

#[derive(Debug, Clone)]
pub struct AppendedEntry {
    pub id: Uuid,
    pub sequence_number: i64,
    pub context_type: ContextType,
    pub content_length: usize,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Appended {
    pub session_id: Uuid,
    pub status: SessionStatus,
    pub entries: Vec<AppendedEntry>,
}

impl Operation for Append {
    type Output = Appended;

    fn kind(&self) -> Kind {
        Kind::Append
    }

    /// Only an active (or dormant, which wakes up) session takes entries.
    fn apply(self, rules: &Rules<'_>, d: &mut Draft) -> Result<Staged<Appended>, HandoffError> {
        let row = writable(&mut d.spec, &rules.key.key)?;
        let at = rules.at;
        let entries = self
            .entries
            .into_iter()
            .map(|e| {
                let len = e.content.len();
                let (id, sequence_number) =
                    push_entry(row, &mut d.unit, e.context_type, e.content, e.metadata, at);
                AppendedEntry {
                    id,
                    sequence_number,
                    context_type: e.context_type,
                    content_length: len,
                    created_at: at,
                }
            })
            .collect();
        Ok(Staged::AfterCommit(Appended {
            session_id: row.id,
            status: row.status,
            entries,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::error::ErrorCode;
    use crate::session::ops::testing::{draft_with, key, rules};

    fn append(n: usize) -> Append {
        Append {
            entries: (0..n)
                .map(|i| NewEntry {
                    context_type: ContextType::Message,
                    content: format!("entry {i}"),
                    metadata: None,
                })
                .collect(),
        }
    }

    #[test]
    fn entries_take_the_next_sequence_numbers_in_order() {
        let (key, accepted) = (key(), HashSet::new());
        let mut d = draft_with(SessionStatus::Active, 4);
        let Ok(Staged::AfterCommit(a)) = append(3).apply(&rules(&key, &accepted), &mut d) else {
            panic!("refused");
        };
        let seqs: Vec<i64> = a.entries.iter().map(|e| e.sequence_number).collect();
        assert_eq!(seqs, [6, 7, 8]);
        let stored: Vec<(i64, &str)> = d
            .unit
            .entries
            .iter()
            .map(|e| (e.seq, e.content.as_str()))
            .collect();
        assert_eq!(stored, [(6, "entry 0"), (7, "entry 1"), (8, "entry 2")]);
        assert_eq!(d.spec.expect("row").summary.total_entries, 8);
    }

    #[test]
    fn finished_sessions_take_no_entries() {
        let (key, accepted) = (key(), HashSet::new());
        for status in [
            SessionStatus::Completed,
            SessionStatus::Archived,
            SessionStatus::Expired,
        ] {
            let mut d = draft_with(status, 1);
            let Err(e) = append(1).apply(&rules(&key, &accepted), &mut d) else {
                panic!("a {status:?} session took an entry");
            };
            assert_eq!(e.code, ErrorCode::SessionNotActive);
            assert_eq!(d.spec.expect("row").last_seq, 2);
            assert!(d.unit.is_empty());
        }
    }

    #[test]
    fn a_missing_session_is_not_found() {
        let (key, accepted) = (key(), HashSet::new());
        let mut d = Draft::default();
        let Err(e) = append(1).apply(&rules(&key, &accepted), &mut d) else {
            panic!("appended to nothing");
        };
        assert_eq!(e.code, ErrorCode::SessionNotFound);
    }
}
