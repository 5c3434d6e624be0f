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

pub const LISTENER: super::Listener = super::Listener {
    name: "postgres",
    protocol: crate::config::Protocol::Postgres,
    address: |listen| listen.postgres,
    serve: |s| {
        let front = PgFront::new(s.gate, s.tls);
        Box::pin(
            async move { super::accept_loop(s.listener, &s.workers, front, PgFront::handle).await },
        )
    },
};
