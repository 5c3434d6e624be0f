//! MySQL packet framing and the few packets jitgate reads or writes itself.
//!
//! A packet is a 3-byte little-endian payload length, a 1-byte sequence id
//! and the payload. A payload of exactly 0xFFFFFF bytes means "more follows":
//! a logical message of 16 MiB or more is a chain of such packets ended by a
//! shorter one. Lengths are checked against a cap *before* memory is reserved
//! for them, and nothing here panics on any input: the fuzz target
//! `fuzz_targets/mysql_packet.rs` feeds these decoders arbitrary bytes.
//!
//! Only what the proxy needs is decoded: the client's SSLRequest and
//! HandshakeResponse, the server's greeting, and the first bytes of OK, ERR
//! and EOF packets. Everything else is forwarded as the original bytes.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Payload length that means "the message continues in the next packet".
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;
pub const HEADER: usize = 4;

pub mod caps {
    //! Capability flags (the subset jitgate names).
    pub const LONG_PASSWORD: u32 = 0x0000_0001;
    pub const FOUND_ROWS: u32 = 0x0000_0002;
    pub const LONG_FLAG: u32 = 0x0000_0004;
    pub const CONNECT_WITH_DB: u32 = 0x0000_0008;
    pub const IGNORE_SPACE: u32 = 0x0000_0100;
    pub const PROTOCOL_41: u32 = 0x0000_0200;
    pub const INTERACTIVE: u32 = 0x0000_0400;
    pub const SSL: u32 = 0x0000_0800;
    pub const IGNORE_SIGPIPE: u32 = 0x0000_1000;
    pub const TRANSACTIONS: u32 = 0x0000_2000;
    pub const SECURE_CONNECTION: u32 = 0x0000_8000;
    pub const MULTI_STATEMENTS: u32 = 0x0001_0000;
    pub const MULTI_RESULTS: u32 = 0x0002_0000;
    pub const PS_MULTI_RESULTS: u32 = 0x0004_0000;
    pub const PLUGIN_AUTH: u32 = 0x0008_0000;
    pub const CONNECT_ATTRS: u32 = 0x0010_0000;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x0020_0000;

    /// What jitgate offers clients (plus SSL when it has a certificate).
    /// Deliberately absent: COMPRESS (the relay frames plain packets),
    /// LOCAL_FILES (no file leaves a developer's machine through the proxy),
    /// DEPRECATE_EOF and SESSION_TRACK (the relay reads classic EOF/OK
    /// packets), and MariaDB's extended capabilities (LONG_PASSWORD is set,
    /// so clients treat jitgate as a MySQL server and send none).
    pub const OFFERED: u32 = LONG_PASSWORD
        | FOUND_ROWS
        | LONG_FLAG
        | CONNECT_WITH_DB
        | IGNORE_SPACE
        | PROTOCOL_41
        | INTERACTIVE
        | IGNORE_SIGPIPE
        | TRANSACTIONS
        | SECURE_CONNECTION
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS
        | PLUGIN_AUTH
        | CONNECT_ATTRS
        | PLUGIN_AUTH_LENENC_CLIENT_DATA;

    /// Flags that change what later packets look like or mean: the client's
    /// choice of these is passed to the upstream unchanged, so both legs of a
    /// session agree on them.
    pub const RELAYED: u32 = FOUND_ROWS
        | LONG_FLAG
        | IGNORE_SPACE
        | INTERACTIVE
        | TRANSACTIONS
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS;
}

pub mod status {
    pub const AUTOCOMMIT: u16 = 0x0002;
    pub const MORE_RESULTS_EXISTS: u16 = 0x0008;
    pub const CURSOR_EXISTS: u16 = 0x0040;
}

pub mod command {
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const STATISTICS: u8 = 0x09;
    pub const PING: u8 = 0x0e;
    pub const CHANGE_USER: u8 = 0x11;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1a;
    pub const SET_OPTION: u8 = 0x1b;
    pub const STMT_FETCH: u8 = 0x1c;
    pub const RESET_CONNECTION: u8 = 0x1f;

    /// A command's protocol name, for audit records and errors.
    pub fn name(command: u8) -> &'static str {
        match command {
            0x00 => "COM_SLEEP",
            QUIT => "COM_QUIT",
            INIT_DB => "COM_INIT_DB",
            QUERY => "COM_QUERY",
            FIELD_LIST => "COM_FIELD_LIST",
            0x05 => "COM_CREATE_DB",
            0x06 => "COM_DROP_DB",
            0x07 => "COM_REFRESH",
            0x08 => "COM_SHUTDOWN",
            STATISTICS => "COM_STATISTICS",
            0x0a => "COM_PROCESS_INFO",
            0x0b => "COM_CONNECT",
            0x0c => "COM_PROCESS_KILL",
            0x0d => "COM_DEBUG",
            PING => "COM_PING",
            0x0f => "COM_TIME",
            0x10 => "COM_DELAYED_INSERT",
            CHANGE_USER => "COM_CHANGE_USER",
            0x12 => "COM_BINLOG_DUMP",
            0x13 => "COM_TABLE_DUMP",
            0x14 => "COM_CONNECT_OUT",
            0x15 => "COM_REGISTER_SLAVE",
            STMT_PREPARE => "COM_STMT_PREPARE",
            STMT_EXECUTE => "COM_STMT_EXECUTE",
            STMT_SEND_LONG_DATA => "COM_STMT_SEND_LONG_DATA",
            STMT_CLOSE => "COM_STMT_CLOSE",
            STMT_RESET => "COM_STMT_RESET",
            SET_OPTION => "COM_SET_OPTION",
            STMT_FETCH => "COM_STMT_FETCH",
            0x1d => "COM_DAEMON",
            0x1e => "COM_BINLOG_DUMP_GTID",
            RESET_CONNECTION => "COM_RESET_CONNECTION",
            0xfa => "COM_STMT_BULK_EXECUTE",
            _ => "an unknown command",
        }
    }
}

/// Error codes and SQLSTATEs jitgate answers with.
pub mod code {
    pub const CON_COUNT: (u16, &str) = (1040, "08004");
    pub const DB_ACCESS_DENIED: (u16, &str) = (1044, "42000");
    pub const ACCESS_DENIED: (u16, &str) = (1045, "28000");
    pub const UNKNOWN_COM: (u16, &str) = (1047, "08S01");
    pub const BAD_DB: (u16, &str) = (1049, "42000");
    pub const HANDSHAKE: (u16, &str) = (1043, "08S01");
    pub const NET_PACKET_TOO_LARGE: (u16, &str) = (1153, "08S01");
    pub const UNKNOWN_THREAD: (u16, &str) = (1094, "HY000");
    pub const UNKNOWN_ERROR: (u16, &str) = (1105, "HY000");
    pub const NOT_SUPPORTED_YET: (u16, &str) = (1235, "42000");
    pub const QUERY_INTERRUPTED: (u16, &str) = (1317, "70100");
    pub const OPTION_PREVENTS_STATEMENT: (u16, &str) = (1290, "HY000");
    pub const NOT_SUPPORTED_AUTH_MODE: (u16, &str) = (1251, "08004");
    pub const CONNECTION_KILLED: (u16, &str) = (1927, "70100");
    pub const SECURE_TRANSPORT_REQUIRED: (u16, &str) = (3159, "HY000");
    pub const CONN_HOST_ERROR: (u16, &str) = (2003, "HY000");
    pub const SERVER_LOST: (u16, &str) = (2013, "HY000");
}

#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection in the middle of a packet")]
    Truncated,
    #[error("message of {len} bytes or more is larger than the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error(
        "the client does not speak the MySQL 4.1+ protocol (CLIENT_PROTOCOL_41 is not set); use a current client"
    )]
    NoProtocol41,
    #[error("unexpected packet sequence number {got} (expected {want})")]
    Sequence { got: u8, want: u8 },
}

/// One physical packet: the original bytes, header included.
#[derive(Debug, Clone)]
pub struct Packet {
    pub bytes: Bytes,
}

impl Packet {
    pub fn seq(&self) -> u8 {
        self.bytes[3]
    }

    pub fn payload(&self) -> &[u8] {
        &self.bytes[HEADER..]
    }

    /// A full-size packet: the message continues in the next one.
    pub fn continues(&self) -> bool {
        self.bytes.len() - HEADER == MAX_PAYLOAD
    }
}

/// A whole client message (one or more packets), with its payload joined.
#[derive(Debug, Clone)]
pub struct Message {
    /// The original packets, headers included, to forward unchanged.
    pub raw: Bytes,
    /// The joined payload, to inspect.
    pub payload: Bytes,
    /// Sequence id of the last packet; an answer uses the next one.
    pub last_seq: u8,
}

fn payload_len(header: &[u8]) -> usize {
    header[0] as usize | (header[1] as usize) << 8 | (header[2] as usize) << 16
}

/// Reads packets from a stream into one buffer. `fill` is cancel-safe (it
/// can sit in a `select!`); `try_packet` and `try_message` only look at what
/// was already read.
pub struct PacketReader<R> {
    inner: R,
    buf: BytesMut,
    max_message_bytes: usize,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    pub fn new(inner: R, max_message_bytes: usize) -> Self {
        Self::from_parts(inner, BytesMut::new(), max_message_bytes)
    }

    pub fn from_parts(inner: R, buf: BytesMut, max_message_bytes: usize) -> Self {
        PacketReader {
            inner,
            buf,
            max_message_bytes,
        }
    }

    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn set_max(&mut self, max_message_bytes: usize) {
        self.max_message_bytes = max_message_bytes;
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Read more bytes. `Ok(false)` on EOF; an EOF inside a packet is `Truncated`.
    pub async fn fill(&mut self) -> Result<bool, PacketError> {
        // Reserve for the packet being read, but never past what its
        // (already checked) header announced, and in modest steps.
        let want = match self.buf.get(..HEADER) {
            Some(h) => (HEADER + payload_len(h)).saturating_sub(self.buf.len()),
            None => HEADER,
        };
        self.buf.reserve(want.clamp(HEADER, 64 * 1024));
        let n = self.inner.read_buf(&mut self.buf).await?;
        if n == 0 {
            return if self.buf.is_empty() {
                Ok(false)
            } else {
                Err(PacketError::Truncated)
            };
        }
        Ok(true)
    }

    /// The next whole physical packet, if it has been read. Used for server
    /// responses, which are streamed packet by packet.
    pub fn try_packet(&mut self) -> Result<Option<Packet>, PacketError> {
        let Some(h) = self.buf.get(..HEADER) else {
            return Ok(None);
        };
        let len = payload_len(h);
        if len > self.max_message_bytes {
            return Err(PacketError::TooLarge {
                len,
                max: self.max_message_bytes,
            });
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        Ok(Some(Packet {
            bytes: self.buf.split_to(HEADER + len).freeze(),
        }))
    }

    /// The next whole client message (a chain of packets), if it has been
    /// read. Its total size is checked against the cap as each header arrives.
    pub fn try_message(&mut self) -> Result<Option<Message>, PacketError> {
        match scan_message(&self.buf, self.max_message_bytes)? {
            None => Ok(None),
            Some(end) => {
                let raw = self.buf.split_to(end).freeze();
                Ok(Some(join_message(raw)))
            }
        }
    }

    /// Is a whole message (or a message that breaks the cap) waiting in the buffer?
    pub fn has_message(&self) -> bool {
        !matches!(scan_message(&self.buf, self.max_message_bytes), Ok(None))
    }

    /// After a refused oversize message: read and drop what the peer is
    /// still sending (no memory is kept), until it pauses or `limit` passes,
    /// so it is reading when the error arrives rather than hitting a reset.
    pub async fn discard_incoming(&mut self, limit: std::time::Duration) {
        self.buf.clear();
        let mut scratch = vec![0u8; 64 * 1024];
        let pause = std::time::Duration::from_millis(200);
        let _ = tokio::time::timeout(limit, async {
            while let Ok(Ok(n)) = tokio::time::timeout(pause, self.inner.read(&mut scratch)).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }

    /// Read one physical packet (login phase).
    pub async fn read_packet(&mut self) -> Result<Option<Packet>, PacketError> {
        loop {
            if let Some(p) = self.try_packet()? {
                return Ok(Some(p));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }
}

/// If `buf` starts with a whole message, its length in bytes (headers
/// included). Errors as soon as the announced total passes `max`.
pub fn scan_message(buf: &[u8], max: usize) -> Result<Option<usize>, PacketError> {
    let mut at = 0usize;
    let mut total = 0usize;
    loop {
        let Some(h) = buf.get(at..at + HEADER) else {
            return Ok(None);
        };
        let len = payload_len(h);
        total += len;
        if total > max {
            return Err(PacketError::TooLarge { len: total, max });
        }
        at += HEADER + len;
        if buf.len() < at {
            return Ok(None);
        }
        if len < MAX_PAYLOAD {
            return Ok(Some(at));
        }
    }
}

/// Split a scanned message into its payload (copied only if it spans packets).
fn join_message(raw: Bytes) -> Message {
    let mut parts = Vec::new();
    let mut at = 0;
    let mut last_seq = 0;
    while at + HEADER <= raw.len() {
        let len = payload_len(&raw[at..]);
        last_seq = raw[at + 3];
        let end = (at + HEADER + len).min(raw.len());
        parts.push(raw.slice(at + HEADER..end));
        at = end;
    }
    let payload = match parts.len() {
        1 => parts.pop().unwrap_or_default(),
        _ => {
            let mut joined = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
            for p in &parts {
                joined.extend_from_slice(p);
            }
            joined.freeze()
        }
    };
    Message {
        raw,
        payload,
        last_seq,
    }
}

/// Frame `payload` as packets starting at sequence id `seq` (splitting at 16 MiB).
pub fn frame(seq: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + HEADER);
    frame_into(&mut out, seq, payload);
    out.freeze()
}

pub fn frame_into(out: &mut BytesMut, mut seq: u8, payload: &[u8]) {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PAYLOAD);
        out.put_uint_le(n as u64, 3);
        out.put_u8(seq);
        out.put_slice(&rest[..n]);
        rest = &rest[n..];
        seq = seq.wrapping_add(1);
        if n < MAX_PAYLOAD {
            break;
        }
    }
}

// ---- small readers ---------------------------------------------------------

/// A cursor over a payload that never panics: every read checks the length.
pub struct Cursor<'a>(pub &'a [u8]);

impl<'a> Cursor<'a> {
    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    pub fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// Bytes up to a NUL (consumed, not returned); `None` without one.
    pub fn cstr(&mut self) -> Option<&'a [u8]> {
        let end = self.0.iter().position(|&b| b == 0)?;
        let s = &self.0[..end];
        self.0 = &self.0[end + 1..];
        Some(s)
    }

    /// Bytes up to a NUL, or the rest if there is none (some clients omit the last NUL).
    pub fn cstr_or_rest(&mut self) -> &'a [u8] {
        match self.cstr() {
            Some(s) => s,
            None => std::mem::take(&mut self.0),
        }
    }

    pub fn lenenc_int(&mut self) -> Option<u64> {
        match self.u8()? {
            n @ 0..=0xfa => Some(n as u64),
            0xfc => self
                .take(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as u64),
            0xfd => self
                .take(3)
                .map(|b| b[0] as u64 | (b[1] as u64) << 8 | (b[2] as u64) << 16),
            0xfe => self.take(8).map(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                u64::from_le_bytes(a)
            }),
            _ => None,
        }
    }

    pub fn lenenc_bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.lenenc_int()?;
        self.take(usize::try_from(n).ok()?)
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

fn put_lenenc_int(out: &mut BytesMut, n: u64) {
    match n {
        0..=0xfa => out.put_u8(n as u8),
        0xfb..=0xffff => {
            out.put_u8(0xfc);
            out.put_u16_le(n as u16);
        }
        0x1_0000..=0xff_ffff => {
            out.put_u8(0xfd);
            out.put_uint_le(n, 3);
        }
        _ => {
            out.put_u8(0xfe);
            out.put_u64_le(n);
        }
    }
}

// ---- the client's first packets ---------------------------------------------

/// What a client sends after the greeting.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientHello {
    /// Switch to TLS, then send the HandshakeResponse.
    SslRequest {
        capabilities: u32,
    },
    Response(HandshakeResponse),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// The client's flags ANDed with the server's.
    pub capabilities: u32,
    pub max_packet_size: u32,
    pub collation: u8,
    pub user: String,
    pub auth_response: Vec<u8>,
    /// The database named at login: for jitgate, the target.
    pub database: Option<String>,
    pub auth_plugin: Option<String>,
}

/// Decode the client's answer to a greeting that offered `server_caps`.
pub fn parse_client_hello(payload: &[u8], server_caps: u32) -> Result<ClientHello, PacketError> {
    let mut c = Cursor(payload);
    let client_caps = c
        .u32()
        .ok_or(PacketError::Malformed("handshake response"))?;
    let capabilities = client_caps & server_caps;
    if capabilities & caps::PROTOCOL_41 == 0 {
        return Err(PacketError::NoProtocol41);
    }
    let max_packet_size = c
        .u32()
        .ok_or(PacketError::Malformed("handshake response"))?;
    let collation = c.u8().ok_or(PacketError::Malformed("handshake response"))?;
    c.take(23)
        .ok_or(PacketError::Malformed("handshake response"))?;
    if c.0.is_empty() && client_caps & caps::SSL != 0 {
        return Ok(ClientHello::SslRequest { capabilities });
    }
    let user = c
        .cstr()
        .ok_or(PacketError::Malformed("handshake response (user name)"))?;
    let auth_response = if capabilities & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        c.lenenc_bytes()
    } else if capabilities & caps::SECURE_CONNECTION != 0 {
        c.u8().and_then(|n| c.take(n as usize))
    } else {
        c.cstr()
    }
    .ok_or(PacketError::Malformed("handshake response (auth data)"))?;
    let database = if capabilities & caps::CONNECT_WITH_DB != 0 && !c.0.is_empty() {
        Some(c.cstr_or_rest())
    } else {
        None
    };
    let auth_plugin = if capabilities & caps::PLUGIN_AUTH != 0 && !c.0.is_empty() {
        Some(c.cstr_or_rest())
    } else {
        None
    };
    // Connection attributes (CONNECT_ATTRS) are not used.
    let text = |b: &[u8], what| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| PacketError::Malformed(what))
    };
    Ok(ClientHello::Response(HandshakeResponse {
        capabilities,
        max_packet_size,
        collation,
        user: text(user, "user name (not UTF-8)")?,
        auth_response: auth_response.to_vec(),
        database: database
            .map(|d| text(d, "database name (not UTF-8)"))
            .transpose()?
            .filter(|d| !d.is_empty()),
        auth_plugin: auth_plugin
            .map(|p| text(p, "auth plugin name (not UTF-8)"))
            .transpose()?,
    }))
}

// ---- the server's greeting ----------------------------------------------------

/// The upstream server's Initial Handshake (protocol 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub server_version: String,
    pub connection_id: u32,
    pub nonce: Vec<u8>,
    pub capabilities: u32,
    pub collation: u8,
    pub status: u16,
    pub auth_plugin: Option<String>,
}

pub fn parse_greeting(payload: &[u8]) -> Result<Greeting, PacketError> {
    const WHAT: &str = "server greeting";
    let bad = || PacketError::Malformed(WHAT);
    let mut c = Cursor(payload);
    if c.u8().ok_or_else(bad)? != 10 {
        return Err(PacketError::Malformed("server greeting (not protocol 10)"));
    }
    let server_version = String::from_utf8_lossy(c.cstr().ok_or_else(bad)?).into_owned();
    let connection_id = c.u32().ok_or_else(bad)?;
    let mut nonce = c.take(8).ok_or_else(bad)?.to_vec();
    c.u8().ok_or_else(bad)?;
    let caps_low = c.u16().ok_or_else(bad)? as u32;
    let collation = c.u8().unwrap_or(0);
    let status = c.u16().unwrap_or(0);
    let caps_high = c.u16().unwrap_or(0) as u32;
    let capabilities = caps_low | caps_high << 16;
    let data_len = c.u8().unwrap_or(0) as usize;
    c.take(10);
    if capabilities & caps::SECURE_CONNECTION != 0 {
        let n = data_len.saturating_sub(8).max(13);
        let part2 = c.take(n).or_else(|| Some(c.rest())).unwrap_or_default();
        // The second part ends with a NUL that is not part of the nonce.
        let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
        nonce.extend_from_slice(part2);
    }
    let auth_plugin = (capabilities & caps::PLUGIN_AUTH != 0 && !c.0.is_empty())
        .then(|| String::from_utf8_lossy(c.cstr_or_rest()).into_owned());
    Ok(Greeting {
        server_version,
        connection_id,
        nonce,
        capabilities,
        collation,
        status,
        auth_plugin,
    })
}

// ---- packets jitgate writes -------------------------------------------------------

/// The greeting jitgate sends its clients.
pub fn greeting(
    server_version: &str,
    connection_id: u32,
    nonce: &[u8; 20],
    capabilities: u32,
    collation: u8,
    auth_plugin: &str,
) -> BytesMut {
    let mut p = BytesMut::with_capacity(128);
    p.put_u8(10);
    p.put_slice(server_version.as_bytes());
    p.put_u8(0);
    p.put_u32_le(connection_id);
    p.put_slice(&nonce[..8]);
    p.put_u8(0);
    p.put_u16_le(capabilities as u16);
    p.put_u8(collation);
    p.put_u16_le(status::AUTOCOMMIT);
    p.put_u16_le((capabilities >> 16) as u16);
    p.put_u8(21);
    p.put_slice(&[0; 10]);
    p.put_slice(&nonce[8..]);
    p.put_u8(0);
    p.put_slice(auth_plugin.as_bytes());
    p.put_u8(0);
    p
}

pub fn ok(affected_rows: u64, status_flags: u16) -> BytesMut {
    let mut p = BytesMut::with_capacity(16);
    p.put_u8(0x00);
    put_lenenc_int(&mut p, affected_rows);
    put_lenenc_int(&mut p, 0);
    p.put_u16_le(status_flags);
    p.put_u16_le(0);
    p
}

pub fn err((code, sqlstate): (u16, &str), message: &str) -> BytesMut {
    let mut p = BytesMut::with_capacity(16 + message.len());
    p.put_u8(0xff);
    p.put_u16_le(code);
    p.put_u8(b'#');
    let mut state = [b'H', b'Y', b'0', b'0', b'0'];
    for (d, s) in state.iter_mut().zip(sqlstate.bytes()) {
        *d = s;
    }
    p.put_slice(&state);
    p.put_slice(message.as_bytes());
    p
}

pub fn auth_switch(plugin: &str, data: &[u8]) -> BytesMut {
    let mut p = BytesMut::with_capacity(8 + plugin.len() + data.len());
    p.put_u8(0xfe);
    p.put_slice(plugin.as_bytes());
    p.put_u8(0);
    p.put_slice(data);
    p
}

pub fn auth_more_data(data: &[u8]) -> BytesMut {
    let mut p = BytesMut::with_capacity(1 + data.len());
    p.put_u8(0x01);
    p.put_slice(data);
    p
}

pub fn ssl_request(capabilities: u32, max_packet_size: u32, collation: u8) -> BytesMut {
    let mut p = BytesMut::with_capacity(32);
    p.put_u32_le(capabilities);
    p.put_u32_le(max_packet_size);
    p.put_u8(collation);
    p.put_slice(&[0; 23]);
    p
}

#[allow(clippy::too_many_arguments)]
pub fn handshake_response(
    capabilities: u32,
    max_packet_size: u32,
    collation: u8,
    user: &str,
    auth_response: &[u8],
    database: &str,
    auth_plugin: &str,
) -> BytesMut {
    let mut p = ssl_request(capabilities, max_packet_size, collation);
    p.put_slice(user.as_bytes());
    p.put_u8(0);
    if capabilities & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        put_lenenc_int(&mut p, auth_response.len() as u64);
    } else {
        p.put_u8(auth_response.len() as u8);
    }
    p.put_slice(auth_response);
    if capabilities & caps::CONNECT_WITH_DB != 0 {
        p.put_slice(database.as_bytes());
        p.put_u8(0);
    }
    if capabilities & caps::PLUGIN_AUTH != 0 {
        p.put_slice(auth_plugin.as_bytes());
        p.put_u8(0);
    }
    p
}

// ---- reading server answers -----------------------------------------------------

/// An OK packet's affected rows and status flags.
pub fn parse_ok(payload: &[u8]) -> Option<(u64, u16)> {
    let mut c = Cursor(payload);
    if !matches!(c.u8()?, 0x00 | 0xfe) {
        return None;
    }
    let affected = c.lenenc_int()?;
    c.lenenc_int()?;
    let status = c.u16().unwrap_or(0);
    Some((affected, status))
}

/// An ERR packet's code, SQLSTATE and message.
pub fn parse_err(payload: &[u8]) -> Option<(u16, String, String)> {
    let mut c = Cursor(payload);
    if c.u8()? != 0xff {
        return None;
    }
    let code = c.u16()?;
    let mut state = String::new();
    if c.0.first() == Some(&b'#') {
        c.u8();
        state = String::from_utf8_lossy(c.take(5).unwrap_or_default()).into_owned();
    }
    Some((code, state, String::from_utf8_lossy(c.rest()).into_owned()))
}

/// The status flags of a classic EOF packet (0xFE, shorter than 9 bytes).
pub fn parse_eof(payload: &[u8]) -> Option<u16> {
    if payload.first() != Some(&0xfe) || payload.len() >= 9 {
        return None;
    }
    Some(
        payload
            .get(3..5)
            .map_or(0, |s| u16::from_le_bytes([s[0], s[1]])),
    )
}

/// Read one packet from `r`, expecting sequence id `want` (login phase).
pub async fn read_expected<R: AsyncRead + Unpin>(
    r: &mut PacketReader<R>,
    want: u8,
) -> Result<Packet, PacketError> {
    let p = r.read_packet().await?.ok_or(PacketError::Truncated)?;
    if p.seq() != want {
        return Err(PacketError::Sequence { got: p.seq(), want });
    }
    if p.continues() {
        return Err(PacketError::Malformed("oversized login packet"));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(caps: u32, user: &str, auth: &[u8], db: &str, plugin: &str) -> Vec<u8> {
        handshake_response(caps, 1 << 24, 45, user, auth, db, plugin).to_vec()
    }

    #[test]
    fn handshake_response_round_trips() {
        let caps = caps::OFFERED;
        let p = response(
            caps,
            "alice",
            &[1; 32],
            "demo-mysql",
            "caching_sha2_password",
        );
        let ClientHello::Response(r) = parse_client_hello(&p, caps::OFFERED).unwrap() else {
            panic!("not a response");
        };
        assert_eq!(r.user, "alice");
        assert_eq!(r.auth_response, vec![1; 32]);
        assert_eq!(r.database.as_deref(), Some("demo-mysql"));
        assert_eq!(r.auth_plugin.as_deref(), Some("caching_sha2_password"));
    }

    #[test]
    fn ssl_request_is_recognised() {
        let p = ssl_request(caps::OFFERED | caps::SSL, 1 << 24, 45);
        assert_eq!(
            parse_client_hello(&p, caps::OFFERED | caps::SSL).unwrap(),
            ClientHello::SslRequest {
                capabilities: caps::OFFERED | caps::SSL
            }
        );
    }

    #[test]
    fn client_without_protocol_41_is_refused() {
        let p = response(caps::SECURE_CONNECTION, "a", b"", "", "");
        assert!(matches!(
            parse_client_hello(&p, caps::OFFERED),
            Err(PacketError::NoProtocol41)
        ));
    }

    #[test]
    fn truncated_responses_are_errors() {
        let p = response(caps::OFFERED, "alice", &[1; 32], "demo", "x");
        for n in 0..40 {
            let _ = parse_client_hello(&p[..n], caps::OFFERED);
        }
        assert!(parse_client_hello(&p[..33], caps::OFFERED).is_err());
    }

    #[test]
    fn greeting_round_trips() {
        let nonce = [7u8; 20];
        let g = greeting(
            "8.0.0",
            42,
            &nonce,
            caps::OFFERED,
            45,
            "caching_sha2_password",
        );
        let parsed = parse_greeting(&g).unwrap();
        assert_eq!(parsed.connection_id, 42);
        assert_eq!(parsed.nonce, nonce.to_vec());
        assert_eq!(parsed.capabilities, caps::OFFERED);
        assert_eq!(parsed.auth_plugin.as_deref(), Some("caching_sha2_password"));
    }

    #[test]
    fn messages_span_full_packets_and_respect_the_cap() {
        let payload = vec![3u8; MAX_PAYLOAD + 10];
        let raw = frame(0, &payload);
        assert_eq!(scan_message(&raw, 32 << 20).unwrap(), Some(raw.len()));
        assert_eq!(scan_message(&raw[..raw.len() - 1], 32 << 20).unwrap(), None);
        assert!(matches!(
            scan_message(&raw[..8], 1 << 20),
            Err(PacketError::TooLarge { .. })
        ));
        let m = join_message(raw);
        assert_eq!(m.payload.len(), payload.len());
        assert_eq!(m.last_seq, 1);
    }

    #[test]
    fn ok_err_eof_are_read() {
        assert_eq!(parse_ok(&ok(3, 2)), Some((3, 2)));
        let e = err(code::ACCESS_DENIED, "no");
        assert_eq!(
            parse_err(&e),
            Some((1045, "28000".to_owned(), "no".to_owned()))
        );
        assert_eq!(parse_eof(&[0xfe, 0, 0, 8, 0]), Some(8));
        assert_eq!(parse_eof(&[0xfe; 9]), None);
    }
}
