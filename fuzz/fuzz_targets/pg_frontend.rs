//! Fuzz the PostgreSQL frontend decoding jitgate does on untrusted bytes:
//! the startup packet, message framing with its size cap, the fields the
//! relay reads from Query/Parse/Bind/Execute, and both SCRAM client messages.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run pg_frontend -- -max_total_time=300`
#![no_main]

use jitgate::identity::{LoginKeys, ScramVerifier};
use jitgate::fuzzing::{parse_startup_body, split_frames, take_cstr_bytes};
use jitgate::fuzzing::{error_code, error_message};
use jitgate::fuzzing::ScramServer;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn verifier() -> ScramVerifier {
    static V: OnceLock<ScramVerifier> = OnceLock::new();
    V.get_or_init(|| ScramVerifier::parse(&ScramVerifier::generate("fuzz")).unwrap())
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_startup_body(data);
    if let Ok(frames) = split_frames(data, 1 << 20) {
        for f in frames {
            let mut body = &f[5..];
            let _ = take_cstr_bytes(&mut body);
            let _ = take_cstr_bytes(&mut body);
            let _ = error_code(&f[5..]);
            let _ = error_message(&f[5..]);
        }
    }
    // SCRAM: split the input in two messages at the first 0xff byte.
    let (first, last) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    if let Ok((server, _)) = ScramServer::start(LoginKeys::decoy(&verifier()), first) {
        let _ = server.finish(last);
    }
});
