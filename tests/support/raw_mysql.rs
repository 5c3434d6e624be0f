//! MySQL protocol packets built and read by hand — a 3-byte little-endian
//! length, a sequence id, the payload — for tests of what no well-behaved
//! client sends, and of what a client learns before it logs in.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::wait::within;

/// `payload` as one packet with sequence id `seq`.
pub fn mysql_packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut p = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    p.extend_from_slice(payload);
    p
}

/// The next packet from `s` as (sequence id, payload); `None` at EOF or on
/// a read error. Panics if none has come within `limit`.
pub async fn read_mysql_packet<S: AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> Option<(u8, Vec<u8>)> {
    within(limit, "a MySQL packet", async {
        let mut h = [0u8; 4];
        s.read_exact(&mut h).await.ok()?;
        let len = h[0] as usize | (h[1] as usize) << 8 | (h[2] as usize) << 16;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.ok()?;
        Some((h[3], payload))
    })
    .await
}
