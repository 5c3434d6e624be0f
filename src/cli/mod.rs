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
mod table;

use std::process::ExitCode;

use clap::{Args, Subcommand};

pub use client::{Client, ClientError};

/// Where the admin API is, who is asking, and how to print the answer.
#[derive(Args)]
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
        #[command(flatten)]
        api: ApiArgs,
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
}

/// Run one client command against the admin API.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(commands::run(command))?;
    Ok(ExitCode::SUCCESS)
}
