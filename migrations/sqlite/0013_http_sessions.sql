-- MCP-over-HTTP sessions (`Mcp-Session-Id`, protocol revisions with a
-- handshake), so that any replica can take over a session another one
-- started (rmcp's session store). The id is a bearer secret: only its hash
-- is stored. `tenant` is set once, by the first request's key; times are
-- Unix milliseconds.
CREATE TABLE http_sessions (
    id_hash     TEXT PRIMARY KEY,
    tenant      TEXT,
    init_params TEXT,
    expires_ms  BIGINT NOT NULL
);
CREATE INDEX http_sessions_expiry ON http_sessions (expires_ms);
