//! What every tool call gets: the core, the guarded reads, the settings and
//! the caller's tenant.

use std::sync::Arc;

use handoff_actors::model::SessionKey;
use handoff_actors::Core;

use crate::config::Config;
use crate::storage::Reads;

#[derive(Clone)]
pub struct Ctx {
    pub core: Core,
    pub reads: Reads,
    pub cfg: Arc<Config>,
    pub tenant: Arc<str>,
}

impl Ctx {
    pub fn key(&self, session_key: &str) -> SessionKey {
        SessionKey {
            tenant: self.tenant.clone(),
            key: Arc::from(session_key),
        }
    }
}
