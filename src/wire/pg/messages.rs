//! The backend messages jitgate writes itself (errors, authentication,
//! keys, ready-for-query), encoded with pgwire's message types (errors
//! directly, byte for byte the same). Everything
//! the server sends is forwarded as the original bytes instead.

use bytes::{BufMut, Bytes, BytesMut};
use pgwire::messages::Message;
use pgwire::messages::response::{ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, SecretKey,
};

/// SQLSTATEs jitgate answers with.
pub mod sqlstate {
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const READ_ONLY_TRANSACTION: &str = "25006";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const IO_ERROR: &str = "58030";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
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
/// Encoded straight into one buffer: when a grant ends, every session
/// builds one of these before its client can be told.
pub fn error(severity: Severity, code: &str, message: &str, hint: Option<&str>) -> Bytes {
    let severity = severity.as_str();
    let fields = [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ]
    .into_iter()
    .chain(hint.map(|h| (b'H', h)));
    // Tag, length, each field as its code and a C string, the final NUL.
    let body_len = 4 + fields.clone().map(|(_, v)| 2 + v.len()).sum::<usize>() + 1;
    let mut buf = BytesMut::with_capacity(1 + body_len);
    buf.put_u8(b'E');
    buf.put_u32(u32::try_from(body_len).unwrap_or(u32::MAX));
    for (code, value) in fields {
        buf.put_u8(code);
        if value.contains('\0') {
            // A NUL would end the field early; the length counted it, so
            // it becomes a space rather than disappearing.
            buf.extend(value.bytes().map(|b| if b == 0 { b' ' } else { b }));
        } else {
            buf.put_slice(value.as_bytes());
        }
        buf.put_u8(0);
    }
    buf.put_u8(0);
    buf.freeze()
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
    use pgwire::messages::response::ErrorResponse;

    #[test]
    fn error_fields_round_trip() {
        let e = error(Severity::Fatal, "28000", "no grant", Some("ask"));
        assert_eq!(e[0], b'E');
        assert_eq!(error_code(&e[5..]), Some("28000"));
        assert_eq!(error_message(&e[5..]), Some("no grant"));
    }

    #[test]
    fn error_bytes_are_what_pgwire_encodes() {
        for hint in [None, Some("request a new grant")] {
            let ours = error(Severity::Fatal, "57P01", "terminating connection", hint);
            let mut fields = vec![
                (b'S', "FATAL".to_owned()),
                (b'V', "FATAL".to_owned()),
                (b'C', "57P01".to_owned()),
                (b'M', "terminating connection".to_owned()),
            ];
            if let Some(h) = hint {
                fields.push((b'H', h.to_owned()));
            }
            assert_eq!(ours, encode(&ErrorResponse::new(fields)));
        }
    }

    #[test]
    fn a_nul_in_an_error_field_does_not_cut_the_message() {
        let e = error(Severity::Error, "42000", "a\0b", None);
        let len = u32::from_be_bytes([e[1], e[2], e[3], e[4]]) as usize;
        assert_eq!(len + 1, e.len(), "the length counts every byte");
        assert_eq!(error_message(&e[5..]), Some("a b"));
    }

    #[test]
    fn truncated_error_body_reads_as_nothing() {
        assert_eq!(error_code(b"C2800"), None);
        assert_eq!(error_code(b""), None);
    }
}
