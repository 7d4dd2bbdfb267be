//! stacknet with an HA control plane on a lab: a real 3-member etcd cluster,
//! several `flowctl serve` replicas as separate processes (each with the
//! REST API and the agent listener) on it, and every agent given every
//! replica's agent endpoint through a [`Proxy`] the test can black-hole.
//!
//! ```text
//!  root ns:  etcd m0 m1 m2 (127.0.0.1)
//!            flowctl r0 (api A0, agents B0) ... rN      all on etcd
//!            proxy P0 -> B0 ... proxy PN -> BN
//!            vswitch-agent xN  --flowctl P0 ... --flowctl PN
//! ```
//!
//! [`Cloud::start`] (embedded store, all-in-one) stays what the other
//! scenarios use; this is the topology of the fault scenarios.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::bins::{free_port, port_open, BinSpec, FlowctlCtx, FlowctlSpec};
use crate::cloud::{ApiClient, Cloud};
use crate::error::{LabError, Result};
use crate::etcd::EtcdCluster;
use crate::lab::{Lab, LabConfig};
use crate::process::{tail_file, Proc};
use crate::proxy::Proxy;
use crate::util::wait_until;

/// Shape of an HA deployment.
#[derive(Clone, Debug)]
pub struct HaConfig {
    pub nodes: usize,
    /// flowctl replicas (each serves the API and agents).
    pub replicas: usize,
    /// etcd members.
    pub etcd_members: usize,
    /// Extra `flowctl serve` arguments, for every replica.
    pub flowctl_args: Vec<String>,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            nodes: 2,
            replicas: 2,
            etcd_members: 3,
            flowctl_args: Vec::new(),
        }
    }
}

/// One flowctl replica: its addresses and process (None while down).
#[derive(Debug)]
struct Replica {
    ctx: FlowctlCtx,
    proc: Option<Proc>,
}

/// An HA stacknet on a lab. Dropping it stops the agents and tears the lab
/// down first, then the replicas, the proxies and etcd.
pub struct HaCloud {
    // Field order is teardown order.
    pub cloud: Cloud,
    replicas: Vec<Replica>,
    proxies: Vec<Proxy>,
    pub etcd: EtcdCluster,
    spec: FlowctlSpec,
}

impl HaCloud {
    /// etcd, the replicas, the proxies, a lab of `cfg.nodes` nodes
    /// registered through replica 0's API, and every agent started.
    pub fn start(cfg: HaConfig) -> Result<HaCloud> {
        if cfg.replicas == 0 {
            return Err(LabError::Invalid("an HA cloud needs a replica".into()));
        }
        let etcd = EtcdCluster::start(cfg.etcd_members)?;
        let mut lab = Lab::new(LabConfig {
            nodes: cfg.nodes,
            ..LabConfig::default()
        })?;
        let store_url = etcd.store_url();
        let mut replicas = Vec::new();
        for i in 0..cfg.replicas {
            let dir = lab.dir().join(format!("flowctl-r{i}"));
            std::fs::create_dir_all(&dir).map_err(|source| LabError::Io {
                op: "create",
                path: dir.clone(),
                source,
            })?;
            let lo = Ipv4Addr::LOCALHOST;
            replicas.push(Replica {
                ctx: FlowctlCtx {
                    store_path: PathBuf::from(&store_url),
                    dir,
                    api_addr: SocketAddr::from((lo, free_port()?)),
                    agent_addr: SocketAddr::from((lo, free_port()?)),
                    cluster_secret_file: lab.dir().join("cluster.secret"),
                },
                proc: None,
            });
        }
        let mut proxies = Vec::new();
        for r in &replicas {
            proxies.push(Proxy::start(r.ctx.agent_addr)?);
        }
        lab.set_agent_endpoints(proxies.iter().map(Proxy::addr).collect());
        let spec = replica_spec(&store_url, &cfg.flowctl_args);
        for (i, r) in replicas.iter_mut().enumerate() {
            start_replica(i, r, &spec)?;
        }
        let api = ApiClient::new(format!("http://{}", replicas[0].ctx.api_addr))?
            .with_credentials_file(&replicas[0].ctx.admin_credentials_file())?;
        // On failure from here on, `replicas` and `etcd` drop (and stop).
        let cloud = Cloud::on(lab, api)?;
        Ok(HaCloud {
            cloud,
            replicas,
            proxies,
            etcd,
            spec,
        })
    }

    /// Number of replicas (running or not).
    pub fn replicas(&self) -> usize {
        self.replicas.len()
    }

    fn replica(&self, i: usize) -> Result<&Replica> {
        self.replicas
            .get(i)
            .ok_or_else(|| LabError::Invalid(format!("no flowctl replica {i}")))
    }

    fn replica_mut(&mut self, i: usize) -> Result<&mut Replica> {
        self.replicas
            .get_mut(i)
            .ok_or_else(|| LabError::Invalid(format!("no flowctl replica {i}")))
    }

    /// Replica `i`'s addresses.
    pub fn replica_ctx(&self, i: usize) -> Result<&FlowctlCtx> {
        Ok(&self.replica(i)?.ctx)
    }

    /// A client of replica `i`'s REST API.
    pub fn api(&self, i: usize) -> Result<ApiClient> {
        let ctx = &self.replica(i)?.ctx;
        ApiClient::new(format!("http://{}", ctx.api_addr))?
            .with_credentials_file(&ctx.admin_credentials_file())
    }

    /// The proxy in front of replica `i`'s agent listener.
    pub fn proxy(&self, i: usize) -> Result<&Proxy> {
        self.proxies
            .get(i)
            .ok_or_else(|| LabError::Invalid(format!("no proxy {i}")))
    }

    /// Starts replica `i` on its ports again, waits until both accept.
    pub fn start_replica(&mut self, i: usize) -> Result<()> {
        let spec = self.spec.clone();
        start_replica(i, self.replica_mut(i)?, &spec)
    }

    /// Stops replica `i` (`kill`: SIGKILL, a crash; else SIGTERM).
    pub fn stop_replica(&mut self, i: usize, kill: bool) -> Result<()> {
        let r = self.replica_mut(i)?;
        if let Some(mut p) = r.proc.take() {
            p.end(kill)?;
        }
        Ok(())
    }

    /// Kills every replica and every etcd member: the whole control plane.
    pub fn kill_control_plane(&mut self) -> Result<()> {
        for i in 0..self.replicas.len() {
            self.stop_replica(i, true)?;
        }
        for m in 0..self.etcd.len() {
            self.etcd.kill_member(m)?;
        }
        Ok(())
    }

    /// Starts etcd and every replica again, on the same data and ports.
    pub fn restart_control_plane(&mut self) -> Result<()> {
        // Members come up together: one alone has no quorum and no leader.
        for m in 0..self.etcd.len() {
            self.etcd.start_member(m)?;
        }
        self.etcd.wait_healthy(Duration::from_secs(30))?;
        for i in 0..self.replicas.len() {
            self.start_replica(i)?;
        }
        Ok(())
    }

    /// Replica `i`'s Prometheus counter `name` (from its agent listener's
    /// `/metrics`), if it answers.
    pub fn replica_metric(&self, i: usize, name: &str) -> Option<f64> {
        let addr = self.replica(i).ok()?.ctx.agent_addr;
        let body = crate::util::http_get(addr, "/metrics")?;
        body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// The last lines of replica `i`'s log.
    pub fn replica_log_tail(&self, i: usize, lines: usize) -> String {
        self.replica(i)
            .map(|r| tail_file(&r.ctx.dir.join("flowctl.log"), lines))
            .unwrap_or_default()
    }
}

impl Drop for HaCloud {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.replicas.len() {
                eprintln!(
                    "===== flowctl replica {i} log (tail) =====\n{}",
                    self.replica_log_tail(i, 40)
                );
            }
            for (i, p) in self.proxies.iter().enumerate() {
                eprintln!("===== proxy {i} connections =====\n{:?}", p.connections());
            }
        }
        // Then the fields, in order: the lab (agents first), replicas,
        // proxies, etcd.
    }
}

/// How replica processes are started: `flowctl serve` on etcd with both
/// roles, plus `extra` arguments.
fn replica_spec(store_url: &str, extra: &[String]) -> FlowctlSpec {
    let store = store_url.to_string();
    let extra = extra.to_vec();
    BinSpec::new("flowctl", move |c: &FlowctlCtx| {
        let mut v = crate::bins::serve_args(&store, c);
        v.extend(extra.iter().cloned());
        v
    })
}

/// Starts a replica process and waits until both its ports accept.
fn start_replica(i: usize, r: &mut Replica, spec: &FlowctlSpec) -> Result<()> {
    if r.proc.as_mut().is_some_and(Proc::is_running) {
        return Err(LabError::Invalid(format!("replica {i} already runs")));
    }
    let mut cmd = std::process::Command::new(spec.path()?);
    cmd.args((spec.args)(&r.ctx));
    cmd.env("RUST_LOG", crate::util::lab_log_filter());
    let log = r.ctx.dir.join("flowctl.log");
    let mut proc = Proc::spawn(&format!("flowctl-r{i}"), cmd, Some(&log))?;
    // Lets a later run's sweep kill it if this test process dies.
    let pidfile = r.ctx.dir.join("flowctl.pid");
    std::fs::write(&pidfile, format!("{}\n", proc.pid())).map_err(|source| LabError::Io {
        op: "write",
        path: pidfile,
        source,
    })?;
    let (api, agents) = (r.ctx.api_addr, r.ctx.agent_addr);
    let up = wait_until(Duration::from_secs(30), "flowctl replica ports", || {
        !proc.is_running() || (port_open(api) && port_open(agents))
    });
    if up.is_err() || !proc.is_running() {
        return Err(LabError::Check(format!(
            "flowctl replica {i} did not come up ({:?}): {}",
            proc.try_status(),
            proc.log_tail(20)
        )));
    }
    tracing::info!(replica = i, pid = proc.pid(), %api, %agents, "flowctl replica up");
    r.proc = Some(proc);
    Ok(())
}
