//! Fan-out: one `flowctl serve` replica serving N simulated agents that speak
//! the real agent protocol (the agent's own [`ControlClient`]: HTTP/2,
//! snapshot then deltas, acks) as lightweight tasks without OVS.
//!
//! Per run: N nodes in Sets of 45, one VPC per Set with one NIC on every
//! node (so each node carries its Set's VPC), N agents connected and synced.
//! Then one NIC is created in every VPC at once; for each agent the time from
//! its VPC's create returning to the agent holding the new NIC is recorded
//! (p50, p99, max), and flowctl's resident memory before and after the agents
//! connected gives the memory per connected agent. Runs go up in N until one
//! breaks (an agent not synced in time, or p99 over 1 s).
//!
//! `STACKNET_FANOUT=1000,2000,4000` sets the counts (release binaries of
//! flowctl: `scripts/bench.sh`).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::{Change, NodeState, Object};
use serde_json::{json, Value};
use tests::bins::{binary, free_port, port_open};
use tests::{wait_until, ApiClient, Proc, RunDir};
use vswitch_agent::control::{ControlClient, ControlConfig, Update};

const SET_SIZE: usize = 45;
const SYNC_TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    let counts: Vec<usize> = std::env::var("STACKNET_FANOUT")
        .unwrap_or_else(|_| "1000,2000,4000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("STACKNET_FANOUT: comma-separated counts")
        })
        .collect();
    println!(
        "agents  sets  sync_s  p50_ms  p99_ms  max_ms  rss_before_MiB  rss_after_MiB  KiB/agent"
    );
    for n in counts {
        match run(n) {
            Ok(r) => {
                println!(
                    "{n:>6}  {:>4}  {:>6.1}  {:>6.1}  {:>6.1}  {:>6.1}  {:>14.1}  {:>13.1}  {:>9.1}",
                    r.sets,
                    r.sync.as_secs_f64(),
                    ms(r.p50),
                    ms(r.p99),
                    ms(r.max),
                    r.rss_before as f64 / 1024.0,
                    r.rss_after as f64 / 1024.0,
                    (r.rss_after.saturating_sub(r.rss_before)) as f64 / n as f64,
                );
                if r.p99 > Duration::from_secs(1) {
                    println!("breaks at {n} agents: p99 over 1 s");
                    break;
                }
            }
            Err(e) => {
                println!("breaks at {n} agents: {e}");
                break;
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Figures {
    sets: usize,
    sync: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    rss_before: u64,
    rss_after: u64,
}

/// What the agent tasks report.
#[derive(Default)]
struct Seen {
    synced: AtomicUsize,
    /// Per agent, when it first held the marker NIC (the one at [`MARKER_IP`]).
    marker_at: Mutex<HashMap<usize, Instant>>,
}

/// The address of the NIC created as "the change": known before the create
/// returns, since its delta may well arrive first.
const MARKER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 255, 254);

fn run(n: usize) -> anyhow::Result<Figures> {
    let dir = RunDir::new()?;
    let secret = "fanout-bench-secret";
    let secret_file = dir.path().join("cluster.secret");
    std::fs::write(&secret_file, secret)?;
    let admin = dir.path().join("admin-credentials.json");
    let lo = Ipv4Addr::LOCALHOST;
    let api_addr = SocketAddr::from((lo, free_port()?));
    let agent_addr = SocketAddr::from((lo, free_port()?));
    let mut cmd = std::process::Command::new(binary("flowctl")?);
    cmd.arg("serve")
        .arg("--store")
        .arg(dir.path().join("store.redb"))
        .arg("--api-listen")
        .arg(api_addr.to_string())
        .arg("--agent-listen")
        .arg(agent_addr.to_string())
        .arg("--cluster-secret-file")
        .arg(&secret_file)
        .arg("--admin-credentials")
        .arg(&admin)
        .env("RUST_LOG", "warn");
    let mut flowctl = Proc::spawn("flowctl", cmd, Some(&dir.path().join("flowctl.log")))?;
    wait_until(Duration::from_secs(30), "flowctl ports", || {
        port_open(api_addr) && port_open(agent_addr)
    })?;
    let api = ApiClient::new(format!("http://{api_addr}"))?.with_credentials_file(&admin)?;

    // Nodes, and per Set a VPC and a subnet with one NIC per node.
    let nodes: Vec<String> = (0..n).map(|i| format!("sim{i:05}")).collect();
    let sets = n.div_ceil(SET_SIZE);
    parallel(&nodes, |i, name| {
        api.create(
            "/v1/nodes",
            &json!({"name": name, "set": format!("set{}", i / SET_SIZE),
                    "underlay_ip": Ipv4Addr::from(0xc612_0000 + i as u32).to_string()}),
        )?;
        Ok(())
    })?;
    let subnets: Vec<Value> = (0..sets)
        .map(|s| -> anyhow::Result<Value> {
            let vpc = api.create(
                "/v1/vpcs",
                &json!({"name": format!("v{s}"), "cidrs": ["10.0.0.0/16"], "set": format!("set{s}")}),
            )?;
            Ok(api.create(
                "/v1/subnets",
                &json!({"vpc_id": vpc["id"], "name": "s", "cidr": "10.0.0.0/16"}),
            )?)
        })
        .collect::<anyhow::Result<_>>()?;
    parallel(&nodes, |i, name| {
        api.create(
            "/v1/nics",
            &json!({"subnet_id": subnets[i / SET_SIZE]["id"], "node": name}),
        )?;
        Ok(())
    })?;
    let rss_before = rss_kib(flowctl.pid())?;

    // The agents.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let seen = Arc::new(Seen::default());
    let started = Instant::now();
    let tasks: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let token = proto::auth::node_token(secret.as_bytes(), name);
            let cfg = ControlConfig::new(vec![agent_addr.to_string()], name.clone(), token);
            rt.spawn(agent(i, cfg, seen.clone()))
        })
        .collect();
    let synced = wait_until(SYNC_TIMEOUT, "agents synced", || {
        seen.synced.load(Ordering::Relaxed) >= n
    });
    let sync = started.elapsed();
    let result = synced.map_err(anyhow::Error::from).and_then(|()| {
        // Let acks and status writes settle before reading memory.
        std::thread::sleep(Duration::from_secs(2));
        let rss_after = rss_kib(flowctl.pid())?;
        let marker_nodes: Vec<String> = (0..sets).map(|s| nodes[s * SET_SIZE].clone()).collect();
        let written: Mutex<HashMap<usize, Instant>> = Mutex::default();
        parallel(&marker_nodes, |s, node| {
            api.create(
                "/v1/nics",
                &json!({"subnet_id": subnets[s]["id"], "node": node, "ip": MARKER_IP.to_string()}),
            )?;
            written.lock().unwrap().insert(s, Instant::now());
            Ok(())
        })?;
        wait_until(
            Duration::from_secs(60),
            "change reached every agent",
            || seen.marker_at.lock().unwrap().len() >= n,
        )?;
        let written = written.into_inner().unwrap();
        let mut lat: Vec<Duration> = seen
            .marker_at
            .lock()
            .unwrap()
            .iter()
            .map(|(i, at)| at.saturating_duration_since(written[&(i / SET_SIZE)]))
            .collect();
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        Ok(Figures {
            sets,
            sync,
            p50: pct(0.50),
            p99: pct(0.99),
            max: lat[lat.len() - 1],
            rss_before,
            rss_after,
        })
    });
    for t in tasks {
        t.abort();
    }
    rt.shutdown_timeout(Duration::from_secs(5));
    flowctl.stop()?;
    result
}

/// One simulated agent: applies what it receives and acks it, as the real
/// agent does, without OVS.
async fn agent(i: usize, cfg: ControlConfig, seen: Arc<Seen>) {
    let mut control = ControlClient::new(cfg);
    let mut state = NodeState::default();
    let mut synced = false;
    loop {
        let update = control.next().await;
        match &update {
            Update::Snapshot(s) => state = s.clone(),
            Update::Delta { changes, .. } => {
                for c in changes {
                    state.apply(c);
                    if let Change::Upsert {
                        object: Object::Nic(nic),
                    } = c
                    {
                        if nic.ip == MARKER_IP {
                            seen.marker_at
                                .lock()
                                .unwrap()
                                .entry(i)
                                .or_insert_with(Instant::now);
                        }
                    }
                }
            }
        }
        state.revision = update.revision();
        let ready = state
            .nics
            .values()
            .filter(|n| n.node == state.node.name)
            .map(|n| n.id.clone())
            .collect();
        control.ack(update.revision(), ready).await;
        if !synced {
            synced = true;
            seen.synced.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs `f` over `items` on 16 threads; the first error wins.
fn parallel<T: Sync>(
    items: &[T],
    f: impl Fn(usize, &T) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::default();
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() || first_error.lock().unwrap().is_some() {
                    return;
                }
                if let Err(e) = f(i, &items[i]) {
                    first_error.lock().unwrap().get_or_insert(e);
                }
            });
        }
    });
    first_error.into_inner().unwrap().map_or(Ok(()), Err)
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))
}
