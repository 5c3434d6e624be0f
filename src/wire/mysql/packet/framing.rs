//! Packets and whole messages off a byte stream: the header, the sequence
//! id, chains of maximum-size packets, the size cap checked before memory
//! is reserved, and framing jitgate's own payloads.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{HEADER, MAX_PAYLOAD};

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
pub(super) fn join_message(raw: Bytes) -> Message {
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
