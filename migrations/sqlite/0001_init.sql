-- handoff schema, SQLite. Every row that belongs to a session carries the
-- session id; sessions are unique per (tenant, session_key).

CREATE TABLE sessions (
    id               TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    session_key      TEXT NOT NULL,
    agent_from       TEXT NOT NULL,
    status           TEXT NOT NULL,
    metadata         TEXT,
    created_at       TEXT NOT NULL,
    last_activity_at TEXT NOT NULL,
    -- highest sequence number committed; maintained with the entries
    last_seq         INTEGER NOT NULL DEFAULT 0,
    -- running summary (JSON), maintained with the entries
    summary          TEXT NOT NULL,
    UNIQUE (tenant, session_key)
);

CREATE TABLE context_entries (
    session_id   TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,
    id           TEXT NOT NULL,
    context_type TEXT NOT NULL,
    content      TEXT NOT NULL,
    metadata     TEXT,
    created_at   TEXT NOT NULL,
    UNIQUE (session_id, seq)
);

CREATE TABLE handoffs (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    session_id      TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    session_key     TEXT NOT NULL,
    source_agent    TEXT NOT NULL,
    target_agent    TEXT NOT NULL,
    request_type    TEXT NOT NULL,
    status          TEXT NOT NULL,
    request_data    TEXT,
    context_summary TEXT NOT NULL,
    context_entries INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    accepted_at     TEXT,
    accepted_by     TEXT
);
CREATE INDEX handoffs_by_target ON handoffs (tenant, target_agent, created_at);
CREATE INDEX handoffs_by_session ON handoffs (session_id);

-- Append-only, hash-chained (see actors/src/audit.rs).
CREATE TABLE audit_log (
    seq          INTEGER PRIMARY KEY,
    ts           TEXT NOT NULL,
    tenant       TEXT NOT NULL,
    action       TEXT NOT NULL,
    actor        TEXT,
    subject_hash TEXT,
    details      TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
