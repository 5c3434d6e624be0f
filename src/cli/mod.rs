//! The client half of the `jitgate` command: ask for access, decide
//! requests, list and end grants and sessions — all through the admin API.
//!
//! `main.rs` flattens [`Command`] into its own subcommands and calls [`run`].
//! The server and token come from `--server`/`--token` or `JITGATE_SERVER`/
//! `JITGATE_TOKEN`; the environment is the better place for the token, since
//! other users can read a process's arguments. Output is an aligned table
//! (or one sentence for an action) on stdout, the API's JSON with `--json`;
//! progress and hints go to stderr. Exit status: 0 when it worked, 1 when it
//! was refused or failed — with the API's own error text.

mod client;
mod commands;
pub(crate) use commands::client_command;
mod connect;
mod credentials;
mod login;
mod table;

use std::process::ExitCode;

use clap::{Args, Subcommand};

pub use client::{Client, ClientError};

/// Where the admin API is, who is asking, and how to print the answer.
#[derive(Args, Clone)]
pub struct ApiArgs {
    /// The admin API's URL.
    #[arg(long, env = "JITGATE_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Your jitgate secret. Prefer setting JITGATE_TOKEN: other users can see
    /// command-line arguments in `ps`.
    #[arg(long, env = "JITGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Ask for access to a target at one level for a while.
    Request {
        /// The target (database) to access, as named in the proxy config.
        target: String,
        /// The access level, e.g. read or write.
        #[arg(long)]
        level: String,
        /// How long the grant should last, e.g. 30m or 2h.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why you need it: an incident or ticket number.
        #[arg(long)]
        reason: String,
        /// Wait for the decision; on approval print a psql connection string.
        #[arg(long)]
        wait: bool,
        /// Wait for the decision, then connect as `jitgate connect` does.
        #[arg(long)]
        connect: bool,
        #[command(flatten)]
        api: ApiArgs,
        /// With --connect: arguments for the client (after `--`).
        #[arg(last = true, requires = "connect")]
        client_args: Vec<String>,
    },
    /// Start psql (or mariadb/mysql) on a target you hold a grant for, with
    /// your credential passed in a private file, never on a command line.
    Connect {
        /// The target (database), as named in the proxy config.
        target: String,
        /// The grant's level, when you hold several on the target.
        #[arg(long)]
        level: Option<String>,
        /// The CA of the proxy's TLS certificate: the client then checks
        /// the certificate and the host name.
        #[arg(long, env = "JITGATE_CA_FILE")]
        ca_file: Option<std::path::PathBuf>,
        #[command(flatten)]
        api: ApiArgs,
        /// Arguments for the client (after `--`), e.g. `-- -c 'select 1'`.
        #[arg(last = true)]
        client_args: Vec<String>,
    },
    /// List requests you made or may decide.
    Requests {
        /// pending, approved, denied, cancelled, expired, or all.
        #[arg(long, default_value = "pending")]
        state: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Approve a pending request.
    Approve {
        /// The request id (r_…).
        id: String,
        /// A note for the requester and the audit log.
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Deny a pending request.
    Deny {
        /// The request id (r_…).
        id: String,
        /// Why, for the requester and the audit log.
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Withdraw your own pending request.
    Cancel {
        /// The request id (r_…).
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List active grants.
    Grants {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// End a grant now; its sessions are cut.
    Revoke {
        /// The grant id (g_…).
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List live sessions through the proxy.
    Sessions {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// End one live session now.
    Kill {
        /// The session id.
        session: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show who your token belongs to.
    Whoami {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// (admins) Read the proxy's config file again and put it in force, as
    /// SIGHUP does; says what changed, or why the file was refused.
    Reload {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Sign in through your company's identity provider and keep the
    /// credential jitgate issues (your API token and database password).
    Login {
        /// Sign in on another device (for SSH sessions and machines without
        /// a browser): you are shown an address and a code.
        #[arg(long)]
        device: bool,
        /// Print the sign-in address instead of opening a browser.
        #[arg(long)]
        no_browser: bool,
        /// The loopback port the browser comes back to (registered at the
        /// provider as http://127.0.0.1:PORT/callback); by default any free
        /// one, for providers that allow any port (RFC 8252).
        #[arg(long, default_value_t = 0)]
        port: u16,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// End your credential (and the sessions opened with it).
    Logout {
        /// End every credential you hold, on every machine.
        #[arg(long, conflicts_with = "user")]
        all: bool,
        /// (admins) End every credential and session of this person.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// With --user: also free the name for another account at the
        /// identity provider (it must hold no grant or pending request).
        #[arg(long, requires = "user")]
        free_name: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Run one client command against the admin API.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(commands::run(command))
}
