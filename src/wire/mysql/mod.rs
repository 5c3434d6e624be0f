//! The MySQL/MariaDB front: TLS + `caching_sha2_password` for the developer
//! (checked against the same SCRAM verifier as Postgres logins), the level's
//! account upstream, and an inspecting, auditing relay between them.

pub mod announce;
pub mod auth;
pub mod front;
pub mod kill;
pub mod packet;
pub mod read_account;
pub mod relay;
pub mod upstream;

pub use front::MysqlFront;

pub const LISTENER: super::Listener = super::Listener {
    name: "mysql",
    protocol: crate::config::Protocol::Mysql,
    address: |listen| listen.mysql,
    serve: |s| {
        let front = MysqlFront::new(s.gate, s.tls, &s.config);
        Box::pin(async move {
            super::accept_loop(s.listener, &s.workers, front, MysqlFront::handle).await
        })
    },
};
