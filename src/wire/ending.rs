//! The end of a session, whatever its protocol: who is told what, in which
//! order, and what is stopped upstream.
//!
//! When the proxy ends a session (the grant ended, an operator or the
//! owner killed it, the audit log failed) the client is told why while the
//! statement it was running is stopped on the server; when a grant ends,
//! every client of the grant is told before any of its upstream work is
//! stopped (see `SessionInfo::grant_clients_told`), and the delay from the
//! grant's end is observed in `jitgate_grant_end_lag_seconds`. A protocol
//! brings its bytes and its way of stopping work ([`SessionEnding`]).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::{STOP_UPSTREAM_WITHIN, SessionEnd, TELL_CLIENTS_FIRST_FOR};
use crate::access::Lease;
use crate::metrics::METRICS;
use crate::session::SessionInfo;
use crate::wire::stream::Stream;

/// How long the last words to a client may take to be written.
const TELL_CLIENT_WITHIN: Duration = Duration::from_secs(1);

/// What one protocol does at a session's end.
pub(crate) trait SessionEnding {
    /// The error that tells the client the proxy ended its session
    /// (`told`, from [`SessionEnd::told_to_user`], and what to do next);
    /// empty when a message to the client was cut off mid-write.
    fn farewell(&self, told: &str, hint: Option<&str>) -> Bytes;

    /// The error that tells the client the target closed the connection;
    /// empty when a message to the client was cut off mid-write.
    fn upstream_lost(&self) -> Bytes;

    /// A grant ended: called before the grant's other clients are waited for.
    fn grant_ending(&mut self) {}

    /// Write the closing records of the statements still running.
    fn record_unfinished(&mut self, end: &SessionEnd);

    /// Stop what the server is still running for this session, if the
    /// end calls for it; bounded by [`STOP_UPSTREAM_WITHIN`] per attempt.
    async fn stop_running(&mut self, end: &SessionEnd);

    /// End the upstream connection the protocol's way.
    async fn close_upstream(&mut self);
}

/// Carry out `end` towards the client (`client`) and the upstream.
pub(crate) async fn end_session(
    end: &SessionEnd,
    info: &SessionInfo,
    lease: &Lease,
    client: &mut Stream,
    mut ending: impl SessionEnding,
) {
    match end {
        SessionEnd::GrantEnded(_)
        | SessionEnd::Killed
        | SessionEnd::KilledByOwner(_)
        | SessionEnd::AuditFailed
        | SessionEnd::StoreLost
        | SessionEnd::CredentialEnded(_)
        | SessionEnd::AccessRemoved(_) => {
            let told = end.told_to_user(&lease.grant).unwrap_or_default();
            let farewell = ending.farewell(&told, end.hint_to_user());
            let tell_client = async {
                let _ = tokio::time::timeout(TELL_CLIENT_WITHIN, client.finish(&farewell)).await;
                info.client_told();
            };
            let end_upstream = async {
                if let SessionEnd::GrantEnded(_) = end {
                    ending.grant_ending();
                    info.grant_clients_told(TELL_CLIENTS_FIRST_FOR).await;
                }
                ending.record_unfinished(end);
                ending.stop_running(end).await;
                ending.close_upstream().await;
            };
            tokio::join!(tell_client, end_upstream);
            if let SessionEnd::GrantEnded(reason) = end {
                let lag = SystemTime::now()
                    .duration_since(lease.ended_at(*reason))
                    .unwrap_or_default();
                METRICS.grant_end_lag_seconds.observe(lag.as_secs_f64());
            }
        }
        SessionEnd::ClientClosed | SessionEnd::ClientError(_) => {
            // The client is gone: nothing holds up the grant's other sessions.
            info.client_told();
            ending.record_unfinished(end);
            ending.stop_running(end).await;
            ending.close_upstream().await;
            let _ = tokio::time::timeout(TELL_CLIENT_WITHIN, client.shutdown()).await;
        }
        SessionEnd::UpstreamClosed | SessionEnd::UpstreamError(_) => {
            ending.record_unfinished(end);
            let lost = ending.upstream_lost();
            let _ = tokio::time::timeout(TELL_CLIENT_WITHIN, client.finish(&lost)).await;
            info.client_told();
        }
    }
}

/// Run one attempt to stop upstream work within [`STOP_UPSTREAM_WITHIN`];
/// `None` if it did not finish in time.
pub(crate) async fn within_stop_limit<T>(
    attempt: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::time::timeout(STOP_UPSTREAM_WITHIN, attempt)
        .await
        .ok()
}
