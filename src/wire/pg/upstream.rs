//! Logging in to the upstream server with the level's own account
//! (credential injection). The developer never sees this account's secret:
//! it is read from its env var or file at connect time and never put in an
//! error, log line or audit record.

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::framing::{FrameError, FrameReader, SSL_REQUEST_CODE, take_cstr};
use super::messages::{error_code, error_message};
use crate::config::{LevelConfig, TargetConfig};
use crate::wire::stream::Stream;
pub use crate::wire::upstream::UpstreamError;
use crate::wire::upstream::{level_password, open_tcp, start_tls, tls_connector, within_timeout};

/// A logged-in upstream connection, ready for queries.
pub struct Upstream {
    pub reader: FrameReader<Stream>,
    /// The server's own ParameterStatus messages (raw), to pass to the client.
    pub parameter_status: Vec<Bytes>,
    /// Notices sent during login (raw), to pass to the client.
    pub notices: Vec<Bytes>,
    pub pid: u32,
    pub key: Vec<u8>,
    /// Where cancel requests for this connection go.
    pub cancel_address: String,
    /// Transaction status from the first ReadyForQuery.
    pub status: u8,
    /// jitgate's local port on this connection (what the server sees as the client port).
    pub local_port: Option<u16>,
    /// The server address this connection reached.
    pub server: Option<std::net::SocketAddr>,
}

/// Startup parameters the client may not choose: jitgate sets them.
const RESERVED_PARAMS: &[&str] = &["user", "database", "replication"];
/// On a read-only level: the parameter jitgate sets itself.
const READ_ONLY_SET_BY_JITGATE: &[&str] =
    &["default_transaction_read_only", "transaction_read_only"];

/// A client startup parameter that a read-only level refuses: it does what
/// a `SET` of the same setting would, and that `SET` is refused there. The
/// front refuses such a login with this parameter's name; `upstream_params`
/// also leaves them out, as a second line.
pub fn refused_on_read_only(client: &[(String, String)]) -> Option<&str> {
    client
        .iter()
        .filter(|(k, _)| !reserved(k))
        .find(|(k, v)| !crate::sql::postgres_startup_parameter_kind(k, v).allowed_read_only())
        .map(|(k, _)| k.as_str())
}

fn reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_PARAMS.contains(&lower.as_str()) || lower.starts_with("_pq_.")
}

/// Build the upstream startup parameters from the client's.
pub fn upstream_params(
    client: &[(String, String)],
    user: &str,
    database: &str,
    read_only: bool,
) -> Vec<(String, String)> {
    let mut out = vec![
        ("user".to_owned(), user.to_owned()),
        ("database".to_owned(), database.to_owned()),
    ];
    for (k, v) in client {
        if reserved(k) {
            continue;
        }
        if read_only
            && (READ_ONLY_SET_BY_JITGATE.contains(&k.to_ascii_lowercase().as_str())
                || !crate::sql::postgres_startup_parameter_kind(k, v).allowed_read_only())
        {
            continue;
        }
        out.push((k.clone(), v.clone()));
    }
    if read_only {
        out.push(("default_transaction_read_only".to_owned(), "on".to_owned()));
    }
    out
}

fn startup_packet(params: &[(String, String)]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_u32(196_608); // protocol 3.0
    for (k, v) in params {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_u32(body.len() as u32 + 4);
    out.put_slice(&body);
    out
}

fn password_message(tag: u8, payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(payload.len() + 5);
    out.put_u8(tag);
    out.put_u32(payload.len() as u32 + 4);
    out.put_slice(payload);
    out
}

/// Open a TCP (and, per the target, TLS) connection to the target.
pub async fn open(target: &TargetConfig) -> Result<Stream, UpstreamError> {
    let mut tcp = open_tcp(target).await?;
    let Some(connector) = tls_connector(target)? else {
        return Ok(Stream::Plain(tcp));
    };
    let mut req = BytesMut::with_capacity(8);
    req.put_u32(8);
    req.put_u32(SSL_REQUEST_CODE);
    let io = |e: std::io::Error| UpstreamError::Connect {
        target: target.name.clone(),
        address: target.address.clone(),
        source: e,
    };
    tcp.write_all(&req).await.map_err(io)?;
    let answer = tcp.read_u8().await.map_err(io)?;
    if answer != b'S' {
        return Err(UpstreamError::NoTls(target.name.clone()));
    }
    start_tls(connector, target, tcp).await
}

/// Connect and log in as the level's account.
pub async fn connect(
    target: &TargetConfig,
    level_name: &str,
    level: &LevelConfig,
    client_params: &[(String, String)],
    max_message_bytes: usize,
) -> Result<Upstream, UpstreamError> {
    let fut = async {
        let mut stream = open(target).await?;
        let local_port = stream.local_port();
        let server = stream.peer_addr();
        let params = upstream_params(
            client_params,
            &level.user,
            &target.database,
            level.read_only,
        );
        let proto = |detail: String| UpstreamError::Protocol {
            target: target.name.clone(),
            detail,
        };
        let io = |e: std::io::Error| proto(e.to_string());
        stream
            .write_all(&startup_packet(&params))
            .await
            .map_err(io)?;
        let mut reader = FrameReader::new(stream, max_message_bytes);
        login(&mut reader, target, level_name, level).await?;

        let mut up = Upstream {
            reader,
            parameter_status: Vec::new(),
            notices: Vec::new(),
            pid: 0,
            key: Vec::new(),
            cancel_address: target.address.clone(),
            status: b'I',
            local_port,
            server,
        };
        loop {
            let f = next(&mut up.reader, target).await?;
            match f.tag() {
                b'S' => up.parameter_status.push(f.bytes),
                b'N' => up.notices.push(f.bytes),
                b'K' => {
                    let b = f.body();
                    if b.len() < 8 {
                        return Err(proto("short BackendKeyData".into()));
                    }
                    up.pid = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                    up.key = b[4..].to_vec();
                }
                b'Z' => {
                    up.status = f.body().first().copied().unwrap_or(b'I');
                    return Ok(up);
                }
                b'E' => return Err(refused(target, level_name, f.body())),
                t => {
                    return Err(proto(format!(
                        "unexpected message '{}' after login",
                        t as char
                    )));
                }
            }
        }
    };
    within_timeout(target, fut).await
}

async fn next(
    reader: &mut FrameReader<Stream>,
    target: &TargetConfig,
) -> Result<super::framing::Frame, UpstreamError> {
    match reader.next().await {
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err(UpstreamError::Protocol {
            target: target.name.clone(),
            detail: "the server closed the connection during login".into(),
        }),
        Err(FrameError::Io(e)) => Err(UpstreamError::Protocol {
            target: target.name.clone(),
            detail: e.to_string(),
        }),
        Err(e) => Err(UpstreamError::Protocol {
            target: target.name.clone(),
            detail: e.to_string(),
        }),
    }
}

fn refused(target: &TargetConfig, level: &str, body: &[u8]) -> UpstreamError {
    UpstreamError::Refused {
        target: target.name.clone(),
        level: level.to_owned(),
        code: error_code(body).unwrap_or("?????").to_owned(),
        message: error_message(body).unwrap_or("no message").to_owned(),
    }
}

/// Answer the server's authentication requests until AuthenticationOk.
async fn login(
    reader: &mut FrameReader<Stream>,
    target: &TargetConfig,
    level_name: &str,
    level: &LevelConfig,
) -> Result<(), UpstreamError> {
    let proto = |detail: String| UpstreamError::Protocol {
        target: target.name.clone(),
        detail,
    };
    let password = || {
        level_password(target, level_name, level)?.ok_or_else(|| UpstreamError::NoPassword {
            target: target.name.clone(),
            level: level_name.to_owned(),
            detail: "the target asks for one; set password_env or password_file for this level"
                .into(),
        })
    };
    let mut scram: Option<ScramSha256> = None;
    loop {
        let f = next(reader, target).await?;
        match f.tag() {
            b'R' => {}
            b'E' => return Err(refused(target, level_name, f.body())),
            b'N' => continue,
            t => {
                return Err(proto(format!(
                    "unexpected message '{}' during login",
                    t as char
                )));
            }
        }
        let body = f.body();
        if body.len() < 4 {
            return Err(proto("short authentication message".into()));
        }
        let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let data = &body[4..];
        let io = |e: std::io::Error| proto(e.to_string());
        match code {
            0 => return Ok(()),
            3 => {
                let mut pw = password()?.into_bytes();
                pw.push(0);
                reader
                    .get_mut()
                    .write_all(&password_message(b'p', &pw))
                    .await
                    .map_err(io)?;
            }
            5 => {
                let salt: [u8; 4] = data.try_into().map_err(|_| proto("bad md5 salt".into()))?;
                let mut hash =
                    md5_hash(level.user.as_bytes(), password()?.as_bytes(), salt).into_bytes();
                hash.push(0);
                reader
                    .get_mut()
                    .write_all(&password_message(b'p', &hash))
                    .await
                    .map_err(io)?;
            }
            10 => {
                let (s, first) = sasl_start(target, data, &password()?)?;
                reader.get_mut().write_all(&first).await.map_err(io)?;
                scram = Some(s);
            }
            11 => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| proto("SASLContinue before SASL".into()))?;
                s.update(data).map_err(|e| proto(format!("SCRAM: {e}")))?;
                let msg = password_message(b'p', s.message());
                reader.get_mut().write_all(&msg).await.map_err(io)?;
            }
            12 => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| proto("SASLFinal before SASL".into()))?;
                s.finish(data).map_err(|e| {
                    proto(format!("the server's SCRAM signature did not verify: {e}"))
                })?;
            }
            other => {
                return Err(UpstreamError::UnsupportedAuth {
                    target: target.name.clone(),
                    detail: format!("authentication request code {other}"),
                });
            }
        }
    }
}

/// Answer AuthenticationSASL: SCRAM-SHA-256 if the server offers it; the
/// exchange and its first message (SASLInitialResponse).
fn sasl_start(
    target: &TargetConfig,
    mechanisms: &[u8],
    password: &str,
) -> Result<(ScramSha256, BytesMut), UpstreamError> {
    let mut d = mechanisms;
    let mut offered = Vec::new();
    while let Some(m) = take_cstr(&mut d) {
        if m.is_empty() {
            break;
        }
        offered.push(m);
    }
    if !offered.contains(&"SCRAM-SHA-256") {
        return Err(UpstreamError::UnsupportedAuth {
            target: target.name.clone(),
            detail: format!("SASL mechanisms {offered:?}"),
        });
    }
    let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let first = s.message();
    let mut payload = BytesMut::new();
    payload.put_slice(b"SCRAM-SHA-256\0");
    payload.put_u32(first.len() as u32);
    payload.put_slice(first);
    Ok((s, password_message(b'p', &payload)))
}

/// Run `sql` (one or more statements) over the simple query protocol on a
/// connection of jitgate's own and collect the rows, each column as text
/// (`None` for NULL). Any ErrorResponse fails the whole call with the
/// server's message. For jitgate's own statements only, never a client's.
pub async fn query_rows(
    up: &mut Upstream,
    sql: &str,
    wait: std::time::Duration,
) -> Result<Vec<Vec<Option<String>>>, String> {
    let mut q = BytesMut::with_capacity(sql.len() + 6);
    q.put_u8(b'Q');
    q.put_u32(sql.len() as u32 + 5);
    q.put_slice(sql.as_bytes());
    q.put_u8(0);
    let exchange = async {
        up.reader
            .get_mut()
            .write_all(&q)
            .await
            .map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let f = match up.reader.next().await {
                Ok(Some(f)) => f,
                Ok(None) => return Err("the server closed the connection".to_owned()),
                Err(e) => return Err(e.to_string()),
            };
            match f.tag() {
                b'D' => rows.push(
                    data_row(f.body())
                        .ok_or_else(|| "the server sent a malformed row".to_owned())?,
                ),
                b'E' if error.is_none() => {
                    let body = f.body();
                    error = Some(format!(
                        "{} ({})",
                        error_message(body).unwrap_or("no message"),
                        error_code(body).unwrap_or("?????")
                    ));
                }
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    };
    tokio::time::timeout(wait, exchange)
        .await
        .map_err(|_| "the server did not answer in time".to_owned())?
}

/// The columns of a DataRow body as text, read defensively.
fn data_row(mut body: &[u8]) -> Option<Vec<Option<String>>> {
    let count = u16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    body = &body[2..];
    let mut columns = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = i32::from_be_bytes(body.get(..4)?.try_into().ok()?);
        body = &body[4..];
        if len < 0 {
            columns.push(None);
            continue;
        }
        let len = usize::try_from(len).ok()?;
        let value = body.get(..len)?;
        columns.push(Some(String::from_utf8_lossy(value).into_owned()));
        body = &body[len..];
    }
    Some(columns)
}

/// Send Terminate and close, bounded: a dead peer cannot hold us.
pub async fn terminate(up: &mut Upstream) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        let stream = up.reader.get_mut();
        let _ = stream.write_all(&[b'X', 0, 0, 0, 4]).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Ask the server to cancel whatever the connection `pid`/`key` is running.
/// Sent on a fresh plain TCP connection, as libpq does.
pub async fn send_cancel(address: &str, pid: u32, key: &[u8]) -> std::io::Result<()> {
    let mut msg = BytesMut::with_capacity(12 + key.len());
    msg.put_u32(12 + key.len() as u32);
    msg.put_u32(super::framing::CANCEL_REQUEST_CODE);
    msg.put_u32(pid);
    msg.put_slice(key);
    let mut tcp = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        TcpStream::connect(address),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    tcp.write_all(&msg).await?;
    // The server closes the connection once it has read the request; waiting
    // for that makes sure the request was delivered before we move on.
    let mut sink = [0u8; 1];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), tcp.read(&mut sink)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_rows_of_the_reapers_one_column_are_read_defensively() {
        let mut row = vec![0, 1, 0, 0, 0, 4];
        row.extend_from_slice(b"4242");
        assert_eq!(data_row(&row), Some(vec![Some("4242".to_owned())]));
        assert_eq!(data_row(&[0, 1, 0, 0, 0, 9, b'1']), None);
        assert_eq!(data_row(&[0, 1, 255, 255, 255, 255]), Some(vec![None]));
        assert_eq!(data_row(&[0, 0]), Some(vec![]));
        assert_eq!(data_row(&[]), None);
    }

    #[test]
    fn client_cannot_choose_user_database_or_lift_read_only() {
        let client = vec![
            ("user".to_owned(), "alice".to_owned()),
            ("database".to_owned(), "demo-pg".to_owned()),
            ("application_name".to_owned(), "psql".to_owned()),
            (
                "options".to_owned(),
                "-c default_transaction_read_only=off".to_owned(),
            ),
            ("Default_Transaction_Read_Only".to_owned(), "off".to_owned()),
        ];
        let p = upstream_params(&client, "jg_read", "app", true);
        assert_eq!(
            p,
            vec![
                ("user".to_owned(), "jg_read".to_owned()),
                ("database".to_owned(), "app".to_owned()),
                ("application_name".to_owned(), "psql".to_owned()),
                ("default_transaction_read_only".to_owned(), "on".to_owned()),
            ]
        );
    }

    #[test]
    fn read_level_refuses_what_set_would_refuse_and_keeps_the_rest() {
        let client = vec![
            ("user".to_owned(), "alice".to_owned()),
            ("options".to_owned(), "-c statement_timeout=5s".to_owned()),
            ("role".to_owned(), "postgres".to_owned()),
        ];
        assert_eq!(refused_on_read_only(&client), Some("role"));
        assert_eq!(refused_on_read_only(&client[..2]), None);
        let p = upstream_params(&client, "jg_read", "app", true);
        assert!(p.contains(&("options".to_owned(), "-c statement_timeout=5s".to_owned())));
        assert!(!p.iter().any(|(k, _)| k == "role"));
    }

    #[test]
    fn data_rows_are_read_defensively() {
        let mut row = vec![0, 2, 0, 0, 0, 2];
        row.extend_from_slice(b"ok");
        row.extend_from_slice(&[255, 255, 255, 255]);
        assert_eq!(data_row(&row), Some(vec![Some("ok".to_owned()), None]));
        assert_eq!(data_row(&[0, 1, 0, 0, 0, 9, b'1']), None);
        assert_eq!(data_row(&[0, 2, 255, 255, 255, 255]), None);
        assert_eq!(data_row(&[0]), None);
    }

    #[test]
    fn write_level_keeps_client_options() {
        let client = vec![("options".to_owned(), "-c search_path=x".to_owned())];
        let p = upstream_params(&client, "jg_write", "app", false);
        assert!(p.contains(&("options".to_owned(), "-c search_path=x".to_owned())));
    }
}
