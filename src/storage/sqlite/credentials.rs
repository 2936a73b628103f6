//! API keys and the MCP-over-HTTP sessions replicas share, on SQLite: the
//! queries of `crate::storage::credentials`, writing through the writer pool.

use super::{classify, SqliteDb};

crate::storage::credentials::credentials_queries!(SqliteDb, writer, classify);
