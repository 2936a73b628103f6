//! API keys and the MCP-over-HTTP sessions replicas share, on PostgreSQL:
//! the queries of `crate::storage::credentials`, on the shared pool.

use super::{classify, PgDb};

crate::storage::credentials::credentials_queries!(PgDb, reader, classify);
