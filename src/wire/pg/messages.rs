//! The backend messages jitgate writes itself (errors, authentication,
//! keys, ready-for-query), encoded with pgwire's message types. Everything
//! the server sends is forwarded as the original bytes instead.

use bytes::{Bytes, BytesMut};
use pgwire::messages::Message;
use pgwire::messages::response::{ErrorResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, SecretKey,
};

/// SQLSTATEs jitgate answers with.
pub mod sqlstate {
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    pub const READ_ONLY_TRANSACTION: &str = "25006";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const IO_ERROR: &str = "58030";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
}

#[derive(Debug, Clone, Copy)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

fn encode<M: Message>(m: &M) -> Bytes {
    let mut buf = BytesMut::new();
    // Encoding only fails for messages over pgwire's size limits, which the
    // short messages built here never reach.
    let _ = m.encode(&mut buf);
    buf.freeze()
}

/// An ErrorResponse: severity, SQLSTATE, message and an optional hint.
pub fn error(severity: Severity, code: &str, message: &str, hint: Option<&str>) -> Bytes {
    let mut fields = vec![
        (b'S', severity.as_str().to_owned()),
        (b'V', severity.as_str().to_owned()),
        (b'C', code.to_owned()),
        (b'M', message.to_owned()),
    ];
    if let Some(h) = hint {
        fields.push((b'H', h.to_owned()));
    }
    encode(&ErrorResponse::new(fields))
}

pub fn ready_for_query(status: u8) -> Bytes {
    let status = match status {
        b'T' => TransactionStatus::Transaction,
        b'E' => TransactionStatus::Error,
        _ => TransactionStatus::Idle,
    };
    encode(&ReadyForQuery::new(status))
}

pub fn auth_sasl(mechanism: &str) -> Bytes {
    encode(&Authentication::SASL(vec![mechanism.to_owned()]))
}

pub fn auth_sasl_continue(data: &str) -> Bytes {
    encode(&Authentication::SASLContinue(Bytes::copy_from_slice(
        data.as_bytes(),
    )))
}

pub fn auth_sasl_final(data: &str) -> Bytes {
    encode(&Authentication::SASLFinal(Bytes::copy_from_slice(
        data.as_bytes(),
    )))
}

pub fn auth_ok() -> Bytes {
    encode(&Authentication::Ok)
}

pub fn backend_key_data(pid: u32, key: u32) -> Bytes {
    encode(&BackendKeyData::new(pid as i32, SecretKey::I32(key as i32)))
}

/// Tell a client asking for protocol 3.x (x > 0) that we speak 3.0, and which
/// `_pq_.` options we did not recognise.
pub fn negotiate_protocol_version(unsupported: Vec<String>) -> Bytes {
    encode(&NegotiateProtocolVersion::new(0, unsupported))
}

/// Read the SQLSTATE (`C` field) of an ErrorResponse body.
pub fn error_code(body: &[u8]) -> Option<&str> {
    let mut b = body;
    while let Some((&field, rest)) = b.split_first() {
        if field == 0 {
            return None;
        }
        let end = rest.iter().position(|&c| c == 0)?;
        if field == b'C' {
            return std::str::from_utf8(&rest[..end]).ok();
        }
        b = &rest[end + 1..];
    }
    None
}

/// Read the `M` field (message) of an ErrorResponse body.
pub fn error_message(body: &[u8]) -> Option<&str> {
    let mut b = body;
    while let Some((&field, rest)) = b.split_first() {
        if field == 0 {
            return None;
        }
        let end = rest.iter().position(|&c| c == 0)?;
        if field == b'M' {
            return std::str::from_utf8(&rest[..end]).ok();
        }
        b = &rest[end + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_fields_round_trip() {
        let e = error(Severity::Fatal, "28000", "no grant", Some("ask"));
        assert_eq!(e[0], b'E');
        assert_eq!(error_code(&e[5..]), Some("28000"));
        assert_eq!(error_message(&e[5..]), Some("no grant"));
    }

    #[test]
    fn truncated_error_body_reads_as_nothing() {
        assert_eq!(error_code(b"C2800"), None);
        assert_eq!(error_code(b""), None);
    }
}
