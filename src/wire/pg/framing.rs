//! PostgreSQL message framing: a 1-byte tag and a 4-byte length, or (for the
//! first packet of a connection) just a length.
//!
//! Lengths are checked against a cap *before* any memory is reserved for the
//! body, and nothing here panics on any input: the fuzz target
//! `fuzz_targets/pg_frontend.rs` feeds it arbitrary bytes.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// PostgreSQL's own limit for the startup packet.
pub const MAX_STARTUP_PACKET_BYTES: usize = 10_000;
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection in the middle of a message")]
    Truncated,
    #[error("message of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("invalid message length {0}")]
    BadLength(u32),
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// The first packet of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: u32,
        key: Vec<u8>,
    },
    Startup {
        major: u16,
        minor: u16,
        params: Vec<(String, String)>,
    },
}

/// Read one startup-phase packet. `Ok(None)` on a clean close before any byte.
pub async fn read_startup<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<StartupPacket>, FrameError> {
    let mut len_buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len_buf[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len_buf);
    if len < 8 {
        return Err(FrameError::BadLength(len));
    }
    if len as usize > MAX_STARTUP_PACKET_BYTES {
        return Err(FrameError::TooLarge {
            len: len as usize,
            max: MAX_STARTUP_PACKET_BYTES,
        });
    }
    let mut body = vec![0u8; len as usize - 4];
    r.read_exact(&mut body).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    parse_startup_body(&body).map(Some)
}

/// Parse the body of a startup packet (everything after the length).
pub fn parse_startup_body(body: &[u8]) -> Result<StartupPacket, FrameError> {
    let mut b = body;
    if b.len() < 4 {
        return Err(FrameError::Malformed("startup"));
    }
    let code = b.get_u32();
    match code {
        SSL_REQUEST_CODE if b.is_empty() => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE if b.is_empty() => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            // Protocol 3.2 allows keys of up to 256 bytes.
            if b.len() < 8 || b.len() > 4 + 256 {
                return Err(FrameError::Malformed("CancelRequest"));
            }
            let pid = b.get_u32();
            Ok(StartupPacket::Cancel {
                pid,
                key: b.to_vec(),
            })
        }
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => Err(FrameError::Malformed("SSLRequest")),
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            let mut params = Vec::new();
            loop {
                let key = take_cstr(&mut b).ok_or(FrameError::Malformed("startup"))?;
                if key.is_empty() {
                    break;
                }
                let value = take_cstr(&mut b).ok_or(FrameError::Malformed("startup"))?;
                params.push((key.to_owned(), value.to_owned()));
            }
            if !b.is_empty() {
                return Err(FrameError::Malformed("startup"));
            }
            Ok(StartupPacket::Startup {
                major,
                minor,
                params,
            })
        }
    }
}

/// Take a NUL-terminated UTF-8 string off the front of `b`.
pub fn take_cstr<'a>(b: &mut &'a [u8]) -> Option<&'a str> {
    let end = b.iter().position(|&c| c == 0)?;
    let s = std::str::from_utf8(&b[..end]).ok()?;
    *b = &b[end + 1..];
    Some(s)
}

/// A NUL-terminated string as bytes (for texts we pass on: no UTF-8 check).
pub fn take_cstr_bytes<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let end = b.iter().position(|&c| c == 0)?;
    let s = &b[..end];
    *b = &b[end + 1..];
    Some(s)
}

/// One tagged message, with its header: `bytes[0]` is the tag, `bytes[1..5]` the length.
#[derive(Debug, Clone)]
pub struct Frame {
    pub bytes: Bytes,
}

impl Frame {
    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }

    pub fn body(&self) -> &[u8] {
        &self.bytes[5..]
    }
}

/// Reads tagged messages from a byte stream into a reusable buffer.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_message_bytes: usize,
}

const READ_CHUNK: usize = 16 * 1024;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_message_bytes: usize) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max_message_bytes,
        }
    }

    /// The next complete frame already buffered, if any.
    pub fn try_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        match frame_len(&self.buf, self.max_message_bytes)? {
            Some(total) if self.buf.len() >= total => Ok(Some(Frame {
                bytes: self.buf.split_to(total).freeze(),
            })),
            _ => Ok(None),
        }
    }

    /// Read more bytes from the stream. Cancel-safe. `Ok(false)` on a clean
    /// end of stream between messages.
    pub async fn fill(&mut self) -> Result<bool, FrameError> {
        // Reserve for the whole pending message (its length was already
        // checked against the cap) or a chunk, whichever is larger.
        let want = match frame_len(&self.buf, self.max_message_bytes)? {
            Some(total) => total.saturating_sub(self.buf.len()).max(READ_CHUNK),
            None => READ_CHUNK,
        };
        self.buf.reserve(want);
        let n = self.inner.read_buf(&mut self.buf).await?;
        if n == 0 {
            return if self.buf.is_empty() {
                Ok(false)
            } else {
                Err(FrameError::Truncated)
            };
        }
        Ok(true)
    }

    /// Wait for the next frame. `Ok(None)` on a clean end of stream.
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(f) = self.try_frame()? {
                return Ok(Some(f));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }

    /// Continue reading `inner` with bytes already read into `buf`.
    pub fn from_parts(inner: R, buf: BytesMut, max_message_bytes: usize) -> Self {
        FrameReader {
            inner,
            buf,
            max_message_bytes,
        }
    }

    /// The same reader with another size cap (auth messages are capped lower).
    pub fn with_max(mut self, max_message_bytes: usize) -> Self {
        self.max_message_bytes = max_message_bytes;
        self
    }

    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Bytes already read but not yet taken as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Total size of the frame at the front of `buf` (tag + length + body), once
/// its header is in; checks the cap first.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::BadLength(len));
    }
    let total = len as usize + 1;
    if total > max {
        return Err(FrameError::TooLarge { len: total, max });
    }
    Ok(Some(total))
}

/// Split a buffer of whole frames (e.g. a fuzz input) into frames; stops at
/// the first incomplete one. Used by the fuzz target and tests.
pub fn split_frames(mut buf: &[u8], max: usize) -> Result<Vec<&[u8]>, FrameError> {
    let mut out = Vec::new();
    while let Some(total) = frame_len(buf, max)? {
        if buf.len() < total {
            break;
        }
        out.push(&buf[..total]);
        buf = &buf[total..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_length_is_refused_before_reading_the_body() {
        let buf = [b'Q', 0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            frame_len(&buf, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn length_below_four_is_invalid() {
        assert!(matches!(
            frame_len(&[b'Q', 0, 0, 0, 3], 1 << 20),
            Err(FrameError::BadLength(3))
        ));
    }

    #[test]
    fn startup_packet_parses_parameters() {
        let mut body = 196608u32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0alice\0database\0demo\0\0");
        let p = parse_startup_body(&body).unwrap();
        assert_eq!(
            p,
            StartupPacket::Startup {
                major: 3,
                minor: 0,
                params: vec![
                    ("user".into(), "alice".into()),
                    ("database".into(), "demo".into())
                ]
            }
        );
    }

    #[test]
    fn unterminated_startup_is_malformed() {
        let mut body = 196608u32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0alice");
        assert!(parse_startup_body(&body).is_err());
    }

    #[tokio::test]
    async fn frames_split_across_reads_are_reassembled() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut r = FrameReader::new(b, 1 << 20);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            a.write_all(&[b'Q', 0, 0, 0, 8, b's', b'e']).await.unwrap();
            a.write_all(&[b'l', b'\0', b'S', 0, 0, 0, 4]).await.unwrap();
        });
        let f = r.next().await.unwrap().unwrap();
        assert_eq!(f.tag(), b'Q');
        assert_eq!(f.body(), b"sel\0");
        assert_eq!(r.next().await.unwrap().unwrap().tag(), b'S');
        assert!(r.next().await.unwrap().is_none());
    }
}
