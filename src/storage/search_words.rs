//! Words for PostgreSQL full-text search, split here rather than by
//! `to_tsvector` (see migrations/postgres/0005_search_words_in_server.sql):
//! the index side (`tsvector_text`, sent with each entry) and the query side
//! (`tsquery_text`) use this one rule, so they always agree.
//!
//! The rule is the search contract's: a word is a maximal run of
//! alphanumeric characters (punctuation, symbols, whitespace and control
//! characters separate words, so `src/auth.ts` is the words src, auth, ts),
//! compared lower-cased. It matches the SQLite adapter's unicode61
//! tokenizer except that accents are not folded.
//!
//! Both functions produce PostgreSQL's text forms (`'word':1,4 …` and
//! `('a' <-> 'b') & 'c'`), read by the `::tsvector` / `::tsquery` casts.
//! A word holds only alphanumeric characters, so it never needs escaping.

use std::collections::HashMap;

/// Characters of an entry that are indexed: a tsvector may not exceed
/// 1 MiB, which 131,072 characters of any content stay under (see
/// migrations/postgres/0003_search.sql).
const INDEXED_CHARS: usize = 131_072;
/// PostgreSQL's limits: a lexeme is shorter than 2 KiB (longer words are
/// skipped, as its own parser does), a position is at most 16,383 (later
/// words share it) and a lexeme keeps at most 256 positions.
const MAX_WORD_BYTES: usize = 2047;
const MAX_POS: usize = 16_383;
const MAX_POSITIONS: usize = 256;

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// The tsvector of an entry's content, in PostgreSQL's text form.
pub fn tsvector_text(content: &str) -> String {
    if content.is_ascii() {
        return tsvector_ascii(&content[..content.len().min(INDEXED_CHARS)]);
    }
    let end = content
        .char_indices()
        .nth(INDEXED_CHARS)
        .map_or(content.len(), |(i, _)| i);
    tsvector_general(&content[..end])
}

/// The rule for any text: Unicode words, lower-cased one by one.
fn tsvector_general(text: &str) -> String {
    let mut lexemes = Lexemes::default();
    for (i, w) in words(text).enumerate() {
        let w = w.to_lowercase();
        if w.len() <= MAX_WORD_BYTES {
            lexemes.add(w, i);
        }
    }
    lexemes.render(text.len())
}

/// The same rule for ASCII text (most content), without per-character
/// Unicode work or a string per word: lower-cased once, split on bytes.
/// For ASCII the two agree exactly (an ASCII character is alphanumeric
/// for `char::is_alphanumeric` iff it is for `is_ascii_alphanumeric`, and
/// lower-casing keeps it so); a test compares them.
fn tsvector_ascii(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut lexemes = Lexemes::default();
    let mut start = None;
    let mut i = 0;
    for (at, b) in lower.bytes().chain(std::iter::once(b' ')).enumerate() {
        match (b.is_ascii_alphanumeric(), start) {
            (true, None) => start = Some(at),
            (false, Some(from)) => {
                let w = &lower[from..at];
                if w.len() <= MAX_WORD_BYTES {
                    lexemes.add(w, i);
                }
                i += 1;
                start = None;
            }
            _ => {}
        }
    }
    lexemes.render(text.len())
}

/// Distinct words in order of first appearance, with their positions.
struct Lexemes<W> {
    order: Vec<(W, Vec<u16>)>,
    index: HashMap<W, usize, foldhash::fast::RandomState>,
}

impl<W> Default for Lexemes<W> {
    fn default() -> Self {
        Self {
            order: Vec::new(),
            index: HashMap::default(),
        }
    }
}

impl<W: AsRef<str> + Eq + std::hash::Hash + Clone> Lexemes<W> {
    /// The word at 0-based index `i` of the text.
    fn add(&mut self, w: W, i: usize) {
        let pos = (i + 1).min(MAX_POS) as u16;
        match self.index.get(&w) {
            Some(&k) => {
                let p = &mut self.order[k].1;
                if p.len() < MAX_POSITIONS && p.last() != Some(&pos) {
                    p.push(pos);
                }
            }
            None => {
                self.index.insert(w.clone(), self.order.len());
                self.order.push((w, vec![pos]));
            }
        }
    }

    fn render(&self, text_len: usize) -> String {
        let mut out = String::with_capacity(text_len + self.order.len() * 6);
        let mut digits = itoa::Buffer::new();
        for (w, positions) in &self.order {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push('\'');
            out.push_str(w.as_ref());
            out.push_str("':");
            for (k, p) in positions.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                out.push_str(digits.format(*p));
            }
        }
        out
    }
}

/// The query for `search_context`: every whitespace-separated term must
/// occur, a term being the phrase of its words. `None` when no term has a
/// word (such a query matches nothing); terms without words are dropped.
pub fn tsquery_text(query: &str) -> Option<String> {
    let phrases: Vec<String> = query
        .split_whitespace()
        .filter_map(|term| {
            let ws: Vec<String> = words(term)
                .map(str::to_lowercase)
                .filter(|w| w.len() <= MAX_WORD_BYTES)
                .map(|w| format!("'{w}'"))
                .collect();
            (!ws.is_empty()).then(|| format!("({})", ws.join(" <-> ")))
        })
        .collect();
    (!phrases.is_empty()).then(|| phrases.join(" & "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_separates_and_case_folds() {
        assert_eq!(
            tsvector_text("Fix src/auth.ts: auth TOKEN"),
            "'fix':1 'src':2 'auth':3,5 'ts':4 'token':6"
        );
        assert_eq!(tsvector_text(""), "");
        assert_eq!(tsvector_text("«» ... \0 \u{1F600}"), "");
        assert_eq!(tsvector_text("Ünïcødé 東京"), "'ünïcødé':1 '東京':2");
    }

    #[test]
    fn limits_of_postgresql_are_kept() {
        let long = "x".repeat(3000);
        assert_eq!(tsvector_text(&format!("a {long} b")), "'a':1 'b':3");
        let many = "w ".repeat(20_000);
        let v = tsvector_text(&many);
        assert_eq!(v.matches(',').count(), MAX_POSITIONS - 1);
        let far = format!("{}z z", "y ".repeat(17_000));
        assert!(tsvector_text(&far).ends_with("'z':16383"));
    }

    /// The ASCII path against the general one, on text built to hit word
    /// boundaries, repeats, case and over-long words.
    #[test]
    fn ascii_path_matches_the_general_rule() {
        let pieces = [
            "a", "B", "ab", "Ab", " ", "  ", ".", "/", "\\", "'", "\"", "-", "0", "9z", "\n", "\t",
            "\u{7f}", "\u{1}", "~", "_", "x_y",
        ];
        let mut seed = 0x9e37_79b9_u64;
        for len in 0..400 {
            let mut text = String::new();
            for _ in 0..len {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
            }
            if len % 50 == 7 {
                text.push_str(&"Q".repeat(MAX_WORD_BYTES + 1));
                text.push_str(" q");
            }
            assert!(text.is_ascii());
            assert_eq!(
                tsvector_ascii(&text),
                tsvector_general(&text),
                "text {text:?}"
            );
        }
    }

    #[test]
    fn queries_are_anded_phrases() {
        assert_eq!(
            tsquery_text("auth.ts  Token").as_deref(),
            Some("('auth' <-> 'ts') & ('token')")
        );
        assert_eq!(tsquery_text("* «» ..."), None);
        assert_eq!(tsquery_text("* x").as_deref(), Some("('x')"));
        assert_eq!(tsquery_text("   "), None);
    }
}
