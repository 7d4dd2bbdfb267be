//! The Open_vSwitch operations the node agent needs, over a live replica.
//!
//! [`Vswitch`] keeps a monitor on the `Open_vSwitch`, `Bridge`, `Port` and
//! `Interface` tables. Every write reads the replica, computes only what
//! differs ([`plan`]) and sends it guarded, so repeating a call, running two
//! agents or restarting one never duplicates anything and never recreates
//! an existing bridge. It also publishes the bridge's ofport map and tells
//! when ovs-vswitchd goes away and comes back.
//!
//! How ovs-vswitchd restarts are detected: ovs-vswitchd holds the OVSDB lock
//! `ovs_vswitchd` while it runs. We queue for that lock; the server grants
//! it to us only when ovs-vswitchd is gone, and we release it at once (one
//! round trip) so a starting ovs-vswitchd gets it. While it is down we probe
//! the lock periodically; when the probe finds it held again, ovs-vswitchd is
//! back, with no OpenFlow flows. Nothing in the tables changes reliably on a
//! restart (ofports and datapath_id are kept), hence the lock.

pub mod plan;
pub mod ports;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{Client, Notification};
use crate::data::Datum;
use crate::error::{Error, Result};
use crate::monitor::{MonitorRequest, Replica, TableUpdates};
use crate::ops::Operation;
use crate::session::SessionConfig;

pub use plan::{
    tunnel_port_name, BridgeConfig, ExternalPortSpec, TunnelPort, TunnelSpec, OWNER_KEY, PEER_KEY,
    PHYSNET_KEY, PROTOCOLS,
};
pub use ports::OfportMap;

const DB: &str = "Open_vSwitch";
const MONITOR_ID: &str = "stacknet-vswitch";
/// The lock ovs-vswitchd holds while it runs (bridge.c).
const VSWITCHD_LOCK: &str = "ovs_vswitchd";

/// What [`Vswitch::events`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VswitchEvent {
    /// ovs-vswitchd stopped (crash or restart). On the netdev datapath the
    /// data path stops with it.
    VswitchdDown,
    /// ovs-vswitchd runs again after [`VswitchEvent::VswitchdDown`]: it has
    /// no OpenFlow flows, reinstall them. May also follow an ovsdb-server
    /// restart if we reconnect before ovs-vswitchd does (harmless).
    VswitchdUp,
    /// Our bridge's `datapath_id` changed (a different datapath).
    DatapathIdChanged { old: String, new: String },
    /// Our bridge disappeared from the database (someone deleted it).
    BridgeRemoved,
    /// The connection to ovsdb-server broke; we reconnect by ourselves and
    /// writes fail with [`Error::Disconnected`] meanwhile.
    Disconnected,
    /// Reconnected, the replica reloaded from scratch.
    Reconnected,
}

/// Whether ovs-vswitchd runs, as far as the lock tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VswitchdState {
    /// Not probed yet (or the OVSDB connection is down).
    Unknown,
    Running,
    Down,
}

#[derive(Clone, Debug)]
pub struct VswitchOptions {
    pub session: SessionConfig,
    /// Reconnect backoff doubles from 100 ms up to this.
    pub max_backoff: Duration,
    /// How often to probe while ovs-vswitchd is down.
    pub vswitchd_poll: Duration,
    /// Write attempts before giving up with [`Error::Contention`].
    pub write_attempts: u32,
    /// How long a successful write waits to see its own effect in the
    /// replica before checking again.
    pub settle: Duration,
}

impl Default for VswitchOptions {
    fn default() -> Self {
        VswitchOptions {
            session: SessionConfig::default(),
            max_backoff: Duration::from_secs(5),
            vswitchd_poll: Duration::from_millis(500),
            write_attempts: 5,
            settle: Duration::from_secs(2),
        }
    }
}

struct Inner {
    target: String,
    cfg: BridgeConfig,
    opts: VswitchOptions,
    client: Mutex<Option<Client>>,
    replica: Mutex<Replica>,
    version: watch::Sender<u64>,
    ofports: watch::Sender<OfportMap>,
    vswitchd: watch::Sender<VswitchdState>,
    events: broadcast::Sender<VswitchEvent>,
    /// Our own writes go one at a time; the guards handle everyone else.
    writes: tokio::sync::Mutex<()>,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A live view of one node's Open vSwitch and the writes the agent needs.
/// Cheap to clone; the connection closes when the last clone is dropped.
#[derive(Clone)]
pub struct Vswitch {
    inner: Arc<Inner>,
    _task: Arc<AbortOnDrop>,
}

impl std::fmt::Debug for Vswitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vswitch")
            .field("target", &self.inner.target)
            .field("bridge", &self.inner.cfg.name)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these short locks leaves consistent data (each
    // critical section is a single assignment or apply), so poisoning is
    // not a reason to fail.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn monitor_requests() -> BTreeMap<String, MonitorRequest> {
    BTreeMap::from([
        (
            "Open_vSwitch".to_string(),
            MonitorRequest::columns(["bridges", "cur_cfg", "next_cfg", "external_ids"]),
        ),
        (
            "Bridge".to_string(),
            MonitorRequest::columns([
                "name",
                "ports",
                "datapath_type",
                "datapath_id",
                "fail_mode",
                "protocols",
                "other_config",
                "external_ids",
            ]),
        ),
        (
            "Port".to_string(),
            MonitorRequest::columns(["name", "interfaces", "external_ids"]),
        ),
        (
            "Interface".to_string(),
            MonitorRequest::columns([
                "name",
                "type",
                "options",
                "external_ids",
                "ofport",
                "error",
                "bfd",
                "bfd_status",
            ]),
        ),
    ])
}

async fn open(
    target: &str,
    session: &SessionConfig,
) -> Result<(Client, mpsc::UnboundedReceiver<Notification>, TableUpdates)> {
    let (client, notes) = Client::connect(target, session.clone()).await?;
    let initial = client
        .monitor(DB, json!(MONITOR_ID), &monitor_requests())
        .await?;
    Ok((client, notes, initial))
}

impl Vswitch {
    /// Connects to `unix:/path/db.sock` and loads the replica.
    pub async fn connect(target: &str, cfg: BridgeConfig) -> Result<Vswitch> {
        Self::connect_with(target, cfg, VswitchOptions::default()).await
    }

    pub async fn connect_with(
        target: &str,
        cfg: BridgeConfig,
        opts: VswitchOptions,
    ) -> Result<Vswitch> {
        if cfg.name.is_empty() || cfg.name.len() > plan::MAX_PORT_NAME {
            return Err(Error::Invalid(format!("bridge name {:?}", cfg.name)));
        }
        let (client, notes, initial) = open(target, &opts.session).await?;
        let inner = Arc::new(Inner {
            target: target.to_string(),
            cfg,
            opts,
            client: Mutex::new(Some(client.clone())),
            replica: Mutex::new(Replica::new()),
            version: watch::channel(0).0,
            ofports: watch::channel(OfportMap::default()).0,
            vswitchd: watch::channel(VswitchdState::Unknown).0,
            events: broadcast::channel(64).0,
            writes: tokio::sync::Mutex::new(()),
        });
        inner.load(&initial);
        let span = tracing::info_span!("vswitch", bridge = %inner.cfg.name, target = %target);
        let task = tokio::spawn(tracing::Instrument::instrument(
            run(Arc::clone(&inner), client, notes),
            span,
        ));
        Ok(Vswitch {
            inner,
            _task: Arc::new(AbortOnDrop(task)),
        })
    }

    pub fn config(&self) -> &BridgeConfig {
        &self.inner.cfg
    }

    pub fn is_connected(&self) -> bool {
        lock(&self.inner.client)
            .as_ref()
            .is_some_and(Client::is_connected)
    }

    /// The current ofport map; `changed()` on the receiver wakes on updates.
    pub fn ofports(&self) -> watch::Receiver<OfportMap> {
        self.inner.ofports.subscribe()
    }

    /// Waits until `cond` holds for the ofport map.
    pub async fn wait_ofports(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&OfportMap) -> bool,
    ) -> Result<OfportMap> {
        let mut rx = self.ofports();
        let r = tokio::time::timeout(timeout, rx.wait_for(|m| cond(m))).await;
        match r {
            Ok(Ok(m)) => Ok(m.clone()),
            Ok(Err(_)) => Err(Error::Disconnected),
            Err(_) => Err(Error::Timeout("ofport map condition".into())),
        }
    }

    pub fn events(&self) -> broadcast::Receiver<VswitchEvent> {
        self.inner.events.subscribe()
    }

    pub fn vswitchd_state(&self) -> watch::Receiver<VswitchdState> {
        self.inner.vswitchd.subscribe()
    }

    /// A copy of the replica (for diagnostics and tests).
    pub fn replica(&self) -> Replica {
        lock(&self.inner.replica).clone()
    }

    /// Our tunnel ports, sorted by peer.
    pub fn tunnels(&self) -> Vec<TunnelPort> {
        plan::tunnels(&lock(&self.inner.replica), &self.inner.cfg)
    }

    /// Makes the bridge exist with our settings; `true` if anything was
    /// written. Never deletes or recreates an existing bridge.
    pub async fn ensure_bridge(&self) -> Result<bool> {
        let cfg = self.inner.cfg.clone();
        self.write("ensure bridge", move |r| plan::plan_bridge(r, &cfg))
            .await
    }

    /// Makes the VXLAN port to `spec.peer` exist as specified; returns its
    /// name. Its ofport shows up in [`Vswitch::ofports`] once ovs-vswitchd
    /// has added it.
    pub async fn ensure_tunnel(&self, spec: &TunnelSpec) -> Result<String> {
        let cfg = self.inner.cfg.clone();
        let s = spec.clone();
        self.write("ensure tunnel", move |r| plan::plan_tunnel(r, &cfg, &s))
            .await?;
        Ok(tunnel_port_name(&spec.peer))
    }

    /// Makes `spec.iface` the bridge's uplink to `spec.physnet`; returns
    /// whether anything was written.
    pub async fn ensure_external_port(&self, spec: &ExternalPortSpec) -> Result<bool> {
        let cfg = self.inner.cfg.clone();
        let s = spec.clone();
        self.write("ensure external port", move |r| {
            plan::plan_external_port(r, &cfg, &s)
        })
        .await
    }

    /// Removes our tunnel port to `peer`; `true` if there was one.
    pub async fn remove_tunnel(&self, peer: &str) -> Result<bool> {
        let cfg = self.inner.cfg.clone();
        self.write("remove tunnel", move |r| {
            Ok(plan::plan_remove_tunnels(r, &cfg, |p| p != peer).map(|(ops, _)| ops))
        })
        .await
    }

    /// Makes our tunnel ports exactly `desired`: ensures each, removes ours
    /// to any other peer. Returns the names of the ports removed.
    pub async fn sync_tunnels(&self, desired: &[TunnelSpec]) -> Result<Vec<String>> {
        for spec in desired {
            self.ensure_tunnel(spec).await?;
        }
        let keep: std::collections::BTreeSet<&str> =
            desired.iter().map(|s| s.peer.as_str()).collect();
        let cfg = self.inner.cfg.clone();
        let stale: Vec<String> =
            plan::plan_remove_tunnels(&lock(&self.inner.replica), &cfg, |p| keep.contains(p))
                .map(|(_, names)| names)
                .unwrap_or_default();
        if !stale.is_empty() {
            tracing::info!(ports = ?stale, "removing stale tunnel ports");
            self.write("remove stale tunnels", move |r| {
                Ok(plan::plan_remove_tunnels(r, &cfg, |p| keep.contains(p)).map(|(ops, _)| ops))
            })
            .await?;
        }
        Ok(stale)
    }

    /// Sends an arbitrary transaction on the current connection.
    pub async fn transact(&self, ops: &[Operation]) -> Result<Vec<crate::ops::OpResult>> {
        self.client()?.transact(DB, ops).await
    }

    fn client(&self) -> Result<Client> {
        lock(&self.inner.client).clone().ok_or(Error::Disconnected)
    }

    /// The write loop: plan from the replica, send, and repeat until the
    /// plan is empty. A failed guard means someone else wrote first; we
    /// then re-plan from their result instead of overwriting it.
    async fn write(
        &self,
        what: &str,
        mut plan: impl FnMut(&Replica) -> Result<Option<Vec<Operation>>>,
    ) -> Result<bool> {
        let _one_at_a_time = self.inner.writes.lock().await;
        let mut changed = false;
        let mut version_rx = self.inner.version.subscribe();
        for attempt in 1..=self.inner.opts.write_attempts {
            let planned = plan(&lock(&self.inner.replica))?;
            let Some(ops) = planned else {
                return Ok(changed);
            };
            tracing::info!(what, attempt, ops = ops.len(), "writing to OVSDB");
            tracing::debug!(ops = ?ops.iter().map(Operation::describe).collect::<Vec<_>>());
            version_rx.mark_unchanged();
            match self.client()?.transact(DB, &ops).await {
                Ok(_) => changed = true,
                Err(Error::Transaction(e))
                    if e.is_wait_failure() || e.error == "constraint violation" =>
                {
                    tracing::info!(what, error = %e, "lost a race with another writer; re-reading");
                }
                Err(e) => return Err(e),
            }
            // Our change (or the one that beat us) arrives as a monitor
            // update before the reply, but is applied by another task: wait
            // until the plan is empty or the replica stops changing.
            let deadline = Instant::now() + self.inner.opts.settle;
            loop {
                if plan(&lock(&self.inner.replica))?.is_none() {
                    return Ok(changed);
                }
                match tokio::time::timeout_at(deadline, version_rx.changed()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => return Err(Error::Disconnected),
                    Err(_) => break,
                }
            }
        }
        Err(Error::Contention {
            what: what.to_string(),
            attempts: self.inner.opts.write_attempts,
        })
    }
}

impl Inner {
    fn emit(&self, ev: VswitchEvent) {
        tracing::info!(event = ?ev, "vswitch event");
        // No receivers is fine.
        let _ = self.events.send(ev);
    }

    fn bridge_state(&self, r: &Replica) -> Option<Option<String>> {
        plan::find_bridge(r, &self.cfg.name).map(|(_, b)| {
            b.get("datapath_id")
                .and_then(Datum::as_str)
                .map(str::to_string)
        })
    }

    /// Replaces the replica with a fresh monitor reply.
    fn load(&self, initial: &TableUpdates) {
        let mut r = lock(&self.replica);
        *r = Replica::new();
        r.apply(initial);
        self.publish(&r);
    }

    fn apply(&self, updates: &TableUpdates) {
        let mut r = lock(&self.replica);
        let before = self.bridge_state(&r);
        r.apply(updates);
        let after = self.bridge_state(&r);
        match (before, after) {
            (Some(_), None) => self.emit(VswitchEvent::BridgeRemoved),
            (Some(Some(old)), Some(Some(new))) if old != new => {
                self.emit(VswitchEvent::DatapathIdChanged { old, new })
            }
            _ => {}
        }
        self.publish(&r);
    }

    fn publish(&self, r: &Replica) {
        let map = OfportMap::from_replica(r, &self.cfg.name);
        self.ofports.send_if_modified(|m| {
            if *m == map {
                return false;
            }
            tracing::debug!(
                ports = map.by_name.len(),
                nics = map.by_iface_id.len(),
                "ofport map changed"
            );
            *m = map;
            true
        });
        self.version.send_replace(r.version());
    }

    fn set_vswitchd(&self, s: VswitchdState) {
        let old = self.vswitchd.send_replace(s);
        match (old, s) {
            (VswitchdState::Running, VswitchdState::Down) => self.emit(VswitchEvent::VswitchdDown),
            (VswitchdState::Down, VswitchdState::Running) => self.emit(VswitchEvent::VswitchdUp),
            _ => {}
        }
    }

    /// Asks for ovs-vswitchd's lock. `Ok(true)`: it is running (we are
    /// queued behind it). `Ok(false)`: we got the lock, so it is not; we
    /// give it back at once.
    async fn probe_vswitchd(&self, client: &Client) -> Result<bool> {
        let r = client.request("lock", json!([VSWITCHD_LOCK])).await?;
        let held_by_us = r.get("locked").and_then(Value::as_bool).unwrap_or(false);
        if held_by_us {
            client.request("unlock", json!([VSWITCHD_LOCK])).await?;
        }
        Ok(!held_by_us)
    }

    /// Follows one connection until it ends.
    async fn follow(&self, client: &Client, notes: &mut mpsc::UnboundedReceiver<Notification>) {
        let mut poll_at: Option<Instant> = None;
        let mut probe = true;
        loop {
            if probe {
                probe = false;
                match self.probe_vswitchd(client).await {
                    Ok(true) => {
                        self.set_vswitchd(VswitchdState::Running);
                        poll_at = None;
                    }
                    Ok(false) => {
                        self.set_vswitchd(VswitchdState::Down);
                        poll_at = Some(Instant::now() + self.opts.vswitchd_poll);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "probing ovs-vswitchd's lock failed");
                        return;
                    }
                }
            }
            tokio::select! {
                n = notes.recv() => match n {
                    None => return,
                    Some(Notification::Update { monitor_id, updates })
                        if monitor_id == json!(MONITOR_ID) => self.apply(&updates),
                    Some(Notification::Other { method, params })
                        if method == "locked" && params == json!([VSWITCHD_LOCK]) =>
                    {
                        // Granted to us: its holder, ovs-vswitchd, is gone.
                        if let Err(e) = client.request("unlock", json!([VSWITCHD_LOCK])).await {
                            tracing::warn!(error = %e, "releasing ovs-vswitchd's lock failed");
                            return;
                        }
                        self.set_vswitchd(VswitchdState::Down);
                        poll_at = Some(Instant::now() + self.opts.vswitchd_poll);
                    }
                    Some(other) => tracing::debug!(?other, "ignoring notification"),
                },
                _ = sleep_until(poll_at) => probe = true,
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn run(
    inner: Arc<Inner>,
    mut client: Client,
    mut notes: mpsc::UnboundedReceiver<Notification>,
) {
    loop {
        inner.follow(&client, &mut notes).await;
        *lock(&inner.client) = None;
        inner.vswitchd.send_replace(VswitchdState::Unknown);
        inner.emit(VswitchEvent::Disconnected);
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::time::sleep(backoff).await;
            match open(&inner.target, &inner.opts.session).await {
                Ok((c, n, initial)) => {
                    inner.load(&initial);
                    *lock(&inner.client) = Some(c.clone());
                    client = c;
                    notes = n;
                    inner.emit(VswitchEvent::Reconnected);
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reconnect failed");
                    backoff = (backoff * 2).min(inner.opts.max_backoff);
                }
            }
        }
    }
}
