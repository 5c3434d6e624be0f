//! The few messages jitgate reads or writes itself: the client's SSLRequest
//! and HandshakeResponse, the server's greeting, the login's switches, and
//! the first bytes of OK, ERR and EOF. Every reader checks every length.

use bytes::{BufMut, BytesMut};

use super::{PacketError, caps, status};

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
