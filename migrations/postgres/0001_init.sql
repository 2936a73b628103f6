-- handoff schema, PostgreSQL: the SQLite schema (migrations/sqlite) in
-- PostgreSQL types. Every row that belongs to a session carries the session
-- id; sessions are unique per (tenant, session_key).
--
-- Type choices (see src/storage/postgres.rs):
--   * ids are uuid; sequence numbers and counts bigint;
--   * times are timestamptz: microsecond precision, which is exactly what
--     `handoff_actors::model::rfc3339` writes, so a value read back and
--     formatted again is the string SQLite stores. The audit log keeps `ts`
--     as text: the hash chain covers that exact string;
--   * JSON is `json`, not `jsonb`: it is validated but kept as written (key
--     order, number spelling, "\u0000" escapes, which jsonb refuses). Nothing
--     queries inside it;
--   * entry content is bytea: it is opaque UTF-8 that may hold U+0000, which
--     PostgreSQL's text type cannot store and SQLite's can;
--   * keys compare bytewise (COLLATE "C"), like SQLite, so session listings
--     page in the same order whatever the database's locale.

CREATE TABLE sessions (
    id               uuid PRIMARY KEY,
    tenant           text COLLATE "C" NOT NULL,
    session_key      text COLLATE "C" NOT NULL,
    agent_from       text NOT NULL,
    status           text NOT NULL,
    metadata         json,
    created_at       timestamptz NOT NULL,
    last_activity_at timestamptz NOT NULL,
    -- highest sequence number committed; maintained with the entries
    last_seq         bigint NOT NULL DEFAULT 0,
    -- running summary (JSON), maintained with the entries
    summary          json NOT NULL,
    UNIQUE (tenant, session_key)
);

CREATE TABLE context_entries (
    session_id   uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq          bigint NOT NULL,
    id           uuid NOT NULL,
    context_type text NOT NULL,
    content      bytea NOT NULL,
    metadata     json,
    created_at   timestamptz NOT NULL,
    UNIQUE (session_id, seq)
);

CREATE TABLE handoffs (
    id              uuid PRIMARY KEY,
    tenant          text COLLATE "C" NOT NULL,
    session_id      uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    session_key     text COLLATE "C" NOT NULL,
    source_agent    text NOT NULL,
    target_agent    text NOT NULL,
    request_type    text NOT NULL,
    status          text NOT NULL,
    request_data    json,
    context_summary json NOT NULL,
    context_entries bigint NOT NULL,
    created_at      timestamptz NOT NULL,
    accepted_at     timestamptz,
    accepted_by     text
);
CREATE INDEX handoffs_by_target ON handoffs (tenant, target_agent, created_at);
CREATE INDEX handoffs_by_session ON handoffs (session_id);

-- Append-only, hash-chained (see actors/src/audit.rs).
CREATE TABLE audit_log (
    seq          bigint PRIMARY KEY,
    ts           text NOT NULL,
    tenant       text NOT NULL,
    action       text NOT NULL,
    actor        text,
    subject_hash text,
    details      text NOT NULL,
    prev_hash    text NOT NULL,
    hash         text NOT NULL
);

CREATE TABLE settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);
