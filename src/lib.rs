//! jitgate: a just-in-time access proxy for production databases.
//!
//! The library holds everything; `main.rs` only parses the command line.
//! See `DESIGN.md` in the shared folder for the picture: the access model
//! (`access`) knows nothing of sockets, the wire fronts (`wire`) reach the rest
//! only through [`access::AccessModel::authorize`] and [`audit::AuditLog`].

#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod identity;
pub mod metrics;
pub mod notify;
pub mod server;
pub mod session;
pub mod sql;
pub mod tls;
pub mod wire;
