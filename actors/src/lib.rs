//! The supervision tree of `handoff`.
//!
//! ```text
//! root (root.rs)               starts, restarts and binds the addresses of:
//! ├── breaker (breaker.rs)     closed / open / half-open; guards every call
//! ├── persistence (persistence.rs)  group commit, one transaction per batch
//! ├── audit (audit/)           hash-chained audit log, subscribed to the breaker
//! ├── sessions (session/supervisor.rs)  starts session actors, keeps their directory
//! │   └── a session (session/) one per live session
//! ├── jobs (jobs/supervisor.rs)  restarts a failed job actor
//! │   └── a job (jobs/job.rs)  schedule, retries, run history
//! └── transports (in the binary)  stdio / HTTP, added as ChildSpecs
//! ```
//!
//! Actors talk by typed messages only, through the typed addresses their
//! parent hands down (address.rs); restart policies are in supervision.rs.
//! `Core` (core.rs) is the door the MCP surface uses, and `Store` (store.rs)
//! the port storage adapters implement; `model/` holds the records that flow
//! between them.

pub mod address;
pub mod audit;
pub mod breaker;
pub mod cache;
pub mod changes;
pub mod core;
pub mod error;
pub mod fence;
pub mod jobs;
pub mod metrics;
pub mod model;
pub mod persistence;
pub mod root;
pub mod session;
pub mod store;
pub mod supervision;

pub use crate::core::Core;
pub use error::{ErrorCode, HandoffError, StoreError};

/// Keyed blake3 of a session key (or any identifier) for logs and the audit
/// log: stable within a deployment, useless without the key.
pub fn key_hash(key: &[u8; 32], value: &str) -> String {
    let h = blake3::keyed_hash(key, value.as_bytes());
    h.to_hex()[..16].to_string()
}
