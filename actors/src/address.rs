//! A typed address of an actor its parent may restart.
//!
//! The parent creates the address before it spawns the actor, hands clones
//! down to whoever will talk to the actor, and binds it to each actor it
//! (re)starts. Holders never look anything up by name: a restarted actor is
//! reached through the same address, and the compiler knows which messages
//! it takes.

use std::sync::{Arc, RwLock};

use ractor::{ActorRef, Message, MessagingErr};

pub struct Address<M> {
    slot: Arc<RwLock<Option<ActorRef<M>>>>,
}

// Manual: a derive would ask `M: Clone`.
impl<M> Clone for Address<M> {
    fn clone(&self) -> Self {
        Self {
            slot: self.slot.clone(),
        }
    }
}

impl<M> Default for Address<M> {
    fn default() -> Self {
        Self {
            slot: Arc::new(RwLock::new(None)),
        }
    }
}

impl<M: Message> Address<M> {
    /// Point the address at a freshly started actor (the parent's job).
    pub fn bind(&self, actor: ActorRef<M>) {
        *self.slot.write().unwrap_or_else(|e| e.into_inner()) = Some(actor);
    }

    /// The actor last bound, which may be stopping: a send to it then fails
    /// and the caller decides whether to wait for its successor.
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.slot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Send without waiting. Before the first bind the message comes back
    /// as a send error, like a message to a stopped actor.
    pub fn send(&self, msg: M) -> Result<(), MessagingErr<M>> {
        match self.get() {
            Some(actor) => actor.cast(msg),
            None => Err(MessagingErr::SendErr(msg)),
        }
    }
}

#[cfg(test)]
mod tests {
    use ractor::{Actor, ActorProcessingErr};

    use super::*;

    struct Echo;

    impl Actor for Echo {
        type Msg = tokio::sync::oneshot::Sender<()>;
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }

        async fn handle(
            &self,
            _: ActorRef<Self::Msg>,
            msg: Self::Msg,
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            let _ = msg.send(());
            Ok(())
        }
    }

    #[tokio::test]
    async fn reaches_whichever_actor_was_bound_last() {
        let address = Address::default();
        let (tx, _rx) = tokio::sync::oneshot::channel();
        assert!(address.send(tx).is_err(), "unbound: the message comes back");

        let (first, h1) = Actor::spawn(None, Echo, ()).await.unwrap();
        address.bind(first.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        address.send(tx).unwrap();
        rx.await.unwrap();

        first.stop(None);
        h1.await.unwrap();
        let (tx, _rx) = tokio::sync::oneshot::channel();
        assert!(address.clone().send(tx).is_err(), "a stopped actor refuses");

        // The "restart": a clone handed out earlier reaches the new actor.
        let held = address.clone();
        let (second, h2) = Actor::spawn(None, Echo, ()).await.unwrap();
        address.bind(second.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        held.send(tx).unwrap();
        rx.await.unwrap();
        second.stop(None);
        h2.await.unwrap();
    }
}
