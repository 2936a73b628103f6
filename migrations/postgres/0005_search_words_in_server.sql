-- The search column stops being computed by PostgreSQL: the server now
-- splits each entry into words and sends the tsvector with the row
-- (src/storage/search_words.rs), and builds queries from the same split.
--
-- Why: to_tsvector's parser (plus the punctuation pass before it) was a
-- third of PostgreSQL's CPU per call on the write path, all of it spent on
-- the single batch statement that every write waits for (measured with
-- ops/bench at concurrency 32: 0.093 ms of PostgreSQL CPU per call with the
-- generated column, 0.062 ms without). Splitting in Rust costs the server a
-- few microseconds per KiB.
--
-- DROP EXPRESSION keeps every stored value, so entries indexed before this
-- migration stay searchable; their words were split by the same rule
-- (punctuation separates, lower-cased) up to the case folding of non-ASCII
-- letters, which PostgreSQL did by the database's LC_CTYPE and the server
-- does by Unicode.
ALTER TABLE context_entries ALTER COLUMN search DROP EXPRESSION;

-- Only the generated column and the old query path used it.
DROP FUNCTION handoff_search_words(text);
