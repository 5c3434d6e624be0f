//! A webhook receiver: what jitgate's notifications deliver, kept for a
//! test to read.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP request received by [`webhook_receiver`].
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The request line and headers, lower-cased.
    pub head: String,
    pub body: Value,
}

/// A tiny HTTP server that answers every POST with 200 and keeps what it got.
pub async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Delivery>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the webhook receiver");
    let url = format!(
        "http://{}/hooks/jitgate",
        listener.local_addr().expect("local addr")
    );
    let received: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let keep = received.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                if let Ok(Some(delivery)) =
                    tokio::time::timeout(Duration::from_secs(10), receive_one(socket)).await
                {
                    keep.lock().unwrap().push(delivery);
                }
            });
        }
    });
    (url, received)
}

/// Read one request (headers, then `content-length` bytes), answer 200 and close.
async fn receive_one(mut socket: tokio::net::TcpStream) -> Option<Delivery> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let body_start = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))?
        .trim()
        .parse()
        .ok()?;
    while buf.len() < body_start + length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    socket
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let body = serde_json::from_slice(&buf[body_start..body_start + length]).ok()?;
    Some(Delivery { head, body })
}
