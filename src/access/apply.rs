//! Applying a stored change to the model: at start, for every change in
//! the store; while running, for what other proxies of the fleet wrote.
//!
//! A change that does not fit the state before it (deciding a request that
//! is not pending, ending a grant that is not there) is never written by
//! jitgate; it is returned as an error for the caller to refuse (at start)
//! or report (while running).

use std::collections::HashMap;

use crate::access::grants::{EndReason, Grant};
use crate::access::journal::Entry;
use crate::access::requests::{Request, RequestState};
use crate::access::{AccessModel, Book, clock};
use std::sync::Arc;

impl AccessModel {
    /// Apply `entry`. `live`: the proxy is running, so a new grant's or
    /// request's timer starts, and a kill of one of its sessions is carried
    /// out (at start, the timers start after the restore, and the sessions
    /// of a kill are long gone).
    pub(super) fn apply(
        self: &Arc<Self>,
        book: &mut Book,
        entry: Entry,
        live: bool,
    ) -> Result<(), String> {
        match entry {
            Entry::RequestCreated { request, grant } => {
                if book.requests.contains_key(&request.id) {
                    return Err(format!("request {} is created twice", request.id));
                }
                self.add_grant(grant, live)?;
                if live && request.state == RequestState::Pending {
                    self.watch_pending(request.id.clone(), request.expires_at);
                }
                book.requests.insert(request.id.clone(), request);
            }
            Entry::RequestApproved {
                id,
                decision,
                grant,
            } => {
                let request = pending(&mut book.requests, &id)?;
                request.approvals.push(decision);
                if let Some(g) = &grant {
                    request.state = RequestState::Approved;
                    request.grant = Some(g.id.clone());
                }
                self.add_grant(grant, live)?;
            }
            Entry::RequestDenied { id, decision } => {
                let request = pending(&mut book.requests, &id)?;
                request.state = RequestState::Denied;
                request.denial = Some(decision);
            }
            Entry::RequestCancelled { id, .. } => {
                pending(&mut book.requests, &id)?.state = RequestState::Cancelled;
            }
            Entry::RequestExpired { id } => {
                pending(&mut book.requests, &id)?.state = RequestState::Expired;
            }
            Entry::GrantCreated { grant } => self.add_grant(Some(grant), live)?,
            Entry::GrantRevoked { id, .. } => self.end_grant(&id, EndReason::Revoked)?,
            Entry::GrantExpired { id } => self.end_grant(&id, EndReason::Expired)?,
            Entry::SessionKillRequested {
                session, held_by, ..
            } => {
                if live
                    && held_by == self.config().store.proxy_name
                    && let Some(sessions) = self.local_sessions.get()
                {
                    sessions.kill(&session);
                }
            }
            Entry::CredentialIssued { credential, ended } => {
                for id in &ended {
                    self.issued.remove(&credential.identity, Some(id));
                }
                self.end_credentials(&credential.identity, &ended, live);
                let unprovable = self.issued.insert(&credential, clock::now())?;
                self.end_credentials(&credential.identity, &unprovable, live);
                if live {
                    self.watch_credential_expiry(
                        &credential.identity,
                        &crate::identity::CredentialRef {
                            id: credential.id.clone(),
                            expires_at: credential.expires_at,
                        },
                    );
                }
            }
            Entry::CredentialsRevoked {
                identity,
                id,
                unbind,
                ..
            } => {
                let ended = self.issued.remove(&identity, id.as_deref());
                self.end_credentials(&identity, &ended, live);
                if unbind {
                    self.issued.unbind(&identity);
                }
            }
        }
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    fn add_grant(self: &Arc<Self>, grant: Option<Grant>, live: bool) -> Result<(), String> {
        let Some(grant) = grant else { return Ok(()) };
        if self.grants.get(&grant.id).is_some() {
            return Err(format!("grant {} is created twice", grant.id));
        }
        let grant = self.grants.insert(grant);
        if live {
            self.watch_expiry(grant);
        }
        Ok(())
    }

    fn end_grant(&self, id: &str, reason: EndReason) -> Result<(), String> {
        match self.grants.end(id, reason) {
            Some(_) => Ok(()),
            None => Err(format!(
                "grant {id} ends, but it was never created or has already ended"
            )),
        }
    }
}

fn pending<'r>(
    requests: &'r mut HashMap<String, Request>,
    id: &str,
) -> Result<&'r mut Request, String> {
    match requests.get_mut(id) {
        None => Err(format!("request {id} is decided, but it was never created")),
        Some(r) if r.state != RequestState::Pending => Err(format!(
            "request {id} is decided, but it was already {}",
            r.state.as_str()
        )),
        Some(r) => Ok(r),
    }
}
