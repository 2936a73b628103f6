//! The running summary of a session. The session actor folds every entry in
//! as it is appended, so a handoff reads a few hundred bytes instead of the
//! whole history, whatever the session's length.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{rfc3339, ContextType, EntryRow};

/// How many of the latest entries the summary keeps an excerpt of.
const RECENT: usize = 5;
/// Characters kept of each recent entry.
const EXCERPT_CHARS: usize = 200;
/// Participants the summary names; more are only counted. The summary is
/// copied into every handoff row as its snapshot, so an uncapped list made
/// storage grow with the square of the handoffs (300 collaboration
/// handoffs: 9.8 MB of snapshots, replies growing from 6 to 100 KB). With
/// the cap a snapshot stays under ~16 KiB whatever the session's history.
pub const MAX_PARTICIPANTS: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecentEntry {
    pub sequence_number: i64,
    pub context_type: ContextType,
    pub content_length: usize,
    pub excerpt: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub total_entries: i64,
    pub entry_counts: BTreeMap<ContextType, i64>,
    pub participants: Vec<String>,
    /// Participants beyond `MAX_PARTICIPANTS`, counted, not named.
    #[serde(default)]
    pub more_participants: i64,
    pub total_content_bytes: i64,
    pub handoffs: i64,
    pub first_entry_at: Option<String>,
    pub last_entry_at: Option<String>,
    pub recent_entries: VecDeque<RecentEntry>,
}

impl Summary {
    pub fn with_participant(agent: &str) -> Self {
        let mut s = Summary::default();
        s.add_participant(agent);
        s
    }

    pub fn add_participant(&mut self, agent: &str) {
        if self.participants.iter().any(|p| p == agent) {
            return;
        }
        if self.participants.len() < MAX_PARTICIPANTS {
            self.participants.push(agent.to_string());
        } else {
            // Past the cap an agent cannot be told apart from one already
            // counted: a repeat may count twice (an upper bound).
            self.more_participants += 1;
        }
    }

    /// Everyone who took part, named or only counted.
    pub fn participant_count(&self) -> i64 {
        self.participants.len() as i64 + self.more_participants
    }

    pub fn apply(&mut self, e: &EntryRow) {
        self.total_entries += 1;
        *self.entry_counts.entry(e.context_type).or_insert(0) += 1;
        self.total_content_bytes += e.content.len() as i64;
        let at = rfc3339(&e.created_at);
        if self.first_entry_at.is_none() {
            self.first_entry_at = Some(at.clone());
        }
        self.last_entry_at = Some(at.clone());
        if self.recent_entries.len() == RECENT {
            self.recent_entries.pop_front();
        }
        self.recent_entries.push_back(RecentEntry {
            sequence_number: e.seq,
            context_type: e.context_type,
            content_length: e.content.len(),
            excerpt: excerpt(&e.content),
            created_at: at,
        });
    }

    /// Counts for every type, zeros included, keyed by the wire name.
    pub fn counts(&self) -> BTreeMap<&'static str, i64> {
        ContextType::ALL
            .iter()
            .map(|t| (t.as_str(), *self.entry_counts.get(t).unwrap_or(&0)))
            .collect()
    }

    /// One paragraph a receiving agent can read first.
    pub fn text(&self, session_key: &str, owner: &str, status: &str) -> String {
        let mut parts: Vec<String> = self
            .counts()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(t, n)| format!("{n} {t}"))
            .collect();
        if parts.is_empty() {
            parts.push("no entries".into());
        }
        let mut s = format!(
            "Session '{session_key}' ({status}) owned by {owner}: {} entries ({}), {} bytes of content",
            self.total_entries,
            parts.join(", "),
            self.total_content_bytes
        );
        if self.participants.len() > 1 {
            s.push_str(&format!("; participants: {}", self.participants.join(", ")));
            if self.more_participants > 0 {
                s.push_str(&format!(" and {} more", self.more_participants));
            }
        }
        if let Some(last) = &self.last_entry_at {
            s.push_str(&format!("; last entry at {last}"));
        }
        if self.handoffs > 0 {
            s.push_str(&format!("; {} handoff(s) so far", self.handoffs));
        }
        s.push('.');
        s
    }
}

fn excerpt(content: &str) -> String {
    match content.char_indices().nth(EXCERPT_CHARS) {
        Some((i, _)) => format!("{}…", &content[..i]),
        None => content.to_string(),
    }
}

/// The summary as the handoff and the summary resource show it.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryView {
    pub session_key: String,
    pub status: String,
    pub agent_from: String,
    pub summary: String,
    pub total_entries: i64,
    pub last_sequence: i64,
    pub entry_counts: BTreeMap<&'static str, i64>,
    /// The first `MAX_PARTICIPANTS` participants.
    pub participants: Vec<String>,
    pub participant_count: i64,
    pub total_content_bytes: i64,
    pub recent_entries: Vec<RecentEntry>,
    pub last_activity_at: String,
    pub generated_at: String,
}

impl SummaryView {
    pub fn of(row: &crate::model::SessionRow, at: DateTime<Utc>) -> Self {
        let s = &row.summary;
        SummaryView {
            session_key: row.session_key.to_string(),
            status: row.status.as_str().to_string(),
            agent_from: row.agent_from.clone(),
            summary: s.text(&row.session_key, &row.agent_from, row.status.as_str()),
            total_entries: s.total_entries,
            last_sequence: row.last_seq,
            entry_counts: s.counts(),
            participants: s.participants.clone(),
            participant_count: s.participant_count(),
            total_content_bytes: s.total_content_bytes,
            recent_entries: s.recent_entries.iter().cloned().collect(),
            last_activity_at: rfc3339(&row.last_activity_at),
            generated_at: rfc3339(&at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::now;

    fn entry(seq: i64, t: ContextType, content: &str) -> EntryRow {
        EntryRow {
            session_id: uuid::Uuid::nil(),
            seq,
            id: uuid::Uuid::now_v7(),
            context_type: t,
            content: content.into(),
            metadata: None,
            created_at: now(),
        }
    }

    #[test]
    fn folds_counts_bytes_and_keeps_the_last_five() {
        let mut s = Summary::with_participant("a");
        for i in 1..=7 {
            let t = if i % 2 == 0 {
                ContextType::File
            } else {
                ContextType::Message
            };
            s.apply(&entry(i, t, &"x".repeat(i as usize)));
        }
        assert_eq!(s.total_entries, 7);
        assert_eq!(s.counts()["message"], 4);
        assert_eq!(s.counts()["file"], 3);
        assert_eq!(s.counts()["system"], 0);
        assert_eq!(s.total_content_bytes, 28);
        let seqs: Vec<i64> = s.recent_entries.iter().map(|e| e.sequence_number).collect();
        assert_eq!(seqs, [3, 4, 5, 6, 7]);
        s.add_participant("b");
        s.add_participant("a");
        assert_eq!(s.participants, ["a", "b"]);
        assert!(s.text("k", "a", "active").contains("7 entries"));
    }

    #[test]
    fn excerpts_cut_on_char_boundaries() {
        let mut s = Summary::default();
        s.apply(&entry(1, ContextType::Message, &"é".repeat(500)));
        let ex = &s.recent_entries[0].excerpt;
        assert_eq!(ex.chars().count(), EXCERPT_CHARS + 1); // 200 + '…'
        assert_eq!(s.recent_entries[0].content_length, 1000);
    }

    #[test]
    fn round_trips_through_json() {
        let mut s = Summary::with_participant("a");
        s.apply(&entry(1, ContextType::ToolCall, "run"));
        let back: Summary = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
