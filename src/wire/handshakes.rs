//! Slots for connections that are still logging in, shared by the listeners.
//!
//! A few hundred TCP connections that send nothing used to fill every
//! pending-handshake slot and keep good clients out for the whole handshake
//! timeout. So a connection is admitted in two steps:
//!
//! 1. on accept it takes a slot of its client address (at most
//!    `limits.max_pending_handshakes_per_address`, across listeners), and has
//!    `limits.first_message_timeout` to send its first message;
//! 2. once it has spoken, it takes one of the `limits.max_pending_handshakes`
//!    slots kept for clients that speak, until its handshake ends.
//!
//! Silent connections are thus bounded per address and in time, and cannot
//! take the slots of the clients that talk.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;
use crate::identity::client_of;

pub struct Handshakes {
    speaking: Arc<Semaphore>,
    per_address: DashMap<IpAddr, usize>,
    max_per_address: usize,
}

/// Why a connection gets no handshake slot; each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum NoSlot {
    #[error(
        "too many connections from {0} are logging in to jitgate at once; finish or close those, then try again"
    )]
    AddressFull(IpAddr),
    #[error("too many connections are logging in to jitgate right now; try again in a moment")]
    AllBusy,
}

/// One connection's place while it logs in; its slots are given back when
/// it is dropped.
pub struct PendingHandshake {
    handshakes: Arc<Handshakes>,
    client: IpAddr,
    speaking: Option<OwnedSemaphorePermit>,
}

impl Handshakes {
    pub fn from_limits(limits: &Limits) -> Handshakes {
        Handshakes {
            speaking: Arc::new(Semaphore::new(limits.max_pending_handshakes)),
            per_address: DashMap::new(),
            max_per_address: limits.max_pending_handshakes_per_address,
        }
    }

    /// A connection from `peer` was accepted: take a slot of its address.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<PendingHandshake, NoSlot> {
        let client = client_of(peer);
        let mut pending = self.per_address.entry(client).or_insert(0);
        if *pending >= self.max_per_address {
            return Err(NoSlot::AddressFull(client));
        }
        *pending += 1;
        Ok(PendingHandshake {
            handshakes: self.clone(),
            client,
            speaking: None,
        })
    }

    /// Handshakes from `peer`'s address in progress now.
    #[cfg(test)]
    fn pending_from(&self, peer: IpAddr) -> usize {
        self.per_address.get(&client_of(peer)).map_or(0, |n| *n)
    }
}

impl PendingHandshake {
    /// The client sent its first message: take a slot kept for clients
    /// that speak (at once, or never: a full house refuses rather than queues).
    pub fn spoke(&mut self) -> Result<(), NoSlot> {
        if self.speaking.is_none() {
            let permit = self
                .handshakes
                .speaking
                .clone()
                .try_acquire_owned()
                .map_err(|_| NoSlot::AllBusy)?;
            self.speaking = Some(permit);
        }
        Ok(())
    }
}

impl Drop for PendingHandshake {
    fn drop(&mut self) {
        if let Some(mut n) = self.handshakes.per_address.get_mut(&self.client) {
            *n = n.saturating_sub(1);
        }
        self.handshakes
            .per_address
            .remove_if(&self.client, |_, n| *n == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshakes(total: usize, per_address: usize) -> Arc<Handshakes> {
        Arc::new(Handshakes {
            speaking: Arc::new(Semaphore::new(total)),
            per_address: DashMap::new(),
            max_per_address: per_address,
        })
    }

    #[test]
    fn one_address_gets_its_cap_and_others_are_not_affected() {
        let h = handshakes(10, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = h.admit(a).unwrap();
        let _second = h.admit(a).unwrap();
        assert!(matches!(h.admit(a), Err(NoSlot::AddressFull(_))));
        assert!(h.admit(b).is_ok());
        drop(first);
        assert!(h.admit(a).is_ok(), "a finished handshake frees its slot");
        assert_eq!(h.pending_from(b), 0, "dropped slots leave no entry behind");
    }

    #[test]
    fn silent_connections_take_no_slot_of_those_that_speak() {
        let h = handshakes(1, 100);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let _silent: Vec<_> = (0..50).map(|_| h.admit(a).unwrap()).collect();
        let mut talker = h.admit(a).unwrap();
        talker.spoke().unwrap();
        let mut second = h.admit(a).unwrap();
        assert!(matches!(second.spoke(), Err(NoSlot::AllBusy)));
        drop(talker);
        assert!(second.spoke().is_ok());
    }
}
