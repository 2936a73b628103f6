//! Per-session fences. When a session actor dies (a panic skips its
//! `post_stop`), its last unit may still be at the persistence actor; the
//! successor actor must not load the session until that unit has settled,
//! or it would hand out the same sequence numbers again. Each in-flight
//! unit holds its session's fence; `wait` returns once none is held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::model::SessionKey;

/// The fence of one session: which unit holds it, and its "settled" flag.
type Fence = (u64, watch::Receiver<bool>);

#[derive(Clone, Default)]
pub struct Fences {
    inner: Arc<Mutex<HashMap<SessionKey, Fence>>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

/// Held by a unit in flight; lowers the fence when dropped.
pub struct FenceGuard {
    fences: Fences,
    key: SessionKey,
    id: u64,
    tx: watch::Sender<bool>,
}

impl Fences {
    pub fn raise(&self, key: &SessionKey) -> FenceGuard {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = watch::channel(false);
        self.inner
            .lock()
            .expect("fence lock")
            .insert(key.clone(), (id, rx));
        FenceGuard {
            fences: self.clone(),
            key: key.clone(),
            id,
            tx,
        }
    }

    /// Wait until no earlier unit of this session is in flight.
    pub async fn wait(&self, key: &SessionKey) {
        let rx = self
            .inner
            .lock()
            .expect("fence lock")
            .get(key)
            .map(|(_, rx)| rx.clone());
        if let Some(mut rx) = rx {
            let _ = rx.wait_for(|done| *done).await;
        }
    }
}

impl Drop for FenceGuard {
    fn drop(&mut self) {
        let _ = self.tx.send(true);
        let mut map = self.fences.inner.lock().expect("fence lock");
        if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            map.remove(&self.key);
        }
    }
}
