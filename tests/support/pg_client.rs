//! Real PostgreSQL clients through jitgate: `psql`, `pgbench`, any libpq
//! program, Python's psycopg2 and tokio-postgres — each with a clean
//! environment, a login the test chose, and a time limit — and reading the
//! errors they get.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::jitgate::{ALICE_SECRET, Jitgate, PG_TARGET};
use super::run::Run;
use super::tls::AnyCertTls;
use super::wait::within;

/// Who logs in, to which target, how.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub password: String,
    pub dbname: String,
    pub sslmode: String,
}

impl Login {
    pub fn new(user: &str, password: &str) -> Login {
        Login {
            user: user.to_owned(),
            password: password.to_owned(),
            dbname: PG_TARGET.to_owned(),
            sslmode: "require".to_owned(),
        }
    }

    pub fn alice() -> Login {
        Login::new("alice", ALICE_SECRET)
    }

    pub fn dbname(mut self, dbname: &str) -> Login {
        self.dbname = dbname.to_owned();
        self
    }

    pub fn sslmode(mut self, sslmode: &str) -> Login {
        self.sslmode = sslmode.to_owned();
        self
    }

    /// tokio-postgres settings for this login to 127.0.0.1:`port`, with TLS
    /// as `sslmode` says (connect with [`AnyCertTls`]).
    pub fn config(&self, port: u16) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(port)
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.dbname)
            .ssl_mode(match self.sslmode.as_str() {
                "disable" => tokio_postgres::config::SslMode::Disable,
                "prefer" => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
        config
    }
}

impl Jitgate {
    pub fn conninfo(&self, login: &Login) -> String {
        format!(
            "host=127.0.0.1 port={} user={} dbname={} sslmode={}",
            self.pg_port(),
            login.user,
            login.dbname,
            login.sslmode
        )
    }

    fn client_command(&self, program: &str, login: &Login) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        for var in [
            "PGHOST",
            "PGHOSTADDR",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGSSLMODE",
            "PGSERVICE",
            "PGOPTIONS",
            "PGSSLROOTCERT",
            "PGCHANNELBINDING",
            "PGREQUIREAUTH",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("PGPASSWORD", &login.password)
            .env("PGPASSFILE", "/dev/null")
            .env("PGCONNECT_TIMEOUT", "5")
            .env("PGAPPNAME", "jitgate-tests")
            .kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// `psql` as alice on demo-pg over TLS.
    pub async fn psql(&self, args: &[&str]) -> Run {
        self.psql_as(&Login::alice(), args, None).await
    }

    /// `psql -X -A -t -v ON_ERROR_STOP=1 <conninfo> args…`, optionally fed `stdin`.
    pub async fn psql_as(&self, login: &Login, args: &[&str], stdin: Option<&str>) -> Run {
        let mut child = self.spawn_psql(login, args, stdin.is_some());
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("psql stdin");
            pipe.write_all(input.as_bytes())
                .await
                .expect("write psql stdin");
            drop(pipe);
        }
        let out = within(
            Duration::from_secs(30),
            "psql to finish",
            child.wait_with_output(),
        )
        .await
        .expect("wait for psql");
        Run::from(out)
    }

    pub fn spawn_psql(
        &self,
        login: &Login,
        args: &[&str],
        piped_stdin: bool,
    ) -> tokio::process::Child {
        let mut cmd = self.client_command("psql", login);
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(self.conninfo(login))
            .args(args);
        if piped_stdin {
            cmd.stdin(Stdio::piped());
        }
        cmd.spawn().expect("spawn psql")
    }

    /// `pgbench` with the connection given through the environment.
    pub async fn pgbench(&self, login: &Login, args: &[&str]) -> Run {
        let mut cmd = self.client_command("pgbench", login);
        cmd.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.pg_port().to_string())
            .env("PGUSER", &login.user)
            .env("PGDATABASE", &login.dbname)
            .env("PGSSLMODE", &login.sslmode)
            .args(args);
        let out = within(Duration::from_secs(60), "pgbench to finish", cmd.output())
            .await
            .expect("run pgbench");
        Run::from(out)
    }

    /// Any libpq client through jitgate: `program args… -d <conninfo>`.
    pub async fn libpq_client(&self, program: &str, login: &Login, args: &[&str]) -> Run {
        let mut cmd = self.client_command(program, login);
        cmd.args(args).arg("-d").arg(self.conninfo(login));
        let out = within(
            Duration::from_secs(60),
            "the client to finish",
            cmd.output(),
        )
        .await
        .expect("run the client");
        Run::from(out)
    }

    /// A Python program (Debian's `python3` with psycopg2) through jitgate:
    /// `JITGATE_DSN` holds the connection string without the password,
    /// which libpq reads from the environment.
    pub async fn python(&self, login: &Login, program: &str) -> Run {
        let mut cmd = self.client_command("/usr/bin/python3", login);
        cmd.env("JITGATE_DSN", self.conninfo(login))
            .arg("-c")
            .arg(program);
        let out = within(Duration::from_secs(60), "python to finish", cmd.output())
            .await
            .expect("run python3");
        Run::from(out)
    }

    /// A tokio-postgres session through jitgate (TLS required, any certificate).
    pub async fn connect(
        &self,
        login: &Login,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = login.config(self.pg_port());
        config
            .application_name("jitgate-tests")
            .connect_timeout(Duration::from_secs(5));
        let (client, connection) = within(
            Duration::from_secs(20),
            "tokio-postgres login through jitgate",
            config.connect(AnyCertTls::new()),
        )
        .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Like [`Jitgate::connect`], panicking with the proxy's log on failure.
    pub async fn connect_ok(&self, login: &Login) -> tokio_postgres::Client {
        match self.connect(login).await {
            Ok(c) => c,
            Err(e) => panic!(
                "login as {} to {} failed: {}\n--- jitgate log\n{}",
                login.user,
                login.dbname,
                describe_error(&e),
                self.log()
            ),
        }
    }

    /// jitgate's log says its reaper ended exactly the one busy backend it
    /// was asked for (not a cancel request).
    pub fn assert_reaper_ended_one(&self) {
        let log = self.log();
        assert!(
            log.contains("ended busy upstream backends in one statement")
                && log.contains("asked=1 ended=1"),
            "the running query should be ended by the level's reaper, not a cancel request:\n{log}"
        );
    }
}

/// SQLSTATE of a tokio-postgres error, if the server (or proxy) sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.code().map(|c| c.code().to_owned())
}

/// Assert that `e` carries SQLSTATE `code`, showing the whole error if not.
#[track_caller]
pub fn assert_sqlstate(e: &tokio_postgres::Error, code: &str) {
    assert_eq!(
        sqlstate(e).as_deref(),
        Some(code),
        "expected SQLSTATE {code}, got {}",
        describe_error(e)
    );
}

/// A tokio-postgres error with its SQLSTATE, message and hint, for assertions.
pub fn describe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} {}: {}{}",
            db.severity(),
            db.code().code(),
            db.message(),
            db.hint()
                .map(|h| format!(" (hint: {h})"))
                .unwrap_or_default()
        ),
        None => format!("{e} ({e:?})"),
    }
}
