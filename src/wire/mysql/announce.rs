//! What the MySQL listener tells clients about the server in its greeting:
//! the version string, the default collation and the capabilities.
//!
//! Drivers choose features by these (a connector that sees MySQL 8 asks for
//! a collation MariaDB lacks, and uses MySQL-only syntax), so jitgate
//! announces its upstream's own. The greeting goes out before the client
//! names its target, so one listener announces one server: the first MySQL
//! target in the config (in order) whose greeting jitgate has seen, read at
//! start without logging in and refreshed at every upstream login to it.
//! `listen.mysql_server_version` pins the version string instead, for a
//! listener whose targets are of different kinds. Until any greeting has
//! been seen, jitgate announces a MySQL 8 of its own.

use std::sync::RwLock;

use super::packet::caps;
use super::upstream::{self, ServerFacts};
use crate::config::{Protocol, TargetConfig};

/// The version announced before any upstream greeting has been seen.
const FALLBACK_VERSION: &str = concat!("8.0.99-jitgate-", env!("CARGO_PKG_VERSION"));

/// utf8mb4_general_ci, which every MySQL and MariaDB has.
const FALLBACK_COLLATION: u8 = 45;

pub struct Announced {
    pinned_version: Option<String>,
    /// The MySQL targets in config order, with their greeting once seen.
    targets: RwLock<Vec<(String, Option<ServerFacts>)>>,
}

/// One greeting's worth of what to announce.
pub struct Announcement {
    pub version: String,
    pub collation: u8,
    /// The capabilities jitgate offers, less those it relays that the
    /// upstream lacks (a client asking for one could not be logged in).
    pub capabilities: u32,
}

impl Announced {
    pub fn new(pinned_version: Option<String>, targets: &[TargetConfig]) -> Announced {
        let targets = targets
            .iter()
            .filter(|t| t.protocol == Protocol::Mysql)
            .map(|t| (t.name.clone(), None))
            .collect();
        Announced {
            pinned_version,
            targets: RwLock::new(targets),
        }
    }

    /// What the next greeting says, for a listener that offers `offered`.
    pub fn announcement(&self, offered: u32) -> Announcement {
        let facts = self
            .targets
            .read()
            .ok()
            .and_then(|targets| targets.iter().find_map(|(_, facts)| facts.clone()));
        let (version, collation, capabilities) = match facts {
            Some(f) => (
                f.version,
                f.collation,
                offered & !(caps::RELAYED & !f.capabilities),
            ),
            None => (FALLBACK_VERSION.to_owned(), FALLBACK_COLLATION, offered),
        };
        Announcement {
            version: self.pinned_version.clone().unwrap_or(version),
            collation,
            capabilities,
        }
    }

    /// A greeting from `target`, at start or at an upstream login.
    pub fn learn(&self, target: &str, facts: &ServerFacts) {
        let Ok(mut targets) = self.targets.write() else {
            return;
        };
        if let Some((_, known)) = targets.iter_mut().find(|(name, _)| name == target)
            && known.as_ref() != Some(facts)
        {
            *known = Some(facts.clone());
        }
    }

    /// Read every MySQL target's greeting once (at start), without logging
    /// in. A target that does not answer is learned at its first login.
    pub async fn learn_all(&self, targets: &[TargetConfig]) {
        for target in targets.iter().filter(|t| t.protocol == Protocol::Mysql) {
            match upstream::greeting_facts(target).await {
                Ok(facts) => {
                    tracing::info!(target = %target.name, version = %facts.version,
                        "mysql target's greeting read");
                    self.learn(&target.name, &facts);
                }
                Err(e) => tracing::warn!(target = %target.name, error = %e,
                    "could not read the mysql target's greeting; announcing another version until a login reaches it"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(version: &str, capabilities: u32) -> ServerFacts {
        ServerFacts {
            version: version.to_owned(),
            collation: 8,
            capabilities,
        }
    }

    fn announced(pinned: Option<&str>) -> Announced {
        Announced {
            pinned_version: pinned.map(str::to_owned),
            targets: RwLock::new(vec![("a".to_owned(), None), ("b".to_owned(), None)]),
        }
    }

    #[test]
    fn the_first_target_seen_in_config_order_is_announced() {
        let a = announced(None);
        assert_eq!(a.announcement(caps::OFFERED).version, FALLBACK_VERSION);
        a.learn("b", &facts("8.0.36", u32::MAX));
        assert_eq!(a.announcement(caps::OFFERED).version, "8.0.36");
        a.learn("a", &facts("5.5.5-10.11.19-MariaDB", u32::MAX));
        let now = a.announcement(caps::OFFERED);
        assert_eq!(now.version, "5.5.5-10.11.19-MariaDB");
        assert_eq!(now.collation, 8);
        assert_eq!(now.capabilities, caps::OFFERED);
        a.learn("unknown", &facts("9.9.9", u32::MAX));
        assert_eq!(
            a.announcement(caps::OFFERED).version,
            "5.5.5-10.11.19-MariaDB"
        );
    }

    #[test]
    fn a_pin_wins_and_missing_capabilities_are_not_offered() {
        let a = announced(Some("10.11.0-MariaDB"));
        let lacking = caps::PS_MULTI_RESULTS;
        assert_ne!(caps::OFFERED & lacking, 0);
        a.learn("a", &facts("8.0.36", !lacking));
        let now = a.announcement(caps::OFFERED);
        assert_eq!(now.version, "10.11.0-MariaDB");
        assert_eq!(now.capabilities & lacking, 0);
    }
}
