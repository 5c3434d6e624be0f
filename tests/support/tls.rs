//! TLS that accepts any server certificate, for tokio-postgres and raw
//! sockets: jitgate's certificate (and the test servers') is self-signed,
//! and these tests are about the proxy, not about PKI — libpq's
//! `sslmode=require`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The rustls client configuration that accepts any certificate.
pub fn tls_client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            jitgate::tls::client_config(&jitgate::config::UpstreamTls::Require)
                .expect("TLS settings")
                .expect("TLS is on with Require")
        })
        .clone()
}

/// tokio-postgres TLS on tokio-rustls (ring), accepting any certificate.
#[derive(Clone)]
pub struct AnyCertTls(Arc<rustls::ClientConfig>);

impl AnyCertTls {
    pub fn new() -> AnyCertTls {
        AnyCertTls(tls_client_config())
    }
}

impl Default for AnyCertTls {
    fn default() -> Self {
        AnyCertTls::new()
    }
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for AnyCertTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = AnyCertTlsStream<S>;
    type TlsConnect = AnyCertTlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<AnyCertTlsConnect> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(AnyCertTlsConnect {
            config: self.0.clone(),
            name,
        })
    }
}

pub struct AnyCertTlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> tokio_postgres::tls::TlsConnect<S> for AnyCertTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = AnyCertTlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<AnyCertTlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(AnyCertTlsStream(tls))
        })
    }
}

pub struct AnyCertTlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for AnyCertTlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for AnyCertTlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for AnyCertTlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        tokio_postgres::tls::ChannelBinding::none()
    }
}
