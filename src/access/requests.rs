//! Access requests and their decisions: the data the lifecycle works on.
//!
//! A request is identity + target + level + duration + reason, matched to a
//! policy when it is made. It stays `pending` until enough distinct approvers
//! say yes (a grant is created at that moment and runs for the requested
//! duration from then), someone denies it, the requester cancels it, or it
//! times out. The rules live in `AccessModel`; this file holds the shapes
//! that the admin API returns and the journal stores.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::access::grants::rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    Pending,
    Approved,
    Denied,
    Cancelled,
    Expired,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Cancelled => "cancelled",
            RequestState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<RequestState> {
        Some(match s {
            "pending" => RequestState::Pending,
            "approved" => RequestState::Approved,
            "denied" => RequestState::Denied,
            "cancelled" => RequestState::Cancelled,
            "expired" => RequestState::Expired,
            _ => return None,
        })
    }
}

/// What a person does to a pending request; the refusals name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Approve,
    Deny,
    Cancel,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Deny => "deny",
            Action::Cancel => "cancel",
        }
    }

    pub fn past_tense(self) -> &'static str {
        match self {
            Action::Approve => "approved",
            Action::Deny => "denied",
            Action::Cancel => "cancelled",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One person's decision on a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub by: String,
    #[serde(with = "rfc3339_serde")]
    pub at: SystemTime,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    pub requested_by: String,
    pub target: String,
    pub level: String,
    /// Requested grant duration, in seconds.
    pub duration_secs: u64,
    pub reason: String,
    /// The policy the request was matched to.
    pub policy: String,
    pub state: RequestState,
    #[serde(with = "rfc3339_serde")]
    pub created_at: SystemTime,
    /// When a pending request times out.
    #[serde(with = "rfc3339_serde")]
    pub expires_at: SystemTime,
    /// Distinct approvals needed.
    pub approvals_required: u32,
    pub approvals: Vec<Decision>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub denial: Option<Decision>,
    /// The grant created when the request was approved.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grant: Option<String>,
    /// True when the policy's auto-approval created the grant.
    #[serde(default)]
    pub auto_approved: bool,
}

impl Request {
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }
}

/// What a requester asks for.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub target: String,
    pub level: String,
    pub duration: Duration,
    pub reason: String,
}

pub fn new_request_id() -> String {
    format!("r_{:016x}", rand::random::<u64>())
}

/// RFC 3339 (de)serialization of `SystemTime` for journal round trips.
pub mod rfc3339_serde {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        super::rfc3339(t, s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}
