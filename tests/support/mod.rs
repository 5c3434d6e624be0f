//! The one integration-test kit: throwaway PostgreSQL and MariaDB servers,
//! a jitgate in front of them, and the real clients that talk to both.
//! Every test crate takes it in with `mod support;`; the benches that need
//! servers take it in too, with `#[path = "../tests/support/mod.rs"]`.
//!
//! Everything here runs real processes from the installed binaries, so a
//! test asserts on what the server itself saw (`pg_stat_activity`,
//! `information_schema.processlist`, its log) rather than on mocks. Every
//! server lives in its own temporary directory on its own free ports, so
//! tests run in parallel; every wait is bounded, so a broken proxy fails a
//! test instead of hanging the suite; and `Drop` stops every process a test
//! started, even when the test panics.
//!
//! One idea a file: `process` (ports, commands, accounts), `scratch` (the
//! servers' directories and the sweep of leftovers), `wait` (bounded
//! waits), `postgres` and `mariadb` (the servers, their templates and their
//! own view), `pgbouncer` (a pooler in front of PostgreSQL, for the
//! benches), `jitgate` (the proxy process, its config, its audit log),
//! `admin` (the admin API and CLI), `chromium` (a real browser for the
//! approver page), `pg_client` (psql, pgbench,
//! tokio-postgres), `mysql_client` (the mariadb CLI, mysql_async), `run`
//! (what a client program did), `store` (a fleet's PostgreSQL store),
//! `cut` (a TCP link a test can cut), `percentiles` (the benches' tables),
//! `tls` (any-certificate TLS), `webhook` (a receiver for notifications), `raw_pg` and
//! `raw_mysql` (protocol bytes by hand), and the helpers of two kinds of
//! test (`oracle`, `tmpfs`).

// Each test crate compiles the kit on its own and uses only part of it, so
// what one crate leaves unused (a helper, or a name re-exported below) is
// still used by another.
#![allow(dead_code, unused_imports)]

mod admin;
mod chromium;
mod cut;
mod jitgate;
mod mariadb;
mod mysql_client;
mod oidc;
mod percentiles;
mod pg_client;
mod pgbouncer;
mod postgres;
mod process;
mod raw_mysql;
mod raw_pg;
mod run;
mod scratch;
mod store;
mod tls;
mod wait;
mod webhook;

pub mod oracle;
pub mod tmpfs;

pub use admin::{AdminApi, expires_at, id_of, id_string, time_of};
pub use chromium::{Chromium, screenshot_path};
pub use cut::Link;
pub use jitgate::{
    ADMIN_SECRET, ALICE_SECRET, BOB_SECRET, CAROL_SECRET, Jitgate, JitgateConfig, JitgateOptions,
    MYSQL_TARGET, PG_TARGET, Protocol, Upstream,
};
pub use mariadb::MariaDb;
pub use oidc::{
    Account, Browser, Interposer, OIDC_CLIENT_SECRET, OidcProvider, ProviderOptions, Tamper,
    code_in, jitgate_client,
};
pub use percentiles::{cores_and_cpu, lag_row, ms};
pub use pg_client::{Login, assert_sqlstate, describe_error, sqlstate};
pub use pgbouncer::{Pgbouncer, PgbouncerSettings, pooled_clients};
pub use postgres::{
    Backend, By, PgServer, PgSettings, wait_for_reaper_termination, watch_backends_gone,
};
pub use process::{free_port, recording_wrapper};
pub use raw_mysql::{mysql_packet, read_mysql_packet};
pub use raw_pg::{
    BackendMessage, CANCEL_REQUEST_CODE, Ending, GSSENC_REQUEST_CODE, PROTOCOL_3_0, PROTOCOL_3_2,
    RawConn, SSL_REQUEST_CODE, cancel_packet, put_cstr, request_packet, startup_packet, tagged,
};
pub use run::Run;
pub use store::StoreServer;
pub use tls::{AnyCertTls, tls_client_config};
pub use wait::{eventually, later_by, secs, within};
pub use webhook::{Delivery, webhook_receiver};
