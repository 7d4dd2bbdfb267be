//! `flowctl`: the all-in-one server (`serve`), node tokens, and the operator
//! CLI against the REST API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use api::store::embedded::EmbeddedStore;
use api::store::etcd::{EtcdOptions, EtcdStore, EtcdTls};
use api::store::Store;
use clap::{Parser, Subcommand};
use flowctl::cli::{ApiArgs, ResourceCmd};
use flowctl::duties::{run_compaction, CompactionConfig};
use flowctl::service::{Config, Service};
use flowctl::{Error, Result};
use tracing::info;

#[derive(Debug, Parser)]
#[command(
    name = "flowctl",
    version,
    about = "stacknet flow distribution and operator CLI"
)]
struct Cli {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Runs the REST API and/or the agent distribution server. With the
    /// embedded store both run in this one process; with etcd, any number
    /// of replicas of either role can run at once.
    Serve {
        /// The store: a database file path (the embedded store, created if
        /// absent) or `etcd://host:port[,host:port...]`.
        #[arg(long)]
        store: String,
        /// CA certificate (PEM) of the etcd members; turns on TLS to etcd.
        #[arg(long)]
        etcd_ca: Option<PathBuf>,
        /// Client certificate (PEM) for etcd's --client-cert-auth.
        #[arg(long, requires = "etcd_key")]
        etcd_cert: Option<PathBuf>,
        /// The client certificate's key (PEM).
        #[arg(long, requires = "etcd_cert")]
        etcd_key: Option<PathBuf>,
        /// A prefix for every key in etcd, to share a cluster.
        #[arg(long, default_value = "")]
        etcd_namespace: String,
        /// Where agents connect (HTTP/2 cleartext); also serves /metrics.
        /// Without it (and with --api-listen) no agent is served. With
        /// neither flag, both roles run on their defaults
        /// (0.0.0.0:6653 and 127.0.0.1:8080).
        #[arg(long)]
        agent_listen: Option<SocketAddr>,
        /// Where the REST API listens. Without it (and with
        /// --agent-listen) no API is served.
        #[arg(long)]
        api_listen: Option<SocketAddr>,
        /// The cluster secret node tokens derive from; API key secrets
        /// are sealed in the store under a key derived from it too.
        #[arg(long)]
        cluster_secret_file: PathBuf,
        /// On the first start against a store without an admin, a system
        /// admin (user `admin`, tenant `admin`) with an API key is made and
        /// its credentials written here (JSON, mode 0600). Without this
        /// flag no admin is made.
        #[arg(long)]
        admin_credentials: Option<PathBuf>,
        /// Store history kept, in revisions behind the current one. One
        /// replica at a time (elected under a store lease) compacts the
        /// rest away. 0 turns the duty off.
        #[arg(long, default_value_t = 10_000)]
        compact_keep_revisions: u64,
        /// Seconds between compactions by the elected replica.
        #[arg(long, default_value_t = 60)]
        compact_every: u64,
        /// Seconds a silent duty holder keeps its lease.
        #[arg(long, default_value_t = 10)]
        duty_ttl: u64,
        /// This replica's name in duty elections (default: host:pid).
        #[arg(long)]
        replica_name: Option<String>,
        /// CA certificates (PEM) trusted for https:// operation callbacks,
        /// besides the system's roots.
        #[arg(long)]
        callback_ca_file: Option<PathBuf>,
    },
    /// Prints the token the agent of NODE presents.
    NodeToken {
        #[arg(long)]
        cluster_secret_file: PathBuf,
        node: String,
    },
    #[command(flatten)]
    Resource(ResourceCmd),
}

/// The secret file's content, without a trailing newline.
fn read_secret(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| {
        Error::Config(format!(
            "cannot read cluster secret file {}: {e}",
            path.display()
        ))
    })?;
    let secret = raw.trim_ascii_end().to_vec();
    if secret.len() < 16 {
        return Err(Error::Config(format!(
            "cluster secret in {} is shorter than 16 bytes",
            path.display()
        )));
    }
    Ok(secret)
}

/// Which store `flowctl serve` runs on, from its flags.
struct StoreArgs {
    store: String,
    etcd_ca: Option<PathBuf>,
    etcd_cert: Option<PathBuf>,
    etcd_key: Option<PathBuf>,
    etcd_namespace: String,
}

/// The opened store, and the embedded one again when it must be closed.
async fn open_store(args: &StoreArgs) -> Result<(Arc<dyn Store>, Option<EmbeddedStore>)> {
    if !args.store.starts_with("etcd://") {
        if args.etcd_ca.is_some() || args.etcd_cert.is_some() {
            return Err(Error::Config(
                "--etcd-ca/--etcd-cert/--etcd-key need --store etcd://...".into(),
            ));
        }
        let embedded = EmbeddedStore::open(Path::new(&args.store))?;
        return Ok((Arc::new(embedded.clone()), Some(embedded)));
    }
    let mut opts = EtcdOptions::from_url(&args.store)?;
    opts.namespace = args.etcd_namespace.clone();
    opts.tls = match &args.etcd_ca {
        Some(ca) => Some(EtcdTls::from_files(
            ca,
            args.etcd_cert.as_deref(),
            args.etcd_key.as_deref(),
        )?),
        None if args.etcd_cert.is_some() => {
            return Err(Error::Config(
                "--etcd-cert needs --etcd-ca (the CA of the etcd members)".into(),
            ))
        }
        None => None,
    };
    info!(endpoints = ?opts.endpoints, tls = opts.tls.is_some(), namespace = %opts.namespace, "connecting to etcd");
    let etcd = EtcdStore::connect_and_check(opts).await?;
    Ok((Arc::new(etcd), None))
}

/// The singleton duties' settings (`None`: off).
struct Duties {
    compaction: Option<CompactionConfig>,
    callbacks: flowctl::callbacks::CallbackConfig,
    candidate: String,
}

/// Writes the bootstrap admin's credentials, readable by the owner only.
fn write_credentials(path: &Path, admin: &api::http::auth::Bootstrap) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let json = serde_json::to_vec_pretty(admin)
        .map_err(|e| Error::Config(format!("cannot encode the admin credentials: {e}")))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open; narrow it before writing.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(&json)?;
    f.sync_all()?;
    Ok(())
}

async fn serve(
    store_args: StoreArgs,
    agent_listen: Option<SocketAddr>,
    api_listen: Option<SocketAddr>,
    secret: Vec<u8>,
    duties: Duties,
    admin_credentials: Option<PathBuf>,
) -> Result<()> {
    // Neither role named: the all-in-one default, both roles.
    let (agent_listen, api_listen) = match (agent_listen, api_listen) {
        (None, None) => (
            Some(SocketAddr::from(([0, 0, 0, 0], 6653))),
            Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
        ),
        other => other,
    };
    let (store, embedded) = open_store(&store_args).await?;
    let auth = api::http::auth::AuthConfig::new(secret.clone());
    if api_listen.is_some() {
        match &admin_credentials {
            Some(path) => match api::http::auth::bootstrap(store.as_ref(), &auth)
                .await
                .map_err(|p| Error::Config(format!("bootstrap: {}", p.detail)))?
            {
                Some(admin) => {
                    write_credentials(path, &admin)?;
                    info!(path = %path.display(), key_id = %admin.key_id, "made the first system admin; credentials written");
                }
                None => info!("the store already has its first admin"),
            },
            None => info!("no --admin-credentials: no first admin is made"),
        }
    }
    let service = match agent_listen {
        Some(_) => Some(
            Service::start(
                store.clone(),
                Config {
                    cluster_secret: secret,
                    history: Default::default(),
                },
            )
            .await?,
        ),
        None => None,
    };
    let agents = match agent_listen {
        Some(a) => Some(tokio::net::TcpListener::bind(a).await?),
        None => None,
    };
    let api = match api_listen {
        Some(a) => Some(tokio::net::TcpListener::bind(a).await?),
        None => None,
    };
    let addr = |l: &Option<tokio::net::TcpListener>| {
        l.as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or("-".to_string(), |a| a.to_string())
    };
    info!(agents = %addr(&agents), api = %addr(&api), "flowctl serving");
    // Aborted when serving ends (below), which ends its lease's keep-alives.
    let compaction = duties.compaction.map(|cfg| {
        let metrics = service
            .as_ref()
            .map(|s| s.shared.metrics.clone())
            .unwrap_or_default();
        tokio::spawn(run_compaction(
            store.clone(),
            duties.candidate.clone(),
            cfg,
            metrics,
        ))
    });
    // Every replica campaigns; the elected one delivers operation callbacks.
    let callbacks = tokio::spawn(flowctl::callbacks::run_callbacks(
        store.clone(),
        auth.clone(),
        duties.candidate.clone(),
        duties.callbacks,
        service
            .as_ref()
            .map(|s| s.shared.metrics.clone())
            .unwrap_or_default(),
    ));
    let mut router = api::http::router(store, auth);
    if let Some(service) = &service {
        let metrics = service.shared.clone();
        router = router.route(
            "/metrics",
            axum::routing::get(move || {
                let m = metrics.clone();
                async move { m.metrics.render() }
            }),
        );
    }
    let agents_task = async {
        match (agents, &service) {
            (Some(l), Some(s)) => flowctl::server::serve(l, s.shared.clone()).await,
            _ => std::future::pending().await,
        }
    };
    let api_task = async {
        match api {
            Some(l) => axum::serve(l, router).await.map_err(Error::Io),
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        _ = agents_task => Ok(()),
        r = api_task => r,
        _ = shutdown_signal() => {
            info!("shutting down");
            Ok(())
        }
    };
    if let Some(c) = compaction {
        c.abort();
    }
    callbacks.abort();
    drop(service);
    if let Some(embedded) = embedded {
        embedded.close().await?;
    }
    result
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Serve {
            store,
            etcd_ca,
            etcd_cert,
            etcd_key,
            etcd_namespace,
            agent_listen,
            api_listen,
            cluster_secret_file,
            admin_credentials,
            compact_keep_revisions,
            compact_every,
            duty_ttl,
            replica_name,
            callback_ca_file,
        } => {
            let secret = read_secret(&cluster_secret_file)?;
            let duties = Duties {
                compaction: (compact_keep_revisions > 0).then(|| CompactionConfig {
                    keep_revisions: compact_keep_revisions,
                    every: Duration::from_secs(compact_every.max(1)),
                    ttl: Duration::from_secs(duty_ttl.max(2)),
                }),
                callbacks: flowctl::callbacks::CallbackConfig {
                    ttl: Duration::from_secs(duty_ttl.max(2)),
                    extra_ca: callback_ca_file,
                    ..Default::default()
                },
                candidate: replica_name.unwrap_or_else(default_replica_name),
            };
            let store = StoreArgs {
                store,
                etcd_ca,
                etcd_cert,
                etcd_key,
                etcd_namespace,
            };
            serve(
                store,
                agent_listen,
                api_listen,
                secret,
                duties,
                admin_credentials,
            )
            .await
        }
        Cmd::NodeToken {
            cluster_secret_file,
            node,
        } => {
            let secret = read_secret(&cluster_secret_file)?;
            println!("{}", proto::auth::node_token(&secret, &node));
            Ok(())
        }
        Cmd::Resource(cmd) => {
            let out = flowctl::cli::run(&cli.api, &cmd).await?;
            if !out.is_empty() {
                println!("{out}");
            }
            Ok(())
        }
    }
}

/// `host:pid`, unique among live replicas.
fn default_replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "flowctl".into());
    format!("{host}:{}", std::process::id())
}

/// The error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs its work; the CLI only its warnings.
    let default = if matches!(cli.cmd, Cmd::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        // Plain text when logging to a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}
