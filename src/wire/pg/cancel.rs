//! Cancel keys: each client gets its own random BackendKeyData, mapped to
//! the upstream connection it stands for. A cancel for an unknown key is
//! dropped, so a client can only ever cancel its own query.

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
    /// Hand out a fresh client key for `upstream`; the entry goes away with the guard.
    pub fn issue(self: &Arc<Self>, upstream: UpstreamKey) -> CancelKeyGuard {
        loop {
            let pid = rand::random::<u32>() & 0x7fff_ffff;
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
