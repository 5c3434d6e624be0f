//! The live-session registry: what the admin API lists and kills.
//!
//! A wire front registers each session once it is bound to a grant and holds
//! the returned [`SessionGuard`]; dropping the guard removes the entry, so the
//! registry cannot keep a session that has gone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::Notify;

use crate::access::grants::rfc3339;

#[derive(Debug, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub identity: String,
    pub target: String,
    pub level: String,
    pub grant: String,
    pub client_addr: SocketAddr,
    #[serde(serialize_with = "rfc3339")]
    pub started_at: SystemTime,
    /// Statements forwarded so far.
    #[serde(serialize_with = "atomic")]
    pub statements: AtomicU64,
    #[serde(skip)]
    kill: Notify,
}

fn atomic<S: serde::Serializer>(v: &AtomicU64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(v.load(Ordering::Relaxed))
}

impl SessionInfo {
    pub fn count_statement(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    /// Resolves once an operator killed this session (cancel-safe).
    pub async fn killed(&self) {
        self.kill.notified().await
    }
}

pub struct NewSession<'a> {
    pub identity: &'a str,
    pub target: &'a str,
    pub level: &'a str,
    pub grant: &'a str,
    pub client_addr: SocketAddr,
}

#[derive(Default)]
pub struct Sessions {
    by_id: DashMap<String, Arc<SessionInfo>>,
}

impl Sessions {
    pub fn register(self: &Arc<Self>, s: NewSession<'_>) -> SessionGuard {
        let info = Arc::new(SessionInfo {
            id: format!("s_{:016x}", rand::random::<u64>()),
            identity: s.identity.to_owned(),
            target: s.target.to_owned(),
            level: s.level.to_owned(),
            grant: s.grant.to_owned(),
            client_addr: s.client_addr,
            started_at: SystemTime::now(),
            statements: AtomicU64::new(0),
            kill: Notify::new(),
        });
        self.by_id.insert(info.id.clone(), info.clone());
        SessionGuard {
            registry: self.clone(),
            info,
        }
    }

    /// Live sessions, oldest first.
    pub fn list(&self) -> Vec<Arc<SessionInfo>> {
        let mut v: Vec<_> = self.by_id.iter().map(|e| e.value().clone()).collect();
        v.sort_by_key(|s| s.started_at);
        v
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Ask a session to end. `None` if there is no such session.
    pub fn kill(&self, id: &str) -> Option<Arc<SessionInfo>> {
        let s = self.by_id.get(id)?.value().clone();
        s.kill.notify_one();
        Some(s)
    }
}

pub struct SessionGuard {
    registry: Arc<Sessions>,
    pub info: Arc<SessionInfo>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry.by_id.remove(&self.info.id);
    }
}
