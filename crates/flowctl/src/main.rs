//! `flowctl`: the all-in-one server (`serve`), node tokens, and the operator
//! CLI against the REST API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use api::store::embedded::EmbeddedStore;
use api::store::Store;
use clap::{Parser, Subcommand};
use flowctl::cli::{ApiArgs, ResourceCmd};
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
    /// Runs the REST API and the agent distribution server on an embedded
    /// store, in one process.
    Serve {
        /// The embedded store's database file (created if absent).
        #[arg(long)]
        store: PathBuf,
        /// Where agents connect (HTTP/2 cleartext); also serves /metrics.
        #[arg(long, default_value = "0.0.0.0:6653")]
        agent_listen: SocketAddr,
        /// Where the REST API listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        api_listen: SocketAddr,
        /// The cluster secret node tokens derive from.
        #[arg(long)]
        cluster_secret_file: PathBuf,
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

async fn serve(
    store: &Path,
    agent_listen: SocketAddr,
    api_listen: SocketAddr,
    secret: Vec<u8>,
) -> Result<()> {
    let embedded = EmbeddedStore::open(store)?;
    let store: Arc<dyn Store> = Arc::new(embedded.clone());
    let service = Service::start(
        store.clone(),
        Config {
            cluster_secret: secret,
            history: Default::default(),
        },
    )
    .await?;
    let agents = tokio::net::TcpListener::bind(agent_listen).await?;
    let api = tokio::net::TcpListener::bind(api_listen).await?;
    info!(agents = %agents.local_addr()?, api = %api.local_addr()?, "flowctl serving");
    let shared = service.shared.clone();
    let metrics = shared.clone();
    let router = api::http::router(store).route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move { m.metrics.render() }
        }),
    );
    let result = tokio::select! {
        _ = flowctl::server::serve(agents, shared) => Ok(()),
        r = axum::serve(api, router) => r.map_err(Error::Io),
        _ = shutdown_signal() => {
            info!("shutting down");
            Ok(())
        }
    };
    drop(service);
    embedded.close().await?;
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
            agent_listen,
            api_listen,
            cluster_secret_file,
        } => {
            let secret = read_secret(&cluster_secret_file)?;
            serve(&store, agent_listen, api_listen, secret).await
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
