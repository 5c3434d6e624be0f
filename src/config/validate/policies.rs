//! `[[policies]]`: who may request which targets and levels, for how long,
//! who approves, and which requests are approved at once. A policy may only
//! name targets and levels that exist, so a typo is refused at load instead
//! of matching nothing.

use std::time::Duration;

use super::{LONGEST_SPAN, Validator};
use crate::config::raw::{RawAutoApprove, RawPolicy};
use crate::config::{AutoApprove, ConfigError, PolicyConfig, TargetConfig};

impl Validator<'_> {
    pub(super) fn policies(
        &self,
        raw: Vec<RawPolicy>,
        targets: &[TargetConfig],
    ) -> Result<Vec<PolicyConfig>, ConfigError> {
        let mut policies = Vec::new();
        for (i, p) in raw.into_iter().enumerate() {
            let key = format!("policies[{i}]");
            if policies.iter().any(|x: &PolicyConfig| x.name == p.name) {
                return Err(self.invalid(
                    format!("{key}.name"),
                    format!("policy `{}` is defined twice", p.name),
                ));
            }
            policies.push(self.policy(&key, p, targets)?);
        }
        Ok(policies)
    }

    fn policy(
        &self,
        key: &str,
        p: RawPolicy,
        targets: &[TargetConfig],
    ) -> Result<PolicyConfig, ConfigError> {
        if p.name.trim().is_empty() {
            return Err(self.invalid(format!("{key}.name"), "must not be empty"));
        }
        self.check_policy_scope(key, &p, targets)?;
        if p.requesters.is_empty() {
            return Err(self.invalid(
                format!("{key}.requesters"),
                "name at least one group that may request",
            ));
        }
        let max_duration = self.span(&format!("{key}.max_duration"), &p.max_duration)?;
        let auto_approve = p
            .auto_approve
            .map(|a| self.auto_approve(key, a, max_duration, &p.max_duration))
            .transpose()?;
        if p.approvals == 0 {
            return Err(self.invalid(
                format!("{key}.approvals"),
                "must be at least 1 (use auto_approve for requests that need no approver)",
            ));
        }
        if p.approvers.is_empty() {
            return Err(self.invalid(
                format!("{key}.approvers"),
                "name at least one group that may approve",
            ));
        }
        Ok(PolicyConfig {
            max_duration,
            name: p.name,
            targets: p.targets,
            levels: p.levels,
            requesters: p.requesters,
            approvals: p.approvals,
            approvers: p.approvers,
            auto_approve,
        })
    }

    /// The policy names at least one target and one level, each target
    /// exists, and each level exists on at least one of those targets.
    fn check_policy_scope(
        &self,
        key: &str,
        p: &RawPolicy,
        targets: &[TargetConfig],
    ) -> Result<(), ConfigError> {
        if p.targets.is_empty() {
            return Err(self.invalid(
                format!("{key}.targets"),
                "name at least one target (or \"*\" for all)",
            ));
        }
        for t in &p.targets {
            if t != "*" && !targets.iter().any(|x| &x.name == t) {
                return Err(self.invalid(
                    format!("{key}.targets"),
                    format!("no target is named `{t}`"),
                ));
            }
        }
        if p.levels.is_empty() {
            return Err(self.invalid(
                format!("{key}.levels"),
                "name at least one level (or \"*\" for all)",
            ));
        }
        let covered = |t: &TargetConfig| p.targets.iter().any(|x| x == "*" || *x == t.name);
        for l in &p.levels {
            if l != "*"
                && !targets
                    .iter()
                    .any(|t| covered(t) && t.levels.contains_key(l))
            {
                return Err(self.invalid(
                    format!("{key}.levels"),
                    format!("none of the policy's targets has a level named `{l}`"),
                ));
            }
        }
        Ok(())
    }

    /// `auto_approve` names its groups and stays within the policy's own
    /// `max_duration` (`policy_max`, written as `policy_max_text`).
    fn auto_approve(
        &self,
        key: &str,
        a: RawAutoApprove,
        policy_max: Duration,
        policy_max_text: &str,
    ) -> Result<AutoApprove, ConfigError> {
        let akey = format!("{key}.auto_approve");
        if a.groups.is_empty() {
            return Err(self.invalid(
                format!("{akey}.groups"),
                "name at least one group whose requests are approved at once",
            ));
        }
        let max_duration = self.span(&format!("{akey}.max_duration"), &a.max_duration)?;
        if max_duration > policy_max {
            return Err(self.invalid(
                format!("{akey}.max_duration"),
                format!(
                    "`{}` is longer than the policy's max_duration `{policy_max_text}`",
                    a.max_duration
                ),
            ));
        }
        Ok(AutoApprove {
            groups: a.groups,
            max_duration,
        })
    }

    /// A policy duration: required, at least 1s (requests are whole
    /// seconds), at most [`LONGEST_SPAN`] (so no deadline overflows the clock).
    fn span(&self, key: &str, text: &str) -> Result<Duration, ConfigError> {
        let d = self.duration(key, Some(text), Duration::ZERO)?;
        if d < Duration::from_secs(1) || d > LONGEST_SPAN {
            return Err(self.invalid(key, "must be between 1s and 365 days"));
        }
        Ok(d)
    }
}
