//! `search_context` on PostgreSQL: the `search` tsvector column and its GIN
//! index (migrations/postgres/0003_search.sql), ranked with `ts_rank`,
//! excerpts from `ts_headline`. Same reply and semantics as the SQLite
//! adapter's FTS5 search: every whitespace-separated term must occur, a
//! term is words (punctuation separates them, so `auth.ts` is the phrase
//! "auth ts"), no query language, case-insensitive.

use async_trait::async_trait;
use handoff_actors::model::rfc3339;
use handoff_actors::StoreError;
use sqlx::{Postgres, QueryBuilder, Row};

use super::{classify, PgDb};
use crate::storage::Search;
use crate::storage::SearchHit;

/// Markers `ts_headline` puts around matches, turned into `«` `»` after the
/// fragment's ends are compared with the document (private-use code points,
/// so a `«` in the content is not mistaken for one).
const START: &str = "\u{E000}";
const STOP: &str = "\u{E001}";

/// The excerpt: about as long as the SQLite adapter's 16-token snippet.
const HEADLINE_OPTIONS: &str = "MaxWords=16, MinWords=8, ShortWord=0, MaxFragments=0";

#[async_trait]
impl Search for PgDb {
    async fn search(
        &self,
        tenant: &str,
        query: &str,
        session_key: Option<&str>,
        agent: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SearchHit>, StoreError> {
        let pool = &self.reader;
        // Each term is a phrase of its words, the phrases are ANDed (built by
        // the same split the index uses); a query without any word matches
        // nothing.
        let Some(tsquery) = crate::storage::search_words::tsquery_text(query) else {
            return Ok(Vec::new());
        };
        let mut q = QueryBuilder::<Postgres>::new("WITH q AS (SELECT ");
        q.push_bind(tsquery).push("::tsquery");
        q.push(
            " AS q), hits AS (\
             SELECT s.session_key, e.seq, e.context_type, e.created_at, e.content, \
                    ts_rank(e.search, q.q)::float8 AS rank \
             FROM q, context_entries e JOIN sessions s ON s.id = e.session_id \
             WHERE e.search @@ q.q AND s.tenant = ",
        );
        q.push_bind(tenant);
        crate::storage::push_search_filters(&mut q, session_key, agent);
        q.push(" ORDER BY rank DESC, s.session_key, e.seq LIMIT ")
            .push_bind(limit as i64);
        // Excerpts only for the hits returned, from the text that was indexed.
        q.push(
            ") SELECT h.session_key, h.seq, h.context_type, h.created_at, h.rank, x.snippet, \
                      starts_with(ltrim(x.doc), ltrim(x.plain)) AS at_start, \
                      right(rtrim(x.doc), length(rtrim(x.plain))) = rtrim(x.plain) AS at_end \
               FROM hits h CROSS JOIN q, LATERAL (\
                   SELECT d.doc, hl.snippet, replace(replace(hl.snippet, ",
        );
        q.push_bind(START)
            .push(", ''), ")
            .push_bind(STOP)
            .push(
                ", '') AS plain \
                 FROM (SELECT left(handoff_search_content(h.content), 131072) AS doc) d, \
                 LATERAL (SELECT ts_headline('simple', d.doc, q.q, ",
            )
            .push_bind(format!(
                "StartSel={START}, StopSel={STOP}, {HEADLINE_OPTIONS}"
            ))
            .push(
                ") AS snippet) hl) x \
                 ORDER BY h.rank DESC, h.session_key, h.seq",
            );
        let rows = q.build().fetch_all(pool).await.map_err(classify)?;
        Ok(rows
            .iter()
            .map(|r| {
                let mut snippet = r
                    .get::<String, _>("snippet")
                    .replace(START, "«")
                    .replace(STOP, "»");
                if !r.get::<bool, _>("at_start") {
                    snippet.insert(0, '…');
                }
                if !r.get::<bool, _>("at_end") {
                    snippet.push('…');
                }
                SearchHit {
                    session_key: r.get("session_key"),
                    sequence_number: r.get("seq"),
                    context_type: r.get("context_type"),
                    snippet,
                    score: r.get("rank"),
                    created_at: rfc3339(&r.get("created_at")),
                }
            })
            .collect())
    }
}
