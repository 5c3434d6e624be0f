//! Cancel keys: each client sees its upstream backend's real process id (so
//! `pg_backend_pid()`, NOTIFY's sender and the driver's `backend_pid` agree)
//! with a secret key of jitgate's own, mapped to the upstream connection it
//! stands for. A cancel request is routed by the (pid, key) pair: a guessed
//! or reused pid with the wrong key cancels nothing, and two targets'
//! servers handing out the same pid still get their own cancels.

use std::sync::Arc;

use dashmap::DashMap;

#[derive(Debug, Clone)]
pub struct UpstreamKey {
    pub address: String,
    pub pid: u32,
    pub key: Vec<u8>,
}

#[derive(Default)]
pub struct CancelKeys {
    by_client_key: DashMap<(u32, u32), UpstreamKey>,
}

impl CancelKeys {
    /// Hand out a fresh client key for `upstream`, under its real pid; the
    /// entry goes away with the guard.
    pub fn issue(self: &Arc<Self>, upstream: UpstreamKey) -> CancelKeyGuard {
        let pid = upstream.pid;
        loop {
            let key = rand::random::<u32>();
            if let dashmap::Entry::Vacant(v) = self.by_client_key.entry((pid, key)) {
                v.insert(upstream);
                return CancelKeyGuard {
                    keys: self.clone(),
                    pid,
                    key,
                };
            }
        }
    }

    pub fn lookup(&self, pid: u32, key: &[u8]) -> Option<UpstreamKey> {
        let key: [u8; 4] = key.try_into().ok()?;
        self.by_client_key
            .get(&(pid, u32::from_be_bytes(key)))
            .map(|e| e.value().clone())
    }
}

pub struct CancelKeyGuard {
    keys: Arc<CancelKeys>,
    pub pid: u32,
    pub key: u32,
}

impl Drop for CancelKeyGuard {
    fn drop(&mut self) {
        self.keys.by_client_key.remove(&(self.pid, self.key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(address: &str, pid: u32) -> UpstreamKey {
        UpstreamKey {
            address: address.to_owned(),
            pid,
            key: vec![1, 2, 3, 4],
        }
    }

    #[test]
    fn the_real_pid_with_its_own_key_routes_to_its_own_server() {
        let keys = Arc::new(CancelKeys::default());
        // Two targets' servers that both handed out pid 4242.
        let a = keys.issue(upstream("10.0.0.1:5432", 4242));
        let b = keys.issue(upstream("10.0.0.2:5432", 4242));
        assert_eq!((a.pid, b.pid), (4242, 4242));
        assert_ne!(a.key, b.key);
        let route = |pid: u32, key: u32| keys.lookup(pid, &key.to_be_bytes()).map(|u| u.address);
        assert_eq!(route(4242, a.key).as_deref(), Some("10.0.0.1:5432"));
        assert_eq!(route(4242, b.key).as_deref(), Some("10.0.0.2:5432"));
        // The right pid with a wrong key, or a key of another length: nothing.
        let wrong = a.key.wrapping_add(1);
        if wrong != b.key {
            assert_eq!(route(4242, wrong), None);
        }
        assert!(keys.lookup(4242, &[0; 8]).is_none());
        let a_key = a.key;
        drop(a);
        assert_eq!(route(4242, a_key), None);
        assert_eq!(route(4242, b.key).as_deref(), Some("10.0.0.2:5432"));
    }
}
