//! Starting jitgate: open the audit log, build the shared state, bind listeners.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::access::{AccessModel, StoreError};
use crate::admin::ApiParts;
use crate::audit::{AuditError, AuditLog};
use crate::config::{Config, Limits};
use crate::identity::oidc::{Provider, ProviderSetupError, ProviderSlot};
use crate::identity::{DecoyKey, DecoyKeyError, Identities, LoginLimiter};
use crate::reload::Reloader;
use crate::session::Sessions;
use crate::tls::TlsError;
use crate::wire::gate::{Gate, GateParts};
use crate::wire::read_account::ReadAccounts;
use crate::wire::workers::Workers;
use crate::wire::{LISTENERS, Serving};

/// Everything the listeners and the admin API share; each gets its part.
pub struct Shared {
    pub config: Arc<Config>,
    pub identities: Arc<Identities>,
    pub access: Arc<AccessModel>,
    pub sessions: Arc<Sessions>,
    pub audit: Arc<AuditLog>,
    /// Whether each read-only level's upstream account is read-only.
    pub read_accounts: Arc<ReadAccounts>,
    /// The one failed-login budget per identity and per address, charged by
    /// every listener and the admin API alike.
    pub logins: Arc<LoginLimiter>,
    /// The identity provider people sign on through, if one is configured.
    pub(crate) provider: Arc<ProviderSlot>,
    /// The webhooks in force, for the notifier (a reload sends new ones).
    pub(crate) webhooks: tokio::sync::watch::Sender<Vec<crate::config::WebhookConfig>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    DecoyKey(#[from] DecoyKeyError),
    /// The journal cannot be opened or replayed (or its replay cannot be recorded).
    #[error(transparent)]
    Access(#[from] StoreError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Provider(#[from] ProviderSetupError),
    #[error(
        "cannot listen on {addr} ({what}): {source}; is another jitgate or database already using it?"
    )]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot start the session threads: {0}")]
    SessionThreads(std::io::Error),
    #[error("cannot listen for SIGHUP (config reloads): {0}")]
    Signals(std::io::Error),
    #[error("the {what} listener stopped: {source}")]
    Listener {
        what: &'static str,
        source: std::io::Error,
    },
}

impl Shared {
    /// Build the shared state from a validated config: opens the audit log,
    /// then the journal, whose replay restores requests and grants.
    pub fn new(config: Config) -> Result<Arc<Shared>, ServeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let decoy_key = DecoyKey::load_or_create(&config.data_dir)?;
        let audit = AuditLog::open(&config.audit)?;
        audit.end_orphaned_sessions()?;
        crate::metrics::METRICS.add_known_targets(config.targets.iter().map(|t| t.name.as_str()));
        let provider = config.oidc.as_ref().map(Provider::new).transpose()?;
        let config = Arc::new(config);
        let access = AccessModel::open(config.clone(), audit.clone())?;
        let shared = Shared::assemble(config, audit, access, decoy_key);
        shared.provider.set(provider.map(Arc::new));
        Ok(shared)
    }

    /// The shared state around an audit log and access model already open;
    /// `decoy_key` keys the verifiers of unknown names.
    pub fn assemble(
        config: Arc<Config>,
        audit: Arc<AuditLog>,
        access: Arc<AccessModel>,
        decoy_key: DecoyKey,
    ) -> Arc<Shared> {
        let sessions: Arc<Sessions> = Arc::default();
        access.set_local_sessions(sessions.clone());
        Arc::new(Shared {
            identities: Arc::new(Identities::from_config(
                &config.identities,
                decoy_key,
                access.issued.clone(),
            )),
            access,
            sessions,
            audit,
            read_accounts: Arc::default(),
            logins: Arc::new(LoginLimiter::from_limits(&config.limits)),
            provider: Arc::default(),
            webhooks: tokio::sync::watch::Sender::new(config.webhooks.clone()),
            config,
        })
    }

    /// The database listeners' gate.
    fn gate(&self) -> Gate {
        let parts = GateParts {
            identities: self.identities.clone(),
            access: self.access.clone(),
            audit: self.audit.clone(),
            logins: self.logins.clone(),
            sessions: self.sessions.clone(),
            read_accounts: self.read_accounts.clone(),
        };
        Gate::new(parts, &self.config.limits, self.config.tls.require)
    }

    /// The admin API's part; `reloader` answers `POST /v1/reload`.
    fn api(&self, reloader: Arc<Reloader>) -> ApiParts {
        ApiParts {
            config: self.config.clone(),
            identities: self.identities.clone(),
            access: self.access.clone(),
            sessions: self.sessions.clone(),
            audit: self.audit.clone(),
            logins: self.logins.clone(),
            provider: self.provider.clone(),
            reloader: Some(reloader),
            listeners: LISTENERS
                .iter()
                .filter_map(|l| Some((l.name, (l.address)(&self.config.listen)?)))
                .collect(),
        }
    }
}

/// `SIGHUP` reloads the config (as `jitgate reload` does), one at a time;
/// the outcome is logged, audited and counted by the reloader.
/// `hangups` is listened to from the very start, so a SIGHUP that comes
/// while the store is still being read waits for the reloader instead of
/// ending the process.
fn reload_on_sighup(
    reloader: Arc<Reloader>,
    mut hangups: tokio::signal::unix::Signal,
) -> Result<(), ServeError> {
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let _ = reloader.reload("SIGHUP").await;
        }
    });
    Ok(())
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, what, source })
}

/// Descriptors jitgate needs besides its sessions and handshakes: the
/// listeners, the audit log, the journal, upstream side connections.
const DESCRIPTORS_BESIDES_CONNECTIONS: u64 = 64;

/// Raise the open-files soft limit to the hard one, so the configured caps
/// (two descriptors per session, one per pending handshake, the admin API's
/// connections) are reached before the process runs out of descriptors;
/// warn if even the hard limit is too low for them.
fn raise_descriptor_limit(limits: &Limits) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let soft = if now.current == now.maximum {
        now.current
    } else {
        let raised = Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => now.maximum,
            Err(e) => {
                tracing::warn!(error = %e, "cannot raise the open-files limit to its hard limit");
                now.current
            }
        }
    };
    let needed = 2 * limits.max_sessions as u64
        + limits.max_pending_handshakes as u64
        + limits.admin_max_connections as u64
        + DESCRIPTORS_BESIDES_CONNECTIONS;
    if let Some(soft) = soft
        && soft < needed
    {
        tracing::warn!(
            open_files = soft,
            needed,
            "the open-files limit is below what limits.max_sessions, max_pending_handshakes and \
             admin_max_connections may use; raise it (LimitNOFILE= in systemd, ulimit -n) or lower those limits"
        );
    }
}

/// Run jitgate until a listener fails or the process is stopped.
pub async fn run(config: Config) -> Result<(), ServeError> {
    raise_descriptor_limit(&config.limits);
    // A statement longer than a message cannot arrive anyway.
    crate::sql::set_max_classified_bytes(
        config
            .limits
            .max_classified_statement_bytes
            .min(config.limits.max_message_bytes),
    );
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(ServeError::Signals)?;
    let tls = crate::tls::acceptor(&config.tls)?;
    let shared = Shared::new(config)?;
    let config = shared.config.clone();
    crate::notify::spawn(
        shared.webhooks.subscribe(),
        shared.access.subscribe_from_start(),
    );
    let reloader = Arc::new(Reloader::new(shared.clone()));
    reload_on_sighup(reloader.clone(), hangups)?;
    for target in config
        .targets
        .iter()
        .filter(|t| t.demo_create_read_accounts_with.is_some())
    {
        match crate::wire::read_account::create_demo_accounts(
            target,
            config.limits.max_message_bytes,
        )
        .await
        {
            Ok(made) => {
                tracing::info!(target = %target.name, accounts = %made.join(", "), "demo: the read levels' accounts exist on the local server (demo_create_read_accounts_with)");
            }
            Err(e) => {
                tracing::warn!(target = %target.name, error = %e, "demo: cannot create the read levels' accounts (demo_create_read_accounts_with); their logins will be refused until they exist");
            }
        }
    }
    // The listeners need not wait: a login that comes first runs the check
    // itself, and one that comes meanwhile waits for this one.
    let checks = shared.clone();
    tokio::spawn(async move { checks.read_accounts.check_all(&checks.config).await });
    let workers = Arc::new(
        Workers::start(config.limits.session_threads).map_err(ServeError::SessionThreads)?,
    );
    let mut tasks = tokio::task::JoinSet::new();
    let gate = Arc::new(shared.gate());
    for l in LISTENERS {
        let Some(addr) = (l.address)(&config.listen) else {
            continue;
        };
        let serving = Serving {
            listener: bind(addr, l.name).await?,
            workers: workers.clone(),
            gate: gate.clone(),
            tls: Some(tls.clone()),
            config: config.clone(),
        };
        tracing::info!(%addr, "{} listener ready", l.name);
        let served = (l.serve)(serving);
        let name = l.name;
        tasks.spawn(async move { (name, served.await) });
    }
    if let Some(addr) = config.listen.admin {
        let tls = config
            .admin
            .tls
            .as_ref()
            .map(crate::tls::admin_acceptor)
            .transpose()?;
        let listener = bind(addr, "admin").await?;
        let api = Arc::new(shared.api(reloader.clone()));
        tracing::info!(%addr, tls = tls.is_some(), "admin API ready");
        tasks.spawn(async move { ("admin", crate::admin::serve(listener, api, tls).await) });
    }
    eprintln!(
        "jitgate is running (config {}, audit log {}, {} session thread{})",
        config.source.display(),
        config.audit.path.display(),
        workers.threads(),
        if workers.threads() == 1 { "" } else { "s" }
    );
    match tasks.join_next().await {
        Some(Ok((what, Err(source)))) => Err(ServeError::Listener { what, source }),
        _ => Ok(()),
    }
}

/// `jitgate audit verify --store`: check the fleet's events chain in the
/// store `config` names. `None` when the config names the file store.
pub async fn verify_store(
    config: &Config,
) -> Option<Result<crate::access::store::ChainReport, crate::access::store::SharedStoreError>> {
    match &config.store.kind {
        crate::config::StoreKind::File => None,
        crate::config::StoreKind::Postgres(pg) => Some(crate::access::store::verify(pg).await),
    }
}

/// `check-config`'s second half: with a fleet's store, one line on it (a
/// store that cannot be reached or is too new fails the check); then one
/// line per read-only level. A level whose account can write fails the
/// check unless the config allows it; one that cannot be reached now is
/// only reported (serve checks it again).
pub async fn check_connections(config: &Config) -> std::process::ExitCode {
    use crate::wire::read_account::{Verdict, check, summary};
    use std::process::ExitCode;
    let mut code = ExitCode::SUCCESS;
    if let crate::config::StoreKind::Postgres(pg) = &config.store.kind {
        match crate::access::store::schema::describe_store(pg).await {
            Ok(state) => println!(
                "store (postgres, proxy {}): {state}",
                config.store.proxy_name
            ),
            Err(e) => {
                println!("store (postgres, proxy {}): {e}", config.store.proxy_name);
                code = ExitCode::FAILURE;
            }
        }
    }
    for target in &config.targets {
        for (name, level) in target.levels.iter().filter(|(_, l)| l.read_only) {
            let at = format!("level {name} on {} (account {})", target.name, level.user);
            match check(target, name, level, config.limits.max_message_bytes).await {
                Verdict::ReadOnly => println!("{at}: read-only on the server"),
                Verdict::CanWrite(f) if level.allow_privileged_read_account => println!(
                    "{at}: warning: can write ({}), allowed by allow_privileged_read_account",
                    summary(&f)
                ),
                Verdict::CanWrite(f) => {
                    println!(
                        "{at}: can write ({}); jitgate refuses logins on this level. Give it a \
                         read-only account, or set allow_privileged_read_account = true",
                        summary(&f)
                    );
                    code = ExitCode::FAILURE;
                }
                Verdict::Unchecked(why) => {
                    println!("{at}: not checked: {why}");
                }
            }
        }
    }
    code
}
