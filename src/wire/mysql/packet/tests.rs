//! The packet readers and writers against hand-made bytes.

use super::framing::join_message;
use super::*;

fn response(caps: u32, user: &str, auth: &[u8], db: &str, plugin: &str) -> Vec<u8> {
    handshake_response(caps, 1 << 24, 45, user, auth, db, plugin).to_vec()
}

#[test]
fn handshake_response_round_trips() {
    let caps = caps::OFFERED;
    let p = response(
        caps,
        "alice",
        &[1; 32],
        "demo-mysql",
        "caching_sha2_password",
    );
    let ClientHello::Response(r) = parse_client_hello(&p, caps::OFFERED).unwrap() else {
        panic!("not a response");
    };
    assert_eq!(r.user, "alice");
    assert_eq!(r.auth_response, vec![1; 32]);
    assert_eq!(r.database.as_deref(), Some("demo-mysql"));
    assert_eq!(r.auth_plugin.as_deref(), Some("caching_sha2_password"));
}

#[test]
fn ssl_request_is_recognised() {
    let p = ssl_request(caps::OFFERED | caps::SSL, 1 << 24, 45);
    assert_eq!(
        parse_client_hello(&p, caps::OFFERED | caps::SSL).unwrap(),
        ClientHello::SslRequest {
            capabilities: caps::OFFERED | caps::SSL
        }
    );
}

#[test]
fn client_without_protocol_41_is_refused() {
    let p = response(caps::SECURE_CONNECTION, "a", b"", "", "");
    assert!(matches!(
        parse_client_hello(&p, caps::OFFERED),
        Err(PacketError::NoProtocol41)
    ));
}

#[test]
fn truncated_responses_are_errors() {
    let p = response(caps::OFFERED, "alice", &[1; 32], "demo", "x");
    for n in 0..40 {
        let _ = parse_client_hello(&p[..n], caps::OFFERED);
    }
    assert!(parse_client_hello(&p[..33], caps::OFFERED).is_err());
}

#[test]
fn greeting_round_trips() {
    let nonce = [7u8; 20];
    let g = greeting(
        "8.0.0",
        42,
        &nonce,
        caps::OFFERED,
        45,
        "caching_sha2_password",
    );
    let parsed = parse_greeting(&g).unwrap();
    assert_eq!(parsed.connection_id, 42);
    assert_eq!(parsed.nonce, nonce.to_vec());
    assert_eq!(parsed.capabilities, caps::OFFERED);
    assert_eq!(parsed.auth_plugin.as_deref(), Some("caching_sha2_password"));
}

#[test]
fn messages_span_full_packets_and_respect_the_cap() {
    let payload = vec![3u8; MAX_PAYLOAD + 10];
    let raw = frame(0, &payload);
    assert_eq!(scan_message(&raw, 32 << 20).unwrap(), Some(raw.len()));
    assert_eq!(scan_message(&raw[..raw.len() - 1], 32 << 20).unwrap(), None);
    assert!(matches!(
        scan_message(&raw[..8], 1 << 20),
        Err(PacketError::TooLarge { .. })
    ));
    let m = join_message(raw);
    assert_eq!(m.payload.len(), payload.len());
    assert_eq!(m.last_seq, 1);
}

#[test]
fn ok_err_eof_are_read() {
    assert_eq!(parse_ok(&ok(3, 2)), Some((3, 2)));
    let e = err(code::ACCESS_DENIED, "no");
    assert_eq!(
        parse_err(&e),
        Some((1045, "28000".to_owned(), "no".to_owned()))
    );
    assert_eq!(parse_eof(&[0xfe, 0, 0, 8, 0]), Some(8));
    assert_eq!(parse_eof(&[0xfe; 9]), None);
}
