//! Login names cannot be enumerated: whatever a caller without the secret
//! sends, a name jitgate knows and one it does not get the same answers.
//!
//! PostgreSQL: the SCRAM server-first message of an unknown name carries a
//! decoy salt that looks like a real one (same iteration count and length),
//! stays the same for that name across restarts and differs between names.
//! MySQL: a wrong `caching_sha2_password` scramble gets the same packets for
//! a name that logged in before (and is in the fast-path cache), a known
//! name that never did and an unknown one, and costs each of them a login
//! attempt even if the client goes away when asked for its password. The
//! witnesses are raw protocol exchanges, byte by byte.

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use support::*;

// ---- PostgreSQL ----------------------------------------------------------------

/// What a client learns of a name before it proves anything: the SCRAM
/// server-first message's parts and the error a wrong proof gets.
#[derive(Debug)]
struct ScramFirst {
    salt: Vec<u8>,
    iterations: u32,
    server_nonce_len: usize,
    /// The ErrorResponse to a wrong proof, with the name replaced by `<name>`.
    refusal: String,
}

/// One backend message: its tag and body.
async fn pg_message(conn: &mut RawConn) -> (u8, Vec<u8>) {
    let m = conn
        .next_message(secs(20))
        .await
        .expect("a message")
        .expect("a message, not the end of the connection");
    let len = m.body.len() + 4;
    assert!((4..=64 * 1024).contains(&len), "message length {len}");
    (m.tag, m.body)
}

/// A plaintext SCRAM exchange for `user` up to a wrong proof.
async fn scram_first(port: u16, user: &str) -> ScramFirst {
    let mut tcp = RawConn::plain(port).await;
    tcp.send(&startup_packet(&[("user", user), ("database", PG_TARGET)]))
        .await
        .unwrap();

    let (tag, body) = pg_message(&mut tcp).await;
    assert_eq!(tag, b'R', "{}", String::from_utf8_lossy(&body));
    assert_eq!(&body[..4], &10u32.to_be_bytes(), "AuthenticationSASL");

    let client_nonce = "rOprNGfwEbeRWgbNEkqO";
    let client_first = format!("n,,n=,r={client_nonce}");
    let mut initial = b"SCRAM-SHA-256\0".to_vec();
    initial.extend_from_slice(&(client_first.len() as u32).to_be_bytes());
    initial.extend_from_slice(client_first.as_bytes());
    tcp.send(&tagged(b'p', &initial)).await.unwrap();

    let (tag, body) = pg_message(&mut tcp).await;
    assert_eq!(tag, b'R', "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        &body[..4],
        &11u32.to_be_bytes(),
        "AuthenticationSASLContinue"
    );
    let server_first = std::str::from_utf8(&body[4..]).expect("server-first is text");
    let attr = |name: &str| {
        server_first
            .split(',')
            .find_map(|a| a.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {server_first}"))
            .to_owned()
    };
    let nonce = attr("r=");
    assert!(nonce.starts_with(client_nonce), "{server_first}");
    let salt = B64.decode(attr("s=")).expect("the salt is base64");
    let iterations = attr("i=").parse().expect("the iteration count is a number");

    let without_proof = format!("c=biws,r={nonce}");
    let client_final = format!("{without_proof},p={}", B64.encode([7u8; 32]));
    tcp.send(&tagged(b'p', client_final.as_bytes()))
        .await
        .unwrap();
    let (tag, body) = pg_message(&mut tcp).await;
    assert_eq!(tag, b'E', "a wrong proof is refused");
    ScramFirst {
        salt,
        iterations,
        server_nonce_len: nonce.len() - client_nonce.len(),
        refusal: String::from_utf8_lossy(&body).replace(user, "<name>"),
    }
}

/// alice's salt as her verifier in the config file says.
fn configured_salt(jg: &Jitgate, name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(jg.config_path()).expect("read jitgate.toml");
    let config: toml::Value = toml::from_str(&text).expect("jitgate.toml is TOML");
    let secret = config["identities"]
        .as_array()
        .expect("identities")
        .iter()
        .find(|i| i["name"].as_str() == Some(name))
        .and_then(|i| i["secret"].as_str())
        .expect("the identity's verifier")
        .to_owned();
    let verifier = jitgate::identity::ScramVerifier::parse(&secret).expect("a verifier");
    verifier.salt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_get_a_stable_salt_shaped_like_a_known_one_postgres() {
    let pg = PgServer::start().await;
    let mut jg = Jitgate::start(
        &pg,
        JitgateOptions {
            tls_require: false,
            ..JitgateOptions::default()
        },
    )
    .await;
    let port = jg.pg_port();

    let alice = scram_first(port, "alice").await;
    assert_eq!(
        alice.salt,
        configured_salt(&jg, "alice"),
        "a known name's salt is its verifier's"
    );
    let mallory = scram_first(port, "mallory").await;
    let trudy = scram_first(port, "trudy").await;
    for unknown in [&mallory, &trudy] {
        assert_eq!(unknown.iterations, alice.iterations, "{unknown:?}");
        assert_eq!(unknown.salt.len(), alice.salt.len(), "{unknown:?}");
        assert_eq!(unknown.server_nonce_len, alice.server_nonce_len);
        assert_eq!(unknown.refusal, alice.refusal);
        assert_ne!(unknown.salt, alice.salt);
    }
    assert_ne!(mallory.salt, trudy.salt, "each name has its own salt");
    assert_eq!(
        scram_first(port, "mallory").await.salt,
        mallory.salt,
        "an unknown name's salt is the same on every attempt"
    );

    jg.restart().await;
    assert_eq!(
        scram_first(port, "mallory").await.salt,
        mallory.salt,
        "an unknown name's salt survives a restart"
    );
    assert_eq!(scram_first(port, "alice").await.salt, alice.salt);
    let key = jg
        .dir()
        .join("data")
        .join(jitgate::identity::DECOY_KEY_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key)
            .expect("the decoy key is in the data_dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the decoy key is owner-only");
    }
    let log = jg.log();
    let key_text = std::fs::read_to_string(&key).unwrap();
    assert!(
        !log.contains(key_text.trim()),
        "the key stays out of the log"
    );
}

// ---- MySQL ---------------------------------------------------------------------

/// One MySQL packet: its sequence id and payload.
async fn read_packet<S: AsyncRead + Unpin>(s: &mut S) -> (u8, Vec<u8>) {
    read_mysql_packet(s, secs(20)).await.expect("a packet")
}

async fn send_packet<S: AsyncWrite + Unpin>(s: &mut S, seq: u8, payload: &[u8]) {
    s.write_all(&mysql_packet(seq, payload))
        .await
        .expect("send a packet");
}

/// PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | CONNECT_WITH_DB | SSL.
const CLIENT_CAPS: u32 = 0x0200 | 0x8000 | 0x8_0000 | 0x0008 | 0x0800;

/// The 20-byte nonce of a v10 greeting (auth-plugin-data, parts 1 and 2).
fn greeting_nonce(greeting: &[u8]) -> Vec<u8> {
    let version_end = greeting
        .iter()
        .position(|b| *b == 0)
        .expect("server version");
    let part1 = version_end + 1 + 4;
    let mut nonce = greeting[part1..part1 + 8].to_vec();
    // filler, capabilities (2), charset, status (2), capabilities (2),
    // auth data length, 10 reserved bytes.
    let part2 = part1 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10;
    nonce.extend_from_slice(&greeting[part2..part2 + 12]);
    nonce
}

/// A login as `user` over TLS from the loopback address `from`: a
/// `caching_sha2_password` scramble made from `scrambled`, then `password`
/// if jitgate asks for full authentication (`None`: go away instead).
/// Every packet jitgate sends after its greeting, as (sequence id,
/// payload), the name and address in an error replaced by `<name>`, `<addr>`.
async fn caching_sha2_login(
    from: &str,
    port: u16,
    user: &str,
    scrambled: &str,
    password: Option<&str>,
) -> Vec<(u8, Vec<u8>)> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().unwrap())
        .expect("bind a loopback address");
    let mut tcp = socket
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("connect to jitgate");
    let (seq, greeting) = read_packet(&mut tcp).await;
    assert_eq!((seq, greeting[0]), (0, 10), "a v10 greeting");
    let nonce = greeting_nonce(&greeting);
    let nonce: [u8; 20] = nonce.try_into().expect("a 20-byte nonce");
    let scramble = ::mysql_common::auth::plugins::caching_sha2_password::scramble_sha256(
        &nonce,
        scrambled.as_bytes(),
    )
    .expect("a scramble of a non-empty password");

    let mut ssl_request = CLIENT_CAPS.to_le_bytes().to_vec();
    ssl_request.extend_from_slice(&(16u32 << 20).to_le_bytes());
    ssl_request.push(45);
    ssl_request.extend_from_slice(&[0; 23]);
    send_packet(&mut tcp, 1, &ssl_request).await;
    let connector = tokio_rustls::TlsConnector::from(tls_client_config());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("TLS with jitgate");

    let mut response = ssl_request;
    response.extend_from_slice(user.as_bytes());
    response.push(0);
    response.push(32);
    response.extend_from_slice(&scramble);
    response.extend_from_slice(MYSQL_TARGET.as_bytes());
    response.push(0);
    response.extend_from_slice(b"caching_sha2_password\0");
    send_packet(&mut tls, 2, &response).await;

    let mut answers = Vec::new();
    let (seq, first) = read_packet(&mut tls).await;
    answers.push((seq, first.clone()));
    if first == [0x01, 0x04]
        && let Some(password) = password
    {
        // Full authentication: the password, NUL-terminated.
        let mut cleartext = password.as_bytes().to_vec();
        cleartext.push(0);
        send_packet(&mut tls, seq + 1, &cleartext).await;
        let (seq, second) = read_packet(&mut tls).await;
        answers.push((seq, second));
    }
    if answers
        .last()
        .is_some_and(|(_, p)| p.first() == Some(&0xff))
    {
        // After a refusal jitgate closes the connection.
        let mut rest = Vec::new();
        let _ = within(secs(5), "jitgate to close", tls.read_to_end(&mut rest)).await;
        assert!(rest.is_empty(), "nothing after the refusal: {rest:?}");
    }
    for (_, payload) in &mut answers {
        *payload = replace_bytes(payload, user.as_bytes(), b"<name>");
        *payload = replace_bytes(payload, from.as_bytes(), b"<addr>");
    }
    answers
}

fn replace_bytes(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while !rest.is_empty() {
        if rest.starts_with(needle) {
            out.extend_from_slice(with);
            rest = &rest[needle.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_scramble_is_answered_alike_for_cached_uncached_and_unknown_names_mysql() {
    let db = MariaDb::start();
    let jg = Jitgate::start(&db, JitgateOptions::default()).await;
    jg.grant("alice", MYSQL_TARGET, "read", "5m").await;
    // alice logs in (full authentication), so she is in the fast-path cache.
    drop(
        mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
            .await
            .unwrap_or_else(|e| panic!("alice's login: {e}\n{}", jg.log())),
    );
    let port = jg.mysql_port();
    let (here, wrong) = ("127.0.0.1", "not-the-password");
    let cached = caching_sha2_login(here, port, "alice", wrong, Some(wrong)).await;
    let uncached = caching_sha2_login(here, port, "bob", wrong, Some(wrong)).await;
    let unknown = caching_sha2_login(here, port, "mallory", wrong, Some(wrong)).await;

    assert_eq!(
        cached[0],
        (3, vec![0x01, 0x04]),
        "a wrong scramble is asked for full authentication"
    );
    assert_eq!(cached.len(), 2, "{cached:?}");
    assert_eq!(cached[1].1[..3], [0xff, 0x15, 0x04], "1045 access denied");
    assert_eq!(cached, uncached, "known, never logged in");
    assert_eq!(cached, unknown, "unknown name");

    // Only the right scramble of a name that logged in takes the fast path.
    let fast = caching_sha2_login(here, port, "alice", ALICE_SECRET, None).await;
    assert_eq!(fast[0], (3, vec![0x01, 0x03]), "fast auth OK: {fast:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_logins_cost_an_attempt_for_cached_uncached_and_unknown_names_mysql() {
    let db = MariaDb::start();
    let jg = Jitgate::start(
        &db,
        JitgateOptions {
            max_login_failures: Some(2),
            login_failure_window: Some("1m".into()),
            ..JitgateOptions::default()
        },
    )
    .await;
    jg.grant("alice", MYSQL_TARGET, "read", "5m").await;
    drop(
        mysql_async::Conn::new(jg.async_opts(ALICE_SECRET))
            .await
            .unwrap_or_else(|e| panic!("alice's login: {e}\n{}", jg.log())),
    );
    let port = jg.mysql_port();
    // A guesser sends scrambles and goes away when asked for the password:
    // each try costs an attempt, whether or not the name is cached (alice),
    // known (bob) or unknown (mallory). Each name from its own address, so
    // only the per-name budget is spent.
    let mut third_tries = Vec::new();
    for (name, from) in [
        ("alice", "127.0.0.2"),
        ("bob", "127.0.0.3"),
        ("mallory", "127.0.0.4"),
    ] {
        for i in 0..2 {
            let guess = format!("guess-{i}");
            let answers = caching_sha2_login(from, port, name, &guess, None).await;
            assert_eq!(answers, [(3, vec![0x01, 0x04])], "{name}, try {i}");
        }
        let third = caching_sha2_login(from, port, name, "guess-2", None).await;
        let (seq, refusal) = &third[0];
        let text = String::from_utf8_lossy(refusal).into_owned();
        assert!(text.contains("too many failed logins"), "{name}: {text}");
        // The code and the words, without the seconds left to wait.
        let words: String = text.chars().filter(|c| !c.is_ascii_digit()).collect();
        third_tries.push((*seq, refusal[..3].to_vec(), words));
    }
    assert_eq!(third_tries[0], third_tries[1]);
    assert_eq!(third_tries[0], third_tries[2]);
}
