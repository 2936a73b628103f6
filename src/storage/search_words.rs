//! Words for PostgreSQL full-text search, split here rather than by
//! `to_tsvector` (see migrations/postgres/0005_search_words_in_server.sql):
//! the index side (`tsvector`, sent with each entry) and the query side
//! (`tsquery_text`) use this one rule, so they always agree.
//!
//! The rule is the search contract's: a word is a maximal run of
//! alphanumeric characters (punctuation, symbols, whitespace and control
//! characters separate words, so `src/auth.ts` is the words src, auth, ts),
//! compared lower-cased. It matches the SQLite adapter's unicode61
//! tokenizer except that accents are not folded.
//!
//! An entry's tsvector travels in PostgreSQL's binary form (`TsVector`),
//! which the server stores after a few bounds checks; its text form
//! (`'word':1,4 …`) had to be tokenised again by `tsvectorin`, which was
//! 15 % of the writer connection's CPU (perf, ops/bench at concurrency 32).
//! The query keeps the text form (`('a' <-> 'b') & 'c'`, read by the
//! `::tsquery` cast): it is parsed once per search, not per entry. A word
//! holds only alphanumeric characters, so it never needs escaping.

use std::collections::HashMap;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo};
use sqlx::{Encode, Postgres, Type};

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

/// The tsvector of an entry's content.
pub fn tsvector(content: &str) -> TsVector {
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
fn tsvector_general(text: &str) -> TsVector {
    let mut lexemes = Lexemes::default();
    for (i, w) in words(text).enumerate() {
        let w = w.to_lowercase();
        if w.len() <= MAX_WORD_BYTES {
            lexemes.add(w, i);
        }
    }
    lexemes.encode()
}

/// The same rule for ASCII text (most content), without per-character
/// Unicode work or a string per word: lower-cased once, split on bytes.
/// For ASCII the two agree exactly (an ASCII character is alphanumeric
/// for `char::is_alphanumeric` iff it is for `is_ascii_alphanumeric`, and
/// lower-casing keeps it so); a test compares them.
fn tsvector_ascii(text: &str) -> TsVector {
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
    lexemes.encode()
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

    /// PostgreSQL's binary form (`tsvectorsend`): the lexeme count, then
    /// per lexeme its bytes, a NUL, the position count and the positions,
    /// integers big-endian. Lexemes go in the order PostgreSQL keeps them
    /// (bytewise, as `tsCompareString`), so `tsvectorrecv` need not sort;
    /// positions are already increasing, as it requires; weight bits stay 0
    /// (weight D, the default).
    fn encode(mut self) -> TsVector {
        self.order
            .sort_unstable_by(|a, b| a.0.as_ref().as_bytes().cmp(b.0.as_ref().as_bytes()));
        let size: usize = self
            .order
            .iter()
            .map(|(w, p)| w.as_ref().len() + 3 + 2 * p.len())
            .sum();
        let mut out = Vec::with_capacity(4 + size);
        out.extend_from_slice(&(self.order.len() as i32).to_be_bytes());
        for (w, positions) in &self.order {
            out.extend_from_slice(w.as_ref().as_bytes());
            out.push(0);
            out.extend_from_slice(&(positions.len() as u16).to_be_bytes());
            for p in positions {
                out.extend_from_slice(&p.to_be_bytes());
            }
        }
        TsVector(out)
    }
}

/// A tsvector in PostgreSQL's binary form, bound as a `tsvector` parameter
/// (or an element of a `tsvector[]` one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsVector(Vec<u8>);

/// Built-in type ids, the same on every PostgreSQL (`pg_type.dat`).
const TSVECTOR_OID: u32 = 3614;
const TSVECTOR_ARRAY_OID: u32 = 3643;

impl Type<Postgres> for TsVector {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(TSVECTOR_OID))
    }
}

impl PgHasArrayType for TsVector {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(TSVECTOR_ARRAY_OID))
    }
}

impl Encode<'_, Postgres> for TsVector {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        buf.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }
}

impl TsVector {
    /// PostgreSQL's text form of this vector, as `tsvector_out` prints it.
    #[cfg(test)]
    pub fn to_text(&self) -> String {
        let b = &self.0;
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let n = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let (mut at, mut out) = (4, Vec::new());
        for _ in 0..n {
            let end = at + b[at..].iter().position(|&c| c == 0).expect("NUL");
            let word = std::str::from_utf8(&b[at..end]).expect("UTF-8");
            let count = u16_at(end + 1) as usize;
            let positions: Vec<String> = (0..count)
                .map(|k| u16_at(end + 3 + 2 * k).to_string())
                .collect();
            out.push(format!("'{word}':{}", positions.join(",")));
            at = end + 3 + 2 * count;
        }
        assert_eq!(at, b.len(), "trailing bytes");
        out.join(" ")
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
            tsvector("Fix src/auth.ts: auth TOKEN").to_text(),
            "'auth':3,5 'fix':1 'src':2 'token':6 'ts':4"
        );
        assert_eq!(tsvector("").to_text(), "");
        assert_eq!(tsvector("«» ... \0 \u{1F600}").to_text(), "");
        assert_eq!(tsvector("Ünïcødé 東京").to_text(), "'ünïcødé':1 '東京':2");
    }

    #[test]
    fn limits_of_postgresql_are_kept() {
        let long = "x".repeat(3000);
        assert_eq!(tsvector(&format!("a {long} b")).to_text(), "'a':1 'b':3");
        let many = "w ".repeat(20_000);
        let v = tsvector(&many).to_text();
        assert_eq!(v.matches(',').count(), MAX_POSITIONS - 1);
        let far = format!("{}z z", "y ".repeat(17_000));
        assert!(tsvector(&far).to_text().starts_with("'y':1,2,"));
        assert!(tsvector(&far).to_text().ends_with("'z':16383"));
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
