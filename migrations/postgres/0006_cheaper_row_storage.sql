-- Rows of a few KiB are stored as they are, and larger values compress with
-- lz4 where the server has it.
--
-- Why: a handoff row carries the session's summary (about 1.7 KiB of JSON
-- with the recent entries' excerpts) and a session row its running summary,
-- so both cross the default 2 KiB threshold at which PostgreSQL compresses
-- with pglz, inside the batch statement every write waits for. pglz was the
-- costliest single function of the writer connection (ops/bench, perf).
-- `toast_tuple_target` raises that threshold to a whole page for these two
-- tables; lz4 (when built in) compresses several times faster than pglz for
-- whatever is still larger, including long context entries.
ALTER TABLE handoffs SET (toast_tuple_target = 8160);
ALTER TABLE sessions SET (toast_tuple_target = 8160);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings
               WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE context_entries ALTER COLUMN content SET COMPRESSION lz4;
        ALTER TABLE context_entries ALTER COLUMN metadata SET COMPRESSION lz4;
        ALTER TABLE handoffs ALTER COLUMN context_summary SET COMPRESSION lz4;
        ALTER TABLE handoffs ALTER COLUMN request_data SET COMPRESSION lz4;
        ALTER TABLE sessions ALTER COLUMN summary SET COMPRESSION lz4;
        ALTER TABLE sessions ALTER COLUMN metadata SET COMPRESSION lz4;
    END IF;
END
$$;
