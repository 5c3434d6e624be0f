//! The PostgreSQL front: TLS + SCRAM for the developer, the level's account
//! upstream, and an inspecting, auditing relay between them.

pub mod cancel;
pub mod framing;
pub mod front;
pub mod messages;
pub mod read_account;
pub mod reaper;
pub mod relay;
pub mod scram;
pub mod upstream;

pub use front::PgFront;
