//! A hand-driven PostgreSQL client connection — plain or TLS — for the
//! bytes no well-behaved client sends: it sends what the test wrote, reads
//! messages one at a time with a limit, logs in with SCRAM by hand, and
//! reports how the proxy hung up on it.

mod messages;

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tls::tls_client_config;
use super::wait::within;
pub use messages::*;

trait RawIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> RawIo for T {}

/// A hand-driven client connection, for bytes no well-behaved client sends.
pub struct RawConn {
    io: Box<dyn RawIo>,
    buf: BytesMut,
}

/// How a raw connection ended up after we misbehaved.
#[derive(Debug)]
pub struct Ending {
    /// Every message received before the connection closed.
    pub messages: Vec<BackendMessage>,
    /// Bytes that did not form a whole message (e.g. a lone 'N').
    pub trailing: Vec<u8>,
}

impl Ending {
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.messages.iter().map(|m| m.to_string()).collect();
        if !self.trailing.is_empty() {
            parts.push(format!("{} trailing bytes", self.trailing.len()));
        }
        if parts.is_empty() {
            "closed without a word".to_owned()
        } else {
            parts.join(", ")
        }
    }

    pub fn errors(&self) -> Vec<&BackendMessage> {
        self.messages.iter().filter(|m| m.tag == b'E').collect()
    }
}

impl RawConn {
    pub async fn plain(port: u16) -> RawConn {
        let tcp = within(
            Duration::from_secs(5),
            "TCP connect to jitgate",
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .expect("TCP connect to jitgate");
        RawConn {
            io: Box::new(tcp),
            buf: BytesMut::new(),
        }
    }

    /// SSLRequest, expect `S`, then a TLS handshake (any certificate).
    pub async fn tls(port: u16) -> RawConn {
        let mut tcp = within(
            Duration::from_secs(5),
            "TCP connect to jitgate",
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .expect("TCP connect to jitgate");
        tcp.write_all(&request_packet(SSL_REQUEST_CODE))
            .await
            .expect("send SSLRequest");
        let mut answer = [0u8; 1];
        within(
            Duration::from_secs(5),
            "answer to SSLRequest",
            tcp.read_exact(&mut answer),
        )
        .await
        .expect("read answer to SSLRequest");
        assert_eq!(
            answer[0], b'S',
            "jitgate refused TLS (answered {:?})",
            answer[0] as char
        );
        let name = ServerName::try_from("localhost").expect("server name");
        let tls = within(
            Duration::from_secs(5),
            "TLS handshake with jitgate",
            tokio_rustls::TlsConnector::from(tls_client_config()).connect(name, tcp),
        )
        .await
        .expect("TLS handshake with jitgate");
        RawConn {
            io: Box::new(tls),
            buf: BytesMut::new(),
        }
    }

    /// Send bytes; errors are returned (the proxy may already have hung up).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        within(Duration::from_secs(10), "a write to jitgate", async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        })
        .await
    }

    /// Half-close: the proxy reads EOF, we can still read its answer.
    pub async fn finish_writing(&mut self) {
        let _ = self.io.shutdown().await;
    }

    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = self.io.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Read one byte (the answer to SSLRequest / GSSENCRequest); `None` on EOF.
    pub async fn read_byte(&mut self, limit: Duration) -> io::Result<Option<u8>> {
        within(limit, "a one-byte answer", async {
            while self.buf.is_empty() {
                if self.fill().await? == 0 {
                    return Ok(None);
                }
            }
            Ok(Some(self.buf.get_u8()))
        })
        .await
    }

    /// The next message; `Ok(None)` on a clean EOF between messages.
    pub async fn next_message(&mut self, limit: Duration) -> io::Result<Option<BackendMessage>> {
        within(limit, "a message from jitgate", self.read_message()).await
    }

    async fn read_message(&mut self) -> io::Result<Option<BackendMessage>> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if !(4..=(64 << 20)).contains(&len) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("jitgate sent a message with length {len}"),
                    ));
                }
                if self.buf.len() > len {
                    let tag = self.buf.get_u8();
                    self.buf.advance(4);
                    let body = self.buf.split_to(len - 4).to_vec();
                    return Ok(Some(BackendMessage { tag, body }));
                }
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "EOF inside a message",
                    ))
                };
            }
        }
    }

    /// Read until the peer closes (or resets) the connection, at most `limit`.
    /// Panics, naming `case`, if it stays open: the proxy must not leave a bad
    /// client hanging.
    pub async fn until_closed(&mut self, limit: Duration, case: &str) -> Ending {
        let mut messages = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.read_message()).await {
                Err(_) => panic!(
                    "{case}: connection still open after {limit:?}; received so far: [{}]",
                    messages
                        .iter()
                        .map(|m: &BackendMessage| m.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Ok(Ok(Some(m))) => messages.push(m),
                Ok(Ok(None)) | Ok(Err(_)) => {
                    return Ending {
                        messages,
                        trailing: self.buf.to_vec(),
                    };
                }
            }
        }
    }

    /// Start up and log in with SCRAM-SHA-256; returns the messages after
    /// AuthenticationOk up to ReadyForQuery, or the ErrorResponse.
    pub async fn login(
        &mut self,
        user: &str,
        password: &str,
        dbname: &str,
    ) -> Result<Vec<BackendMessage>, BackendMessage> {
        self.send(&startup_packet(&[("user", user), ("database", dbname)]))
            .await
            .expect("send startup packet");
        self.authenticate(password).await
    }

    /// After a startup packet: answer the SCRAM-SHA-256 exchange (skipping a
    /// NegotiateProtocolVersion the caller has already read) and collect the
    /// messages after AuthenticationOk up to ReadyForQuery, or the ErrorResponse.
    pub async fn authenticate(
        &mut self,
        password: &str,
    ) -> Result<Vec<BackendMessage>, BackendMessage> {
        let mut scram: Option<postgres_protocol::authentication::sasl::ScramSha256> = None;
        let mut after_ok = Vec::new();
        loop {
            let msg = self
                .next_message(Duration::from_secs(20))
                .await
                .expect("read during login")
                .expect("jitgate closed the connection during login");
            match (msg.tag, msg.auth_code()) {
                (b'E', _) => return Err(msg),
                (b'R', Some(10)) => {
                    let s = postgres_protocol::authentication::sasl::ScramSha256::new(
                        password.as_bytes(),
                        postgres_protocol::authentication::sasl::ChannelBinding::unsupported(),
                    );
                    let mut out = BytesMut::new();
                    postgres_protocol::message::frontend::sasl_initial_response(
                        "SCRAM-SHA-256",
                        s.message(),
                        &mut out,
                    )
                    .expect("encode SASLInitialResponse");
                    self.send(&out).await.expect("send SASLInitialResponse");
                    scram = Some(s);
                }
                (b'R', Some(11)) => {
                    let s = scram.as_mut().expect("SASLContinue before SASL");
                    s.update(&msg.body[4..])
                        .expect("SCRAM server-first message");
                    let mut out = BytesMut::new();
                    postgres_protocol::message::frontend::sasl_response(s.message(), &mut out)
                        .expect("encode SASLResponse");
                    self.send(&out).await.expect("send SASLResponse");
                }
                (b'R', Some(12)) => {
                    let s = scram.as_mut().expect("SASLFinal before SASL");
                    s.finish(&msg.body[4..]).expect("SCRAM server signature");
                }
                (b'R', Some(0)) => {}
                (b'R', code) => panic!("unexpected authentication request {code:?}"),
                (b'Z', _) => {
                    after_ok.push(msg);
                    return Ok(after_ok);
                }
                _ => after_ok.push(msg),
            }
        }
    }
}
