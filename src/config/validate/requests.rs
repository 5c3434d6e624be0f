//! `[requests]` and `[[webhooks]]`: how long a request waits for a
//! decision, how much one person may ask at once, and where each event is
//! announced.

use std::time::Duration;

use super::{LONGEST_SPAN, Validator};
use crate::config::raw::{RawRequests, RawWebhook};
use crate::config::{ConfigError, RequestsConfig, WebhookConfig};

impl Validator<'_> {
    pub(super) fn requests(&self, raw: RawRequests) -> Result<RequestsConfig, ConfigError> {
        let requests = RequestsConfig {
            pending_timeout: self.duration(
                "requests.pending_timeout",
                raw.pending_timeout.as_deref(),
                Duration::from_secs(3600),
            )?,
            max_reason_chars: raw.max_reason_chars.unwrap_or(1000),
            max_pending_per_identity: raw.max_pending_per_identity.unwrap_or(10),
        };
        if requests.max_reason_chars == 0 || requests.max_pending_per_identity == 0 {
            return Err(self.invalid(
                "requests",
                "max_reason_chars and max_pending_per_identity must be at least 1",
            ));
        }
        if requests.pending_timeout.is_zero() || requests.pending_timeout > LONGEST_SPAN {
            return Err(self.invalid(
                "requests.pending_timeout",
                "must be more than 0s and at most 365 days",
            ));
        }
        Ok(requests)
    }

    pub(super) fn webhooks(&self, raw: Vec<RawWebhook>) -> Result<Vec<WebhookConfig>, ConfigError> {
        let mut webhooks = Vec::new();
        for (i, w) in raw.into_iter().enumerate() {
            let key = format!("webhooks[{i}]");
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(
                    self.invalid(format!("{key}.url"), "must be an http:// or https:// URL")
                );
            }
            webhooks.push(WebhookConfig {
                url: w.url,
                timeout: self.duration(
                    &format!("{key}.timeout"),
                    w.timeout.as_deref(),
                    Duration::from_secs(2),
                )?,
                retries: w.retries.unwrap_or(3),
            });
        }
        Ok(webhooks)
    }
}
