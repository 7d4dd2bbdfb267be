//! The node loop: desired state in (from flowctl or the local copy), flows
//! and tunnel ports out, acks back.
//!
//! Every input — an update from flowctl, an ofport change, an ovs-vswitchd
//! restart — only marks the node dirty; one `sync` then renders the whole
//! pipeline, diffs it against what is installed and applies the difference
//! in one atomic bundle. Bursts coalesce into one sync.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use openflow::message::{GroupMod, GroupModCommand};
use openflow::meter::{flags as meter_flags, MeterBand, MeterMod, MeterModCommand};
use openflow::Flow;
use ovsdb::vswitch::{
    BridgeConfig, ExternalPortSpec, OfportMap, TunnelSpec, Vswitch, VswitchEvent,
};
use proto::{Change, NodeState, Object, ObjectKey, Revision};
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::control::{ControlClient, ControlConfig, Update};
use crate::dhcp;
use crate::local::{LocalState, Persisted, Persister, Step};
use crate::neighbor::{self, Arp, Neighbors};
use crate::pipeline::{self, IncrementalRenderer, PortMap, Scope};
use crate::reconcile;
use crate::switch::Switch;

/// How the agent reaches everything.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node: String,
    pub token: String,
    /// flowctl agent endpoints, tried in turn.
    pub flowctl: Vec<String>,
    /// OVSDB target, `unix:/path/db.sock`.
    pub ovsdb: String,
    pub bridge: String,
    /// `netdev` (userspace) or `system` (kernel) datapath.
    pub datapath_type: String,
    /// OpenFlow target of the bridge, `unix:/path/br-int.mgmt`.
    pub openflow: String,
    pub state_dir: PathBuf,
    /// The node's uplinks to external networks.
    pub external_ports: Vec<ExternalPortSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("local state")]
    Local(#[from] crate::local::LocalStateError),
    #[error("OVSDB")]
    Ovsdb(#[from] ovsdb::Error),
    #[error("OpenFlow")]
    OpenFlow(#[from] crate::switch::SwitchError),
}

/// After a failed apply, try again this soon.
const RETRY: Duration = Duration::from_secs(1);
/// A tunnel's BFD session needs about a second to come up: until the agent
/// has run this long, a peer whose BFD is not up yet counts as alive, so a
/// (re)starting gateway does not take over from a live one it has not
/// heard yet.
const BFD_GRACE: Duration = Duration::from_secs(3);
/// How often neighbours are resolved and addresses announced.
const NEIGHBOR_TICK: Duration = Duration::from_secs(1);
/// Packet-ins a NIC may trigger per second (and burst): tenants control them.
const PACKET_IN_RATE: f64 = 20.0;
const PACKET_IN_BURST: u32 = 40;

/// Runs the agent until `shutdown` resolves, whatever it is waiting for
/// then (OVS coming back included). Flows stay installed when it returns:
/// the data path must outlive the agent; the local copy is still written.
pub async fn run(
    cfg: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let span = info_span!("agent", node = %cfg.node);
    let agent = async move {
        let local = LocalState::new(&cfg.state_dir);
        let persisted = local.load()?;
        let generation = persisted.generation.wrapping_add(1).max(1);
        // Claim the generation before writing any flow with it.
        let claimed = Persisted {
            generation,
            state: persisted.state.clone(),
        };
        local.store(&claimed)?;
        info!(generation, resumed = ?persisted.state.as_ref().map(|s| s.revision), "starting");

        let neighbors_file = cfg.state_dir.join("neighbors.json");
        let neighbors = Neighbors::restore(load_neighbors(&neighbors_file));
        let vswitch = connect_ovsdb(&cfg).await;
        vswitch.ensure_bridge().await?;
        let switch = Switch::connect_when_ready(&cfg.openflow).await;

        let (updates, acks) = spawn_control(&cfg, persisted.state.as_ref().map(|s| s.revision));
        let mut node = Node {
            vswitch,
            switch,
            persister: Persister::spawn(local, claimed),
            generation,
            desired: persisted.state,
            renderer: IncrementalRenderer::new(generation),
            dumped: None,
            scope: Scope::All,
            ofports_seen: OfportMap::default(),
            unsaved: Unsaved::default(),
            last_ack: None,
            acks,
            packet_in_limit: dhcp::RateLimiter::new(PACKET_IN_RATE, PACKET_IN_BURST),
            external_ports: cfg.external_ports.clone(),
            neighbors,
            neighbors_file,
            groups: None,
            meters: None,
            started: Instant::now(),
            serving: false,
            synced: false,
        };
        let dump_started = Instant::now();
        let installed = node.switch.dump_ours().await?;
        info!(
            flows = installed.len(),
            dump_us = dump_started.elapsed().as_micros() as u64,
            "read what is installed"
        );
        // Flows in place and tunnels not saying "down": the agent restarted
        // under a running data path, which keeps serving as it did.
        node.serving =
            !installed.is_empty() && node.vswitch.tunnels().iter().all(|t| !t.cpath_down);
        node.dumped = Some(installed);
        node.event_loop(updates).await
    }
    .instrument(span.clone());
    tokio::select! {
        result = agent => result,
        _ = shutdown => {
            span.in_scope(|| info!("stopping; flows stay installed"));
            Ok(())
        }
    }
}

/// What the control task sends back: acks and nacks.
enum Report {
    Ack {
        revision: Revision,
        ready: Vec<String>,
    },
    Nack {
        revision: Revision,
        error: String,
    },
}

/// What the desired state holds that the local copy does not yet.
#[derive(Default)]
enum Unsaved {
    #[default]
    Nothing,
    /// The changes applied since `base`, the revision the copy is at.
    Changes {
        base: Revision,
        changes: Vec<Change>,
    },
    /// A whole new state.
    Snapshot,
}

impl Unsaved {
    fn add(&mut self, base: Revision, mut more: Vec<Change>) {
        match self {
            Unsaved::Nothing => {
                *self = Unsaved::Changes {
                    base,
                    changes: more,
                }
            }
            Unsaved::Changes { changes, .. } => changes.append(&mut more),
            Unsaved::Snapshot => {}
        }
    }
}

/// Runs the flowctl client in its own task so a slow or dead control plane
/// never holds up the data path.
fn spawn_control(
    cfg: &AgentConfig,
    last_applied: Option<Revision>,
) -> (mpsc::Receiver<Update>, mpsc::Sender<Report>) {
    let (update_tx, update_rx) = mpsc::channel(64);
    let (report_tx, mut report_rx) = mpsc::channel::<Report>(64);
    let control = ControlConfig::new(cfg.flowctl.clone(), cfg.node.clone(), cfg.token.clone())
        .resume_from(last_applied);
    let mut client = ControlClient::new(control);
    tokio::spawn(
        async move {
            loop {
                tokio::select! {
                    update = client.next() => {
                        if update_tx.send(update).await.is_err() {
                            return;
                        }
                    }
                    report = report_rx.recv() => match report {
                        Some(Report::Ack { revision, ready }) => client.ack(revision, ready).await,
                        Some(Report::Nack { revision, error }) => client.nack(revision, error).await,
                        None => return,
                    },
                }
            }
        }
        .in_current_span(),
    );
    (update_rx, report_tx)
}

struct Node {
    vswitch: Vswitch,
    switch: Switch,
    persister: Persister,
    generation: u16,
    /// The state to install; `None` until flowctl or the local copy gives one.
    desired: Option<NodeState>,
    /// The flows of the last render, and so of the switch while in step.
    renderer: IncrementalRenderer,
    /// What changed since the last sync, so the renderer looks only there.
    scope: Scope,
    /// The ofports the last sync saw, to tell which NICs a change moved.
    ofports_seen: OfportMap,
    /// What a dump found in the switch when the renderer is not known to
    /// be in step with it (start, reconnect, failed apply): the next sync
    /// reconciles against this in full, then goes incremental.
    dumped: Option<Vec<Flow>>,
    /// What the local copy does not hold yet.
    unsaved: Unsaved,
    /// The last (revision, ready NICs) reported, to report only changes.
    last_ack: Option<(Revision, Vec<String>)>,
    acks: mpsc::Sender<Report>,
    packet_in_limit: dhcp::RateLimiter<u32>,
    external_ports: Vec<ExternalPortSpec>,
    /// External networks' gateways resolved, addresses announced.
    neighbors: Neighbors,
    neighbors_file: PathBuf,
    /// The groups installed, by id; `None` when unknown (start, reconnect,
    /// failed apply): then every desired group is (re)written.
    groups: Option<BTreeMap<u32, GroupMod>>,
    /// The meters installed, by id; `None` when unknown (read back first).
    meters: Option<BTreeMap<u32, MeterMod>>,
    started: Instant,
    /// As a gateway node: takes NAT gateway traffic. False from a start
    /// without flows until the first state is installed, and while another
    /// gateway serves (a returning gateway does not take traffic back).
    serving: bool,
    /// A state has been installed since the agent started.
    synced: bool,
}

impl Node {
    async fn event_loop(&mut self, mut updates: mpsc::Receiver<Update>) -> Result<(), AgentError> {
        let mut ofports = self.vswitch.ofports();
        let mut events = self.vswitch.events();
        let mut dirty = self.desired.is_some();
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut neighbor_tick = tokio::time::interval(NEIGHBOR_TICK);
        neighbor_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut bfd_grace_over = false;
        loop {
            if dirty {
                dirty = false;
                match self.sync().await {
                    Ok(()) => retry_at = None,
                    Err(e) => {
                        warn!(error = %error_chain(&e), "sync failed; retrying");
                        retry_at = Some(tokio::time::Instant::now() + RETRY);
                    }
                }
            }
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(update) = updates.recv() => {
                    self.take(update);
                    // Coalesce whatever else is already queued.
                    while let Ok(more) = updates.try_recv() {
                        self.take(more);
                    }
                    dirty = true;
                }
                Ok(()) = ofports.changed() => {
                    let now = ofports.borrow_and_update().clone();
                    self.scope.add(port_scope(&self.ofports_seen, &now));
                    self.ofports_seen = now;
                    dirty = true;
                }
                event = events.recv() => match event {
                    Ok(VswitchEvent::VswitchdUp | VswitchEvent::DatapathIdChanged { .. }) => {
                        info!("ovs-vswitchd restarted; replaying flows");
                        self.reconnect_switch().await;
                        dirty = true;
                    }
                    Ok(VswitchEvent::BridgeRemoved) => {
                        warn!("bridge removed from OVSDB; recreating");
                        dirty = true;
                    }
                    Ok(other) => debug!(?other, "OVSDB event"),
                    Err(e) => debug!(error = %e, "OVSDB events lagged"),
                },
                _ = neighbor_tick.tick() => {
                    self.maintain_neighbors().await;
                    if self.update_serving() {
                        self.scope = Scope::All;
                        dirty = true;
                    }
                    if !bfd_grace_over && self.started.elapsed() >= BFD_GRACE {
                        // BFD's word on peers counts from now.
                        bfd_grace_over = true;
                        self.scope = Scope::All;
                        dirty = true;
                    }
                }
                packet_in = self.switch.packet_in() => match packet_in {
                    Some(p) => {
                        if self.on_packet_in(p).await {
                            self.scope = Scope::All;
                            dirty = true;
                        }
                    }
                    None => {
                        warn!("OpenFlow connection lost; reconnecting");
                        self.reconnect_switch().await;
                        dirty = true;
                    }
                },
                _ = retry => dirty = true,
            }
        }
    }

    fn take(&mut self, update: Update) {
        match update {
            Update::Snapshot(state) => {
                self.scope = Scope::All;
                debug!(revision = state.revision, "snapshot");
                self.desired = Some(state);
                self.unsaved = Unsaved::Snapshot;
            }
            Update::Delta {
                base,
                revision,
                changes,
            } => {
                let Some(state) = self.desired.as_mut() else {
                    warn!(
                        base,
                        revision, "delta without a state; waiting for a snapshot"
                    );
                    return;
                };
                for change in &changes {
                    state.apply(change);
                    self.scope.add(change_scope(change));
                }
                state.revision = revision;
                debug!(base, revision, changes = changes.len(), "delta");
                self.unsaved.add(base, changes);
            }
        }
    }

    /// Brings the switch to the desired state and reports it.
    async fn sync(&mut self) -> Result<(), AgentError> {
        // Taken out (not cloned: it holds every NIC of the node's VPCs) and
        // put back whatever happens.
        let Some(state) = self.desired.take() else {
            return Ok(());
        };
        let span = info_span!("sync", revision = state.revision);
        let result = self.sync_to(&state).instrument(span).await;
        self.desired = Some(state);
        result
    }

    async fn sync_to(&mut self, state: &NodeState) -> Result<(), AgentError> {
        let started = Instant::now();
        self.vswitch.ensure_bridge().await?;
        for spec in &self.external_ports {
            self.vswitch.ensure_external_port(spec).await?;
        }
        self.update_serving_in(state);
        self.sync_tunnels(state).await?;
        let ports = self.ports_for(state);
        let prepared = started.elapsed();
        let (changes, flows) = match self.dumped.take() {
            // Out of step: render everything, diff against the dump.
            Some(dumped) => {
                self.renderer = IncrementalRenderer::new(self.generation);
                self.scope = Scope::Nics(Default::default());
                self.renderer.update(state, &ports);
                let desired = self.renderer.flows();
                (reconcile::diff(&dumped, &desired), desired.len())
            }
            None => {
                let scope = std::mem::take(&mut self.scope);
                (self.renderer.update_scoped(state, &ports, &scope), 0)
            }
        };
        let rendered = started.elapsed();
        let meters = desired_meters(state);
        self.add_meters(&meters).await?;
        let groups = pipeline::render_groups(state, &ports);
        let (groups_before, groups_after) = group_changes(self.groups.as_ref(), &groups);
        if !changes.is_empty() || !groups_before.is_empty() || !groups_after.is_empty() {
            let applied = self
                .switch
                .apply_with_groups(&groups_before, &changes, &groups_after)
                .await;
            if let Err(e) = applied {
                // The bundle left the switch as it was; the renderer moved
                // on. Read the switch back and reconcile in full next time.
                self.dumped = Some(self.switch.dump_ours().await.unwrap_or_default());
                self.groups = None;
                let error = error_chain(&e);
                let revision = state.revision;
                let _ = self.acks.send(Report::Nack { revision, error }).await;
                return Err(e.into());
            }
        }
        self.groups = Some(groups.into_iter().map(|g| (g.group_id, g)).collect());
        self.synced = true;
        self.remove_meters(&meters).await;
        // A full reconcile is reported even when it changed nothing: it is
        // when a (re)started agent is known to be in step with the switch.
        if !changes.is_empty() || flows > 0 {
            info!(
                changes = changes.len(),
                full_reconcile_of = flows,
                prepare_us = prepared.as_micros() as u64,
                render_us = (rendered - prepared).as_micros() as u64,
                apply_us = (started.elapsed() - rendered).as_micros() as u64,
                "flows applied"
            );
        }
        let ready: Vec<String> = state
            .local_nics()
            .filter(|nic| ports.nic(&nic.id).is_some())
            .map(|nic| nic.id.clone())
            .collect();
        // Announce what this node took over at once: a failover waits on it.
        self.maintain_neighbors_in(state, &ports).await;
        let ack = (state.revision, ready);
        if self.last_ack.as_ref() != Some(&ack) {
            let (revision, ready) = ack.clone();
            let _ = self.acks.send(Report::Ack { revision, ready }).await;
            self.last_ack = Some(ack);
        }
        // After the ack: the local copy is for restarts, not on the path of
        // a NIC becoming ready. It may lag the switch by the writes queued.
        match std::mem::take(&mut self.unsaved) {
            _ if self.persister.wants_snapshot() => self.save_snapshot(state),
            Unsaved::Snapshot => self.save_snapshot(state),
            Unsaved::Changes { base, changes } => self.persister.append(Step {
                base,
                revision: state.revision,
                changes,
            }),
            Unsaved::Nothing => {}
        }
        Ok(())
    }

    fn save_snapshot(&self, state: &NodeState) {
        self.persister.save(Persisted {
            generation: self.generation,
            state: Some(state.clone()),
        });
    }

    /// One VXLAN port per peer node; ports of peers no longer needed go.
    async fn sync_tunnels(&self, state: &NodeState) -> Result<(), AgentError> {
        let standing_by = self.standing_by(state);
        let desired: Vec<TunnelSpec> = state
            .peers
            .values()
            .map(|p| TunnelSpec {
                peer: p.node.clone(),
                remote_ip: p.underlay_ip.into(),
                local_ip: state.node.underlay_ip.map(Into::into),
                bfd: p.bfd,
                cpath_down: p.bfd && standing_by,
            })
            .collect();
        let have: BTreeSet<_> = self
            .vswitch
            .tunnels()
            .into_iter()
            .map(|t| (t.peer, t.remote_ip, t.bfd, t.cpath_down))
            .collect();
        let want: BTreeSet<_> = desired
            .iter()
            .map(|t| {
                let ip = Some(t.remote_ip.to_string());
                (t.peer.clone(), ip, t.bfd, t.cpath_down)
            })
            .collect();
        if have != want {
            self.vswitch.sync_tunnels(&desired).await?;
        }
        Ok(())
    }

    fn port_map(&self) -> PortMap {
        let ofports = self.vswitch.ofports().borrow().clone();
        let mut ports = PortMap::new();
        for (iface, ofport) in &ofports.by_iface_id {
            ports.set_nic(iface, *ofport);
        }
        let bfd_counts = self.started.elapsed() >= BFD_GRACE;
        for tunnel in self.vswitch.tunnels() {
            if let Some(ofport) = ofports.port(&tunnel.port) {
                ports.set_tunnel(&tunnel.peer, ofport);
            }
            if bfd_counts && ofports.bfd_forwarding.get(&tunnel.port) == Some(&false) {
                ports.set_peer_down(&tunnel.peer);
            }
        }
        for spec in &self.external_ports {
            if let Some(ofport) = ofports.port(&spec.iface) {
                ports.set_external(&spec.physnet, ofport);
            }
        }
        for (network, mac) in self.neighbors.resolved() {
            ports.set_next_hop(network, *mac);
        }
        ports
    }

    /// Makes the meters in `desired` exist as given before flows use them.
    async fn add_meters(&mut self, desired: &BTreeMap<u32, MeterMod>) -> Result<(), AgentError> {
        if desired.is_empty() && self.meters.as_ref().is_some_and(|m| m.is_empty()) {
            return Ok(());
        }
        let installed = match self.meters.take() {
            Some(m) => m,
            None => self
                .switch
                .meters()
                .await?
                .into_iter()
                .map(|m| (m.meter_id, m))
                .collect(),
        };
        let mut now = installed.clone();
        for (id, m) in desired {
            let command = match installed.get(id) {
                Some(have) if have.flags == m.flags && have.bands == m.bands => continue,
                Some(_) => MeterModCommand::Modify,
                None => MeterModCommand::Add,
            };
            let write = MeterMod {
                command,
                ..m.clone()
            };
            if let Err(e) = self.switch.meter(write).await {
                self.meters = None;
                return Err(e.into());
            }
            now.insert(*id, m.clone());
        }
        self.meters = Some(now);
        Ok(())
    }

    /// Deletes the meters not in `desired`, once no flow uses them.
    async fn remove_meters(&mut self, desired: &BTreeMap<u32, MeterMod>) {
        let Some(installed) = self.meters.as_mut() else {
            return;
        };
        let stale: Vec<u32> = installed
            .keys()
            .filter(|id| !desired.contains_key(id))
            .copied()
            .collect();
        for id in stale {
            let delete = MeterMod {
                command: MeterModCommand::Delete,
                flags: 0,
                meter_id: id,
                bands: Vec::new(),
            };
            match self.switch.meter(delete).await {
                Ok(()) => {
                    installed.remove(&id);
                }
                Err(e) => warn!(meter = id, error = %error_chain(&e), "meter not deleted"),
            }
        }
    }

    /// The port map a render of `state` needs: ports, meters, and whether
    /// this node stands by as a gateway.
    fn ports_for(&self, state: &NodeState) -> PortMap {
        let mut ports = self.port_map();
        for (eip, inbound, outbound, _) in pipeline::nat::meters(state) {
            ports.set_meters(&eip, inbound, outbound);
        }
        ports.set_standing_by(self.standing_by(state));
        ports
    }

    /// A gateway node that does not serve (yet) stands by: its tunnels say
    /// "do not forward to me" and it answers for no NAT gateway.
    fn standing_by(&self, state: &NodeState) -> bool {
        !self.serving && is_gateway_node(state)
    }

    fn update_serving(&mut self) -> bool {
        let Some(state) = self.desired.take() else {
            return false;
        };
        let changed = self.update_serving_in(&state);
        self.desired = Some(state);
        changed
    }

    /// Decides whether a gateway node that does not serve starts to: once
    /// its state is installed, if no other gateway of its NAT gateways
    /// serves (BFD says forwarding), after BFD had time to tell. `true` if
    /// it changed.
    fn update_serving_in(&mut self, state: &NodeState) -> bool {
        if self.serving || !self.synced {
            return false;
        }
        if is_gateway_node(state) {
            let others = other_gateways(state);
            // Tunnels first: they lock the replica, which publishes the port
            // map under that lock; the map is only borrowed after.
            let tunnels = self.vswitch.tunnels();
            let ofports = self.vswitch.ofports();
            let forwarding = &ofports.borrow().bfd_forwarding;
            let other_serving = tunnels.iter().any(|t| {
                others.contains(t.peer.as_str()) && forwarding.get(&t.port) == Some(&true)
            });
            if other_serving || self.started.elapsed() < BFD_GRACE {
                return false;
            }
        }
        info!("serving as a gateway node");
        self.serving = true;
        true
    }

    async fn maintain_neighbors(&mut self) {
        // A tick every second: nothing to do (and no port map to build) on a
        // node with no external network.
        if self
            .desired
            .as_ref()
            .is_none_or(|s| s.external_networks.is_empty())
        {
            return;
        }
        let Some(state) = self.desired.take() else {
            return;
        };
        let ports = self.ports_for(&state);
        self.maintain_neighbors_in(&state, &ports).await;
        self.desired = Some(state);
    }

    /// Sends the ARP requests and announcements due now on the external
    /// ports.
    async fn maintain_neighbors_in(&mut self, state: &NodeState, ports: &PortMap) {
        let answering = pipeline::announced_addresses(state, ports);
        if answering.is_empty() {
            return;
        }
        let wanted: Vec<neighbor::Wanted> = state
            .external_networks
            .values()
            .filter_map(|net| {
                let (_, ip, mac) = answering.iter().find(|(n, _, _)| *n == net.id)?;
                Some(neighbor::Wanted {
                    network_id: net.id.clone(),
                    gateway_ip: net.gateway_ip,
                    from: (*ip, *mac),
                })
            })
            .collect();
        let frames = self
            .neighbors
            .poll(std::time::Instant::now(), &wanted, &answering);
        for out in frames {
            let port = state
                .external_networks
                .get(&out.network_id)
                .and_then(|net| ports.external(&net.physnet));
            let Some(port) = port else { continue };
            if let Err(e) = self.switch.send_out(port, out.frame).await {
                warn!(error = %error_chain(&e), network = %out.network_id, "ARP not sent");
            }
        }
    }

    /// An ARP reply from an external network: `true` if it resolved a
    /// gateway anew (the way out must be rendered again).
    fn on_external_arp(&mut self, in_port: u32, arp: &Arp) -> bool {
        let Some(state) = self.desired.as_ref() else {
            return false;
        };
        let ports = self.port_map();
        let mut changed = false;
        for net in state.external_networks.values() {
            if ports.external(&net.physnet) == Some(in_port)
                && self.neighbors.on_reply(&net.id, net.gateway_ip, arp)
            {
                info!(network = %net.id, gateway = %net.gateway_ip, mac = %arp.sha, "external gateway resolved");
                changed = true;
            }
        }
        if changed {
            save_neighbors(&self.neighbors_file, &self.neighbors.saved());
        }
        changed
    }

    /// A fresh OpenFlow connection after ovs-vswitchd restarted or the
    /// connection broke: the switch may have lost every flow, so what is
    /// installed is read back, not assumed.
    async fn reconnect_switch(&mut self) {
        loop {
            self.switch.reconnect().await;
            self.groups = None;
            self.meters = None;
            match self.switch.dump_ours().await {
                Ok(flows) => {
                    self.dumped = Some(flows);
                    return;
                }
                Err(e) => warn!(error = %error_chain(&e), "dumping flows failed"),
            }
        }
    }

    /// Answers a packet-in; `true` if the pipeline must be rendered again.
    async fn on_packet_in(&mut self, packet: crate::switch::PacketIn) -> bool {
        if self.desired.is_none()
            || !self
                .packet_in_limit
                .check(&packet.in_port, tokio::time::Instant::now().into_std())
        {
            return false;
        }
        if let Some(arp) = Arp::parse(&packet.data) {
            return self.on_external_arp(packet.in_port, &arp);
        }
        let Some(state) = self.desired.as_ref() else {
            return false;
        };
        let ports = self.port_map();
        match dhcp::respond_on_port(state, &ports, packet.in_port, &packet.data) {
            Ok(dhcp::Outcome::Reply { frame, .. }) => {
                if let Err(e) = self.switch.send_out(packet.in_port, frame).await {
                    warn!(error = %error_chain(&e), port = packet.in_port, "DHCP reply not sent");
                }
            }
            Ok(dhcp::Outcome::Ignored(_)) => {}
            Err(e) => debug!(error = %e, port = packet.in_port, "packet-in not handled"),
        }
        false
    }
}

/// Whether any NAT gateway of the state ranks this node.
fn is_gateway_node(state: &NodeState) -> bool {
    state
        .nat_gateways
        .values()
        .any(|g| g.gateways.contains(&state.node.name))
}

/// The other gateway nodes of the NAT gateways that rank this node.
fn other_gateways(state: &NodeState) -> BTreeSet<&str> {
    state
        .nat_gateways
        .values()
        .filter(|g| g.gateways.contains(&state.node.name))
        .flat_map(|g| g.gateways.iter())
        .filter(|n| **n != state.node.name)
        .map(String::as_str)
        .collect()
}

/// The group writes that take the switch from `installed` (`None`:
/// unknown) to `desired`: (adds and modifies, deletes).
fn group_changes(
    installed: Option<&BTreeMap<u32, GroupMod>>,
    desired: &[GroupMod],
) -> (Vec<GroupMod>, Vec<GroupMod>) {
    let write: Vec<GroupMod> = desired
        .iter()
        .filter(|g| installed.is_none_or(|i| i.get(&g.group_id) != Some(*g)))
        .cloned()
        .collect();
    let keep: BTreeSet<u32> = desired.iter().map(|g| g.group_id).collect();
    let delete = installed
        .into_iter()
        .flat_map(|i| i.values())
        .filter(|g| !keep.contains(&g.group_id))
        .map(|g| GroupMod {
            command: GroupModCommand::Delete,
            buckets: Vec::new(),
            ..g.clone()
        })
        .collect();
    (write, delete)
}

/// The meters the node's EIPs need, by id: a drop band at the EIP's rate,
/// in kbit/s, with a burst of a tenth of a second.
fn desired_meters(state: &NodeState) -> BTreeMap<u32, MeterMod> {
    let mut out = BTreeMap::new();
    for (_, inbound, outbound, kbps) in pipeline::nat::meters(state) {
        for id in [inbound, outbound] {
            out.insert(
                id,
                MeterMod {
                    command: MeterModCommand::Add,
                    flags: meter_flags::KBPS | meter_flags::BURST | meter_flags::STATS,
                    meter_id: id,
                    bands: vec![MeterBand::Drop {
                        rate: kbps,
                        burst_size: (kbps / 10).max(1),
                    }],
                },
            );
        }
    }
    out
}

fn load_neighbors(path: &std::path::Path) -> neighbor::Saved {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            warn!(path = %path.display(), error = %e, "unreadable neighbour file; starting empty");
            neighbor::Saved::default()
        }),
        Err(_) => neighbor::Saved::default(),
    }
}

/// Written through a temporary file so a crash never leaves half of it.
fn save_neighbors(path: &std::path::Path, saved: &neighbor::Saved) {
    let tmp = path.with_extension("json.tmp");
    let written = serde_json::to_vec(saved)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        warn!(path = %path.display(), error = %e, "neighbour file not written");
    }
}

/// The NICs a change of the node's state can affect.
fn change_scope(change: &Change) -> Scope {
    match change {
        Change::Upsert {
            object: Object::Nic(nic),
        } => Scope::nic(&nic.id),
        Change::Remove {
            key: ObjectKey::Nic(id),
        } => Scope::nic(id),
        // The renderer compares every group of the node on each update;
        // membership is part of each NIC.
        Change::Upsert {
            object: Object::SecurityGroup(_),
        }
        | Change::Remove {
            key: ObjectKey::SecurityGroup(_),
        } => Scope::default(),
        _ => Scope::All,
    }
}

/// The NICs whose port appeared, moved or vanished. Any other port that
/// changed (a tunnel) can affect every remote NIC: then everything.
fn port_scope(before: &OfportMap, after: &OfportMap) -> Scope {
    let nic_ports: std::collections::HashSet<u32> = before
        .by_iface_id
        .values()
        .chain(after.by_iface_id.values())
        .copied()
        .collect();
    if before.bfd_forwarding != after.bfd_forwarding {
        // A gateway's liveness changed: who is active may have.
        return Scope::All;
    }
    let other_port_changed = before
        .by_name
        .iter()
        .filter(|(name, port)| after.by_name.get(*name) != Some(*port))
        .map(|(_, port)| *port)
        .chain(
            after
                .by_name
                .iter()
                .filter(|(name, port)| before.by_name.get(*name) != Some(*port))
                .map(|(_, port)| *port),
        )
        .any(|port| !nic_ports.contains(&port));
    if other_port_changed {
        return Scope::All;
    }
    let mut ids = std::collections::HashSet::new();
    for (id, port) in &after.by_iface_id {
        if before.by_iface_id.get(id) != Some(port) {
            ids.insert(id.clone());
        }
    }
    ids.extend(
        before
            .by_iface_id
            .keys()
            .filter(|id| !after.by_iface_id.contains_key(*id))
            .cloned(),
    );
    Scope::Nics(ids)
}

/// Connects to OVSDB, waiting for ovsdb-server as long as it takes (it may
/// start after the agent); reconnects later are the client's own business.
async fn connect_ovsdb(cfg: &AgentConfig) -> Vswitch {
    let bridge = BridgeConfig::new(&cfg.bridge, &cfg.datapath_type);
    let mut backoff = Duration::from_millis(50);
    loop {
        match Vswitch::connect(&cfg.ovsdb, bridge.clone()).await {
            Ok(v) => return v,
            Err(e) => {
                warn!(target = %cfg.ovsdb, error = %error_chain(&e), "OVSDB not reachable; retrying")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// An error with its sources, for one log line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(nics: &[(&str, u32)], names: &[(&str, u32)]) -> OfportMap {
        OfportMap {
            by_iface_id: nics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            by_name: names.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..OfportMap::default()
        }
    }

    #[test]
    fn a_plugged_vif_scopes_to_its_nic_and_a_tunnel_to_everything() {
        let before = ports(&[("nic-a", 5)], &[("tap-a", 5), ("vx-n1", 9)]);
        let vif = ports(
            &[("nic-a", 5), ("nic-b", 6)],
            &[("tap-a", 5), ("tap-b", 6), ("vx-n1", 9)],
        );
        assert_eq!(port_scope(&before, &vif), Scope::nic("nic-b"));

        let unplugged = ports(&[], &[("vx-n1", 9)]);
        assert_eq!(port_scope(&before, &unplugged), Scope::nic("nic-a"));

        let tunnel_and_vif = ports(
            &[("nic-a", 5), ("nic-b", 6)],
            &[("tap-a", 5), ("tap-b", 6), ("vx-n1", 9), ("vx-n2", 10)],
        );
        assert_eq!(port_scope(&before, &tunnel_and_vif), Scope::All);
    }

    #[test]
    fn only_nic_changes_stay_scoped() {
        let nic: proto::Nic = serde_json::from_value(serde_json::json!({
            "id": "nic-1", "vpc_id": "v", "subnet_id": "s",
            "mac": "02:00:00:00:00:01", "ip": "10.0.0.2", "node": "n"
        }))
        .unwrap();
        let up = Change::Upsert {
            object: Object::Nic(nic),
        };
        assert_eq!(change_scope(&up), Scope::nic("nic-1"));
        let gone = Change::Remove {
            key: ObjectKey::Nic("nic-2".into()),
        };
        assert_eq!(change_scope(&gone), Scope::nic("nic-2"));
        let subnet = Change::Remove {
            key: ObjectKey::Subnet("s".into()),
        };
        assert_eq!(change_scope(&subnet), Scope::All);
    }
}
