//! `[audit]`: where the audit log is written and how often it is fsynced.

use std::path::Path;
use std::time::Duration;

use super::Validator;
use crate::config::raw::RawAudit;
use crate::config::{AuditConfig, ConfigError, FsyncPolicy, StoreConfig, StoreKind};

impl Validator<'_> {
    pub(super) fn audit(
        &self,
        raw: RawAudit,
        data_dir: &Path,
        store: &StoreConfig,
    ) -> Result<AuditConfig, ConfigError> {
        // Each proxy of a fleet keeps its own chain, named after it.
        let default_name = match store.kind {
            StoreKind::File => "audit.log".to_owned(),
            StoreKind::Postgres(_) => format!("audit-{}.log", store.proxy_name),
        };
        let fsync = match raw.fsync.as_deref() {
            None => FsyncPolicy::Interval(Duration::from_millis(100)),
            Some("always") => FsyncPolicy::Always,
            Some(v) => FsyncPolicy::Interval(
                self.duration("audit.fsync", Some(v), Duration::ZERO)
                    .map_err(|_| {
                        self.invalid(
                            "audit.fsync",
                            format!("`{v}` must be \"always\" or an interval like \"100ms\""),
                        )
                    })?,
            ),
        };
        Ok(AuditConfig {
            path: raw
                .path
                .map(|p| self.resolve(&p))
                .unwrap_or_else(|| data_dir.join(default_name)),
            fsync,
        })
    }
}
