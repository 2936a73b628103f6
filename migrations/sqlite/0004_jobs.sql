-- Background jobs (lifecycle, retention, analytics roll-up).

-- The lifecycle job's candidate query: status, then oldest activity first.
CREATE INDEX sessions_by_status_activity ON sessions (status, last_activity_at);

-- Lifecycle transitions (handoff://sessions/lifecycle). Erased with their
-- session; a purge event keeps neither the session id nor its key.
CREATE TABLE lifecycle_events (
    id          TEXT PRIMARY KEY, -- uuid v7: sorts by time
    tenant      TEXT NOT NULL,
    session_id  TEXT REFERENCES sessions(id) ON DELETE CASCADE,
    session_key TEXT,
    from_status TEXT NOT NULL,
    to_status   TEXT NOT NULL,
    at          TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX lifecycle_events_by_tenant ON lifecycle_events (tenant, id);
CREATE INDEX lifecycle_events_by_session ON lifecycle_events (session_id);
CREATE INDEX lifecycle_events_by_at ON lifecycle_events (at);

-- analytics_rollup snapshots: counts as JSON.
CREATE TABLE analytics_rollups (
    id     TEXT PRIMARY KEY,
    at     TEXT NOT NULL,
    counts TEXT NOT NULL
);
CREATE INDEX analytics_rollups_by_at ON analytics_rollups (at);

-- update_job_config overrides, one row per job.
CREATE TABLE job_configs (
    job_name   TEXT PRIMARY KEY,
    config     TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
