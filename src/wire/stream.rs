//! A byte stream that is either plain TCP or TLS over TCP, on either side.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Write all of `bytes`, then flush. Through TLS, a write can return with
/// the encrypted records still queued in rustls (the socket was full), and
/// nothing sends them until the next write or flush: a relay that then
/// waits for the peer's next message would wait for ever, the peer for the
/// rest of this one. A flush of plain TCP does nothing.
pub async fn send<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The remote address of the TCP connection underneath.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        let tcp = match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        };
        tcp.peer_addr().ok()
    }

    /// Write `last` and close the sending side (through TLS: after a
    /// close_notify), the way a session ends.
    ///
    /// Over plain TCP the bytes go with `MSG_MORE`, so the FIN that the
    /// shutdown adds travels in the same segment: one transmit, and one
    /// wake-up of the peer, instead of two. When a grant with a thousand
    /// sessions ends, those transmits are most of what jitgate does before
    /// every client knows. If the socket cannot take the bytes at once, the
    /// rest is written the ordinary way (which sends everything).
    pub async fn finish(&mut self, last: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => {
                let mut rest = last;
                if !rest.is_empty() {
                    let sent = tcp.try_io(Interest::WRITABLE, || {
                        socket2::SockRef::from(&*tcp)
                            .send_with_flags(rest, libc::MSG_MORE | libc::MSG_NOSIGNAL)
                    });
                    match sent {
                        Ok(n) => rest = &rest[n.min(rest.len())..],
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                if !rest.is_empty() {
                    tcp.write_all(rest).await?;
                }
                tcp.shutdown().await
            }
            Stream::Tls(tls) => {
                send(tls.as_mut(), last).await?;
                tls.shutdown().await
            }
        }
    }

    /// The local port of the TCP connection underneath.
    pub fn local_port(&self) -> Option<u16> {
        let tcp = match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        };
        tcp.local_addr().ok().map(|a| a.port())
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    async fn pair() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(listener.accept(), TcpStream::connect(addr));
        (Stream::Plain(ours.unwrap().0), theirs.unwrap())
    }

    async fn read_to_end_within(peer: &mut TcpStream, limit: Duration) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(limit, peer.read_to_end(&mut got))
            .await
            .expect("the peer saw its end of file in time")
            .unwrap();
        got
    }

    #[tokio::test]
    async fn finish_delivers_the_last_bytes_then_end_of_file() {
        let (mut ours, mut peer) = pair().await;
        // Writable readiness known to tokio, so the MSG_MORE path is taken
        // (a fresh socket's is not, and would take the ordinary write).
        if let Stream::Plain(tcp) = &ours {
            tcp.writable().await.unwrap();
        }
        ours.finish(b"last words").await.unwrap();
        // Sent with MSG_MORE, the bytes must not wait for more: the FIN
        // takes them along at once.
        let got = read_to_end_within(&mut peer, Duration::from_secs(1)).await;
        assert_eq!(got, b"last words");
    }

    #[tokio::test]
    async fn finish_with_nothing_to_say_just_closes() {
        let (mut ours, mut peer) = pair().await;
        ours.finish(b"").await.unwrap();
        assert!(
            read_to_end_within(&mut peer, Duration::from_secs(1))
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn finish_writes_everything_when_the_socket_is_full() {
        let (mut ours, mut peer) = pair().await;
        // More than the socket buffers hold: the MSG_MORE send takes part,
        // the ordinary write the rest, while the peer reads.
        let big: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got
        });
        ours.finish(&big).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the peer got everything")
            .unwrap();
        assert!(got == big, "{} bytes arrived of {}", got.len(), big.len());
    }
}
