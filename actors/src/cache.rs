//! The cache port: session rows (status, metadata, running summary) as last
//! committed, so a read of a session with no live actor here needs neither
//! an actor nor the database. The binary supplies the adapter (Redis, or a
//! cache inside the process); the actors only call it.
//!
//! Writers are the session actors. A cache other processes read (`shared`:
//! Redis) is written after every commit (write-through) and after a load. A
//! cache only this process reads is written when the actor stops: while an
//! actor is live it answers its own reads, so the copy is evicted when the
//! actor loads the session and put back, final, when it stops. That saves a
//! cache write per commit. An adapter keeps the newest version it was given
//! and swallows its own failures: the cache is an accelerator, never a
//! reason for a call to fail.

use async_trait::async_trait;

use crate::model::{SessionKey, SessionRow};

#[async_trait]
pub trait SessionCache: Send + Sync + 'static {
    /// The cached row, if present and fresh enough to serve.
    async fn get(&self, key: &SessionKey) -> Option<SessionRow>;
    /// The row as committed (or loaded). Older versions than the cached one
    /// are ignored, so racing writers cannot move it backwards.
    async fn put(&self, key: &SessionKey, row: &SessionRow);
    /// The session was deleted.
    async fn forget(&self, key: &SessionKey);
    /// Whether other processes read this cache (see the module comment).
    fn shared(&self) -> bool;
    /// Drop the key whatever version it holds: an actor of this process owns
    /// the session now. Only called on a cache that is not `shared`.
    async fn evict(&self, key: &SessionKey);
}

/// No cache at all (tests of the actors alone, tools that only read).
pub struct NoCache;

#[async_trait]
impl SessionCache for NoCache {
    async fn get(&self, _key: &SessionKey) -> Option<SessionRow> {
        None
    }
    async fn put(&self, _key: &SessionKey, _row: &SessionRow) {}
    async fn forget(&self, _key: &SessionKey) {}
    fn shared(&self) -> bool {
        false
    }
    async fn evict(&self, _key: &SessionKey) {}
}
