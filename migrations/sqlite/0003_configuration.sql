-- Runtime configuration (update_configuration, manage_configuration_backup).
-- The effective configuration is the start-up one (defaults <- TOML <- env)
-- overlaid with these overrides, one row per changed setting.
CREATE TABLE configuration_overrides (
    section    TEXT NOT NULL,
    key        TEXT NOT NULL,
    -- JSON value, canonical form (durations as humantime strings)
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT,
    PRIMARY KEY (section, key)
);

-- Snapshots of every runtime-managed section. `checksum` is the blake3 hex
-- of `body` (canonical JSON); restore refuses a body that does not match.
CREATE TABLE configuration_backups (
    id          TEXT PRIMARY KEY, -- uuid v7: sorts by creation
    name        TEXT NOT NULL,
    description TEXT,
    created_at  TEXT NOT NULL,
    checksum    TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    body        TEXT NOT NULL
);
