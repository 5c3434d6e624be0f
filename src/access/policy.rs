//! Policies: who may ask for what, for how long, and who decides.
//!
//! The policies live in the config ([`PolicyConfig`]); this file answers the
//! questions the request flow asks of them. A request that no policy allows
//! is refused with a message that names the policies covering the target, so
//! the requester knows what to ask for instead (or whom to ask for a policy).

use std::fmt;
use std::time::Duration;

use crate::config::PolicyConfig;
use crate::identity::Identity;

/// The group whose members may revoke any grant. It grants no approval
/// rights: an admin approves only under a policy that lists `admin` among its
/// approvers, so "who may approve" is always read from the policy alone.
pub(crate) const ADMIN_GROUP: &str = "admin";

impl PolicyConfig {
    /// Does the policy speak about `level` on `target` (`"*"` matches all)?
    pub(crate) fn covers(&self, target: &str, level: &str) -> bool {
        self.covers_target(target) && self.levels.iter().any(|l| l == "*" || l == level)
    }

    pub(crate) fn covers_target(&self, target: &str) -> bool {
        self.targets.iter().any(|t| t == "*" || t == target)
    }

    pub(crate) fn lets_request(&self, who: &Identity) -> bool {
        self.requesters.iter().any(|g| who.in_group(g))
    }

    /// Is `who` in one of the approver groups? (Self-approval is refused
    /// elsewhere, whatever the groups.)
    pub(crate) fn lets_approve(&self, who: &Identity) -> bool {
        self.approvers.iter().any(|g| who.in_group(g))
    }

    /// Would a request by `who` for `duration` be approved at once?
    pub(crate) fn auto_approves(&self, who: &Identity, duration: Duration) -> bool {
        self.auto_approve
            .as_ref()
            .is_some_and(|a| duration <= a.max_duration && a.groups.iter().any(|g| who.in_group(g)))
    }
}

/// The first policy, in config order, that lets `who` ask for `level` on
/// `target` for `duration`. Otherwise why not, and which policies cover the
/// target.
pub(crate) fn find<'a>(
    policies: &'a [PolicyConfig],
    who: &Identity,
    target: &str,
    level: &str,
    duration: Duration,
) -> Result<&'a PolicyConfig, Box<NoPolicy>> {
    if let Some(p) = policies
        .iter()
        .find(|p| p.covers(target, level) && p.lets_request(who) && duration <= p.max_duration)
    {
        return Ok(p);
    }
    Err(Box::new(NoPolicy {
        identity: who.name.clone(),
        groups: who.groups.clone(),
        target: target.to_owned(),
        level: level.to_owned(),
        duration,
        covering: policies
            .iter()
            .filter(|p| p.covers_target(target))
            .map(|p| describe(p, target))
            .collect(),
    }))
}

/// No policy lets `identity` ask for `level` on `target` for `duration`. Its
/// message names the policies that cover the target, so the requester knows
/// what to ask for instead, or whom to ask for a policy.
#[derive(Debug)]
pub(crate) struct NoPolicy {
    identity: String,
    groups: Vec<String>,
    target: String,
    level: String,
    duration: Duration,
    /// One sentence per policy that covers the target (see [`describe`]).
    covering: Vec<String>,
}

impl fmt::Display for NoPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let NoPolicy {
            identity,
            target,
            level,
            ..
        } = self;
        let groups = if self.groups.is_empty() {
            "none".to_owned()
        } else {
            self.groups.join(", ")
        };
        write!(
            f,
            "no policy lets {identity} (groups: {groups}) request {target} at level {level} for {}",
            format_duration(self.duration)
        )?;
        if self.covering.is_empty() {
            write!(
                f,
                "; no policy covers {target}: ask an operator to add one to the proxy config"
            )
        } else {
            write!(f, "; {}", self.covering.join("; "))
        }
    }
}

impl std::error::Error for NoPolicy {}

/// "policy `dev-read` allows demo-pg read up to 1h for group developer"
fn describe(p: &PolicyConfig, target: &str) -> String {
    let levels = if p.levels.iter().any(|l| l == "*") {
        "any level".to_owned()
    } else {
        p.levels.join("/")
    };
    let groups = match p.requesters.as_slice() {
        [one] => format!("group {one}"),
        many => format!("groups {}", many.join(", ")),
    };
    format!(
        "policy `{}` allows {target} {levels} up to {} for {groups}",
        p.name,
        format_duration(p.max_duration)
    )
}

/// Durations for people: "2h", "1h 30m", "45s".
pub(crate) fn format_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}
