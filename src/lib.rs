//! jitgate: a just-in-time access proxy for production databases.
//!
//! The library holds everything; `main.rs` only parses the command line.
//! See `DESIGN.md` in the shared folder for the picture: the access model
//! (`access`) knows nothing of sockets; the wire fronts (`wire`) reach it
//! through one gate (`wire/gate.rs`), which asks `AccessModel::authorize`
//! for a lease and writes the login records to the [`audit::AuditLog`].

#![forbid(unsafe_code)]

pub(crate) mod access;
pub(crate) mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod identity;
pub(crate) mod metrics;
pub(crate) mod notify;
pub mod reload;
pub mod server;
pub(crate) mod session;
pub mod sql;
pub mod tls;
pub(crate) mod wire;

/// What the fuzz targets and the benches drive directly, below the
/// listeners: the decoders of untrusted bytes and the SCRAM exchange.
/// Everything else of the wire fronts is the crate's own.
pub mod fuzzing {
    pub use crate::wire::mysql::packet::{
        Cursor, caps, parse_client_hello, parse_eof, parse_err, parse_greeting, parse_ok,
        scan_message,
    };
    pub use crate::wire::pg::framing::{
        FrameReader, parse_startup_body, split_frames, take_cstr_bytes,
    };
    pub use crate::wire::pg::messages::{error_code, error_message};
    /// The `application_name` of jitgate's own read-account checks (the
    /// tests tell them apart from client sessions by it).
    pub use crate::wire::pg::read_account::APPLICATION_NAME;
    pub use crate::wire::pg::scram::ScramServer;
}
