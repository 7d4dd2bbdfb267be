//! The multi-node lab: an underlay namespace with a Linux bridge, N node
//! namespaces each running a private OVS with `br-phy` holding the node's
//! underlay veth and IP (the OVS userspace tunnelling setup), VMs as
//! namespaces plugged into a node's integration bridge, outside hosts on
//! the underlay, and our binaries (flowctl, vswitch-agent) as processes in
//! the root namespace.
//!
//! ```text
//!  root ns:  flowctl (127.0.0.1)   vswitch-agent ×N (Unix sockets only)
//!  <run>-u:  bridge <run>ub ── <run>u0 ─┐  <run>u1 ─┐ ... <run>h0 ── eth0 of host
//!  <run>-n0:        <run>p0 ∈ br-phy (192.0.2.10)   br-int ∋ <run>vK ──┐
//!  <run>-<vm>:                                            eth0 ────────┘
//! ```
//!
//! The userspace VXLAN recipe (proved by `tests/vxlan.rs`), per node, with
//! every command inside the node's namespace or against its own OVS:
//!
//! 1. `ip netns exec <run>-u ip link add <run>u<i> type veth peer name
//!    <run>p<i> netns <run>-n<i>`; in the underlay: `ip link set <run>u<i>
//!    master <run>ub up`; in the node: `ip link set <run>p<i> up`.
//! 2. `ovs-vsctl add-br br-phy -- set bridge br-phy datapath_type=netdev`
//!    (standalone: its default NORMAL flow is all it needs), `ovs-vsctl
//!    add-port br-phy <run>p<i>`.
//! 3. `ip addr add 192.0.2.<10+i>/24 dev br-phy; ip link set br-phy up`.
//!    OVS learns the route: `ovs-appctl ovs/route/show` lists
//!    `192.0.2.0/24 dev br-phy SRC 192.0.2.<10+i>`.
//! 4. `ovs-vsctl --may-exist add-br br-int -- set bridge br-int
//!    datapath_type=netdev fail_mode=secure`.
//! 5. `ovs-vsctl add-port br-int vx<peer> -- set Interface vx<peer>
//!    type=vxlan options:remote_ip=<peer underlay IP> options:key=flow`
//!    (or a fixed key; `options:local_ip` optional: works with and without).
//! 6. Flows: `in_port=<vm port> actions=set_field:<vni>->tun_id,...`,
//!    `in_port=vx<peer>,tun_id=<vni> actions=...`, `output:vx<peer>`.
//!    OVS resolves the peer's MAC itself (ARP out of br-phy):
//!    `ovs-appctl tnl/arp/show` then lists `<peer IP> <mac> br-phy`.
//! 7. VM: `ip netns exec <run>-n<i> ip link add <run>v<k> type veth peer
//!    name eth0 netns <run>-<vm>`; in the VM: `ip link set eth0 address
//!    <mac> mtu 1450`, `ethtool -K eth0 tx off` (TCP fails without it),
//!    up; node side up; `ovs-vsctl add-port br-int <run>v<k> -- set
//!    Interface <run>v<k> external_ids:iface-id=<nic id>
//!    external_ids:attached-mac=<mac> external_ids:iface-status=active`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;

use crate::bins::{free_port, port_open, AgentCtx, AgentSpec, FlowctlCtx, FlowctlSpec};
use crate::error::{LabError, Result};
use crate::netns::Netns;
use crate::ovs::OvsSandbox;
use crate::process::{tail_file, Proc};
use crate::traffic::{self, Capture, DhcpClient, DhcpLease, PingStats, TransferStats};
use crate::util::{lab_log_filter, require_root_and_tools, wait_until, RunDir};

/// The interpreter of the helper scripts run inside VMs.
const PYTHON: &str = "/usr/bin/python3";

/// The underlay subnet (TEST-NET-1); node `i` is `192.0.2.(10 + i)`.
pub const UNDERLAY_NET: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 0);
/// Underlay prefix length.
pub const UNDERLAY_PREFIX_LEN: u8 = 24;
/// The OVS bridge holding a node's physical port and underlay IP.
pub const PHY_BRIDGE: &str = "br-phy";
/// The physical network label of the lab's external segment ...
pub const EXTERNAL_PHYSNET: &str = "internet";
/// ... and the interface that carries it on an attached node.
pub const EXTERNAL_IFACE: &str = "ext0";

/// Lab shape.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Number of nodes (1..=45, a Set).
    pub nodes: usize,
    /// Integration bridge VMs are plugged into.
    pub bridge: String,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            nodes: 2,
            bridge: "br-int".into(),
        }
    }
}

/// A simulated host: a namespace with its own OVS.
#[derive(Debug)]
pub struct Node {
    // Drop order: agent, then OVS (which drops its namespace handle).
    agent: Option<Proc>,
    ovs: OvsSandbox,
    name: String,
    index: usize,
    underlay_ip: Ipv4Addr,
    phy_port: String,
    dir: PathBuf,
    /// Attached to the external segment (its `ext0`).
    external: bool,
}

impl Node {
    /// The node's name (`node0`, `node1`, ...), as the control plane knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Index in the lab.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Underlay (VXLAN endpoint) IP, on `br-phy`.
    pub fn underlay_ip(&self) -> Ipv4Addr {
        self.underlay_ip
    }

    /// The node's OVS.
    pub fn ovs(&self) -> &OvsSandbox {
        &self.ovs
    }

    /// The node's OVS, mutably (restart ovs-vswitchd).
    pub fn ovs_mut(&mut self) -> &mut OvsSandbox {
        &mut self.ovs
    }

    /// The node's namespace.
    pub fn netns(&self) -> &Netns {
        self.ovs.netns()
    }

    /// Name of the node's underlay veth (a port of `br-phy`).
    pub fn phy_port(&self) -> &str {
        &self.phy_port
    }

    /// The node's directory (OVS in `ovs/`, agent in `agent/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The agent process, when started.
    pub fn agent(&mut self) -> Option<&mut Proc> {
        self.agent.as_mut()
    }

    /// Create the integration bridge as a compute driver would before
    /// plugging (`--may-exist`: an existing bridge is left in place; netdev,
    /// fail_mode=secure so it never acts as a learning switch).
    pub fn ensure_bridge(&self, bridge: &str) -> Result<()> {
        self.ovs
            .vsctl(&[
                "--may-exist",
                "add-br",
                bridge,
                "--",
                "set",
                "bridge",
                bridge,
                "datapath_type=netdev",
                "fail_mode=secure",
            ])
            .map(|_| ())
    }

    /// `ovs-ofctl dump-flows <bridge>` (OpenFlow 1.4), for assertions.
    pub fn flows(&self, bridge: &str) -> Result<String> {
        self.ovs.ofctl(&["dump-flows", bridge])
    }

    /// Everything useful when a test fails on this node.
    pub fn dump(&self) -> String {
        let show = |r: Result<String>| r.unwrap_or_else(|e| format!("<{e}>"));
        let mut s = format!(
            "===== {} ({}, netns {}) =====\n",
            self.name,
            self.underlay_ip,
            self.netns().name()
        );
        s.push_str(&self.ovs.dump());
        s.push_str("--- interfaces (name, ofport, external_ids)\n");
        s.push_str(&show(self.ovs.vsctl(&[
            "--format=table",
            "--columns=name,ofport,external_ids",
            "list",
            "Interface",
        ])));
        s.push_str("--- ip -br addr\n");
        s.push_str(&show(self.netns().run(&["ip", "-br", "addr"])));
        s.push_str("--- ovs/route/show\n");
        s.push_str(&show(self.ovs.appctl(&["ovs/route/show"])));
        s.push_str("--- tnl/arp/show\n");
        s.push_str(&show(self.ovs.appctl(&["tnl/arp/show"])));
        s.push_str("--- agent log (tail)\n");
        s.push_str(&tail_file(&self.dir.join("agent").join("agent.log"), 30));
        s.push('\n');
        s
    }
}

/// How a VM gets its address.
#[derive(Debug, Clone, PartialEq)]
pub enum VmAddr {
    /// No address configured (the test does it).
    None,
    /// A static address and optional default gateway.
    Static {
        ip: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
    },
    /// Run a DHCP client once after plugging (fails `add_vm` on no lease).
    Dhcp(DhcpClient),
}

/// A VM to plug: its NIC as the control plane knows it.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Short VM name, `[a-z0-9]{1,10}` (names its namespace and directory).
    pub name: String,
    /// Node index.
    pub node: usize,
    /// NIC id, set as `external_ids:iface-id` on the OVS port.
    pub nic_id: String,
    /// NIC MAC (`02:00:..`).
    pub mac: String,
    /// Interface MTU (the subnet's; default 1450 = 1500 - VXLAN).
    pub mtu: u32,
    /// Addressing.
    pub addr: VmAddr,
    /// Keep IPv6 on eth0 (off by default so captures stay quiet: no DAD,
    /// router or multicast listener solicitations).
    pub ipv6: bool,
}

impl VmSpec {
    /// A VM with no address, MTU 1450, IPv6 off.
    pub fn new(name: &str, node: usize, nic_id: &str, mac: &str) -> VmSpec {
        VmSpec {
            name: name.into(),
            node,
            nic_id: nic_id.into(),
            mac: mac.into(),
            mtu: 1450,
            addr: VmAddr::None,
            ipv6: false,
        }
    }

    /// With a static address.
    pub fn with_ip(mut self, ip: Ipv4Addr, prefix_len: u8, gateway: Option<Ipv4Addr>) -> Self {
        self.addr = VmAddr::Static {
            ip,
            prefix_len,
            gateway,
        };
        self
    }

    /// Addressed by DHCP.
    pub fn with_dhcp(mut self, client: DhcpClient) -> Self {
        self.addr = VmAddr::Dhcp(client);
        self
    }

    /// With MTU.
    pub fn with_mtu(mut self, mtu: u32) -> Self {
        self.mtu = mtu;
        self
    }
}

/// A VM: a namespace whose `eth0` is a veth plugged into a node's
/// integration bridge.
#[derive(Debug)]
pub struct Vm {
    netns: Netns,
    name: String,
    node: usize,
    nic_id: String,
    mac: String,
    mtu: u32,
    port: String,
    dir: PathBuf,
    lease: Option<DhcpLease>,
    captures: u32,
    addr: VmAddr,
    ipv6: bool,
}

impl Vm {
    /// VM name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Node index it is plugged into.
    pub fn node(&self) -> usize {
        self.node
    }

    /// NIC id (`iface-id`).
    pub fn nic_id(&self) -> &str {
        &self.nic_id
    }

    /// NIC MAC.
    pub fn mac(&self) -> &str {
        &self.mac
    }

    /// Configured MTU.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Name of the OVS port (node-side veth) on the integration bridge.
    pub fn port(&self) -> &str {
        &self.port
    }

    /// The VM's namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The VM's directory (captures, leases, transfer files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Last DHCP lease obtained via [`Vm::dhcp`] or `VmAddr::Dhcp`.
    pub fn lease(&self) -> Option<&DhcpLease> {
        self.lease.as_ref()
    }

    /// Run a command inside the VM.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        self.netns.run(args)
    }

    /// eth0's IPv4 addresses right now.
    pub fn ipv4(&self) -> Result<Vec<Ipv4Addr>> {
        let out = self
            .netns
            .run(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                it.position(|w| w == "inet")?;
                it.next()?.split('/').next()?.parse().ok()
            })
            .collect())
    }

    /// Ping `dst` `count` times.
    pub fn ping(&self, dst: Ipv4Addr, count: u32) -> Result<PingStats> {
        traffic::ping(&self.netns, dst, count)
    }

    /// Ping until one reply comes back (flows may still be installing).
    pub fn wait_ping(&self, dst: Ipv4Addr, timeout: Duration) -> Result<()> {
        wait_until(timeout, &format!("{} to reach {dst}", self.name), || {
            self.ping(dst, 1).is_ok_and(|s| s.received > 0)
        })
    }

    /// Send `bytes` over TCP to `to` (listening on `dst:port`) and check
    /// every byte arrived intact.
    pub fn tcp_to(&self, to: &Vm, dst: Ipv4Addr, port: u16, bytes: usize) -> Result<TransferStats> {
        traffic::tcp_transfer(&self.netns, &to.netns, dst, port, bytes, &self.dir)
    }

    /// ARP for `ip` on eth0; the MAC that answered.
    pub fn arping(&self, ip: Ipv4Addr) -> Result<Option<String>> {
        traffic::arping(&self.netns, "eth0", ip, 2)
    }

    /// Start a capture on eth0 with a pcap filter.
    /// Runs a python3 `script` with `args` inside the VM, in the
    /// background (output in `<vm dir>/<name>.out`); stopped, by pid, when
    /// the returned process is dropped.
    pub fn spawn_python(&self, name: &str, script: &str, args: &[&str]) -> Result<Proc> {
        let mut a = vec![PYTHON, "-u", "-c", script];
        a.extend(args);
        let log = self.dir.join(format!("{name}.out"));
        self.netns.spawn(name, &a, Some(&log))
    }

    pub fn capture(&mut self, filter: &str) -> Result<Capture> {
        self.captures += 1;
        let name = format!("eth0-{}", self.captures);
        Capture::start(&self.netns, "eth0", filter, &self.dir, &name)
    }

    /// Run a DHCP client on eth0 once; remembers and returns the lease.
    pub fn dhcp(&mut self, client: DhcpClient, timeout: Duration) -> Result<DhcpLease> {
        let lease = traffic::dhcp(&self.netns, "eth0", client, &self.dir, timeout)?;
        self.lease = Some(lease.clone());
        Ok(lease)
    }
}

/// A host outside the overlay (the "Internet", an external client or
/// server): a namespace whose `eth0` sits on the underlay bridge, with
/// TEST-NET addresses (198.51.100.0/24, 203.0.113.0/24) and a route of the
/// test's choosing.
#[derive(Debug)]
pub struct Host {
    netns: Netns,
    name: String,
    dir: PathBuf,
}

impl Host {
    /// Host name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The host's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Run a command on the host.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        self.netns.run(args)
    }

    /// Ping from the host.
    pub fn ping(&self, dst: Ipv4Addr, count: u32) -> Result<PingStats> {
        traffic::ping(&self.netns, dst, count)
    }
}

#[derive(Debug)]
struct Flowctl {
    ctx: FlowctlCtx,
    proc: Option<Proc>,
}

/// The whole lab. Dropping it stops our binaries, removes VMs, nodes, the
/// underlay and the run directory; on panic it first prints every node's
/// state (flows, ports, logs).
#[derive(Debug)]
pub struct Lab {
    // Field order is teardown order (see `Drop`).
    flowctl: Option<Flowctl>,
    vms: Vec<Vm>,
    nodes: Vec<Node>,
    hosts: Vec<Host>,
    underlay: Netns,
    underlay_bridge: String,
    /// The external segment ("the Internet" side), a bridge in the
    /// underlay namespace created on first use.
    external_bridge: Option<String>,
    cfg: LabConfig,
    secret: String,
    vm_seq: u32,
    /// Agent endpoints given to agents instead of the lab's own flowctl
    /// (several replicas, or proxies in front of them).
    agent_endpoints: Option<Vec<SocketAddr>>,
    run: RunDir,
}

impl Lab {
    /// Build the underlay and `cfg.nodes` nodes with `br-phy` configured.
    pub fn new(cfg: LabConfig) -> Result<Lab> {
        require_root_and_tools()?;
        crate::util::sweep_stale_once();
        if cfg.nodes == 0 || cfg.nodes > 45 {
            return Err(LabError::Invalid(format!(
                "{} nodes (a Set has 1..=45)",
                cfg.nodes
            )));
        }
        let run = RunDir::new()?;
        let underlay = Netns::create(&format!("{}-u", run.name()))?;
        let underlay_bridge = format!("{}ub", run.name());
        underlay.run(&["ip", "link", "add", &underlay_bridge, "type", "bridge"])?;
        underlay.run(&["ip", "link", "set", &underlay_bridge, "up"])?;
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let secret_path = run.path().join("cluster.secret");
        std::fs::write(&secret_path, &secret).map_err(|source| LabError::Io {
            op: "write",
            path: secret_path,
            source,
        })?;
        let mut lab = Lab {
            flowctl: None,
            vms: Vec::new(),
            nodes: Vec::new(),
            hosts: Vec::new(),
            underlay,
            underlay_bridge,
            external_bridge: None,
            cfg,
            secret,
            vm_seq: 0,
            agent_endpoints: None,
            run,
        };
        for i in 0..lab.cfg.nodes {
            let node = lab.make_node(i)?;
            lab.nodes.push(node);
        }
        tracing::info!(run = lab.run.name(), nodes = lab.cfg.nodes, "lab up");
        Ok(lab)
    }

    fn make_node(&self, i: usize) -> Result<Node> {
        let run = self.run.name();
        let name = format!("node{i}");
        let octet = u8::try_from(10 + i).map_err(|_| LabError::Invalid("node index".into()))?;
        let underlay_ip = Ipv4Addr::new(192, 0, 2, octet);
        let dir = self.run.path().join(format!("n{i}"));
        let netns = Arc::new(Netns::create(&format!("{run}-n{i}"))?);
        let mut ovs = OvsSandbox::start_in(Arc::clone(&netns), &dir.join("ovs"))?;
        ovs.set_dump_on_panic(false); // the lab prints a fuller dump
        let (u_if, p_if) = (format!("{run}u{i}"), format!("{run}p{i}"));
        // Created inside the underlay namespace with the peer placed straight
        // into the node namespace: nothing ever exists in the root namespace.
        self.underlay.run(&[
            "ip",
            "link",
            "add",
            &u_if,
            "type",
            "veth",
            "peer",
            "name",
            &p_if,
            "netns",
            netns.name(),
        ])?;
        self.underlay.run(&[
            "ip",
            "link",
            "set",
            &u_if,
            "master",
            &self.underlay_bridge,
            "up",
        ])?;
        netns.run(&["ip", "link", "set", &p_if, "up"])?;
        ovs.add_bridge(PHY_BRIDGE)?;
        ovs.vsctl(&["--may-exist", "add-port", PHY_BRIDGE, &p_if])?;
        let cidr = format!("{underlay_ip}/{UNDERLAY_PREFIX_LEN}");
        netns.run(&["ip", "addr", "add", &cidr, "dev", PHY_BRIDGE])?;
        netns.run(&["ip", "link", "set", PHY_BRIDGE, "up"])?;
        // OVS learns routes from the namespace's routing table; tunnels can
        // only be used once the underlay route points at br-phy.
        let route = format!("{UNDERLAY_NET}/{UNDERLAY_PREFIX_LEN} dev {PHY_BRIDGE}");
        wait_until(Duration::from_secs(10), "OVS route to the underlay", || {
            ovs.appctl(&["ovs/route/show"])
                .is_ok_and(|o| o.contains(&route))
        })?;
        let agent_dir = dir.join("agent");
        std::fs::create_dir_all(&agent_dir).map_err(|source| LabError::Io {
            op: "create",
            path: agent_dir,
            source,
        })?;
        tracing::info!(node = %name, %underlay_ip, netns = netns.name(), "node up");
        Ok(Node {
            agent: None,
            ovs,
            name,
            index: i,
            underlay_ip,
            phy_port: p_if,
            dir,
            external: false,
        })
    }

    /// The run name (prefix of every namespace and interface).
    pub fn run_name(&self) -> &str {
        self.run.name()
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        self.run.path()
    }

    /// The configuration.
    pub fn config(&self) -> &LabConfig {
        &self.cfg
    }

    /// The underlay namespace (holds the bridge joining all nodes).
    pub fn underlay(&self) -> &Netns {
        &self.underlay
    }

    /// The underlay bridge's name (inside [`Lab::underlay`]).
    pub fn underlay_bridge(&self) -> &str {
        &self.underlay_bridge
    }

    /// The underlay-side veth of node `i` (capture VXLAN there).
    pub fn underlay_port(&self, i: usize) -> String {
        format!("{}u{i}", self.run.name())
    }

    /// All nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> Result<&Node> {
        self.nodes
            .get(i)
            .ok_or_else(|| LabError::Invalid(format!("no node {i}")))
    }

    /// Node `i`, mutably.
    pub fn node_mut(&mut self, i: usize) -> Result<&mut Node> {
        self.nodes
            .get_mut(i)
            .ok_or_else(|| LabError::Invalid(format!("no node {i}")))
    }

    /// All VMs.
    pub fn vms(&self) -> &[Vm] {
        &self.vms
    }

    /// VM by name.
    pub fn vm(&self, name: &str) -> Result<&Vm> {
        self.vms
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| LabError::Invalid(format!("no VM {name}")))
    }

    /// VM by name, mutably.
    pub fn vm_mut(&mut self, name: &str) -> Result<&mut Vm> {
        self.vms
            .iter_mut()
            .find(|v| v.name == name)
            .ok_or_else(|| LabError::Invalid(format!("no VM {name}")))
    }

    /// Host by name.
    pub fn host(&self, name: &str) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| LabError::Invalid(format!("no host {name}")))
    }

    /// Namespace and directory of a VM or host by name.
    fn endpoint(&self, name: &str) -> Result<(&Netns, &Path)> {
        if let Some(v) = self.vms.iter().find(|v| v.name == name) {
            return Ok((&v.netns, &v.dir));
        }
        if let Some(h) = self.hosts.iter().find(|h| h.name == name) {
            return Ok((&h.netns, &h.dir));
        }
        Err(LabError::Invalid(format!("no VM or host {name}")))
    }

    /// Ping from VM or host `from`.
    pub fn ping(&self, from: &str, dst: Ipv4Addr, count: u32) -> Result<PingStats> {
        traffic::ping(self.endpoint(from)?.0, dst, count)
    }

    /// TCP transfer of `bytes` from VM/host `from` to VM/host `to`
    /// listening on `dst:port`, checked byte for byte.
    pub fn tcp(
        &self,
        from: &str,
        to: &str,
        dst: Ipv4Addr,
        port: u16,
        bytes: usize,
    ) -> Result<TransferStats> {
        let (src, dir) = self.endpoint(from)?;
        let (dst_ns, _) = self.endpoint(to)?;
        traffic::tcp_transfer(src, dst_ns, dst, port, bytes, dir)
    }

    /// The external segment's bridge, created on first use.
    fn external_bridge(&mut self) -> Result<String> {
        if let Some(b) = &self.external_bridge {
            return Ok(b.clone());
        }
        let b = format!("{}xb", self.run.name());
        self.underlay
            .run(&["ip", "link", "add", &b, "type", "bridge"])?;
        self.underlay.run(&["ip", "link", "set", &b, "up"])?;
        self.external_bridge = Some(b.clone());
        Ok(b)
    }

    /// Plugs node `i` into the external segment: its [`EXTERNAL_IFACE`]
    /// appears in the node's namespace, for the agent to take as the
    /// uplink of [`EXTERNAL_PHYSNET`] (agents started afterwards get
    /// `--external-port internet=ext0`).
    pub fn attach_external(&mut self, i: usize) -> Result<()> {
        let bridge = self.external_bridge()?;
        let run = self.run.name().to_string();
        let ns = self.node(i)?.netns().name().to_string();
        let x_if = format!("{run}x{i}");
        // Created in the underlay namespace, peer straight into the node's.
        self.underlay.run(&[
            "ip",
            "link",
            "add",
            &x_if,
            "type",
            "veth",
            "peer",
            "name",
            EXTERNAL_IFACE,
            "netns",
            &ns,
        ])?;
        self.underlay
            .run(&["ip", "link", "set", &x_if, "master", &bridge, "up"])?;
        let node = self.node_mut(i)?;
        let netns = node.netns();
        // Frames from OVS's netdev datapath carry full checksums only with
        // TX offload off; IPv6 chatter would only add noise to captures.
        netns.run(&["ethtool", "-K", EXTERNAL_IFACE, "tx", "off"])?;
        netns.run(&[
            "sysctl",
            "-q",
            "-w",
            &format!("net.ipv6.conf.{EXTERNAL_IFACE}.disable_ipv6=1"),
        ])?;
        netns.run(&["ip", "link", "set", EXTERNAL_IFACE, "up"])?;
        node.external = true;
        Ok(())
    }

    /// Add a host on the external segment ("the Internet", e.g. the
    /// outside router 203.0.113.1/24 with 198.51.100.10/32 behind it).
    pub fn add_outside_host(
        &mut self,
        name: &str,
        cidrs: &[&str],
        gateway: Option<Ipv4Addr>,
    ) -> Result<&Host> {
        let bridge = self.external_bridge()?;
        self.add_host_on(&bridge, name, cidrs, gateway)
    }

    /// Add a host on the underlay bridge (same L2 as every node's br-phy)
    /// with addresses `cidrs` (e.g. "203.0.113.10/24") and an optional
    /// default gateway. Name: `[a-z0-9]{1,10}`, distinct from VM names.
    pub fn add_host(
        &mut self,
        name: &str,
        cidrs: &[&str],
        gateway: Option<Ipv4Addr>,
    ) -> Result<&Host> {
        let bridge = self.underlay_bridge.clone();
        self.add_host_on(&bridge, name, cidrs, gateway)
    }

    fn add_host_on(
        &mut self,
        bridge: &str,
        name: &str,
        cidrs: &[&str],
        gateway: Option<Ipv4Addr>,
    ) -> Result<&Host> {
        let valid = !name.is_empty()
            && name.len() <= 10
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid || self.endpoint(name).is_ok() {
            return Err(LabError::Invalid(format!("host name {name:?}")));
        }
        let run = self.run.name();
        let netns = Netns::create(&format!("{run}-{name}"))?;
        let dir = self.run.path().join(format!("host-{name}"));
        std::fs::create_dir_all(&dir).map_err(|source| LabError::Io {
            op: "create",
            path: dir.clone(),
            source,
        })?;
        let u_if = format!("{run}h{}", self.hosts.len());
        // Created in the underlay namespace, peer straight into the host's.
        self.underlay.run(&[
            "ip",
            "link",
            "add",
            &u_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns.name(),
        ])?;
        self.underlay
            .run(&["ip", "link", "set", &u_if, "master", bridge, "up"])?;
        netns.run(&["sysctl", "-q", "-w", "net.ipv6.conf.eth0.disable_ipv6=1"])?;
        // Its frames enter OVS netdev datapaths on the nodes: no partial
        // checksums, or TCP breaks.
        netns.run(&["ethtool", "-K", "eth0", "tx", "off"])?;
        netns.run(&["ip", "link", "set", "eth0", "up"])?;
        for c in cidrs {
            netns.run(&["ip", "addr", "add", c, "dev", "eth0"])?;
        }
        if let Some(gw) = gateway {
            netns.run(&["ip", "route", "add", "default", "via", &gw.to_string()])?;
        }
        self.hosts.push(Host {
            netns,
            name: name.to_string(),
            dir,
        });
        let last = self.hosts.len() - 1;
        Ok(&self.hosts[last])
    }

    /// Capture on any interface of any lab namespace; files in the run dir.
    pub fn capture(&self, ns: &Netns, iface: &str, filter: &str, name: &str) -> Result<Capture> {
        Capture::start(ns, iface, filter, self.run.path(), name)
    }

    /// Plug a VM into its node's integration bridge, playing the compute
    /// driver: veth `eth0` in the VM namespace, its peer on the bridge with
    /// `external_ids:iface-id=<nic>`; MAC and MTU set, TX checksum offload
    /// off (the netdev datapath needs it for TCP), then addressing.
    pub fn add_vm(&mut self, spec: VmSpec) -> Result<&mut Vm> {
        let valid = !spec.name.is_empty()
            && spec.name.len() <= 10
            && spec
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid || self.endpoint(&spec.name).is_ok() {
            return Err(LabError::Invalid(format!("VM name {:?}", spec.name)));
        }
        self.node(spec.node)?;
        let run = self.run.name();
        let dir = self.run.path().join(format!("vm-{}", spec.name));
        std::fs::create_dir_all(&dir).map_err(|source| LabError::Io {
            op: "create",
            path: dir.clone(),
            source,
        })?;
        let netns = Netns::create(&format!("{run}-{}", spec.name))?;
        let mut vm = Vm {
            netns,
            name: spec.name.clone(),
            node: spec.node,
            nic_id: spec.nic_id.clone(),
            mac: spec.mac.to_ascii_lowercase(),
            mtu: spec.mtu,
            port: String::new(),
            dir,
            lease: None,
            captures: 0,
            addr: spec.addr.clone(),
            ipv6: spec.ipv6,
        };
        self.plug(&mut vm)?;
        self.vms.push(vm);
        let last = self.vms.len() - 1;
        Ok(&mut self.vms[last])
    }

    /// Connect `vm` (its namespace exists, without eth0) to node `vm.node`.
    fn plug(&mut self, vm: &mut Vm) -> Result<()> {
        self.vm_seq += 1;
        let port = format!("{}v{}", self.run.name(), self.vm_seq);
        let node = self.node(vm.node)?;
        node.ensure_bridge(&self.cfg.bridge)?;
        // Created in the node namespace, peer straight into the VM namespace.
        node.netns().run(&[
            "ip",
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            vm.netns.name(),
        ])?;
        vm.port = port.clone();
        let ns = &vm.netns;
        if !vm.ipv6 {
            ns.run(&["sysctl", "-q", "-w", "net.ipv6.conf.eth0.disable_ipv6=1"])?;
        }
        let mtu = vm.mtu.to_string();
        ns.run(&["ip", "link", "set", "eth0", "address", &vm.mac, "mtu", &mtu])?;
        ns.run(&["ethtool", "-K", "eth0", "tx", "off"])?;
        ns.run(&["ip", "link", "set", "eth0", "up"])?;
        node.netns().run(&["ip", "link", "set", &port, "up"])?;
        let bridge = &self.cfg.bridge;
        node.ovs().vsctl(&[
            "add-port",
            bridge,
            &port,
            "--",
            "set",
            "Interface",
            &port,
            &format!("external_ids:iface-id={}", vm.nic_id),
            &format!("external_ids:attached-mac={}", vm.mac),
            "external_ids:iface-status=active",
            &format!("external_ids:vm-id={}", vm.name),
        ])?;
        match vm.addr.clone() {
            VmAddr::None => {}
            VmAddr::Static {
                ip,
                prefix_len,
                gateway,
            } => {
                let cidr = format!("{ip}/{prefix_len}");
                ns.run(&["ip", "addr", "add", &cidr, "dev", "eth0"])?;
                if let Some(gw) = gateway {
                    ns.run(&["ip", "route", "add", "default", "via", &gw.to_string()])?;
                }
            }
            VmAddr::Dhcp(client) => {
                vm.dhcp(client, Duration::from_secs(20))?;
            }
        }
        tracing::info!(vm = %vm.name, nic = %vm.nic_id, node = vm.node, %port, "VM plugged");
        Ok(())
    }

    /// Move a VM to another node (a migration as the data path sees it):
    /// its port leaves the old node's bridge, a new veth is plugged on the
    /// new node with the same NIC id, MAC, MTU and addressing (DHCP VMs ask
    /// again). The VM's namespace, and so its processes, stay.
    pub fn move_vm(&mut self, name: &str, to_node: usize) -> Result<()> {
        self.node(to_node)?;
        let pos = self
            .vms
            .iter()
            .position(|v| v.name == name)
            .ok_or_else(|| LabError::Invalid(format!("no VM {name}")))?;
        let mut vm = self.vms.remove(pos);
        let res = self.unplug(&vm).and_then(|()| {
            vm.node = to_node;
            self.plug(&mut vm)
        });
        // Keep the VM (and its cleanup) even when the move failed half way.
        self.vms.insert(pos, vm);
        res
    }

    /// Detach a VM's port from its node: OVS port removed, veth pair deleted.
    fn unplug(&self, vm: &Vm) -> Result<()> {
        let node = self.node(vm.node)?;
        node.ovs()
            .vsctl(&["--if-exists", "del-port", &self.cfg.bridge, &vm.port])?;
        node.netns().run(&["ip", "link", "del", &vm.port])?;
        Ok(())
    }

    /// Unplug a VM: remove its port from the bridge and delete its namespace.
    pub fn remove_vm(&mut self, name: &str) -> Result<()> {
        let pos = self
            .vms
            .iter()
            .position(|v| v.name == name)
            .ok_or_else(|| LabError::Invalid(format!("no VM {name}")))?;
        let vm = self.vms.remove(pos);
        let unplugged = self.unplug(&vm);
        let dir = vm.dir.clone();
        vm.netns.delete()?;
        let _ = std::fs::remove_dir_all(dir);
        unplugged
    }

    /// The cluster secret (hex text, exactly the bytes of the secret file).
    pub fn cluster_secret(&self) -> &str {
        &self.secret
    }

    /// The agent token of node `i`.
    pub fn node_token(&self, i: usize) -> Result<String> {
        let node = self.node(i)?;
        Ok(proto::auth::node_token(self.secret.as_bytes(), node.name()))
    }

    /// Start flowctl (all-in-one) in the root namespace on free 127.0.0.1
    /// ports, and wait until both ports accept connections. A restart after
    /// [`Lab::stop_flowctl`] reuses the same store and ports.
    pub fn start_flowctl(&mut self, spec: &FlowctlSpec) -> Result<FlowctlCtx> {
        if self
            .flowctl
            .as_mut()
            .and_then(|f| f.proc.as_mut())
            .is_some_and(|p| p.is_running())
        {
            return Err(LabError::Invalid("flowctl already running".into()));
        }
        let ctx = match &self.flowctl {
            Some(f) => f.ctx.clone(),
            None => {
                let dir = self.run.path().join("flowctl");
                std::fs::create_dir_all(&dir).map_err(|source| LabError::Io {
                    op: "create",
                    path: dir.clone(),
                    source,
                })?;
                let lo = Ipv4Addr::LOCALHOST;
                FlowctlCtx {
                    store_path: dir.join("store.redb"),
                    dir,
                    api_addr: SocketAddr::from((lo, free_port()?)),
                    agent_addr: SocketAddr::from((lo, free_port()?)),
                    cluster_secret_file: self.run.path().join("cluster.secret"),
                }
            }
        };
        let mut cmd = std::process::Command::new(spec.path()?);
        cmd.args((spec.args)(&ctx));
        cmd.env("RUST_LOG", lab_log_filter());
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        let mut proc = Proc::spawn("flowctl", cmd, Some(&ctx.dir.join("flowctl.log")))?;
        let up = wait_until(Duration::from_secs(30), "flowctl ports", || {
            !proc.is_running() || (port_open(ctx.api_addr) && port_open(ctx.agent_addr))
        });
        if up.is_err() || !proc.is_running() {
            return Err(LabError::Check(format!(
                "flowctl did not come up ({:?}): {}",
                proc.try_status(),
                proc.log_tail(20)
            )));
        }
        self.flowctl = Some(Flowctl {
            ctx: ctx.clone(),
            proc: Some(proc),
        });
        Ok(ctx)
    }

    /// flowctl's context (addresses, store), once started.
    pub fn flowctl(&self) -> Option<&FlowctlCtx> {
        self.flowctl.as_ref().map(|f| &f.ctx)
    }

    /// `http://<api_addr>`, once flowctl was started.
    pub fn api_url(&self) -> Result<String> {
        self.flowctl()
            .map(|c| format!("http://{}", c.api_addr))
            .ok_or_else(|| LabError::Invalid("flowctl not started".into()))
    }

    /// Stop flowctl (SIGTERM, then SIGKILL). `kill = true`: SIGKILL at once.
    pub fn stop_flowctl(&mut self, kill: bool) -> Result<()> {
        if let Some(p) = self.flowctl.as_mut().and_then(|f| f.proc.as_mut()) {
            p.end(kill)?;
        }
        if let Some(f) = self.flowctl.as_mut() {
            f.proc = None;
        }
        Ok(())
    }

    /// Agents started from now on connect to `endpoints` (in this order)
    /// instead of the lab's own flowctl: the replicas of an HA control
    /// plane started outside the lab, or proxies in front of them.
    pub fn set_agent_endpoints(&mut self, endpoints: Vec<SocketAddr>) {
        self.agent_endpoints = Some(endpoints);
    }

    /// The context an agent on node `i` gets.
    pub fn agent_ctx(&self, i: usize) -> Result<AgentCtx> {
        let node = self.node(i)?;
        let dir = node.dir.join("agent");
        let token = self.node_token(i)?;
        let token_file = dir.join("token");
        std::fs::write(&token_file, &token).map_err(|source| LabError::Io {
            op: "write",
            path: token_file.clone(),
            source,
        })?;
        Ok(AgentCtx {
            node: node.name.clone(),
            index: i,
            dir,
            ovsdb_socket: node.ovs.db_socket(),
            bridge: self.cfg.bridge.clone(),
            mgmt_socket: node.ovs.mgmt_socket(&self.cfg.bridge),
            vswitchd_ctl: node.ovs.vswitchd_ctl(),
            underlay_ip: node.underlay_ip,
            flowctl_agent_addrs: match &self.agent_endpoints {
                Some(eps) => eps.clone(),
                None => self
                    .flowctl()
                    .map(|c| vec![c.agent_addr])
                    .unwrap_or_default(),
            },
            token,
            token_file,
            datapath_type: "netdev".into(),
            external_ports: if node.external {
                vec![format!("{EXTERNAL_PHYSNET}={EXTERNAL_IFACE}")]
            } else {
                Vec::new()
            },
        })
    }

    /// Start node `i`'s agent in the root namespace (log: `<node>/agent/agent.log`).
    /// Returns once the process runs; what "ready" means is up to the test
    /// (e.g. `wait_until` flows appear).
    pub fn start_agent(&mut self, i: usize, spec: &AgentSpec) -> Result<()> {
        let ctx = self.agent_ctx(i)?;
        let mut cmd = std::process::Command::new(spec.path()?);
        cmd.args((spec.args)(&ctx));
        cmd.env("RUST_LOG", lab_log_filter());
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        let proc = Proc::spawn(
            &format!("agent-{}", ctx.node),
            cmd,
            Some(&ctx.dir.join("agent.log")),
        )?;
        let node = self.node_mut(i)?;
        if let Some(mut old) = node.agent.replace(proc) {
            old.stop()?;
        }
        Ok(())
    }

    /// Stop node `i`'s agent (`kill = true`: SIGKILL, a crash).
    pub fn stop_agent(&mut self, i: usize, kill: bool) -> Result<()> {
        let node = self.node_mut(i)?;
        if let Some(mut p) = node.agent.take() {
            p.end(kill)?;
        }
        Ok(())
    }

    /// Everything useful when a test fails: every node's OVS state and
    /// agent log, flowctl's log, each VM's addresses and neighbours.
    pub fn dump(&self) -> String {
        let mut s = format!("######## lab {} ########\n", self.run.name());
        for n in &self.nodes {
            s.push_str(&n.dump());
        }
        if let Some(f) = &self.flowctl {
            s.push_str("===== flowctl log (tail) =====\n");
            s.push_str(&tail_file(&f.ctx.dir.join("flowctl.log"), 40));
            s.push('\n');
        }
        for vm in &self.vms {
            let show = |r: Result<String>| r.unwrap_or_else(|e| format!("<{e}>"));
            s.push_str(&format!(
                "===== vm {} (node{}, port {}, nic {}, mac {}) =====\n",
                vm.name, vm.node, vm.port, vm.nic_id, vm.mac
            ));
            s.push_str(&show(vm.netns.run(&["ip", "-br", "addr"])));
            s.push_str(&show(vm.netns.run(&["ip", "neigh"])));
            s.push_str(&show(vm.netns.run(&["ip", "route"])));
        }
        for h in &self.hosts {
            s.push_str(&format!("===== host {} =====\n", h.name));
            s.push_str(&h.run(&["ip", "-br", "addr"]).unwrap_or_default());
            s.push_str(&h.run(&["ip", "neigh"]).unwrap_or_default());
        }
        s
    }

    /// Tear down now, returning every error (Drop does the same silently).
    pub fn teardown(mut self) -> Result<()> {
        let errors = self.teardown_inner();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(LabError::Teardown(errors))
        }
    }

    fn teardown_inner(&mut self) -> Vec<LabError> {
        let mut errors = Vec::new();
        for n in &mut self.nodes {
            if let Some(mut p) = n.agent.take() {
                if let Err(e) = p.stop() {
                    errors.push(e);
                }
            }
        }
        if let Err(e) = self.stop_flowctl(false) {
            errors.push(e);
        }
        for vm in self.vms.drain(..) {
            if let Err(e) = vm.netns.delete() {
                errors.push(e);
            }
        }
        for h in self.hosts.drain(..) {
            if let Err(e) = h.netns.delete() {
                errors.push(e);
            }
        }
        // Nodes: sandbox teardown stops daemons; the namespace goes with
        // the last Arc (inside the sandbox).
        self.nodes.clear();
        errors
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.dump());
        }
        for e in self.teardown_inner() {
            tracing::warn!(run = self.run.name(), error = %e, "lab teardown");
            eprintln!("lab teardown: {e}");
        }
        // Remaining fields drop in order: underlay namespace, then run dir.
    }
}
