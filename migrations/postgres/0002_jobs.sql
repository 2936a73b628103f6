-- Background jobs (lifecycle, retention, analytics roll-up); see
-- migrations/sqlite/0004_jobs.sql.

CREATE INDEX sessions_by_status_activity ON sessions (status, last_activity_at);

CREATE TABLE lifecycle_events (
    id          uuid PRIMARY KEY,
    tenant      text COLLATE "C" NOT NULL,
    session_id  uuid REFERENCES sessions(id) ON DELETE CASCADE,
    session_key text COLLATE "C",
    from_status text NOT NULL,
    to_status   text NOT NULL,
    at          timestamptz NOT NULL,
    reason      text NOT NULL
);
CREATE INDEX lifecycle_events_by_tenant ON lifecycle_events (tenant, id);
CREATE INDEX lifecycle_events_by_session ON lifecycle_events (session_id);
CREATE INDEX lifecycle_events_by_at ON lifecycle_events (at);

CREATE TABLE analytics_rollups (
    id     uuid PRIMARY KEY,
    at     timestamptz NOT NULL,
    counts json NOT NULL
);
CREATE INDEX analytics_rollups_by_at ON analytics_rollups (at);

CREATE TABLE job_configs (
    job_name   text PRIMARY KEY,
    config     json NOT NULL,
    updated_at timestamptz NOT NULL
);
