//! `vswitch-agent`: keeps one node's br-int in the state flowctl asks for.

use std::path::PathBuf;

use clap::Parser;
use ovsdb::vswitch::ExternalPortSpec;
use vswitch_agent::agent::{self, AgentConfig};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "stacknet node agent: programs Open vSwitch for this node"
)]
struct Args {
    /// This node's name, as registered in the API.
    #[arg(long, env = "STACKNET_NODE")]
    node: String,
    /// File holding this node's token (`flowctl node-token NODE`).
    #[arg(long, env = "STACKNET_TOKEN_FILE")]
    token_file: PathBuf,
    /// flowctl agent endpoint; repeat for several replicas.
    #[arg(long = "flowctl", required = true)]
    flowctl: Vec<String>,
    /// OVSDB server.
    #[arg(long, default_value = "unix:/var/run/openvswitch/db.sock")]
    ovsdb: String,
    /// The integration bridge this agent owns.
    #[arg(long, default_value = "br-int")]
    bridge: String,
    /// OpenFlow target of the bridge (default: its management socket).
    #[arg(long)]
    openflow: Option<String>,
    /// `system` (kernel datapath) or `netdev` (userspace).
    #[arg(long, default_value = "system")]
    datapath_type: String,
    /// Where the last applied state is kept across restarts.
    #[arg(long, default_value = "/var/lib/stacknet/agent")]
    state_dir: PathBuf,
    /// An interface that carries an external network, as PHYSNET=IFACE
    /// (the external network's `physnet`); repeat for several. The agent
    /// plugs IFACE into the bridge.
    #[arg(long = "external-port", value_parser = parse_external_port)]
    external_ports: Vec<ExternalPortSpec>,
}

fn parse_external_port(s: &str) -> Result<ExternalPortSpec, String> {
    match s.split_once('=') {
        Some((physnet, iface)) if !physnet.is_empty() && !iface.is_empty() => {
            Ok(ExternalPortSpec {
                physnet: physnet.to_string(),
                iface: iface.to_string(),
            })
        }
        _ => Err(format!("{s:?}: expected PHYSNET=IFACE")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        // Plain text when logging to a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let token = std::fs::read_to_string(&args.token_file)
        .map_err(|e| anyhow::anyhow!("reading token file {}: {e}", args.token_file.display()))?
        .trim()
        .to_string();
    let openflow = args
        .openflow
        .unwrap_or_else(|| format!("unix:/var/run/openvswitch/{}.mgmt", args.bridge));
    let cfg = AgentConfig {
        node: args.node,
        token,
        flowctl: args.flowctl,
        ovsdb: args.ovsdb,
        bridge: args.bridge,
        datapath_type: args.datapath_type,
        openflow,
        state_dir: args.state_dir,
        external_ports: args.external_ports,
    };
    agent::run(cfg, shutdown_signal()).await?;
    Ok(())
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
