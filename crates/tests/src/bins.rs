//! Locating our binaries and describing how the lab starts them.
//!
//! The lab runs `flowctl serve` and one `vswitch-agent` per node as plain
//! processes in the ROOT namespace: flowctl only opens TCP sockets on
//! 127.0.0.1, and the agent reaches its node's OVS only through the Unix
//! sockets in the node's directory. Their command lines are built by
//! closures over a context struct, so they can follow the binaries' real
//! flags without changing the lab.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{LabError, Result};

/// Env var overriding where our binaries are found.
pub const BIN_DIR_ENV: &str = "STACKNET_BIN_DIR";

/// Directory holding our binaries: `$STACKNET_BIN_DIR`, else the cargo
/// profile directory of the running test (`target/<profile>`, the parent of
/// the `deps/` directory test executables live in).
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os(BIN_DIR_ENV) {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().map_err(|source| LabError::Io {
        op: "locate",
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    Ok(dir)
}

/// Full path of binary `name`; an error that says how to build it when absent.
pub fn binary(name: &str) -> Result<PathBuf> {
    let p = bin_dir()?.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(LabError::Requirements(format!(
            "binary {} not found; build it first (`cargo build -p {name}`, same \
             CARGO_TARGET_DIR and profile as the tests) or set {BIN_DIR_ENV}",
            p.display()
        )))
    }
}

/// What the lab knows when it starts flowctl.
#[derive(Debug, Clone)]
pub struct FlowctlCtx {
    /// A directory for this replica (store file, logs).
    pub dir: PathBuf,
    /// Embedded store file (`<dir>/store.redb`).
    pub store_path: PathBuf,
    /// REST API listen address (127.0.0.1, free port picked by the lab).
    pub api_addr: SocketAddr,
    /// Agent protocol listen address (127.0.0.1, free port).
    pub agent_addr: SocketAddr,
    /// File holding the cluster secret (agent tokens derive from it).
    pub cluster_secret_file: PathBuf,
}

impl FlowctlCtx {
    /// Where `flowctl serve --admin-credentials` writes the first system
    /// admin's API key: beside the cluster secret, so every replica of one
    /// cloud names the same file (only the replica that bootstraps writes).
    pub fn admin_credentials_file(&self) -> PathBuf {
        self.cluster_secret_file
            .with_file_name("admin-credentials.json")
    }
}

/// What the lab knows when it starts a node's agent.
#[derive(Debug, Clone)]
pub struct AgentCtx {
    /// The node's name as registered in the API (`node0`, `node1`, ...).
    pub node: String,
    /// Node index in the lab.
    pub index: usize,
    /// The agent's own directory (local state, logs).
    pub dir: PathBuf,
    /// OVSDB Unix socket of the node's OVS.
    pub ovsdb_socket: PathBuf,
    /// The integration bridge's name.
    pub bridge: String,
    /// OpenFlow management socket of the integration bridge.
    pub mgmt_socket: PathBuf,
    /// ovs-vswitchd's unixctl socket (for `ovs-appctl`-style queries).
    pub vswitchd_ctl: PathBuf,
    /// The node's underlay (tunnel endpoint) IP.
    pub underlay_ip: std::net::Ipv4Addr,
    /// Agent protocol endpoints of the running flowctl replicas.
    pub flowctl_agent_addrs: Vec<SocketAddr>,
    /// This node's token (`proto::auth::node_token`).
    pub token: String,
    /// The same token in a file (`<dir>/token`).
    pub token_file: PathBuf,
    /// Datapath type for bridges the agent creates ("netdev" in the lab).
    pub datapath_type: String,
    /// The node's uplinks to external networks, `PHYSNET=IFACE` (see
    /// `Lab::attach_external`).
    pub external_ports: Vec<String>,
}

/// Builds a command line from a context.
pub type ArgsFn<C> = Arc<dyn Fn(&C) -> Vec<String> + Send + Sync>;

/// How to start one of our binaries.
#[derive(Clone)]
pub struct BinSpec<C> {
    /// Binary name in [`bin_dir`] (or an absolute path).
    pub binary: String,
    /// Arguments, from the context.
    pub args: ArgsFn<C>,
    /// Extra environment (RUST_LOG is set to `info` unless given here).
    pub env: Vec<(String, String)>,
}

impl<C> std::fmt::Debug for BinSpec<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinSpec")
            .field("binary", &self.binary)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl<C> BinSpec<C> {
    /// A spec for `binary` with arguments from `args`.
    pub fn new(binary: &str, args: impl Fn(&C) -> Vec<String> + Send + Sync + 'static) -> Self {
        BinSpec {
            binary: binary.to_string(),
            args: Arc::new(args),
            env: Vec::new(),
        }
    }

    /// Path of the binary.
    pub fn path(&self) -> Result<PathBuf> {
        if self.binary.contains('/') {
            Ok(PathBuf::from(&self.binary))
        } else {
            binary(&self.binary)
        }
    }
}

/// How flowctl is started.
pub type FlowctlSpec = BinSpec<FlowctlCtx>;
/// How a vswitch-agent is started.
pub type AgentSpec = BinSpec<AgentCtx>;

/// `flowctl serve` on `store` with the context's listeners, cluster secret
/// and bootstrap credentials file.
pub fn serve_args(store: &str, c: &FlowctlCtx) -> Vec<String> {
    vec![
        "serve".into(),
        "--store".into(),
        store.into(),
        "--agent-listen".into(),
        c.agent_addr.to_string(),
        "--api-listen".into(),
        c.api_addr.to_string(),
        "--cluster-secret-file".into(),
        c.cluster_secret_file.display().to_string(),
        "--admin-credentials".into(),
        c.admin_credentials_file().display().to_string(),
    ]
}

impl Default for BinSpec<FlowctlCtx> {
    /// `flowctl serve --store .. --agent-listen .. --api-listen ..
    /// --cluster-secret-file ..` (the all-in-one mode, per the flowctl brief).
    fn default() -> Self {
        BinSpec::new("flowctl", |c: &FlowctlCtx| {
            serve_args(&c.store_path.display().to_string(), c)
        })
    }
}

impl Default for BinSpec<AgentCtx> {
    /// The agent's flags for the context.
    fn default() -> Self {
        BinSpec::new("vswitch-agent", |c: &AgentCtx| {
            let mut v = vec![
                "--node".into(),
                c.node.clone(),
                "--token-file".into(),
                c.token_file.display().to_string(),
                "--ovsdb".into(),
                format!("unix:{}", c.ovsdb_socket.display()),
                "--bridge".into(),
                c.bridge.clone(),
                "--openflow".into(),
                format!("unix:{}", c.mgmt_socket.display()),
                "--datapath-type".into(),
                c.datapath_type.clone(),
                "--state-dir".into(),
                c.dir.display().to_string(),
            ];
            for a in &c.flowctl_agent_addrs {
                v.push("--flowctl".into());
                v.push(format!("http://{a}"));
            }
            for p in &c.external_ports {
                v.push("--external-port".into());
                v.push(p.clone());
            }
            v
        })
    }
}

/// A free TCP port on 127.0.0.1 (bind :0, read, release). The tiny race
/// with other processes is acceptable for tests; callers wait for the
/// server's port to accept connections anyway.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| LabError::Io {
        op: "bind",
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })?;
    let port = l
        .local_addr()
        .map_err(|source| LabError::Io {
            op: "query",
            path: PathBuf::from("127.0.0.1:0"),
            source,
        })?
        .port();
    Ok(port)
}

/// True when something accepts TCP connections at `addr`.
pub fn port_open(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).is_ok()
}
