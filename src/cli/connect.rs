//! `jitgate connect <target>`: from a grant to a prompt in one command.
//!
//! It asks the admin API who the caller is, whether they hold a live grant
//! on the target (and says what to run when they do not), and where the
//! proxy listens for the target's protocol; then it starts `psql` (or
//! `mariadb`, or `mysql`) with the host, port, user, target and TLS set.
//! The secret reaches the client through a file only its owner can read,
//! in a directory of its own that is removed when the client exits: a libpq
//! pass file (`PGPASSFILE`) or a MySQL option file
//! (`--defaults-extra-file`, a path on the command line, not the secret).
//! Never a command-line argument, never `PGPASSWORD`/`MYSQL_PWD`. Ctrl-C
//! belongs to the client (it cancels a query) while it runs: jitgate
//! ignores it, so it is there to remove the file when the client exits.
//!
//! TLS: `--ca-file` (or `JITGATE_CA_FILE`) names the CA of the proxy's
//! certificate, and the client then checks the certificate and the host
//! name (psql `verify-full`, mariadb `--ssl-verify-server-cert`). Without
//! it the connection is encrypted but the proxy is not authenticated; a
//! MySQL login sends the secret inside that TLS, so set it wherever the
//! network between you and the proxy is not yours.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::commands::Listener;
use super::{ApiArgs, Client};

#[derive(Deserialize)]
struct GrantRow {
    identity: String,
    target: String,
    level: String,
}

/// What the client program is given.
struct Session<'a> {
    listener: &'a Listener,
    user: &'a str,
    /// The target, or `target@level` when a level was named.
    database: String,
    secret: &'a str,
    /// The proxy's CA: the client verifies the proxy's certificate.
    ca_file: Option<&'a Path>,
}

pub(crate) async fn connect(
    api: ApiArgs,
    target: &str,
    level: Option<&str>,
    ca_file: Option<&Path>,
    extra: &[String],
) -> anyhow::Result<ExitCode> {
    let Some(secret) = super::login::token_for(&api)? else {
        bail!(
            "you are not signed in: run `jitgate login` (or set JITGATE_TOKEN to your jitgate secret)"
        );
    };
    let client = Client::new(&api.server, Some(secret.clone()))?;
    let me = client.get("/v1/whoami").await?;
    let identity = me["identity"]
        .as_str()
        .context("the admin API did not say who you are")?
        .to_owned();
    let grants: Vec<GrantRow> =
        serde_json::from_value(client.get("/v1/grants").await?["grants"].clone())
            .context("the admin API's grant list is not what this jitgate expects")?;
    let held = grants.iter().any(|g| {
        g.identity == identity && g.target == target && level.is_none_or(|l| g.level == l)
    });
    if !held {
        let at = level.map(|l| format!(" at level {l}")).unwrap_or_default();
        let ask_level = level.unwrap_or("<level>");
        bail!(
            "you ({identity}) hold no active grant for {target}{at}; ask for one and connect when it is approved:\n  \
             jitgate request {target} --level {ask_level} --for 30m --reason '<ticket or incident>' --wait --connect"
        );
    }
    let Some(listener) = super::commands::listener_for(&client, target).await? else {
        bail!(
            "this jitgate has no listener for {target}'s protocol; ask its operator where to connect"
        );
    };
    let session = Session {
        listener: &listener,
        user: &identity,
        database: match level {
            Some(l) => format!("{target}@{l}"),
            None => target.to_owned(),
        },
        secret: &secret,
        ca_file,
    };
    run_client(&session, extra).await
}

/// Start the client for `session` with `extra` arguments, wait for it, and
/// remove the secret's file; the client's exit status is jitgate's.
async fn run_client(session: &Session<'_>, extra: &[String]) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    // Listening for them is what keeps them from ending jitgate: Ctrl-C
    // and Ctrl-\ are the client's. A terminal that goes away (SIGHUP) or
    // a stop (SIGTERM) ends the client first, then jitgate, file removed.
    let _interrupts = signal(SignalKind::interrupt())?;
    let _quits = signal(SignalKind::quit())?;
    let mut hangups = signal(SignalKind::hangup())?;
    let mut terminations = signal(SignalKind::terminate())?;
    let dir = private_dir()?;
    let outcome = async {
        let mut command = if session.listener.mysql {
            mysql_command(session, &dir)?
        } else {
            psql_command(session, &dir)?
        };
        command.args(extra);
        // The client needs none of jitgate's own settings, least the token.
        command.env_remove("JITGATE_TOKEN");
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = tokio::process::Command::from(command)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {program}; install it (Debian: postgresql-client or mariadb-client)"
                )
            })?;
        let status = tokio::select! {
            status = child.wait() => status?,
            _ = hangups.recv() => stop(&mut child).await,
            _ = terminations.recv() => stop(&mut child).await,
        };
        Ok(match status.code() {
            Some(0) => ExitCode::SUCCESS,
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => ExitCode::FAILURE,
        })
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

/// End the client (it gets SIGKILL: its own terminal may be gone) and
/// wait for it.
async fn stop(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    let _ = child.start_kill();
    child
        .wait()
        .await
        .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(1))
}

fn psql_command(s: &Session<'_>, dir: &Path) -> anyhow::Result<std::process::Command> {
    // host:port:database:username:password, with `:` and `\` escaped.
    let field = |v: &str| v.replace('\\', "\\\\").replace(':', "\\:");
    let line = format!(
        "{}:{}:{}:{}:{}\n",
        field(&s.listener.host),
        s.listener.port,
        field(&s.database),
        field(s.user),
        field(s.secret)
    );
    let passfile = write_private(dir, "pgpass", &line)?;
    let mut command = std::process::Command::new("psql");
    for var in [
        "PGPASSWORD",
        "PGSERVICE",
        "PGHOSTADDR",
        "PGOPTIONS",
        "PGSSLROOTCERT",
    ] {
        command.env_remove(var);
    }
    command
        .env("PGHOST", &s.listener.host)
        .env("PGPORT", s.listener.port.to_string())
        .env("PGUSER", s.user)
        .env("PGDATABASE", &s.database)
        .env("PGPASSFILE", passfile);
    match s.ca_file {
        Some(ca) => {
            command
                .env("PGSSLMODE", "verify-full")
                .env("PGSSLROOTCERT", ca);
        }
        None if s.listener.tls_required => {
            command.env("PGSSLMODE", "require");
        }
        None => {
            command.env("PGSSLMODE", "prefer");
        }
    }
    Ok(command)
}

fn mysql_command(s: &Session<'_>, dir: &Path) -> anyhow::Result<std::process::Command> {
    // An option file value in double quotes: backslash and quote escaped.
    let quoted = s.secret.replace('\\', "\\\\").replace('"', "\\\"");
    let options = write_private(dir, "my.cnf", &format!("[client]\npassword=\"{quoted}\"\n"))?;
    let mariadb = on_path("mariadb");
    let mut command = std::process::Command::new(if mariadb { "mariadb" } else { "mysql" });
    command.env_remove("MYSQL_PWD");
    // The option file must be the first argument.
    command.arg(format!("--defaults-extra-file={}", options.display()));
    command.args([
        "-h",
        &s.listener.host,
        "-P",
        &s.listener.port.to_string(),
        "-u",
        s.user,
    ]);
    match (s.ca_file, mariadb) {
        (Some(ca), true) => {
            command.arg(format!("--ssl-ca={}", ca.display()));
            command.arg("--ssl-verify-server-cert");
        }
        (Some(ca), false) => {
            command.arg(format!("--ssl-ca={}", ca.display()));
            command.arg("--ssl-mode=VERIFY_IDENTITY");
        }
        (None, true) if s.listener.tls_required => {
            command.arg("--ssl");
        }
        (None, false) if s.listener.tls_required => {
            command.arg("--ssl-mode=REQUIRED");
        }
        (None, _) => {}
    }
    command.args(["-D", &s.database]);
    Ok(command)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A fresh directory only this user can enter, for the secret's file.
fn private_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!(
        "jitgate-connect-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn write_private(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(path)
}
