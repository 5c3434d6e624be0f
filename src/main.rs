//! The `jitgate` command line: parse arguments, call the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "jitgate",
    version,
    about = "Just-in-time access proxy for production databases"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy and its admin API.
    Serve {
        /// The config file.
        #[arg(short, long, default_value = "jitgate.toml")]
        config: PathBuf,
    },
    /// Check a config file, then the fleet's store if it names one, then log
    /// in as each read-only level's upstream account and check that it
    /// cannot write; exit 1 if one can or the store cannot be used.
    CheckConfig {
        #[arg(short, long, default_value = "jitgate.toml")]
        config: PathBuf,
        /// Only check the file; connect to no database.
        #[arg(long)]
        offline: bool,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Read a secret from the terminal (or stdin) and print the verifier to put in the config.
    Passwd,
    /// Client commands: they talk to a running jitgate's admin API.
    #[command(flatten)]
    Client(jitgate::cli::Command),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of an audit log, or with --store the chain of
    /// the fleet's events in the PostgreSQL store; names the first bad one.
    Verify {
        /// The audit log (not with --store).
        #[arg(required_unless_present = "store", conflicts_with = "store")]
        file: Option<PathBuf>,
        /// Check the events chain of the store the config names.
        #[arg(long)]
        store: bool,
        /// The config that names the store (with --store).
        #[arg(short, long, default_value = "jitgate.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jitgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                // Colours only for a terminal, not in log files and journals.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            let config = jitgate::config::Config::load(&config)?;
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(jitgate::server::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config, offline } => {
            let c = jitgate::config::Config::load(&config)?;
            println!(
                "{}: ok ({} identities, {} targets)",
                config.display(),
                c.identities.len(),
                c.targets.len()
            );
            if offline {
                return Ok(ExitCode::SUCCESS);
            }
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            Ok(runtime.block_on(jitgate::server::check_connections(&c)))
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    store: true,
                    config,
                    ..
                },
        } => verify_store(&config),
        Command::Audit {
            command: AuditCommand::Verify {
                file: Some(file), ..
            },
        } => {
            let report = jitgate::audit::verify(&file)?;
            for line in &report.torn_lines {
                eprintln!(
                    "{}: warning: line {line} was cut short by a crash and recovered (see the audit_log_recovered record after it)",
                    file.display()
                );
            }
            match &report.first_bad {
                None => {
                    println!("{}: {} lines, chain intact", file.display(), report.lines);
                    Ok(ExitCode::SUCCESS)
                }
                Some((line, why)) => {
                    println!("{}: line {line}: {why}", file.display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Audit {
            command: AuditCommand::Verify { file: None, .. },
        } => anyhow::bail!("name the audit log to check, or --store for the store's events"),
        Command::Client(command) => jitgate::cli::run(command),
        Command::Passwd => {
            let secret = read_secret()?;
            if secret.is_empty() {
                anyhow::bail!("empty secret; nothing printed");
            }
            println!("{}", jitgate::identity::ScramVerifier::generate(&secret));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `jitgate audit verify --store`.
fn verify_store(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let c = jitgate::config::Config::load(config)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let Some(report) = runtime.block_on(jitgate::server::verify_store(&c)) else {
        anyhow::bail!(
            "{} names no PostgreSQL store ([store] kind = \"postgres\"); its journal is checked when jitgate starts",
            config.display()
        );
    };
    let report = report?;
    match &report.first_bad {
        None => {
            println!("store: {} events, chain intact", report.events);
            Ok(ExitCode::SUCCESS)
        }
        Some((seq, why)) => {
            println!("store: event {seq}: {why}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Read one line from stdin, without echo when it is a terminal.
fn read_secret() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    if tty {
        eprint!("secret (not echoed): ");
        let _ = std::io::stderr().flush();
        let _ = std::process::Command::new("stty").arg("-echo").status();
    }
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if tty {
        let _ = std::process::Command::new("stty").arg("echo").status();
        eprintln!();
    }
    r.context("cannot read the secret from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
