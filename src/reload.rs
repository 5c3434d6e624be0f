//! Reloading the config while jitgate runs: `SIGHUP`, or `jitgate reload`
//! (`POST /v1/reload`, admins only).
//!
//! The file is read and checked whole; a config that does not load is
//! refused as a whole and the one in force stays (the error is logged,
//! audited, counted in `jitgate_config_reloads_total{result="failed"}` and
//! returned to `jitgate reload`). One that loads replaces identities,
//! groups, targets and their levels, policies, request limits, webhooks and
//! the identity provider at once; sessions it still allows run on
//! untouched, and those whose config identity, target or level it removed
//! (or whose level it made read-only) end, told why. Listeners, TLS, the audit log, limits, the data directory
//! and the store are read at start only: a change to them is reported as
//! needing a restart and otherwise left alone.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Mutex;

use crate::audit::AuditEvent;
use crate::config::{Config, ConfigError};
use crate::identity::oidc::Provider;
use crate::metrics::METRICS;
use crate::server::Shared;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}; the config in force is unchanged")]
    Invalid(#[from] ConfigError),
    #[error(
        "identity {0} is in the new config, but the name belongs to a person who signed on through the identity provider; a name cannot be both: free it first (`jitgate logout --user {0} --free-name`) or name the identity otherwise. The config in force is unchanged"
    )]
    NameTaken(String),
    #[error("{0}; the config in force is unchanged")]
    Provider(String),
    #[error("the audit log cannot be written, so the config in force is unchanged")]
    AuditDown,
}

/// What a reload changed.
#[derive(Debug, Default, Serialize)]
pub struct ReloadReport {
    pub identities: Changes,
    pub targets: Changes,
    pub policies: Changes,
    /// Webhooks now configured.
    pub webhooks: usize,
    /// Sessions ended because their identity, target or level is gone.
    pub sessions_ended: usize,
    /// Tables whose changes wait for a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Names added, removed and changed in one table.
#[derive(Debug, Default, Serialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Changes {
    fn between<T: std::fmt::Debug>(old: &[T], new: &[T], name: impl Fn(&T) -> &str) -> Changes {
        let find = |list: &[T], n: &str| list.iter().position(|x| name(x) == n);
        let mut c = Changes::default();
        for x in new {
            match find(old, name(x)) {
                None => c.added.push(name(x).to_owned()),
                Some(i) if format!("{:?}", old[i]) != format!("{x:?}") => {
                    c.changed.push(name(x).to_owned())
                }
                Some(_) => {}
            }
        }
        c.removed = old
            .iter()
            .filter(|x| find(new, name(x)).is_none())
            .map(|x| name(x).to_owned())
            .collect();
        c
    }

    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl ReloadReport {
    /// One line for the log and the audit record.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (what, c) in [
            ("identities", &self.identities),
            ("targets", &self.targets),
            ("policies", &self.policies),
        ] {
            if !c.is_empty() {
                parts.push(format!(
                    "{what}: +{} -{} ~{}",
                    c.added.len(),
                    c.removed.len(),
                    c.changed.len()
                ));
            }
        }
        parts.push(format!("{} webhooks", self.webhooks));
        parts.push(format!("{} sessions ended", self.sessions_ended));
        if !self.needs_restart.is_empty() {
            parts.push(format!(
                "needs a restart: {}",
                self.needs_restart.join(", ")
            ));
        }
        parts.join("; ")
    }
}

/// Runs one reload at a time.
pub struct Reloader {
    shared: Arc<Shared>,
    one_at_a_time: Mutex<()>,
}

impl Reloader {
    pub fn new(shared: Arc<Shared>) -> Reloader {
        Reloader {
            shared,
            one_at_a_time: Mutex::new(()),
        }
    }

    /// Read the config file again and put it in force; `by` names who asked
    /// (`SIGHUP`, or an admin's name).
    pub async fn reload(&self, by: &str) -> Result<ReloadReport, ReloadError> {
        let _one = self.one_at_a_time.lock().await;
        let outcome = self.reload_once(by).await;
        let result = if outcome.is_ok() { "ok" } else { "failed" };
        METRICS.config_reload(result);
        match &outcome {
            Ok(report) => tracing::info!(by, "config reloaded: {}", report.summary()),
            Err(e) => {
                tracing::error!(by, error = %e, "config reload refused");
                let detail = e.to_string();
                let _ = self.shared.audit.record(&AuditEvent {
                    by: Some(by),
                    detail: Some(&detail),
                    ..AuditEvent::new("config_reload_failed")
                });
            }
        }
        outcome
    }

    async fn reload_once(&self, by: &str) -> Result<ReloadReport, ReloadError> {
        let shared = &self.shared;
        let old = shared.access.config();
        let path = old.source.clone();
        let new = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|_| ReloadError::Provider("reading the config failed".into()))??;
        if let Some(name) = new
            .identities
            .iter()
            .map(|i| i.name.as_str())
            .find(|n| shared.identities.has_credentials(n) || shared.identities.is_bound(n))
        {
            return Err(ReloadError::NameTaken(name.to_owned()));
        }
        let provider_changed = format!("{:?}", old.oidc) != format!("{:?}", new.oidc);
        let provider = match (&new.oidc, provider_changed) {
            (Some(oidc), true) => Some(Some(Arc::new(
                Provider::new(oidc).map_err(|e| ReloadError::Provider(e.to_string()))?,
            ))),
            (None, true) => Some(None),
            (_, false) => None,
        };
        let report = ReloadReport {
            identities: Changes::between(&old.identities, &new.identities, |i| &i.name),
            targets: Changes::between(&old.targets, &new.targets, |t| &t.name),
            policies: Changes::between(&old.policies, &new.policies, |p| &p.name),
            webhooks: new.webhooks.len(),
            sessions_ended: 0,
            needs_restart: needs_restart(&old, &new),
        };
        let summary = report.summary();
        // Audited before it takes effect: no reload goes unrecorded.
        shared
            .audit
            .record(&AuditEvent {
                by: Some(by),
                detail: Some(&summary),
                ..AuditEvent::new("config_reloaded")
            })
            .map_err(|_| ReloadError::AuditDown)?;
        // What is read at start only stays as it was until a restart.
        let mut new = new;
        new.data_dir = old.data_dir.clone();
        new.listen = old.listen.clone();
        new.tls = old.tls.clone();
        new.admin = old.admin.clone();
        new.audit = old.audit.clone();
        new.limits = old.limits.clone();
        new.store = old.store.clone();
        let new = Arc::new(new);
        shared.access.set_config(new.clone());
        shared.identities.replace_config(&new.identities);
        if let Some(provider) = provider {
            shared.provider.set(provider);
        }
        let _ = shared.webhooks.send(new.webhooks.clone());
        METRICS.add_known_targets(new.targets.iter().map(|t| t.name.as_str()));
        let issuer = |c: &Config| c.oidc.as_ref().map(|o| o.issuer.clone());
        let provider_switched = issuer(&old) != issuer(&new);
        shared.identities.set_issuer(issuer(&new));
        let sessions_ended = shared.sessions.end_removed(&old, &new, provider_switched);
        // A read level's account may have changed: check them all again.
        shared.read_accounts.forget();
        let checks = shared.clone();
        tokio::spawn(async move { checks.read_accounts.check_all(&new).await });
        Ok(ReloadReport {
            sessions_ended,
            ..report
        })
    }
}

/// The tables read at start only whose text changed.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let differ =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    if old.data_dir != new.data_dir {
        changed.push("data_dir");
    }
    if differ(&old.listen, &new.listen) {
        changed.push("listen");
    }
    if differ(&old.tls, &new.tls) {
        changed.push("tls");
    }
    if differ(&old.admin, &new.admin) {
        changed.push("admin");
    }
    if differ(&old.audit, &new.audit) {
        changed.push("audit");
    }
    if differ(&old.limits, &new.limits) {
        changed.push("limits");
    }
    if differ(&old.store, &new.store) {
        changed.push("store");
    }
    changed
}
