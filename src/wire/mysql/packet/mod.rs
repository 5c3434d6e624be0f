//! MySQL packet framing and the few packets jitgate reads or writes itself.
//!
//! A packet is a 3-byte little-endian payload length, a 1-byte sequence id
//! and the payload. A payload of exactly 0xFFFFFF bytes means "more follows":
//! a logical message of 16 MiB or more is a chain of such packets ended by a
//! shorter one. Lengths are checked against a cap *before* memory is reserved
//! for them, and nothing here panics on any input: the fuzz target
//! `fuzz_targets/mysql_packet.rs` feeds these decoders arbitrary bytes.
//!
//! Only what the proxy needs is decoded: the client's SSLRequest and
//! HandshakeResponse, the server's greeting, and the first bytes of OK, ERR
//! and EOF packets. Everything else is forwarded as the original bytes.

mod framing;
mod messages;
mod numbers;
#[cfg(test)]
mod tests;

pub use framing::*;
pub use messages::*;
pub use numbers::{caps, code, command, status};

/// Payload length that means "the message continues in the next packet".
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;
pub const HEADER: usize = 4;
