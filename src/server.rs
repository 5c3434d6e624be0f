//! Starting jitgate: open the audit log, build the shared state, bind listeners.

use std::sync::Arc;

use crate::access::AccessModel;
use crate::audit::AuditLog;
use crate::config::Config;
use crate::identity::Identities;
use crate::session::Sessions;

/// Everything the listeners share.
pub struct Shared {
    pub config: Arc<Config>,
    pub identities: Arc<Identities>,
    pub access: Arc<AccessModel>,
    pub sessions: Arc<Sessions>,
    pub audit: Arc<AuditLog>,
}
