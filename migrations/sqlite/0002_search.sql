-- Full-text search over context entries (the search_context tool).
--
-- An external-content FTS5 index: it stores only the index, the text stays
-- in context_entries. Triggers keep it in step with the table, so an entry
-- is indexed in the same transaction that commits it (searchable as soon as
-- the write is acknowledged) and unindexed in the transaction that deletes
-- it. Deleting a session removes its entries through ON DELETE CASCADE, and
-- SQLite fires the AFTER DELETE trigger for cascaded deletes too
-- (tests/search.rs checks that an erased session's text is not found).
--
-- Entries are append-only; the UPDATE trigger is only a safety net.
--
-- context_entries has no INTEGER PRIMARY KEY, so a VACUUM may renumber its
-- rowids; after a VACUUM run
--   INSERT INTO context_fts (context_fts) VALUES ('rebuild');
-- to re-index (nothing in handoff runs VACUUM today).
--
-- Tokenizer: unicode61 with diacritics folded (case- and accent-insensitive
-- words; punctuation separates words, so `src/auth.ts` is src, auth, ts).

CREATE VIRTUAL TABLE context_fts USING fts5(
    content,
    content = 'context_entries',
    content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER context_fts_ai AFTER INSERT ON context_entries BEGIN
    INSERT INTO context_fts (rowid, content) VALUES (new.rowid, new.content);
END;

CREATE TRIGGER context_fts_ad AFTER DELETE ON context_entries BEGIN
    INSERT INTO context_fts (context_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
END;

CREATE TRIGGER context_fts_au AFTER UPDATE OF content ON context_entries BEGIN
    INSERT INTO context_fts (context_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
    INSERT INTO context_fts (rowid, content) VALUES (new.rowid, new.content);
END;

-- Index what is already there.
INSERT INTO context_fts (context_fts) VALUES ('rebuild');
