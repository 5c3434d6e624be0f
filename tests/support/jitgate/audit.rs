//! The proxy's audit log as a test reads it: one JSON value per complete
//! line, and a bounded wait for the record a test expects (the writer
//! fsyncs in groups, so a record may trail its event).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::Jitgate;

impl Jitgate {
    /// The audit log's text.
    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(self.audit_path()).unwrap_or_default()
    }

    /// The audit log, one JSON value per complete line.
    pub fn audit_lines(&self) -> Vec<Value> {
        self.audit_text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait (up to 5 s: the writer fsyncs in groups) for an audit record
    /// matching `pred`.
    pub async fn wait_for_audit(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(v) = self.audit_lines().into_iter().find(|v| pred(v)) {
                return v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no audit record for {what} within 5 s; the audit log:\n{}\n--- jitgate log\n{}",
                    self.audit_text(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
