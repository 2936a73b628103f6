//! Change notices for resource subscriptions. After a unit commits, the
//! session actor's waiter publishes what it changed; each MCP connection
//! with subscriptions listens and turns matching notices into
//! `notifications/resources/updated`. A broadcast channel: publishing costs
//! nothing when nobody listens, and a slow listener only loses notices
//! (it is told it lagged), never blocks a commit.

use std::sync::Arc;

use tokio::sync::broadcast;

#[derive(Debug, Clone)]
pub struct Change {
    pub tenant: Arc<str>,
    /// The session whose context and summary changed.
    pub session_key: Arc<str>,
    /// Agents whose handoff lists changed (new or accepted handoffs).
    pub agents: Vec<String>,
}

#[derive(Clone)]
pub struct Changes(broadcast::Sender<Change>);

impl Default for Changes {
    fn default() -> Self {
        Changes(broadcast::channel(4096).0)
    }
}

impl Changes {
    pub fn publish(&self, change: Change) {
        if self.0.receiver_count() > 0 {
            let _ = self.0.send(change);
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.0.subscribe()
    }
}
