//! Fuzz the MySQL decoding jitgate does on untrusted bytes: message framing
//! with its size cap (chains of 0xFFFFFF packets), the client's SSLRequest /
//! HandshakeResponse, the server's greeting, and the OK/ERR/EOF fields the
//! relay reads from responses.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run mysql_packet -- -max_total_time=300`
#![no_main]

use jitgate::fuzzing::{
    Cursor, caps, parse_client_hello, parse_eof, parse_err, parse_greeting, parse_ok, scan_message,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_client_hello(data, caps::OFFERED | caps::SSL);
    let _ = parse_client_hello(data, u32::MAX);
    let _ = parse_greeting(data);
    let _ = parse_ok(data);
    let _ = parse_err(data);
    let _ = parse_eof(data);
    let mut c = Cursor(data);
    while c.lenenc_bytes().is_some() {}
    // Framing: walk the messages in the input under a small cap.
    let mut rest = data;
    while let Ok(Some(n)) = scan_message(rest, 1 << 16) {
        assert!(n <= rest.len());
        rest = &rest[n..];
    }
});
