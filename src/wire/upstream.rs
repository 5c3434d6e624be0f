//! Reaching a target, whatever its protocol: the TCP connection, TLS with
//! the right server name, the connect timeout, and the one error type every
//! upstream login reports. The protocols' own logins (`pg/upstream.rs`,
//! `mysql/upstream.rs`) speak their messages over what this opens.
//!
//! No error here carries a secret: a level's password is read at connect
//! time and never put in a message.

use std::future::Future;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::{LevelConfig, TargetConfig};
use crate::wire::stream::Stream;

/// Why jitgate could not log in upstream (the client is told this, and the
/// `session_refused` record keeps it).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach target {target} at {address}: {source}")]
    Connect {
        target: String,
        address: String,
        source: std::io::Error,
    },
    #[error("target {target} at {address} did not answer within {secs} s")]
    Timeout {
        target: String,
        address: String,
        secs: u64,
    },
    #[error("target {0} does not accept TLS, but its config requires it")]
    NoTls(String),
    #[error("TLS to target {target} failed: {detail}")]
    Tls { target: String, detail: String },
    /// The server answered the login with an error; `code` is its own
    /// (a SQLSTATE, or a MySQL error number).
    #[error("target {target} refused the login of level {level} ({code}: {message})")]
    Refused {
        target: String,
        level: String,
        code: String,
        message: String,
    },
    #[error("the password of level {level} on target {target} is not available: {detail}")]
    NoPassword {
        target: String,
        level: String,
        detail: String,
    },
    #[error(
        "target {target} asked for an authentication method jitgate does not support ({detail})"
    )]
    UnsupportedAuth { target: String, detail: String },
    #[error(
        "target {target} wants full caching_sha2_password authentication for level {level}, which needs TLS to the target (set tls = \"require\" or \"verify-full\" on it), or make the account use mysql_native_password"
    )]
    FullAuthNeedsTls { target: String, level: String },
    #[error("target {target} does not support {what}, which this client needs")]
    Capability { target: String, what: String },
    #[error("target {target} broke the protocol during login: {detail}")]
    Protocol { target: String, detail: String },
}

impl UpstreamError {
    /// The server refused with this code.
    pub fn is_refused_with(&self, wanted: &str) -> bool {
        matches!(self, UpstreamError::Refused { code, .. } if code == wanted)
    }
}

/// Run `login` within the target's `connect_timeout`.
pub async fn within_timeout<T>(
    target: &TargetConfig,
    login: impl Future<Output = Result<T, UpstreamError>>,
) -> Result<T, UpstreamError> {
    let timeout = target.connect_timeout;
    tokio::time::timeout(timeout, login)
        .await
        .map_err(|_| UpstreamError::Timeout {
            target: target.name.clone(),
            address: target.address.clone(),
            secs: timeout.as_secs(),
        })?
}

/// A TCP connection to the target, without Nagle's delay.
pub async fn open_tcp(target: &TargetConfig) -> Result<TcpStream, UpstreamError> {
    let tcp = TcpStream::connect(&target.address)
        .await
        .map_err(|source| UpstreamError::Connect {
            target: target.name.clone(),
            address: target.address.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// The TLS client for the target's `tls` mode; `None` when it is disabled.
pub fn tls_connector(target: &TargetConfig) -> Result<Option<TlsConnector>, UpstreamError> {
    crate::tls::connector(&target.tls).map_err(|e| UpstreamError::Tls {
        target: target.name.clone(),
        detail: e.to_string(),
    })
}

/// TLS over `tcp`, once the protocol has asked the server for it; the
/// certificate is checked against `tls_server_name`, or the address's host.
pub async fn start_tls(
    connector: TlsConnector,
    target: &TargetConfig,
    tcp: TcpStream,
) -> Result<Stream, UpstreamError> {
    let host = target.tls_server_name.clone().unwrap_or_else(|| {
        target
            .address
            .rsplit_once(':')
            .map_or(&*target.address, |(h, _)| h)
            .to_owned()
    });
    let name = crate::tls::server_name(host.trim_matches(['[', ']'])).ok_or_else(|| {
        UpstreamError::Tls {
            target: target.name.clone(),
            detail: format!("`{host}` is not a valid TLS server name; set tls_server_name"),
        }
    })?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| UpstreamError::Tls {
            target: target.name.clone(),
            detail: e.to_string(),
        })?;
    Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))))
}

/// The level's upstream password, read now from its env var or file
/// (`None` when the level has none configured).
pub fn level_password(
    target: &TargetConfig,
    level_name: &str,
    level: &LevelConfig,
) -> Result<Option<String>, UpstreamError> {
    level
        .password
        .read()
        .map_err(|e| UpstreamError::NoPassword {
            target: target.name.clone(),
            level: level_name.to_owned(),
            detail: e.to_string(),
        })
}
