//! PostgreSQL protocol bytes built and read by hand: the packets a raw
//! client sends (startup, SSLRequest, CancelRequest, tagged messages) and
//! the messages it gets back, for tests of what no well-behaved client sends.

use bytes::BufMut;

pub const PROTOCOL_3_0: u32 = 196_608;
pub const PROTOCOL_3_2: u32 = 196_610;
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// A startup packet for protocol 3.0 with these parameters.
pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// An 8-byte request packet (SSLRequest, GSSENCRequest) with `code`.
pub fn request_packet(code: u32) -> Vec<u8> {
    let mut p = 8u32.to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p
}

pub fn cancel_packet(pid: u32, key: u32) -> Vec<u8> {
    let mut p = 16u32.to_be_bytes().to_vec();
    p.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    p.extend_from_slice(&pid.to_be_bytes());
    p.extend_from_slice(&key.to_be_bytes());
    p
}

/// A tagged frontend message: tag, length, body.
pub fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Append `s` and its NUL terminator (for message bodies built by hand).
pub fn put_cstr(buf: &mut Vec<u8>, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

/// One message from the server (or proxy).
#[derive(Debug, Clone)]
pub struct BackendMessage {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl BackendMessage {
    /// A field of an ErrorResponse / NoticeResponse (`b'C'` SQLSTATE, `b'M'` message…).
    pub fn field(&self, code: u8) -> Option<String> {
        if self.tag != b'E' && self.tag != b'N' {
            return None;
        }
        let mut rest = &self.body[..];
        while let Some((&c, tail)) = rest.split_first() {
            if c == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            if c == code {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }

    pub fn sqlstate(&self) -> Option<String> {
        self.field(b'C')
    }

    /// The authentication request code of an `R` message.
    pub fn auth_code(&self) -> Option<u32> {
        (self.tag == b'R' && self.body.len() >= 4)
            .then(|| u32::from_be_bytes(self.body[..4].try_into().unwrap()))
    }
}

impl std::fmt::Display for BackendMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tag {
            b'E' | b'N' => write!(
                f,
                "{} {} {}: {}",
                self.tag as char,
                self.field(b'S').unwrap_or_default(),
                self.sqlstate().unwrap_or_default(),
                self.field(b'M').unwrap_or_default()
            ),
            tag => write!(f, "{} ({} bytes)", tag as char, self.body.len()),
        }
    }
}
