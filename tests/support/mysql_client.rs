//! Real MySQL clients through jitgate: the `mariadb` command line and
//! mysql_async, over TLS that accepts any certificate — and the check that
//! nothing they were shown holds an upstream secret.

use std::process::Stdio;
use std::time::Duration;

use super::jitgate::{Jitgate, MYSQL_TARGET};
use super::run::Run;
use super::wait::within;

/// mysql_async options for `user` on 127.0.0.1:`port`, database `database`,
/// over TLS without checking the certificate.
pub fn tls_opts(port: u16, user: &str, password: &str, database: &str) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(password))
        .db_name(Some(database))
        .prefer_socket(false)
        .ssl_opts(Some(
            mysql_async::SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ))
        .into()
}

impl Jitgate {
    /// The `mariadb` CLI as alice, over TLS (or not), with the caller's
    /// arguments to come after the connection options.
    pub fn mariadb_command(&self, secret: &str, ssl: bool) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("mariadb");
        cmd.arg("--no-defaults")
            .args(["-h", "127.0.0.1", "-P", &self.mysql_port().to_string()])
            .args(["-u", "alice"])
            .arg(format!("-p{secret}"))
            .arg(if ssl { "--ssl" } else { "--skip-ssl" })
            .args(["-N", "-B"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Run the CLI against the MySQL target with `-e sql`.
    pub async fn mariadb(&self, secret: &str, ssl: bool, sql: &str) -> Run {
        let mut cmd = self.mariadb_command(secret, ssl);
        cmd.arg(MYSQL_TARGET).args(["-e", sql]);
        let out = within(Duration::from_secs(30), "the mariadb CLI", cmd.output())
            .await
            .expect("run mariadb");
        Run::from(out)
    }

    /// mysql_async options for alice through jitgate (TLS, any certificate).
    pub fn async_opts(&self, secret: &str) -> mysql_async::Opts {
        self.async_opts_as("alice", secret)
    }

    /// mysql_async options for `user` through jitgate (TLS, any certificate).
    pub fn async_opts_as(&self, user: &str, secret: &str) -> mysql_async::Opts {
        tls_opts(self.mysql_port(), user, secret, MYSQL_TARGET)
    }

    /// Every byte a client could have seen must be free of upstream secrets.
    pub fn assert_no_secret_in(&self, what: &str, text: &str) {
        for s in &self.upstream_secrets {
            assert!(
                !text.contains(s.as_str()),
                "{what} leaks an upstream secret:\n{text}"
            );
        }
    }
}
