//! A fleet's store: a throwaway PostgreSQL of its own (not a target), with
//! a login and a database for jitgate, and the `[store]` table that points
//! a proxy at it.

use std::process::Stdio;

use super::jitgate::JitgateConfig;
use super::postgres::{PgServer, PgSettings, pg_command};
use super::process::random_hex;

/// The environment variable the test proxies read the store's URL from.
const URL_ENV: &str = "JG_TEST_STORE_URL";

pub struct StoreServer {
    pub pg: PgServer,
    password: String,
}

impl StoreServer {
    /// A new PostgreSQL with login `jitgate_store` owning database `jitgate`.
    pub async fn start() -> StoreServer {
        let pg = PgServer::start_with(PgSettings {
            synchronous_commit: true,
            ..PgSettings::default()
        })
        .await;
        let password = random_hex(16);
        let su = pg.superuser_client("postgres").await;
        su.batch_execute(&format!(
            "CREATE ROLE jitgate_store LOGIN PASSWORD '{password}'"
        ))
        .await
        .expect("create the store's login");
        su.batch_execute("CREATE DATABASE jitgate OWNER jitgate_store")
            .await
            .expect("create the store's database");
        StoreServer { pg, password }
    }

    /// `JITGATE_TEST_STORE=postgres`: every test proxy gets a PostgreSQL
    /// store of its own, so a suite written for one proxy runs against the
    /// fleet's store too (the README's test command runs the lifecycle
    /// suite both ways).
    pub fn for_every_proxy() -> bool {
        match std::env::var("JITGATE_TEST_STORE").as_deref() {
            Err(_) | Ok("" | "file") => false,
            Ok("postgres") => true,
            Ok(other) => panic!("JITGATE_TEST_STORE={other}: use file or postgres"),
        }
    }

    /// The connection URL, password included (only ever in the environment).
    pub fn url(&self) -> String {
        self.url_via(self.pg.port())
    }

    /// The URL through another port (a [`super::Link`] in front of the store).
    pub fn url_via(&self, port: u16) -> String {
        format!(
            "postgres://jitgate_store:{}@127.0.0.1:{port}/jitgate",
            self.password
        )
    }

    /// Point `config` at this store as proxy `proxy`, failing closed after
    /// `fail_closed_after`; the URL's password joins the secrets no client
    /// may ever see.
    pub fn configure(&self, config: &mut JitgateConfig, proxy: &str, fail_closed_after: &str) {
        self.configure_via(config, proxy, fail_closed_after, self.pg.port());
    }

    /// Like [`StoreServer::configure`], reaching the store through `port`.
    pub fn configure_via(
        &self,
        config: &mut JitgateConfig,
        proxy: &str,
        fail_closed_after: &str,
        port: u16,
    ) {
        config.extra.push_str(&format!(
            "\n[store]\nkind = \"postgres\"\nurl_env = \"{URL_ENV}\"\nproxy_name = \"{proxy}\"\n\
             fail_closed_after = \"{fail_closed_after}\"\n"
        ));
        config.env.push((URL_ENV.to_owned(), self.url_via(port)));
        config.upstream_secrets.push(self.password.clone());
    }

    /// Like [`StoreServer::configure`], over TLS with `tls = "verify-full"`
    /// and `ca` as the CA file.
    pub fn configure_tls(&self, config: &mut JitgateConfig, proxy: &str, ca: &std::path::Path) {
        self.configure(config, proxy, "15s");
        config.extra.push_str(&format!(
            "tls = \"verify-full\"\ntls_ca_file = \"{}\"\n",
            ca.display()
        ));
    }

    /// The store's own certificate (self-signed for localhost and
    /// 127.0.0.1), to trust as the CA of `tls = "verify-full"`.
    pub fn certificate(&self) -> Vec<u8> {
        std::fs::read(self.pg.data_dir().join("server.crt")).expect("read the store's certificate")
    }

    /// A superuser session on the store's database, to look at its tables.
    pub async fn client(&self) -> tokio_postgres::Client {
        self.pg.superuser_client("jitgate").await
    }

    /// `pg_ctl stop -m immediate`: the store goes away at once.
    pub fn stop_now(&self) {
        self.pg.stop();
    }

    /// Start the stopped store again on the same port and data.
    pub fn start_again(&self) {
        let started = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.pg.data_dir())
            .arg("-l")
            .arg(self.pg.log_path())
            .args(["-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run pg_ctl start");
        assert!(
            started.success(),
            "the store did not start again:\n{}",
            self.pg.log()
        );
    }
}
