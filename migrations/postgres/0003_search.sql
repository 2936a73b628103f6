-- Full-text search over context entries (the search_context tool), the
-- PostgreSQL counterpart of migrations/sqlite/0002_search.sql.
--
-- The index is a STORED generated column, so it is computed by the very
-- INSERT that writes the entry (same statement, same transaction: an entry is
-- searchable as soon as its write is acknowledged) and disappears with the
-- row (ON DELETE CASCADE erases it with the session). The ALTER below
-- rewrites the table once, which also indexes every entry already stored.
--
-- Content is bytea (it may hold U+0000, which text cannot). To index it:
--   * handoff_search_content(): the bytes as text, each NUL byte replaced by a
--     space first. In UTF-8 a 0x00 byte is only ever U+0000 (never part of a
--     multi-byte sequence), so the replacement is exact, and U+0000 is a word
--     separator in the SQLite index too. `convert_from` is only STABLE (it
--     looks at the client encoding machinery), so a generated column needs
--     this IMMUTABLE wrapper; the conversion to UTF-8 from UTF-8 does not
--     depend on any setting. Content without a NUL takes the fast branch.
--   * handoff_search_words(): punctuation, symbols and control characters
--     become spaces before the text reaches the parser (whitespace is left
--     alone: the parser splits on it anyway, and matching every space made
--     the function 3x slower). The
--     default parser would otherwise keep `src/auth.ts` as one "file" token
--     and `a.b` as a "host", where SQLite's unicode61 tokenizer sees the
--     words src, auth, ts. Queries pass through the same function (see
--     src/storage/postgres_search.rs), so both sides split words alike.
--     Cost, 1 KiB of English-like text on the 2-core dev machine: ~40 µs
--     here and ~120 µs in to_tsvector, per entry written.
--     Which characters count as punctuation follows the database's
--     LC_CTYPE: all of Unicode under a UTF-8 locale (C.UTF-8, en_US.UTF-8),
--     ASCII only under the plain C locale.
--   * the 'simple' configuration: lower-cased words, no stemming and no stop
--     words, as unicode61. Accents are NOT folded (unicode61 folds them):
--     `unaccent` is an extension that needs superuser rights to install.
--   * only the first 131,072 characters are indexed: a tsvector may not
--     exceed 1 MiB, and 1 MiB of content made of short distinct words would
--     (each lexeme costs its bytes plus ~8 bytes of bookkeeping). 131,072
--     characters stay below the limit whatever they are: the worst case,
--     distinct one-character words of 4-byte code points, costs ~6.5 bytes
--     of tsvector per input character (~850 KiB; measured 612 KiB for
--     distinct two-character CJK words), so no entry is ever refused for
--     the index's sake.

CREATE FUNCTION handoff_search_content(content bytea) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE
        WHEN position('\x00'::bytea IN content) = 0 THEN convert_from(content, 'UTF8')
        -- One pass over the hex spelling: every byte becomes " xx", NUL bytes
        -- " 20" (a space), then the separators go.
        ELSE convert_from(decode(replace(replace(
                 regexp_replace(encode(content, 'hex'), '(..)', ' \1', 'g'),
                 ' 00', ' 20'), ' ', ''), 'hex'), 'UTF8')
    END
$$;

CREATE FUNCTION handoff_search_words(t text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT regexp_replace(t, '[[:punct:][:cntrl:]]+', ' ', 'g')
$$;

ALTER TABLE context_entries ADD COLUMN search tsvector
    GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig,
            handoff_search_words(left(handoff_search_content(content), 131072)))
    ) STORED;

CREATE INDEX context_entries_search ON context_entries USING gin (search);
