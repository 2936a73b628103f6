-- Runtime configuration (update_configuration, manage_configuration_backup),
-- the PostgreSQL counterpart of migrations/sqlite/0003_configuration.sql.
-- The effective configuration is the start-up one (defaults <- TOML <- env)
-- overlaid with these overrides, one row per changed setting.
CREATE TABLE configuration_overrides (
    section    text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    -- JSON value, canonical form (durations as humantime strings); json, not
    -- jsonb, so it reads back exactly as written
    value      json NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text,
    PRIMARY KEY (section, key)
);

-- Snapshots of every runtime-managed section. `checksum` is the blake3 hex
-- of `body` (canonical JSON, kept as text: the checksum covers those exact
-- bytes); restore refuses a body that does not match.
CREATE TABLE configuration_backups (
    id          uuid PRIMARY KEY, -- v7: sorts by creation
    name        text NOT NULL,
    description text,
    created_at  timestamptz NOT NULL,
    checksum    text NOT NULL,
    size_bytes  bigint NOT NULL,
    body        text NOT NULL
);
