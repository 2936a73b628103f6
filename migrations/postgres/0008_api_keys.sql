-- API keys of the network daemon (`handoff keys ...`). Only a keyed hash of
-- each key's secret is stored; times are Unix milliseconds.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,   -- 32 hex digits, also the key's visible prefix
    tenant       TEXT NOT NULL,
    scope        TEXT NOT NULL CHECK (scope IN ('agent', 'admin')),
    agent        TEXT,
    name         TEXT,
    hash         TEXT NOT NULL,
    created_ms   BIGINT NOT NULL,
    last_used_ms BIGINT,
    expires_ms   BIGINT,
    revoked_ms   BIGINT,
    replaced_by  TEXT
);
