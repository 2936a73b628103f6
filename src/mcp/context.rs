//! What every tool call gets: the core, the guarded reads, the settings,
//! the caller's tenant and who the caller is.

use std::sync::Arc;

use handoff_actors::model::SessionKey;
use handoff_actors::{Core, ErrorCode, HandoffError};

use crate::config::Config;
use crate::storage::Storage;

/// Who is calling, as the transport established it (never as the client
/// claims it in an argument such as `updated_by`).
#[derive(Debug, Clone)]
pub struct Caller {
    /// Recorded as the actor of audit rows: `stdio` for the local client.
    pub principal: Arc<str>,
    /// May use the admin tools and process-wide resources.
    pub admin: bool,
    /// The only agent this caller may act as (an API key bound to one).
    pub agent: Option<Arc<str>>,
}

impl Caller {
    /// The one local client of a stdio server.
    pub fn stdio(admin: bool) -> Self {
        Self {
            principal: Arc::from("stdio"),
            admin,
            agent: None,
        }
    }

    /// A client of the HTTP daemon run without API keys (loopback only).
    pub fn anonymous() -> Self {
        Self {
            principal: Arc::from("http"),
            admin: false,
            agent: None,
        }
    }

    /// The caller behind a verified API key.
    pub fn key(p: &crate::auth::Principal) -> Self {
        Self {
            principal: Arc::from(p.label()),
            admin: p.admin,
            agent: p.agent.as_deref().map(Arc::from),
        }
    }
}

#[derive(Clone)]
pub struct Ctx {
    pub core: Core,
    pub storage: Storage,
    pub cfg: Arc<Config>,
    pub tenant: Arc<str>,
    pub caller: Caller,
}

impl Ctx {
    pub fn key(&self, session_key: &str) -> SessionKey {
        SessionKey {
            tenant: self.tenant.clone(),
            key: Arc::from(session_key),
        }
    }

    /// `FORBIDDEN` when the caller is bound to an agent other than the one
    /// `field` names: a key bound to an agent acts as that agent only.
    pub fn require_agent(&self, field: &str, agent: &str) -> Result<(), HandoffError> {
        match &self.caller.agent {
            Some(bound) if **bound != *agent => Err(HandoffError::new(
                ErrorCode::Forbidden,
                format!("this API key acts as agent '{bound}' only; {field} names another"),
            )
            .detail("field", field)),
            _ => Ok(()),
        }
    }

    /// `sqlite` or `postgresql`: what a client may know of the database.
    pub fn backend_kind(&self) -> &'static str {
        if self.storage.db.describe().starts_with("postgres") {
            "postgresql"
        } else {
            "sqlite"
        }
    }

    /// `FORBIDDEN` unless the caller holds the admin capability.
    pub fn require_admin(&self, what: &str) -> Result<(), HandoffError> {
        if self.caller.admin {
            return Ok(());
        }
        Err(admin_required(what))
    }
}

/// The error for a caller without the admin capability.
pub fn admin_required(what: &str) -> HandoffError {
    HandoffError::new(
        ErrorCode::Forbidden,
        format!(
            "{what} needs the admin capability; on stdio the operator grants it with \
             HANDOFF_STDIO__ADMIN=true (or [stdio] admin = true in the configuration file)"
        ),
    )
    .detail("required_capability", "admin")
}
