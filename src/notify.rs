//! Webhooks: tell people when access is requested, decided, granted or ended.
//!
//! The access model announces each [`AccessEvent`] on a broadcast channel and
//! never waits for anyone to read it. [`spawn`] reads that channel and POSTs
//! each event as JSON (its fields, a link to the approver page's view of it
//! when `admin.url` is known, and a Slack-compatible `text`) to every
//! configured URL. Each URL has its own delivery task and its own bounded
//! queue, so a webhook that is slow or down delays only its own deliveries:
//! never another webhook, never an approval, never the proxy. A delivery is
//! tried `1 + retries` times with a timeout each and exponential backoff
//! between tries (200 ms, 400 ms, 800 ms, …). What cannot be delivered is
//! logged and dropped; the audit log, written by the model before the event
//! is announced, is the record that must not be lost, and it is not this.
//!
//! Webhook URLs are often secrets themselves (a Slack URL is its own
//! credential), so logs name only their scheme, host and port.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{StatusCode, Url};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, watch};

use crate::access::AccessEvent;
use crate::config::WebhookConfig;

/// Events waiting for one webhook before new ones are dropped for it.
const QUEUE_PER_WEBHOOK: usize = 256;
/// Wait before the first retry; doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two tries, however many retries are configured.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Start delivering `events` to the webhooks `webhooks` holds, in the
/// background; a reload sends a new list, which takes over from the next
/// event (what the old ones already queued is still delivered).
pub fn spawn(
    webhooks: watch::Receiver<Vec<WebhookConfig>>,
    events: broadcast::Receiver<AccessEvent>,
) {
    let client = match reqwest::Client::builder()
        .user_agent(concat!("jitgate/", env!("CARGO_PKG_VERSION")))
        // A redirect could send the event somewhere the operator never configured.
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: cannot build the HTTP client; no webhook will be sent");
            return;
        }
    };
    tokio::spawn(fan_out(client, webhooks, events));
}

/// A queue and a delivering task per webhook of `webhooks`.
fn start_queues(
    client: &reqwest::Client,
    webhooks: &[WebhookConfig],
) -> Vec<(String, mpsc::Sender<Bytes>)> {
    let mut queues = Vec::new();
    for hook in webhooks {
        let Ok(url) = Url::parse(&hook.url) else {
            tracing::error!(
                "webhooks: a configured webhook URL does not parse as a URL; it will receive nothing"
            );
            continue;
        };
        let (queue, pending) = mpsc::channel(QUEUE_PER_WEBHOOK);
        let webhook = Webhook {
            label: label(&url),
            url,
            timeout: hook.timeout,
            retries: hook.retries,
        };
        queues.push((webhook.label.clone(), queue));
        tokio::spawn(webhook.deliver_all(client.clone(), pending));
    }
    queues
}

/// Read the model's events and hand each one to every webhook's queue.
async fn fan_out(
    client: reqwest::Client,
    mut webhooks: watch::Receiver<Vec<WebhookConfig>>,
    mut events: broadcast::Receiver<AccessEvent>,
) {
    let mut queues = start_queues(&client, &webhooks.borrow_and_update());
    // Until the reloads' side goes away (the tests' notifier has none).
    let mut reloadable = true;
    loop {
        let received = tokio::select! {
            changed = webhooks.changed(), if reloadable => {
                match changed {
                    Ok(()) => queues = start_queues(&client, &webhooks.borrow_and_update()),
                    Err(_) => reloadable = false,
                }
                continue;
            }
            received = events.recv() => received,
        };
        let event = match received {
            Ok(event) => event,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "webhooks: fell behind the access model; {missed} events were not sent"
                );
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let body = match serde_json::to_vec(&event) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                tracing::error!(event = event.event, error = %e, "webhooks: cannot encode the event");
                continue;
            }
        };
        for (label, queue) in &queues {
            if queue.try_send(body.clone()).is_err() {
                tracing::warn!(webhook = %label, event = event.event,
                    "webhooks: this webhook is too far behind; the event is dropped for it");
            }
        }
    }
}

struct Webhook {
    url: Url,
    /// What logs may say about `url`.
    label: String,
    timeout: Duration,
    retries: u32,
}

/// Why one try failed.
enum Failure {
    /// Worth another try: no connection, a timeout, 5xx, 408 or 429.
    Transient(String),
    /// The receiver refused the event itself; trying again will not help.
    Permanent(String),
}

impl Webhook {
    /// Deliver queued events one after the other, in the order they happened.
    async fn deliver_all(self, client: reqwest::Client, mut pending: mpsc::Receiver<Bytes>) {
        while let Some(body) = pending.recv().await {
            self.deliver(&client, body).await;
        }
    }

    async fn deliver(&self, client: &reqwest::Client, body: Bytes) {
        let mut attempt = 0;
        loop {
            let why = match self.try_once(client, body.clone()).await {
                Ok(()) => return,
                Err(Failure::Permanent(why)) => {
                    tracing::warn!(webhook = %self.label, "webhooks: event refused ({why}); not retrying");
                    return;
                }
                Err(Failure::Transient(why)) => why,
            };
            if attempt >= self.retries {
                tracing::warn!(webhook = %self.label, tries = attempt + 1,
                    "webhooks: giving up on an event ({why})");
                return;
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    async fn try_once(&self, client: &reqwest::Client, body: Bytes) -> Result<(), Failure> {
        let response = client
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| Failure::Transient(cause(e)))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            Err(Failure::Transient(format!("HTTP {status}")))
        } else {
            Err(Failure::Permanent(format!("HTTP {status}")))
        }
    }
}

/// What went wrong, without the URL reqwest puts in its own text: the
/// innermost cause ("Connection refused"), or that the timeout passed.
fn cause(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer within the timeout".to_owned();
    }
    let e = e.without_url();
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The wait after try number `attempt` (0-based) failed.
fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF)
}

/// `scheme://host[:port]`: the part of a webhook URL that is not a secret.
fn label(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
        (Some(host), None) => format!("{}://{host}", url.scheme()),
        _ => format!("{}://", url.scheme()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn backoff_doubles_from_200ms_and_is_capped() {
        let waits: Vec<_> = (0..4).map(backoff).collect();
        assert_eq!(
            waits,
            [200, 400, 800, 1600].map(Duration::from_millis).to_vec()
        );
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn logs_name_a_webhook_without_its_secret_path() {
        let url = Url::parse("https://hooks.slack.com/services/T000/B000/XXXXSECRET").unwrap();
        assert_eq!(label(&url), "https://hooks.slack.com");
        let url = Url::parse("http://127.0.0.1:9000/hook?token=abc").unwrap();
        assert_eq!(label(&url), "http://127.0.0.1:9000");
    }

    /// A listener that answers `statuses` in turn (200 after they run out)
    /// and counts the requests it saw.
    async fn flaky_receiver(statuses: Vec<u16>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let status = statuses.get(n).copied().unwrap_or(200);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        (url, seen)
    }

    fn webhook(url: &str, retries: u32) -> Webhook {
        let url = Url::parse(url).unwrap();
        Webhook {
            label: label(&url),
            url,
            timeout: Duration::from_secs(2),
            retries,
        }
    }

    #[tokio::test]
    async fn a_failing_webhook_is_retried_until_it_answers() {
        let (url, seen) = flaky_receiver(vec![500, 503]).await;
        let client = reqwest::Client::new();
        webhook(&url, 3)
            .deliver(&client, Bytes::from_static(b"{}"))
            .await;
        assert_eq!(seen.load(Ordering::SeqCst), 3, "two failures, then success");
    }

    #[tokio::test]
    async fn retries_stop_at_the_configured_count() {
        let (url, seen) = flaky_receiver(vec![500; 10]).await;
        let client = reqwest::Client::new();
        webhook(&url, 2)
            .deliver(&client, Bytes::from_static(b"{}"))
            .await;
        assert_eq!(seen.load(Ordering::SeqCst), 3, "one try and two retries");
    }

    #[tokio::test]
    async fn a_refused_event_is_not_retried() {
        let (url, seen) = flaky_receiver(vec![400, 400]).await;
        let client = reqwest::Client::new();
        webhook(&url, 3)
            .deliver(&client, Bytes::from_static(b"{}"))
            .await;
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }
}
