//! Logging in to the upstream MySQL/MariaDB server with the level's own
//! account (credential injection), and the side connection that stops a
//! running query when a session must end.
//!
//! The developer never sees this account's secret: it is read from its env
//! var or file at connect time and never put in an error, log line or audit
//! record. Capability flags sent upstream are the client's relayed flags
//! (see [`caps::RELAYED`]) plus what the login itself needs, so the server
//! and the client agree on the shape of every later packet.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::packet::{
    self, Greeting, PacketError, PacketReader, caps, frame, parse_err, parse_greeting, parse_ok,
};
use crate::config::{LevelConfig, TargetConfig, UpstreamTls};
use crate::sql::{Lexing, MysqlServer};
use crate::wire::stream::Stream;
pub use crate::wire::upstream::UpstreamError;
use crate::wire::upstream::{level_password, open_tcp, start_tls, tls_connector, within_timeout};

/// What the client settled with jitgate, to repeat upstream.
#[derive(Debug, Clone, Copy)]
pub struct ClientTerms {
    pub capabilities: u32,
    pub max_packet_size: u32,
    pub collation: u8,
}

impl ClientTerms {
    /// Terms for jitgate's own side connections.
    pub fn internal() -> ClientTerms {
        ClientTerms {
            capabilities: caps::TRANSACTIONS | caps::MULTI_RESULTS,
            max_packet_size: 1 << 24,
            collation: 45,
        }
    }
}

/// A logged-in upstream connection, ready for commands.
pub struct Upstream {
    pub reader: PacketReader<Stream>,
    /// The server's thread id for this connection (what `KILL` takes).
    pub thread_id: u32,
    /// Status flags from the last OK of the login.
    pub status: u16,
    /// Which executable comments the server runs, from its greeting.
    pub server: MysqlServer,
    /// What the server's greeting said of it, to announce to clients.
    pub facts: ServerFacts,
    /// How the server reads this session's text: its `sql_mode` and
    /// `character_set_client` right after login, as it reports them.
    pub lexing: Lexing,
}

/// Connect and log in as the level's account. On a read-only level the
/// session is made read-only on the server as well.
pub async fn connect(
    target: &TargetConfig,
    level_name: &str,
    level: &LevelConfig,
    terms: ClientTerms,
) -> Result<Upstream, UpstreamError> {
    let fut = async {
        let mut up = login(target, level_name, level, terms).await?;
        up.lexing = session_lexing(&mut up, target, level_name).await?;
        if level.read_only {
            let (_, status) = simple_query(
                &mut up.reader,
                target,
                level_name,
                "SET SESSION TRANSACTION READ ONLY",
            )
            .await?;
            up.status = status;
        }
        Ok(up)
    };
    within_timeout(target, fut).await
}

/// What a server's greeting says of it that clients choose features by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    pub version: String,
    pub collation: u8,
    pub capabilities: u32,
}

impl ServerFacts {
    fn of(greeting: &Greeting) -> ServerFacts {
        ServerFacts {
            version: greeting.server_version.clone(),
            collation: greeting.collation,
            capabilities: greeting.capabilities,
        }
    }
}

/// Read a target's greeting and hang up, without logging in: what it is,
/// before any client has logged in through it.
pub async fn greeting_facts(target: &TargetConfig) -> Result<ServerFacts, UpstreamError> {
    let fut = async {
        let tcp = open_tcp(target).await?;
        let mut plain = PacketReader::new(tcp, 64 * 1024);
        let proto = |e: PacketError| UpstreamError::Protocol {
            target: target.name.clone(),
            detail: e.to_string(),
        };
        let first = packet::read_expected(&mut plain, 0).await.map_err(proto)?;
        let greeting = parse_greeting(first.payload()).map_err(proto)?;
        Ok(ServerFacts::of(&greeting))
    };
    within_timeout(target, fut).await
}

/// Which `KILL` to send upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillScope {
    /// `KILL QUERY`: stop the running statement, keep the connection.
    Query,
    /// `KILL CONNECTION`: stop the statement and end the connection.
    Connection,
}

/// Stop whatever upstream thread `thread_id` is doing and end it: a side
/// connection as the same level account runs `KILL CONNECTION <id>` (a user
/// may always kill its own threads).
pub async fn kill_connection(
    target: &TargetConfig,
    level_name: &str,
    level: &LevelConfig,
    thread_id: u32,
) -> Result<(), UpstreamError> {
    kill(target, level_name, level, thread_id, KillScope::Connection).await
}

/// `KILL QUERY` or `KILL CONNECTION` of upstream thread `thread_id`, sent on
/// a side connection as the level's account.
pub async fn kill(
    target: &TargetConfig,
    level_name: &str,
    level: &LevelConfig,
    thread_id: u32,
    scope: KillScope,
) -> Result<(), UpstreamError> {
    let sql = match scope {
        KillScope::Query => format!("KILL QUERY {thread_id}"),
        KillScope::Connection => format!("KILL CONNECTION {thread_id}"),
    };
    let fut = async {
        let mut side = login(target, level_name, level, ClientTerms::internal()).await?;
        let r = simple_query(&mut side.reader, target, level_name, &sql).await;
        quit(side.reader.get_mut()).await;
        r.map(|_| ())
    };
    within_timeout(target, fut).await
}

/// A side connection of jitgate's own as the level's account (no read-only
/// transaction mode: it only runs jitgate's own statements).
pub async fn side_connection(
    target: &TargetConfig,
    level_name: &str,
    level: &LevelConfig,
) -> Result<Upstream, UpstreamError> {
    within_timeout(
        target,
        login(target, level_name, level, ClientTerms::internal()),
    )
    .await
}

/// Run one statement of jitgate's own that changes something (no rows).
pub async fn execute(
    up: &mut Upstream,
    target: &TargetConfig,
    level_name: &str,
    sql: &str,
) -> Result<(), UpstreamError> {
    simple_query(&mut up.reader, target, level_name, sql)
        .await
        .map(|_| ())
}

/// Run one statement of jitgate's own on a side connection (see
/// [`ClientTerms::internal`]: classic EOF packets) and collect its rows,
/// each column as text (`None` for NULL).
pub async fn query_rows(
    up: &mut Upstream,
    target: &TargetConfig,
    level_name: &str,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, UpstreamError> {
    let proto = |detail: String| UpstreamError::Protocol {
        target: target.name.clone(),
        detail,
    };
    let r = &mut up.reader;
    send_query(r, target, sql).await?;
    let mut next = async || read_answer(r, target, level_name).await;
    let first = next().await?;
    if first.first() == Some(&0x00) {
        return Ok(Vec::new());
    }
    let columns = packet::Cursor(&first)
        .lenenc_int()
        .ok_or_else(|| proto(format!("unexpected answer to `{sql}`")))?;
    for _ in 0..columns {
        next().await?;
    }
    if packet::parse_eof(&next().await?).is_none() {
        return Err(proto("no EOF after the column definitions".to_owned()));
    }
    let mut rows = Vec::new();
    loop {
        let row = next().await?;
        if packet::parse_eof(&row).is_some() {
            return Ok(rows);
        }
        let mut c = packet::Cursor(&row);
        let mut values = Vec::new();
        for _ in 0..columns {
            if c.0.first() == Some(&0xfb) {
                c.u8();
                values.push(None);
                continue;
            }
            let v = c
                .lenenc_bytes()
                .ok_or_else(|| proto("a malformed row".to_owned()))?;
            values.push(Some(String::from_utf8_lossy(v).into_owned()));
        }
        rows.push(values);
    }
}

/// Send COM_QUIT and close (bounded: a dead peer cannot hold us).
pub async fn quit(stream: &mut Stream) {
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        stream.finish(&frame(0, &[packet::command::QUIT])),
    )
    .await;
}

async fn simple_query(
    r: &mut PacketReader<Stream>,
    target: &TargetConfig,
    level_name: &str,
    sql: &str,
) -> Result<(u64, u16), UpstreamError> {
    send_query(r, target, sql).await?;
    let answer = read_answer(r, target, level_name).await?;
    parse_ok(&answer).ok_or_else(|| UpstreamError::Protocol {
        target: target.name.clone(),
        detail: format!("unexpected answer to `{sql}`"),
    })
}

/// Send one COM_QUERY of jitgate's own.
async fn send_query(
    r: &mut PacketReader<Stream>,
    target: &TargetConfig,
    sql: &str,
) -> Result<(), UpstreamError> {
    let mut payload = vec![packet::command::QUERY];
    payload.extend_from_slice(sql.as_bytes());
    r.get_mut()
        .write_all(&frame(0, &payload))
        .await
        .map_err(|e| UpstreamError::Protocol {
            target: target.name.clone(),
            detail: e.to_string(),
        })
}

/// The next packet of the answer to a query of jitgate's own; an ERR packet
/// is the server refusing it.
async fn read_answer(
    r: &mut PacketReader<Stream>,
    target: &TargetConfig,
    level_name: &str,
) -> Result<Vec<u8>, UpstreamError> {
    let proto = |detail: String| UpstreamError::Protocol {
        target: target.name.clone(),
        detail,
    };
    let p = r
        .read_packet()
        .await
        .map_err(|e| proto(e.to_string()))?
        .ok_or_else(|| proto("connection closed".to_owned()))?;
    if let Some((code, _, message)) = parse_err(p.payload()) {
        return Err(UpstreamError::Refused {
            target: target.name.clone(),
            level: level_name.to_owned(),
            code: code.to_string(),
            message,
        });
    }
    Ok(p.payload().to_vec())
}

/// How the server reads this session's text (see `sql::Lexing`): asked
/// once at login, since the server's defaults and the client's handshake
/// character set decide it. (A SELECT in autocommit mode leaves the login's
/// status flags as they were.)
async fn session_lexing(
    up: &mut Upstream,
    target: &TargetConfig,
    level_name: &str,
) -> Result<Lexing, UpstreamError> {
    let rows = query_rows(
        up,
        target,
        level_name,
        "SELECT @@SESSION.sql_mode, @@SESSION.character_set_client",
    )
    .await?;
    let [row] = &rows[..] else {
        return Err(UpstreamError::Protocol {
            target: target.name.clone(),
            detail: "no single row in the answer to the sql_mode and character set query"
                .to_owned(),
        });
    };
    let mut lexing = Lexing::DEFAULT;
    match &row[..] {
        [Some(mode), Some(charset)] => {
            lexing.mysql_sql_mode(mode);
            lexing.mysql_client_charset(charset);
        }
        _ => lexing = Lexing::OPAQUE,
    }
    Ok(lexing)
}

/// The login proper: greeting, TLS, HandshakeResponse, the auth exchange.
async fn login(
    target: &TargetConfig,
    level_name: &str,
    level: &LevelConfig,
    terms: ClientTerms,
) -> Result<Upstream, UpstreamError> {
    let proto = |detail: String| UpstreamError::Protocol {
        target: target.name.clone(),
        detail,
    };
    let perr = |e: PacketError| proto(e.to_string());
    let password = level_password(target, level_name, level)?.unwrap_or_default();

    let tcp = open_tcp(target).await?;
    // Greetings are small; the server sends nothing more until we answer.
    let mut plain = PacketReader::new(tcp, 64 * 1024);
    let first = packet::read_expected(&mut plain, 0).await.map_err(perr)?;
    if let Some((code, _, message)) = parse_err(first.payload()) {
        return Err(UpstreamError::Refused {
            target: target.name.clone(),
            level: level_name.to_owned(),
            code: code.to_string(),
            message,
        });
    }
    let greeting: Greeting = parse_greeting(first.payload()).map_err(perr)?;
    let server = greeting.capabilities;
    let mut capabilities = capabilities_for(target, server, terms)?;
    let mut seq = 1u8;

    let connector = tls_connector(target)?;
    let (tcp, leftover) = plain.into_parts();
    if !leftover.is_empty() {
        return Err(proto(
            "the server sent data before the client's answer".to_owned(),
        ));
    }
    let stream = match (connector, &target.tls) {
        (None, _) | (_, UpstreamTls::Disable) => Stream::Plain(tcp),
        (Some(connector), _) => {
            if server & caps::SSL == 0 {
                return Err(UpstreamError::NoTls(target.name.clone()));
            }
            capabilities |= caps::SSL;
            let stream = ssl_request(connector, target, tcp, capabilities, terms, seq).await?;
            seq += 1;
            stream
        }
    };
    let secure = stream.is_tls();
    let mut r = PacketReader::new(stream, 64 * 1024);

    let plugin = greeting
        .auth_plugin
        .clone()
        .unwrap_or_else(|| "mysql_native_password".to_owned());
    let auth = scramble(&plugin, &greeting.nonce, &password, secure, target)?;
    let hello = packet::handshake_response(
        capabilities,
        terms.max_packet_size,
        terms.collation,
        &level.user,
        &auth,
        &target.database,
        &plugin,
    );
    send(&mut r, seq, &hello, target).await?;
    let secret = Secret {
        password: &password,
        secure,
        target,
        level_name,
    };
    let status = auth_exchange(&mut r, seq.wrapping_add(1), plugin, &secret).await?;
    r.set_max(packet::MAX_PAYLOAD);
    Ok(Upstream {
        reader: r,
        thread_id: greeting.connection_id,
        status,
        server: MysqlServer::from_version(&greeting.server_version),
        lexing: Lexing::OPAQUE,
        facts: ServerFacts::of(&greeting),
    })
}

/// The level's password and how it may be sent.
struct Secret<'a> {
    password: &'a str,
    /// TLS to the target: the password may go in clear inside it.
    secure: bool,
    target: &'a TargetConfig,
    level_name: &'a str,
}

/// The server's answers to the HandshakeResponse until it accepts the login
/// (its status flags) or refuses it: plugin switches, caching_sha2's fast
/// and full authentication.
async fn auth_exchange(
    r: &mut PacketReader<Stream>,
    mut seq: u8,
    mut plugin: String,
    secret: &Secret<'_>,
) -> Result<u16, UpstreamError> {
    let target = secret.target;
    let proto = |detail: String| UpstreamError::Protocol {
        target: target.name.clone(),
        detail,
    };
    loop {
        let p = packet::read_expected(r, seq)
            .await
            .map_err(|e| proto(e.to_string()))?;
        seq = seq.wrapping_add(1);
        let body = p.payload();
        match body.first() {
            Some(0x00) => {
                let (_, status) =
                    parse_ok(body).ok_or_else(|| proto("bad OK packet".to_owned()))?;
                return Ok(status);
            }
            Some(0xff) => {
                let (code, _, message) =
                    parse_err(body).ok_or_else(|| proto("bad ERR packet".to_owned()))?;
                return Err(UpstreamError::Refused {
                    target: target.name.clone(),
                    level: secret.level_name.to_owned(),
                    code: code.to_string(),
                    message,
                });
            }
            Some(0xfe) => {
                // AuthSwitchRequest: another plugin, another nonce.
                let mut c = packet::Cursor(&body[1..]);
                plugin = String::from_utf8_lossy(c.cstr_or_rest()).into_owned();
                let data = c.rest();
                let nonce = data.strip_suffix(&[0]).unwrap_or(data);
                let auth = scramble(&plugin, nonce, secret.password, secret.secure, target)?;
                send(r, seq, &auth, target).await?;
                seq = seq.wrapping_add(1);
            }
            Some(0x01) if plugin == super::auth::CACHING_SHA2 => match body.get(1) {
                Some(&super::auth::FAST_AUTH_OK) => {}
                Some(&super::auth::PERFORM_FULL_AUTH) => {
                    if !secret.secure {
                        return Err(UpstreamError::FullAuthNeedsTls {
                            target: target.name.clone(),
                            level: secret.level_name.to_owned(),
                        });
                    }
                    let mut pw = secret.password.as_bytes().to_vec();
                    pw.push(0);
                    send(r, seq, &pw, target).await?;
                    seq = seq.wrapping_add(1);
                }
                _ => return Err(proto("unexpected caching_sha2_password data".to_owned())),
            },
            _ => return Err(proto("unexpected packet during login".to_owned())),
        }
    }
}

/// Ask for TLS (an SSLRequest with sequence id `seq`) and start it.
async fn ssl_request(
    connector: tokio_rustls::TlsConnector,
    target: &TargetConfig,
    mut tcp: tokio::net::TcpStream,
    capabilities: u32,
    terms: ClientTerms,
    seq: u8,
) -> Result<Stream, UpstreamError> {
    let req = packet::ssl_request(capabilities, terms.max_packet_size, terms.collation);
    tcp.write_all(&frame(seq, &req))
        .await
        .map_err(|e| UpstreamError::Protocol {
            target: target.name.clone(),
            detail: e.to_string(),
        })?;
    start_tls(connector, target, tcp).await
}

/// The capability flags to log in with: the client's relayed flags (which
/// the server must have) and what the login needs.
fn capabilities_for(
    target: &TargetConfig,
    server: u32,
    terms: ClientTerms,
) -> Result<u32, UpstreamError> {
    for (flag, what) in [
        (caps::PROTOCOL_41, "the MySQL 4.1+ protocol"),
        (caps::SECURE_CONNECTION, "secure connection authentication"),
        (caps::PLUGIN_AUTH, "authentication plugins"),
    ] {
        if server & flag == 0 {
            return Err(UpstreamError::Capability {
                target: target.name.clone(),
                what: what.to_owned(),
            });
        }
    }
    let relayed = terms.capabilities & caps::RELAYED;
    if relayed & !server != 0 {
        return Err(UpstreamError::Capability {
            target: target.name.clone(),
            what: format!("capability flags {:#x}", relayed & !server),
        });
    }
    Ok(relayed
        | caps::LONG_PASSWORD
        | caps::PROTOCOL_41
        | caps::SECURE_CONNECTION
        | caps::PLUGIN_AUTH
        | caps::CONNECT_WITH_DB
        | (server & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA))
}

async fn send(
    r: &mut PacketReader<Stream>,
    seq: u8,
    payload: &[u8],
    target: &TargetConfig,
) -> Result<(), UpstreamError> {
    let mut out = BytesMut::new();
    packet::frame_into(&mut out, seq, payload);
    r.get_mut()
        .write_all(&out)
        .await
        .map_err(|e| UpstreamError::Protocol {
            target: target.name.clone(),
            detail: e.to_string(),
        })
}

/// The auth response for `plugin`.
fn scramble(
    plugin: &str,
    nonce: &[u8],
    password: &str,
    secure: bool,
    target: &TargetConfig,
) -> Result<Vec<u8>, UpstreamError> {
    use mysql_common::auth::plugins::{caching_sha2_password, mysql_native_password};
    if password.is_empty() {
        return Ok(Vec::new());
    }
    match plugin {
        "mysql_native_password" => Ok(mysql_native_password::scramble_native(
            nonce,
            password.as_bytes(),
        )
        .map(|s| s.to_vec())
        .unwrap_or_default()),
        "caching_sha2_password" => {
            let nonce: [u8; 20] =
                nonce
                    .get(..20)
                    .and_then(|n| n.try_into().ok())
                    .ok_or_else(|| UpstreamError::Protocol {
                        target: target.name.clone(),
                        detail: "caching_sha2_password nonce is not 20 bytes".to_owned(),
                    })?;
            Ok(
                caching_sha2_password::scramble_sha256(&nonce, password.as_bytes())
                    .map(|s| s.to_vec())
                    .unwrap_or_default(),
            )
        }
        "mysql_clear_password" if secure => {
            let mut pw = password.as_bytes().to_vec();
            pw.push(0);
            Ok(pw)
        }
        other => Err(UpstreamError::UnsupportedAuth {
            target: target.name.clone(),
            detail: format!("plugin {other}"),
        }),
    }
}
