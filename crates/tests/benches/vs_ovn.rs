//! Workload 1 of issue 8, the same logical work on stacknet and on OVN
//! (Debian's ovn-central/ovn-host 23.03 on the lab's OVS, netdev
//! datapath), each on a fresh one-node lab torn down before the other runs:
//!
//! - 1 VPC (OVN: one logical switch) with `NICS` NICs (logical switch
//!   ports), the first `LOCAL` bound on the node with a VIF plugged into
//!   br-int (`external_ids:iface-id`), the rest not bound anywhere;
//! - one security group of `RULES` rules (1 egress, the rest TCP port
//!   ranges from one of `GROUPS` remote groups); every NIC is in it and in
//!   one remote group. OVN gets what a CMS such as Neutron writes: port
//!   groups, their `$pg_ip4` address sets, ACLs (allow-related, and the
//!   default drops);
//! - then `ITERS` single-NIC add/delete iterations: write the NIC, plug its
//!   VIF, wait until the node reports its flows installed (stacknet: the
//!   NIC's API status `up`; OVN: the interface's
//!   `external_ids:ovn-installed=true`), unplug, delete.
//!
//! Every write goes over one persistent session (API client; OVSDB session
//! to the NB database, as a CMS keeps one), VIFs are plugged over one OVSDB
//! session to the node, and readiness is polled every 0.5 ms in both cases.
//! Figures: NIC ready (from the write returning, and from before the
//! write), CPU seconds and peak RSS (VmHWM) of every control-plane process
//! (flowctl with its embedded API + vswitch-agent versus ovn-northd, the NB
//! and SB ovsdb-servers and ovn-controller), OpenFlow flows on br-int.
//!
//! One warm-up round then `VS_OVN_REPS` (default 5) rounds; a round runs
//! each system once, alternating, so load from elsewhere on the machine
//! hits both alike. Prints a table with the ratios stacknet / OVN and
//! writes the raw figures as JSON to `VS_OVN_JSON` (default
//! `vs-ovn.json`). `scripts/vs-ovn.sh` installs OVN, builds the release
//! binaries and runs this.
//!
//! Knobs (env): VS_OVN_REPS, VS_OVN_WARMUP (1), VS_OVN_ITERS (200),
//! VS_OVN_NICS (1000), VS_OVN_SYSTEMS (`stacknet,ovn`).

//! Issue 8's side-by-side workloads: the same logical work on stacknet and
//! on OVN (Debian's ovn-central/ovn-host 23.03 on the lab's OVS, netdev
//! datapath), each on a fresh one-node lab torn down before the other runs.
//! NICs that are not on the lab's node are bound to remote nodes that have
//! no switch (stacknet: registered nodes without an agent; OVN: chassis in
//! the SB database with the ports bound to them, as their ovn-controllers
//! would): stacknet leaves an unbound NIC out of every node's state and of
//! its groups' address sets, while OVN programs every port of a switch
//! present on the chassis, so unbound NICs would not be the same work.
//!
//! **Workload 1, NIC ready.**
//! - 1 VPC (OVN: one logical switch) with `NICS` NICs (logical switch
//!   ports), the first `LOCAL` bound on the node with a VIF plugged into
//!   br-int (`external_ids:iface-id`), the rest on the remote nodes;
//! - one security group of `RULES` rules (1 egress, the rest TCP port
//!   ranges from one of `GROUPS` remote groups); every NIC is in it and in
//!   one remote group. OVN gets what a CMS such as Neutron writes: port
//!   groups, their `$pg_ip4` address sets, ACLs (allow-related, and the
//!   default drops);
//! - then `ITERS` single-NIC add/delete iterations: write the NIC, plug its
//!   VIF, wait until the node reports its flows installed (stacknet: the
//!   NIC's API status `up`; OVN: the interface's
//!   `external_ids:ovn-installed=true`), unplug, delete, and time until the
//!   NIC's ARP-responder flow is gone from br-int (polled with a filtered
//!   `ovs-ofctl dump-flows`: both systems answer ARP for every known port
//!   of the VPC on the node).
//!
//! Every write goes over one persistent session (API client; OVSDB session
//! to the NB database, as a CMS keeps one), VIFs are plugged over one OVSDB
//! session to the node, and readiness is polled every 0.5 ms in both cases.
//! Figures: NIC ready (from the write returning, and from before the
//! write), NIC delete, CPU seconds and peak RSS (VmHWM) of every
//! control-plane process (flowctl with its embedded API + vswitch-agent
//! versus ovn-northd, the NB and SB ovsdb-servers and ovn-controller),
//! OpenFlow flows on br-int.
//!
//! **Workload 2, scale shape.** From an empty system: `VPCS` VPCs of
//! `VPC_NICS` NICs, each VPC with two subnets and its router (stacknet: the
//! VPC's distributed router is implicit; OVN: a logical router with a port
//! on each of two switches) and its default security group (OVN: a port
//! group with the allow-egress / allow-from-the-group ACLs); NIC 0 of each
//! VPC on the node, the others on the remote nodes. stacknet is written
//! through the API by 8 clients, one request per object; OVN gets one NB
//! transaction per VPC (fewer, larger writes, in OVN's favour) and the
//! remote bindings in SB transactions of 1,000. Figures: all writes
//! returned, every local NIC ready, full convergence (the last change of
//! br-int's flow count, sampled every 100 ms, once settled for 3 s), CPU
//! and peak RSS per control-plane process, flows. OVN also: when
//! `ovn-nbctl --wait=hv sync` returns.
//!
//! **Workload 3, rule change.** A group of `MEMBERS` NICs (OVN: a port
//! group, whose `$pg_big_ip4` address set the ACL uses) on the remote
//! nodes; two NICs on the node in a group with an ingress rule "TCP 22 from
//! the big group". Per round: one IP added to the big group (stacknet: a
//! NIC's groups PATCHed; OVN: an existing port inserted into the port
//! group), then one rule added (a new TCP port from the big group). The
//! clock runs from the start of the write until the node's br-int holds
//! the flow that enforces it (the new member's address; the new port with
//! one member's address), polled with a filtered `ovs-ofctl dump-flows`:
//! flows, not packets (the new member is on a remote node and cannot
//! send); both systems install a change in one batch, and the cost of one
//! poll is printed as the resolution.
//!
//! **Workload 4, restart.** Two VMs on the node in `RESTART_GROUPS` groups
//! of `RESTART_RULES` ingress rules each (TCP 1-65535 from a distinct /32)
//! plus a group that lets them talk, >100,000 flows on both systems at full
//! size. While VM a pings b every 10 ms and a thread samples br-int's flow
//! count every 20 ms (`ovs-ofctl dump-aggregate`), the node's agent (OVN:
//! ovn-controller) is stopped with SIGTERM and started again. Figures: the
//! time from the new process starting until the system says the flows are
//! complete (stacknet: the agent logs its first bundle applied; OVN:
//! `ovn-nbctl --wait=hv sync` issued right after the start returns), until
//! the sampled count is back, the lowest count sampled, pings lost (a
//! request unanswered while a later one was answered). One deployment per
//! system, warm-up + rounds restarts.
//!
//! One warm-up then `VS_OVN_REPS` (default 5) rounds: workloads 1 and 2
//! alternate the systems round by round (fresh labs), so load from
//! elsewhere on the machine hits both alike; 3 and 4 make one deployment
//! per system and repeat the change/restart on it. Each table gives the
//! median and p95 per system and the ratio stacknet / OVN of the medians,
//! with the 1-minute load average; everything (raw samples too) is written
//! as JSON to `VS_OVN_JSON` (default `vs-ovn.json`), after every round.
//! `scripts/vs-ovn.sh` installs OVN, builds the release binaries and runs
//! this.
//!
//! Knobs (env): VS_OVN_WORKLOADS (`1,2,3,4`), VS_OVN_SYSTEMS
//! (`stacknet,ovn`), VS_OVN_REPS (5), VS_OVN_WARMUP (1), VS_OVN_QUICK (`1`:
//! 1 round, no warm-up, small sizes, ~2 minutes: for CI), VS_OVN_NICS
//! (1000), VS_OVN_ITERS (200), VS_OVN_REMOTE_NODES (4), VS_OVN_VPCS (100),
//! VS_OVN_VPC_NICS (100), VS_OVN_MEMBERS (10000), VS_OVN_RESTART_GROUPS
//! (7), VS_OVN_RESTART_RULES (1000), VS_OVN_WAIT_BEFORE_CLEAR_MS (unset:
//! OVN's default, 0). Quick sizes: 200 NICs and 20
//! iterations, 10 x 20, 1,000 members, 7 x 100 rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ovsdb::{Condition, Datum, Mutation, Mutator, OpResult, Operation, Row, Uuid};
use serde_json::{json, Value};
use tests::ovn::{
    aggregate_flow_count, flow_count, flows_matching, load_average, pid_by_cmdline, proc_usage,
    require_ovn, usage_of, FlowSampler, OvnLab, OvsdbSession, ProcUsage,
};
use tests::{require_root_and_tools, Cloud, VifPlug};

const LOCAL: usize = 100;
const RULES: usize = 100;
const GROUPS: usize = 10;
/// How long a NIC may take to come up before the run is declared broken.
const READY_TIMEOUT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_micros(500);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy)]
struct Workload {
    nics: usize,
    /// NICs bound on the node: `LOCAL`, or all of them in a smaller run.
    local: usize,
    iters: usize,
    /// Nodes without a switch the other NICs are bound to (round robin):
    /// stacknet leaves an unbound NIC out of every node's state (and of
    /// its groups' address sets) while OVN programs every port of a local
    /// switch, so unbound NICs would not be the same work.
    remote: usize,
}

/// What one run of one system measured.
#[derive(Default)]
struct Run {
    /// First write to all `LOCAL` NICs reported ready, seconds.
    setup_s: f64,
    /// Per iteration: the add write (ms).
    write_ms: Vec<f64>,
    /// Per iteration: write returned → ready, VIF plug included (ms).
    ready_ms: Vec<f64>,
    /// Per iteration: before the write → ready (ms).
    e2e_ms: Vec<f64>,
    /// Per iteration: delete write returned → the NIC's ARP responder flow
    /// gone from br-int (ms; polled, see [`gone_ms`]).
    del_ms: Vec<f64>,
    /// 1-minute load average at the end of the run.
    load: f64,
    /// Control-plane processes at the end of the run.
    procs: BTreeMap<String, ProcUsage>,
    /// CPU seconds of the control plane during the iterations alone.
    iter_cpu_s: f64,
    /// ovs-vswitchd's CPU over the run (shared by both, not counted).
    vswitchd_cpu_s: f64,
    /// OpenFlow flows on br-int once settled after the iterations.
    flows: usize,
}

impl Run {
    fn cpu_s(&self) -> f64 {
        self.procs.values().map(|p| p.cpu_s).sum()
    }
    fn rss_mib(&self) -> f64 {
        self.procs
            .values()
            .map(|p| p.peak_rss_kib as f64)
            .sum::<f64>()
            / 1024.0
    }
}

/// Knobs every workload shares.
struct Knobs {
    systems: Vec<String>,
    warmup: usize,
    reps: usize,
    /// `VS_OVN_QUICK=1`: small sizes, no warm-up, one round (CI).
    quick: bool,
}

impl Knobs {
    fn from_env() -> Knobs {
        let quick = std::env::var("VS_OVN_QUICK").is_ok_and(|v| v == "1");
        let systems = std::env::var("VS_OVN_SYSTEMS").unwrap_or_else(|_| "stacknet,ovn".into());
        Knobs {
            systems: systems.split(',').map(|s| s.trim().to_string()).collect(),
            warmup: env_usize("VS_OVN_WARMUP", if quick { 0 } else { 1 }),
            reps: env_usize("VS_OVN_REPS", if quick { 1 } else { 5 }),
            quick,
        }
    }

    /// Size knob `name`: `full` normally, `quick` in quick mode.
    fn size(&self, name: &str, full: usize, quick: usize) -> usize {
        env_usize(name, if self.quick { quick } else { full })
    }

    fn runs(&self, sys: &str) -> bool {
        self.systems.iter().any(|s| s == sys)
    }

    fn tag(&self, round: usize) -> String {
        if round < self.warmup {
            "warm-up".to_string()
        } else {
            format!("round {}", round - self.warmup + 1)
        }
    }
}

/// The JSON document, rewritten after every round so a cut-short session
/// still leaves its figures.
struct Out {
    doc: Value,
    path: String,
}

impl Out {
    fn put(&mut self, key: &str, v: Value) {
        self.doc[key] = v;
        std::fs::write(&self.path, serde_json::to_vec_pretty(&self.doc).unwrap()).unwrap();
    }
}

fn main() {
    require_root_and_tools().unwrap();
    let k = Knobs::from_env();
    if k.runs("ovn") {
        require_ovn().unwrap();
    }
    let workloads = std::env::var("VS_OVN_WORKLOADS").unwrap_or_else(|_| "1,2,3,4".into());
    let mut out = Out {
        doc: json!({"systems": k.systems, "warmup": k.warmup, "reps": k.reps, "quick": k.quick,
            "load_average_at_start": load_average()}),
        path: std::env::var("VS_OVN_JSON").unwrap_or_else(|_| "vs-ovn.json".into()),
    };
    println!(
        "vs OVN: workloads {workloads}, systems {}, {} warm-up + {} rounds{}; load average {:.2}",
        k.systems.join(","),
        k.warmup,
        k.reps,
        if k.quick { " (quick sizes)" } else { "" },
        load_average()
    );
    for w in workloads.split(',').map(str::trim) {
        match w {
            "1" => workload1(&k, &mut out),
            "2" => workload2(&k, &mut out),
            "3" => workload3(&k, &mut out),
            "4" => workload4(&k, &mut out),
            other => panic!("unknown workload {other} in VS_OVN_WORKLOADS (1-4)"),
        }
    }
    println!("JSON written to {}", out.path);
}

fn workload1(k: &Knobs, out: &mut Out) {
    let nics = k.size("VS_OVN_NICS", 1_000, 200);
    let w = Workload {
        nics,
        local: LOCAL.min(nics),
        iters: k.size("VS_OVN_ITERS", 200, 20),
        remote: k.size("VS_OVN_REMOTE_NODES", 4, 2).max(1),
    };
    println!(
        "\nworkload 1: {} NICs ({} bound locally, the others on {} remote nodes), 1 group of \
         {RULES} rules over {GROUPS} remote groups, {} add/delete iterations",
        w.nics, w.local, w.remote, w.iters
    );
    let mut runs: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    for round in 0..k.warmup + k.reps {
        for sys in &k.systems {
            let run = match sys.as_str() {
                "stacknet" => run_stacknet(w),
                "ovn" => run_ovn(w),
                other => panic!("unknown system {other} in VS_OVN_SYSTEMS"),
            };
            println!(
                "  {:>8} {sys:>8}: setup {:6.2} s, ready p50 {:7.2} ms p99 {:7.2} ms, \
                 delete p50 {:7.2} ms, CPU {:6.2} s ({:5.2} s in iterations), RSS {:7.1} MiB, {} flows, load {:.2}",
                k.tag(round),
                run.setup_s,
                pct(&run.ready_ms, 0.50),
                pct(&run.ready_ms, 0.99),
                pct(&run.del_ms, 0.50),
                run.cpu_s(),
                run.iter_cpu_s,
                run.rss_mib(),
                run.flows,
                run.load
            );
            if round >= k.warmup {
                let name: &str = if sys == "stacknet" { "stacknet" } else { "ovn" };
                runs.entry(name).or_default().push(run);
                out.put("workload1", report(w, &runs, false));
            }
        }
    }
    out.put("workload1", report(w, &runs, true));
}

/// Nearest-rank percentile of unsorted samples (NaN when empty).
fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() as f64 * p).ceil() as usize).clamp(1, s.len()) - 1]
}

/// Runs `f(client, i)` for every `i` below `n` on 8 API clients (threads
/// with their own connections), as the other lab benches preload.
fn on_clients(api: &tests::ApiClient, n: usize, f: impl Fn(&tests::ApiClient, usize) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let api = api.clone();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    f(&api, i);
                }
            });
        }
    });
}

/// Polls `ready` every [`POLL`] until true; panics after [`READY_TIMEOUT`].
fn wait_ready(what: &str, mut ready: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ready() {
        assert!(t.elapsed() < READY_TIMEOUT, "{what} never became ready");
        std::thread::sleep(POLL);
    }
}

/// Waits until br-int's flow count has not changed for 2 s and returns it.
fn settled_flows(node: &tests::Node) -> usize {
    let mut last = (flow_count(node, "br-int").unwrap(), Instant::now());
    let t = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let n = flow_count(node, "br-int").unwrap();
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(2) {
            return n;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "flows never settled"
        );
    }
}

fn cpu_of(pids: &[(String, u32)]) -> f64 {
    usage_of(pids).unwrap().values().map(|u| u.cpu_s).sum()
}

// ---------------------------------------------------------------- stacknet

/// (name, pid) of stacknet's control plane on a one-node lab: flowctl
/// (with its embedded API and store) and the node's agent.
fn stacknet_pids(cloud: &mut Cloud) -> Vec<(String, u32)> {
    let store = cloud
        .lab
        .flowctl()
        .unwrap()
        .store_path
        .display()
        .to_string();
    let agent = cloud.lab.node_mut(0).unwrap().agent().unwrap().pid();
    vec![
        ("flowctl".to_string(), pid_by_cmdline(&store).unwrap()),
        ("vswitch-agent".to_string(), agent),
    ]
}

/// Whether `node`'s br-int holds a flow whose match includes `filter`.
fn has_flow(node: &tests::Node, filter: &str) -> bool {
    flows_matching(node, "br-int", filter)
        .unwrap()
        .lines()
        .any(|l| l.contains("actions="))
}

/// Polls until `node` holds a flow matching `filter` (`present`) or no
/// longer does; the time from `since` (ms). Each poll is one `ovs-ofctl`
/// run (a few ms: the resolution).
fn flow_wait_ms(node: &tests::Node, filter: &str, present: bool, since: Instant) -> f64 {
    while has_flow(node, filter) != present {
        assert!(
            since.elapsed() < READY_TIMEOUT,
            "flow {filter} still {} after {READY_TIMEOUT:?}",
            if present { "missing" } else { "installed" }
        );
    }
    ms(since.elapsed())
}

/// NIC delete → its flows gone: the ARP responder flow for `ip` (both
/// systems answer ARP for every port of a switch/VPC present on the node,
/// so that flow is there as long as the NIC is known and is a cheap
/// needle). Returns ms from `written` (the delete returned).
fn gone_ms(node: &tests::Node, ip: &str, written: Instant) -> f64 {
    flow_wait_ms(node, &format!("arp,arp_tpa={ip}"), false, written)
}

fn run_stacknet(w: Workload) -> Run {
    let mut cloud = Cloud::start(1).unwrap();
    let pids = stacknet_pids(&mut cloud);
    let node0 = cloud.lab.node(0).unwrap().name().to_string();
    let vpc = cloud.vpc("w1", "10.0.0.0/8").unwrap();
    let subnet = cloud.subnet(&vpc, "s", "10.1.0.0/16").unwrap();
    let group = |name: &str, rules: Vec<Value>| {
        cloud
            .api
            .create(
                "/v1/security-groups",
                &json!({"vpc_id": vpc["id"], "name": name, "rules": rules}),
            )
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let remote: Vec<String> = (0..GROUPS)
        .map(|i| group(&format!("rg{i}"), vec![]))
        .collect();
    let rules = std::iter::once(json!({"direction": "egress"}))
        .chain((1..RULES).map(|i| {
            let (lo, hi) = port_range(i);
            json!({"direction": "ingress", "protocol": "tcp",
                "port_range_min": lo, "port_range_max": hi,
                "remote_group_id": remote[i % GROUPS]})
        }))
        .collect();
    let servers = group("servers", rules);
    sn_far_nodes(&cloud, w.remote);
    let body = |i: usize, bound: bool| {
        let node = if bound {
            node0.clone()
        } else {
            format!("far{}", i % w.remote)
        };
        json!({"subnet_id": subnet["id"], "node": node,
            "security_groups": [servers, remote[i % GROUPS]]})
    };

    let started = Instant::now();
    let local_ids = std::sync::Mutex::new(vec![String::new(); w.local]);
    on_clients(&cloud.api, w.nics, |api, i| {
        let nic = api.create("/v1/nics", &body(i, i < w.local)).unwrap();
        if i < w.local {
            local_ids.lock().unwrap()[i] = nic["id"].as_str().unwrap().to_string();
        }
    });
    let local_ids = local_ids.into_inner().unwrap();
    let db = cloud.lab.node(0).unwrap().ovs().db_socket();
    let plug = VifPlug::connect(&db).unwrap();
    let node_db = OvsdbSession::connect(&db, "Open_vSwitch").unwrap();
    for (i, id) in local_ids.iter().enumerate() {
        plug.plug(&format!("v{i}"), id).unwrap();
    }
    let up = |id: &str| {
        cloud
            .api
            .get(&format!("/v1/nics/{id}"))
            .is_ok_and(|a| a.body["status"] == "up")
    };
    for id in &local_ids {
        wait_ready(id, || up(id));
    }
    let setup_s = started.elapsed().as_secs_f64();

    let cpu_before = cpu_of(&pids);
    let mut run = Run {
        setup_s,
        ..Run::default()
    };
    for k in 0..w.iters {
        let port = format!("m{k}");
        let t0 = Instant::now();
        let nic = cloud
            .api
            .create("/v1/nics", &body(w.nics + k, true))
            .unwrap();
        let written = Instant::now();
        let id = nic["id"].as_str().unwrap();
        plug.plug(&port, id).unwrap();
        wait_ready(id, || up(id));
        let done = Instant::now();
        run.write_ms.push(ms(written - t0));
        run.ready_ms.push(ms(done - written));
        run.e2e_ms.push(ms(done - t0));
        node_db.unplug(&port).unwrap();
        let ip = nic["ip"].as_str().unwrap();
        let node = cloud.lab.node(0).unwrap();
        let arp = format!("arp,arp_tpa={ip}");
        // The needle must be there before the delete, or "gone" says nothing.
        assert!(
            has_flow(node, &arp),
            "no ARP flow for {ip} before its delete"
        );
        let path = format!("/v1/nics/{id}");
        cloud
            .api
            .delete(&path)
            .unwrap()
            .ok("DELETE", &path)
            .unwrap();
        run.del_ms.push(gone_ms(node, ip, Instant::now()));
    }
    run.iter_cpu_s = cpu_of(&pids) - cpu_before;
    let node = cloud.lab.node(0).unwrap();
    run.flows = settled_flows(node);
    run.procs = usage_of(&pids).unwrap();
    run.vswitchd_cpu_s = proc_usage(node.ovs().vswitchd_pid().unwrap())
        .unwrap()
        .cpu_s;
    run.load = load_average();
    run
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The TCP ports of ingress rule `i`: 10 ports, 16 apart (as sg_flows).
fn port_range(i: usize) -> (usize, usize) {
    (2000 + 16 * i, 2000 + 16 * i + 9)
}

// --------------------------------------------------------------------- OVN

/// NIC `i`'s MAC and IP (OVN has no IPAM of ours; stacknet allocates its
/// own from the same /16).
fn ovn_addr(i: usize) -> String {
    format!(
        "0a:00:00:00:{:02x}:{:02x} 10.1.{}.{}",
        i / 256,
        i % 256,
        i / 250,
        i % 250 + 2
    )
}

fn named_row(cols: impl IntoIterator<Item = (&'static str, Datum)>) -> Row {
    cols.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn by_name(name: &str) -> Vec<Condition> {
    vec![Condition::eq("name", Datum::string(name))]
}

/// One transaction that adds LSP `name` to the switch and its two port
/// groups, as a CMS creates a port. Returns the LSP's UUID.
fn ovn_add_port(nb: &OvsdbSession, name: &str, addr: &str, remote: usize) -> Uuid {
    let lsp = named_row([
        ("name", Datum::string(name)),
        ("addresses", Datum::set([addr])),
        ("port_security", Datum::set([addr])),
    ]);
    let add_to = |table: &str, row: &str, column: &str| Operation::Mutate {
        table: table.into(),
        conditions: by_name(row),
        mutations: vec![Mutation::new(
            column,
            Mutator::Insert,
            Datum::named_uuid("lsp"),
        )],
    };
    let res = nb
        .transact(&[
            Operation::Insert {
                table: "Logical_Switch_Port".into(),
                row: lsp,
                uuid_name: Some("lsp".into()),
            },
            add_to("Logical_Switch", "w1", "ports"),
            add_to("Port_Group", "pg_servers", "ports"),
            add_to("Port_Group", &format!("pg_rg{remote}"), "ports"),
        ])
        .unwrap();
    match res.first() {
        Some(OpResult::Insert(u)) => *u,
        other => panic!("insert LSP {name}: {other:?}"),
    }
}

/// One transaction that removes LSP `uuid` from the switch and its port
/// groups (the row is not a root: it is garbage-collected).
fn ovn_delete_port(nb: &OvsdbSession, uuid: Uuid, remote: usize) {
    let remove_from = |table: &str, row: &str| Operation::Mutate {
        table: table.into(),
        conditions: by_name(row),
        mutations: vec![Mutation::new("ports", Mutator::Delete, Datum::uuid(uuid))],
    };
    nb.transact(&[
        remove_from("Logical_Switch", "w1"),
        remove_from("Port_Group", "pg_servers"),
        remove_from("Port_Group", &format!("pg_rg{remote}")),
    ])
    .unwrap();
}

/// The switch, the remote groups' port groups and the servers' port group
/// with its ACLs, in one transaction: what Neutron's OVN driver writes for
/// a security group (allow-related rules over `$pg_ip4`, default drops).
fn ovn_setup_model(nb: &OvsdbSession) {
    let mut ops = vec![Operation::Insert {
        table: "Logical_Switch".into(),
        row: named_row([("name", Datum::string("w1"))]),
        uuid_name: None,
    }];
    for g in 0..GROUPS {
        ops.push(Operation::Insert {
            table: "Port_Group".into(),
            row: named_row([("name", Datum::string(format!("pg_rg{g}")))]),
            uuid_name: None,
        });
    }
    let mut acls: Vec<(String, &str, i64, String)> = vec![
        (
            "egress".into(),
            "from-lport",
            1002,
            "inport == @pg_servers && ip4".into(),
        ),
        (
            "drop-in".into(),
            "to-lport",
            1001,
            "outport == @pg_servers && ip".into(),
        ),
        (
            "drop-out".into(),
            "from-lport",
            1001,
            "inport == @pg_servers && ip".into(),
        ),
    ];
    for i in 1..RULES {
        let (lo, hi) = port_range(i);
        acls.push((
            format!("r{i}"),
            "to-lport",
            1002,
            format!(
                "outport == @pg_servers && ip4 && ip4.src == $pg_rg{}_ip4 && tcp && tcp.dst >= {lo} && tcp.dst <= {hi}",
                i % GROUPS
            ),
        ));
    }
    let mut acl_refs = Vec::new();
    for (tag, dir, prio, m) in acls {
        let action = if tag.starts_with("drop") {
            "drop"
        } else {
            "allow-related"
        };
        let uuid_name = format!("acl_{}", tag.replace('-', "_"));
        ops.push(Operation::Insert {
            table: "ACL".into(),
            row: named_row([
                ("direction", Datum::string(dir)),
                ("priority", Datum::integer(prio)),
                ("match", Datum::string(m)),
                ("action", Datum::string(action)),
            ]),
            uuid_name: Some(uuid_name.clone()),
        });
        acl_refs.push(ovsdb::Atom::NamedUuid(uuid_name));
    }
    ops.push(Operation::Insert {
        table: "Port_Group".into(),
        row: named_row([
            ("name", Datum::string("pg_servers")),
            ("acls", Datum::set(acl_refs)),
        ]),
        uuid_name: None,
    });
    nb.transact(&ops).unwrap();
}

fn run_ovn(w: Workload) -> Run {
    let ovn = OvnLab::start(1).unwrap();
    let pids = ovn.control_plane_pids();
    let nb = OvsdbSession::connect(&ovn.central.nb_socket(), "OVN_Northbound").unwrap();
    let node = ovn.lab.node(0).unwrap();
    let db = node.ovs().db_socket();
    let plug = VifPlug::connect(&db).unwrap();
    let node_db = OvsdbSession::connect(&db, "Open_vSwitch").unwrap();
    let (sb, far) = ovn_far_chassis(&ovn, w.remote);

    let started = Instant::now();
    ovn_setup_model(&nb);
    for i in 0..w.nics {
        ovn_add_port(&nb, &format!("p{i}"), &ovn_addr(i), i % GROUPS);
    }
    ovn_bind(
        &ovn,
        &sb,
        (w.local..w.nics).map(|i| (format!("p{i}"), far[i % w.remote])),
    );
    for i in 0..w.local {
        plug.plug(&format!("v{i}"), &format!("p{i}")).unwrap();
    }
    for i in 0..w.local {
        let port = format!("v{i}");
        wait_ready(&port, || node_db.ovn_installed(&port).unwrap());
    }
    let setup_s = started.elapsed().as_secs_f64();

    let cpu_before = cpu_of(&pids);
    let mut run = Run {
        setup_s,
        ..Run::default()
    };
    for k in 0..w.iters {
        let i = w.nics + k;
        let (lsp, port) = (format!("m{k}"), format!("m{k}"));
        let t0 = Instant::now();
        let uuid = ovn_add_port(&nb, &lsp, &ovn_addr(i), i % GROUPS);
        let written = Instant::now();
        plug.plug(&port, &lsp).unwrap();
        wait_ready(&port, || node_db.ovn_installed(&port).unwrap());
        let done = Instant::now();
        run.write_ms.push(ms(written - t0));
        run.ready_ms.push(ms(done - written));
        run.e2e_ms.push(ms(done - t0));
        node_db.unplug(&port).unwrap();
        let addr = ovn_addr(i);
        let ip = addr.split_whitespace().nth(1).unwrap();
        assert!(
            has_flow(node, &format!("arp,arp_tpa={ip}")),
            "no ARP flow for {ip} before its delete"
        );
        ovn_delete_port(&nb, uuid, i % GROUPS);
        run.del_ms.push(gone_ms(node, ip, Instant::now()));
    }
    run.iter_cpu_s = cpu_of(&pids) - cpu_before;
    run.flows = settled_flows(node);
    run.procs = usage_of(&pids).unwrap();
    run.vswitchd_cpu_s = proc_usage(node.ovs().vswitchd_pid().unwrap())
        .unwrap()
        .cpu_s;
    run.load = load_average();
    run
}

// ------------------------------------------------------------------ report

/// Median and p95 over the rounds of one scalar figure.
fn spread(v: &[f64]) -> (f64, f64) {
    (pct(v, 0.5), pct(v, 0.95))
}

/// The table (printed when `print`) and the JSON document.
fn report(w: Workload, runs: &BTreeMap<&str, Vec<Run>>, print: bool) -> Value {
    macro_rules! out {
        ($($t:tt)*) => { if print { println!($($t)*) } };
    }
    type Figure = (&'static str, fn(&[Run]) -> Vec<f64>);
    let pooled = |f: fn(&Run) -> &Vec<f64>, p: f64| {
        move |rs: &[Run]| -> f64 {
            pct(&rs.iter().flat_map(|r| f(r).clone()).collect::<Vec<_>>(), p)
        }
    };
    // Latency percentiles pool every sample of every round; the other
    // figures are one value per round.
    let latency: Vec<(&str, f64, f64)> = ["stacknet", "ovn"]
        .iter()
        .map(|s| {
            let rs = runs.get(s).map(Vec::as_slice).unwrap_or(&[]);
            (
                *s,
                pooled(|r| &r.ready_ms, 0.5)(rs),
                pooled(|r| &r.ready_ms, 0.99)(rs),
            )
        })
        .collect();
    let figures: Vec<Figure> = vec![
        ("setup to local NICs ready (s)", |rs| {
            rs.iter().map(|r| r.setup_s).collect()
        }),
        ("control-plane CPU, whole run (s)", |rs| {
            rs.iter().map(Run::cpu_s).collect()
        }),
        ("control-plane CPU, iterations (s)", |rs| {
            rs.iter().map(|r| r.iter_cpu_s).collect()
        }),
        ("control-plane peak RSS, sum (MiB)", |rs| {
            rs.iter().map(Run::rss_mib).collect()
        }),
        ("control-plane RSS at the end, sum (MiB)", |rs| {
            rs.iter()
                .map(|r| r.procs.values().map(|p| p.rss_kib as f64).sum::<f64>() / 1024.0)
                .collect()
        }),
        ("OpenFlow flows on br-int", |rs| {
            rs.iter().map(|r| r.flows as f64).collect()
        }),
        ("ovs-vswitchd CPU, not counted (s)", |rs| {
            rs.iter().map(|r| r.vswitchd_cpu_s).collect()
        }),
        ("load average (1 min) at end of run", |rs| {
            rs.iter().map(|r| r.load).collect()
        }),
    ];
    let get = |s: &str| runs.get(s).map(Vec::as_slice).unwrap_or(&[]);
    let rounds = get("stacknet").len().max(get("ovn").len());
    out!();
    out!(
        "workload 1, {rounds} rounds ({} NIC-ready samples per system); median over rounds (p95 in brackets)",
        rounds * w.iters
    );
    out!(
        "{:<40} {:>20} {:>20} {:>13}",
        "figure",
        "stacknet",
        "OVN",
        "stacknet/OVN"
    );
    let mut rows = Vec::new();
    let mut row = |name: &str, a: f64, b: f64, a95: Option<f64>, b95: Option<f64>| {
        let cell = |m: f64, p: Option<f64>| match p {
            Some(p) => format!("{m:.2} ({p:.2})"),
            None => format!("{m:.2}"),
        };
        out!(
            "{name:<40} {:>20} {:>20} {:>13.3}",
            cell(a, a95),
            cell(b, b95),
            a / b
        );
        rows.push(json!({"figure": name, "stacknet": a, "ovn": b,
            "stacknet_p95": a95, "ovn_p95": b95, "ratio": a / b}));
    };
    let (sn, ov) = (latency[0], latency[1]);
    row(
        "NIC ready p50 (ms, from write return)",
        sn.1,
        ov.1,
        None,
        None,
    );
    row(
        "NIC ready p99 (ms, from write return)",
        sn.2,
        ov.2,
        None,
        None,
    );
    for (f, p) in [(0.5, "p50"), (0.99, "p99")] {
        let a = pct(
            &get("stacknet")
                .iter()
                .flat_map(|r| r.e2e_ms.clone())
                .collect::<Vec<_>>(),
            f,
        );
        let b = pct(
            &get("ovn")
                .iter()
                .flat_map(|r| r.e2e_ms.clone())
                .collect::<Vec<_>>(),
            f,
        );
        row(
            &format!("NIC ready {p} (ms, write included)"),
            a,
            b,
            None,
            None,
        );
    }
    let a = pct(
        &get("stacknet")
            .iter()
            .flat_map(|r| r.write_ms.clone())
            .collect::<Vec<_>>(),
        0.5,
    );
    let b = pct(
        &get("ovn")
            .iter()
            .flat_map(|r| r.write_ms.clone())
            .collect::<Vec<_>>(),
        0.5,
    );
    row("add write p50 (ms)", a, b, None, None);
    for (f, p) in [(0.5, "p50"), (0.99, "p99")] {
        let pooled_del = |sys: &str| {
            pct(
                &get(sys)
                    .iter()
                    .flat_map(|r| r.del_ms.clone())
                    .collect::<Vec<_>>(),
                f,
            )
        };
        row(
            &format!("NIC delete -> flows gone {p} (ms)"),
            pooled_del("stacknet"),
            pooled_del("ovn"),
            None,
            None,
        );
    }
    for (name, f) in &figures {
        let (a, a95) = spread(&f(get("stacknet")));
        let (b, b95) = spread(&f(get("ovn")));
        row(name, a, b, Some(a95), Some(b95));
    }
    // Per process: median over rounds.
    out!();
    out!(
        "{:<28} {:>12} {:>16} {:>16}",
        "process (median of rounds)",
        "CPU (s)",
        "peak RSS (MiB)",
        "RSS at end (MiB)"
    );
    let mut procs = serde_json::Map::new();
    for (sys, rs) in runs {
        let names: Vec<String> = rs
            .first()
            .map(|r| r.procs.keys().cloned().collect())
            .unwrap_or_default();
        for n in names {
            let cpu: Vec<f64> = rs
                .iter()
                .filter_map(|r| r.procs.get(&n))
                .map(|u| u.cpu_s)
                .collect();
            let rss: Vec<f64> = rs
                .iter()
                .filter_map(|r| r.procs.get(&n))
                .map(|u| u.peak_rss_kib as f64 / 1024.0)
                .collect();
            let now: Vec<f64> = rs
                .iter()
                .filter_map(|r| r.procs.get(&n))
                .map(|u| u.rss_kib as f64 / 1024.0)
                .collect();
            out!(
                "{:<28} {:>12.2} {:>16.1} {:>16.1}",
                format!("{sys}: {n}"),
                pct(&cpu, 0.5),
                pct(&rss, 0.5),
                pct(&now, 0.5)
            );
            procs.insert(
                format!("{sys}/{n}"),
                json!({"cpu_s": cpu, "peak_rss_mib": rss, "rss_at_end_mib": now}),
            );
        }
    }
    let raw: serde_json::Map<String, Value> = runs
        .iter()
        .map(|(sys, rs)| {
            let v: Vec<Value> = rs
                .iter()
                .map(|r| {
                    json!({"setup_s": r.setup_s, "cpu_s": r.cpu_s(), "iter_cpu_s": r.iter_cpu_s,
                        "peak_rss_mib": r.rss_mib(), "flows": r.flows, "vswitchd_cpu_s": r.vswitchd_cpu_s,
                        "ready_ms": r.ready_ms, "e2e_ms": r.e2e_ms, "write_ms": r.write_ms,
                        "delete_ms": r.del_ms, "load_average": r.load})
                })
                .collect();
            (sys.to_string(), Value::Array(v))
        })
        .collect();
    json!({
        "workload": {"nics": w.nics, "local": w.local, "rules": RULES, "remote_groups": GROUPS,
            "iterations": w.iters, "rounds": rounds},
        "table": rows,
        "processes": procs,
        "runs": raw,
    })
}

// ------------------------------------------------------- tables (2 to 4)

/// One figure of a table: its name and the samples of each system.
type Figure2 = (String, Vec<f64>, Vec<f64>);

/// A table of figures: median and p95 of each system's samples and the
/// ratio of the medians (printed when `print`); returns the JSON rows.
fn table(title: &str, rows: &[Figure2], print: bool) -> Value {
    if print {
        println!();
        println!("{title}");
        println!(
            "{:<48} {:>22} {:>22} {:>13}",
            "figure: median (p95)", "stacknet", "OVN", "stacknet/OVN"
        );
    }
    let cell = |v: &[f64]| {
        let (m, p) = spread(v);
        if v.len() > 1 {
            format!("{m:.2} ({p:.2})")
        } else {
            format!("{m:.2}")
        }
    };
    let mut out = Vec::new();
    for (name, a, b) in rows {
        let (am, ap) = spread(a);
        let (bm, bp) = spread(b);
        if print {
            println!(
                "{name:<48} {:>22} {:>22} {:>13.3}",
                cell(a),
                cell(b),
                am / bm
            );
        }
        out.push(
            json!({"figure": name, "stacknet": am, "stacknet_p95": ap, "ovn": bm,
            "ovn_p95": bp, "ratio": am / bm, "stacknet_samples": a, "ovn_samples": b}),
        );
    }
    Value::Array(out)
}

/// Waits until the flow count behind `mgmt` has not changed for `quiet`;
/// returns it.
fn settled_count(mgmt: &std::path::Path, quiet: Duration) -> u64 {
    let t = Instant::now();
    let mut last = (aggregate_flow_count(mgmt).unwrap(), Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let n = aggregate_flow_count(mgmt).unwrap();
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() >= quiet {
            return n;
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "flows never settled"
        );
    }
}

fn sum_cpu(p: &BTreeMap<String, ProcUsage>) -> f64 {
    p.values().map(|u| u.cpu_s).sum()
}

fn sum_rss_mib(p: &BTreeMap<String, ProcUsage>) -> f64 {
    p.values().map(|u| u.peak_rss_kib as f64).sum::<f64>() / 1024.0
}

// ------------------------------------------------- workload 2: scale shape

/// Workload 2's size: `vpcs` VPCs of `nics` NICs in two subnets routed by
/// the VPC's router; NIC 0 of every VPC bound on the lab's node (so every
/// VPC is present there), the others spread over `remote` nodes that have
/// no switch (stacknet: registered nodes without an agent; OVN: chassis
/// added to the SB database, ports bound to them there, as their
/// ovn-controllers would), so the node needs a tunnel path to each.
#[derive(Clone, Copy)]
struct Shape {
    vpcs: usize,
    nics: usize,
    remote: usize,
}

impl Shape {
    /// Remote node of NIC `n` (not 0) of a VPC.
    fn remote_of(&self, n: usize) -> usize {
        n % self.remote
    }
}

/// Underlay address of remote node `i` (never used: no packet crosses).
fn far_ip(i: usize) -> String {
    format!("192.0.2.{}", 200 + i)
}

/// Registers `n` remote nodes `far<i>` (no agent, no switch).
fn sn_far_nodes(cloud: &Cloud, n: usize) {
    for i in 0..n {
        cloud
            .api
            .create(
                "/v1/nodes",
                &json!({"name": format!("far{i}"), "underlay_ip": far_ip(i)}),
            )
            .unwrap();
    }
}

/// Adds `n` remote chassis `far<i>` to the SB database (no
/// ovn-controller behind them); a session to the SB database and their
/// UUIDs.
fn ovn_far_chassis(ovn: &OvnLab, n: usize) -> (OvsdbSession, Vec<Uuid>) {
    for i in 0..n {
        ovn.central
            .sbctl(&["chassis-add", &format!("far{i}"), "geneve", &far_ip(i)])
            .unwrap();
    }
    let sb = OvsdbSession::connect(&ovn.central.sb_socket(), "OVN_Southbound").unwrap();
    let far = (0..n)
        .map(|i| sb.uuid_of("Chassis", &format!("far{i}")).unwrap())
        .collect();
    (sb, far)
}

/// Binds logical ports to remote chassis, as those chassis'
/// ovn-controllers would claim them, once northd has made their
/// Port_Bindings (1,000 updates a transaction).
fn ovn_bind(ovn: &OvnLab, sb: &OvsdbSession, ports: impl Iterator<Item = (String, Uuid)>) {
    ovn.central
        .nbctl_within(READY_TIMEOUT, &["--wait=sb", "sync"])
        .unwrap();
    let binds: Vec<Operation> = ports
        .map(|(name, chassis)| Operation::Update {
            table: "Port_Binding".into(),
            conditions: vec![Condition::eq("logical_port", Datum::string(name))],
            row: named_row([("chassis", Datum::uuid(chassis))]),
        })
        .collect();
    for chunk in binds.chunks(1000) {
        sb.transact(chunk).unwrap();
    }
}

/// What one from-scratch run of workload 2 measured.
#[derive(Default)]
struct Converge {
    /// Every write returned (s from the first write).
    written_s: f64,
    /// Every local NIC reported ready (s).
    ready_s: f64,
    /// The last change of br-int's flow count, sampled every 100 ms (s).
    converged_s: f64,
    /// OVN: `ovn-nbctl --wait=hv sync` issued after the local ports were
    /// installed returned (s).
    hv_sync_s: f64,
    procs: BTreeMap<String, ProcUsage>,
    flows: u64,
    load: f64,
}

fn workload2(k: &Knobs, out: &mut Out) {
    let s = Shape {
        vpcs: k.size("VS_OVN_VPCS", 100, 10),
        nics: k.size("VS_OVN_VPC_NICS", 100, 20),
        remote: k.size("VS_OVN_REMOTE_NODES", 4, 2).max(1),
    };
    println!(
        "\nworkload 2: {} VPCs x {} NICs (2 subnets + a router each, the VPC's default group), \
         NIC 0 of each VPC bound on the node, the others on {} remote nodes; from an empty \
         system to converged",
        s.vpcs, s.nics, s.remote
    );
    let mut runs: BTreeMap<String, Vec<Converge>> = BTreeMap::new();
    for round in 0..k.warmup + k.reps {
        for sys in &k.systems {
            let c = match sys.as_str() {
                "stacknet" => w2_stacknet(s),
                "ovn" => w2_ovn(s),
                other => panic!("unknown system {other}"),
            };
            println!(
                "  {:>8} {sys:>8}: written {:6.2} s, local ready {:6.2} s, converged {:6.2} s{}, \
                 CPU {:6.2} s, RSS {:7.1} MiB, {} flows, load {:.2}",
                k.tag(round),
                c.written_s,
                c.ready_s,
                c.converged_s,
                if sys == "ovn" {
                    format!(" (--wait=hv {:.2} s)", c.hv_sync_s)
                } else {
                    String::new()
                },
                sum_cpu(&c.procs),
                sum_rss_mib(&c.procs),
                c.flows,
                c.load
            );
            if round >= k.warmup {
                runs.entry(sys.clone()).or_default().push(c);
                out.put("workload2", w2_report(s, &runs, false));
            }
        }
    }
    out.put("workload2", w2_report(s, &runs, true));
}

fn w2_report(s: Shape, runs: &BTreeMap<String, Vec<Converge>>, print: bool) -> Value {
    let get = |sys: &str, f: &dyn Fn(&Converge) -> f64| -> Vec<f64> {
        runs.get(sys)
            .map(|rs| rs.iter().map(f).collect())
            .unwrap_or_default()
    };
    let fig = |name: &str, f: &dyn Fn(&Converge) -> f64| -> Figure2 {
        (name.to_string(), get("stacknet", f), get("ovn", f))
    };
    let mut rows = vec![
        fig("all writes returned (s)", &|c| c.written_s),
        fig("every local NIC ready (s)", &|c| c.ready_s),
        fig("full convergence: last flow change (s)", &|c| c.converged_s),
        fig("control-plane CPU (s)", &|c| sum_cpu(&c.procs)),
        fig("control-plane peak RSS, sum (MiB)", &|c| {
            sum_rss_mib(&c.procs)
        }),
        fig("OpenFlow flows on br-int", &|c| c.flows as f64),
        fig("load average (1 min) at end of run", &|c| c.load),
    ];
    let names: std::collections::BTreeSet<(String, String)> = runs
        .iter()
        .flat_map(|(sys, rs)| {
            rs.iter()
                .flat_map(move |r| r.procs.keys().map(move |n| (sys.clone(), n.clone())))
        })
        .collect();
    for (sys, n) in &names {
        let v = |f: &dyn Fn(&ProcUsage) -> f64| -> Vec<f64> {
            runs[sys]
                .iter()
                .filter_map(|r| r.procs.get(n))
                .map(f)
                .collect()
        };
        let (cpu, rss) = (v(&|u| u.cpu_s), v(&|u| u.peak_rss_kib as f64 / 1024.0));
        let (a, b) = if sys == "stacknet" {
            ((cpu, rss), (vec![], vec![]))
        } else {
            ((vec![], vec![]), (cpu, rss))
        };
        rows.push((format!("  {n}: CPU (s)"), a.0, b.0));
        rows.push((format!("  {n}: peak RSS (MiB)"), a.1, b.1));
    }
    let title = format!(
        "workload 2, {} VPCs x {} NICs, {} rounds; OVN also: `--wait=hv sync` after the local ports \
         were installed, median {:.2} s",
        s.vpcs,
        s.nics,
        runs.values().map(Vec::len).max().unwrap_or(0),
        spread(&get("ovn", &|c| c.hv_sync_s)).0
    );
    json!({"workload": {"vpcs": s.vpcs, "nics_per_vpc": s.nics, "local_nics": s.vpcs,
            "remote_nodes": s.remote},
        "ovn_hv_sync_s": get("ovn", &|c| c.hv_sync_s),
        "table": table(&title, &rows, print)})
}

/// Waits for the flows to settle after the local NICs came up, then reads
/// the figures; `sampler` has run since the first write at `t0`.
fn w2_finish(
    c: &mut Converge,
    sampler: FlowSampler,
    mgmt: &std::path::Path,
    pids: &[(String, u32)],
) {
    c.flows = settled_count(mgmt, Duration::from_secs(3));
    let samples = sampler.stop();
    c.converged_s = samples.last_change_s().max(c.ready_s);
    c.procs = usage_of(pids).unwrap();
    c.load = load_average();
}

fn w2_stacknet(s: Shape) -> Converge {
    let mut cloud = Cloud::start(1).unwrap();
    let pids = stacknet_pids(&mut cloud);
    let node0 = cloud.lab.node(0).unwrap().name().to_string();
    let mgmt = cloud.lab.node(0).unwrap().ovs().mgmt_socket("br-int");
    sn_far_nodes(&cloud, s.remote);
    let mut c = Converge::default();
    let sampler = FlowSampler::start(&mgmt, Duration::from_millis(100));
    let t0 = sampler.started();
    let local = std::sync::Mutex::new(vec![String::new(); s.vpcs]);
    // Each client creates whole VPCs: the VPC, its two subnets (the VPC's
    // router is implicit: distributed routing between its subnets), then
    // its NICs, each in the VPC's default group.
    on_clients(&cloud.api, s.vpcs, |api, v| {
        let vpc = api
            .create(
                "/v1/vpcs",
                &json!({"name": format!("v{v}"), "cidrs": ["10.0.0.0/16"]}),
            )
            .unwrap();
        let subnets: Vec<Value> = (0..2)
            .map(|j| {
                api.create(
                    "/v1/subnets",
                    &json!({"vpc_id": vpc["id"], "name": format!("s{j}"),
                        "cidr": format!("10.0.{}.0/24", j + 1)}),
                )
                .unwrap()
            })
            .collect();
        for n in 0..s.nics {
            let node = if n == 0 {
                node0.clone()
            } else {
                format!("far{}", s.remote_of(n))
            };
            let b = json!({"subnet_id": subnets[n % 2]["id"], "node": node});
            let nic = api.create("/v1/nics", &b).unwrap();
            if n == 0 {
                local.lock().unwrap()[v] = nic["id"].as_str().unwrap().to_string();
            }
        }
    });
    c.written_s = t0.elapsed().as_secs_f64();
    let local = local.into_inner().unwrap();
    let plug = VifPlug::connect(&cloud.lab.node(0).unwrap().ovs().db_socket()).unwrap();
    for (v, id) in local.iter().enumerate() {
        plug.plug(&format!("v{v}"), id).unwrap();
    }
    for id in &local {
        wait_ready(id, || {
            cloud
                .api
                .get(&format!("/v1/nics/{id}"))
                .is_ok_and(|a| a.body["status"] == "up")
        });
    }
    c.ready_s = t0.elapsed().as_secs_f64();
    w2_finish(&mut c, sampler, &mgmt, &pids);
    c
}

/// Everything of VPC `v` in one transaction: two switches joined by a
/// router, `nics` ports (with addresses and port security) alternating
/// between them, and a port group with a default security group's ACLs
/// (egress allowed, ingress from the group itself), as Neutron's OVN
/// driver models a network with a router and a default group.
fn w2_vpc_ops(v: usize, nics: usize) -> Vec<Operation> {
    let mut ops = Vec::new();
    let mut ls_ports: [Vec<ovsdb::Atom>; 2] = [Vec::new(), Vec::new()];
    let mut pg_ports = Vec::new();
    for n in 0..nics {
        let (j, host) = (n % 2, n / 2 + 10);
        let addr = format!(
            "0a:{:02x}:{:02x}:00:{:02x}:{:02x} 10.0.{}.{host}",
            v / 256,
            v % 256,
            n / 256,
            n % 256,
            j + 1
        );
        let uuid_name = format!("p{n}");
        ops.push(Operation::Insert {
            table: "Logical_Switch_Port".into(),
            row: named_row([
                ("name", Datum::string(format!("p{v}_{n}"))),
                ("addresses", Datum::set([addr.as_str()])),
                ("port_security", Datum::set([addr.as_str()])),
            ]),
            uuid_name: Some(uuid_name.clone()),
        });
        ls_ports[j].push(ovsdb::Atom::NamedUuid(uuid_name.clone()));
        pg_ports.push(ovsdb::Atom::NamedUuid(uuid_name));
    }
    let mut lrps = Vec::new();
    for (j, ports) in ls_ports.iter_mut().enumerate() {
        let lrp = format!("lrp{v}_{j}");
        ops.push(Operation::Insert {
            table: "Logical_Router_Port".into(),
            row: named_row([
                ("name", Datum::string(lrp.clone())),
                (
                    "mac",
                    Datum::string(format!(
                        "0a:ff:{:02x}:{:02x}:00:{:02x}",
                        v / 256,
                        v % 256,
                        j + 1
                    )),
                ),
                (
                    "networks",
                    Datum::set([format!("10.0.{}.1/24", j + 1).as_str()]),
                ),
            ]),
            uuid_name: Some(format!("lrp{j}")),
        });
        lrps.push(ovsdb::Atom::NamedUuid(format!("lrp{j}")));
        ops.push(Operation::Insert {
            table: "Logical_Switch_Port".into(),
            row: named_row([
                ("name", Datum::string(format!("rp{v}_{j}"))),
                ("type", Datum::string("router")),
                ("addresses", Datum::set(["router"])),
                ("options", Datum::map([("router-port", lrp.as_str())])),
            ]),
            uuid_name: Some(format!("rp{j}")),
        });
        ports.push(ovsdb::Atom::NamedUuid(format!("rp{j}")));
        ops.push(Operation::Insert {
            table: "Logical_Switch".into(),
            row: named_row([
                ("name", Datum::string(format!("ls{v}_{j}"))),
                ("ports", Datum::set(std::mem::take(ports))),
            ]),
            uuid_name: None,
        });
    }
    ops.push(Operation::Insert {
        table: "Logical_Router".into(),
        row: named_row([
            ("name", Datum::string(format!("lr{v}"))),
            ("ports", Datum::set(lrps)),
        ]),
        uuid_name: None,
    });
    let pg = format!("pg_d{v}");
    let acls = [
        (
            "from-lport",
            1002,
            format!("inport == @{pg} && ip4"),
            "allow-related",
        ),
        (
            "to-lport",
            1002,
            format!("outport == @{pg} && ip4 && ip4.src == ${pg}_ip4"),
            "allow-related",
        ),
        ("from-lport", 1001, format!("inport == @{pg} && ip"), "drop"),
        ("to-lport", 1001, format!("outport == @{pg} && ip"), "drop"),
    ];
    let mut acl_refs = Vec::new();
    for (i, (dir, prio, m, action)) in acls.into_iter().enumerate() {
        ops.push(acl_insert(&format!("acl{i}"), dir, prio, &m, action));
        acl_refs.push(ovsdb::Atom::NamedUuid(format!("acl{i}")));
    }
    ops.push(Operation::Insert {
        table: "Port_Group".into(),
        row: named_row([
            ("name", Datum::string(pg)),
            ("ports", Datum::set(pg_ports)),
            ("acls", Datum::set(acl_refs)),
        ]),
        uuid_name: None,
    });
    ops
}

/// Inserts one ACL row, to be referenced as `uuid_name`.
fn acl_insert(uuid_name: &str, dir: &str, prio: i64, m: &str, action: &str) -> Operation {
    Operation::Insert {
        table: "ACL".into(),
        row: named_row([
            ("direction", Datum::string(dir)),
            ("priority", Datum::integer(prio)),
            ("match", Datum::string(m)),
            ("action", Datum::string(action)),
        ]),
        uuid_name: Some(uuid_name.to_string()),
    }
}

fn w2_ovn(s: Shape) -> Converge {
    let ovn = OvnLab::start(1).unwrap();
    let pids = ovn.control_plane_pids();
    let nb = OvsdbSession::connect(&ovn.central.nb_socket(), "OVN_Northbound").unwrap();
    let node = ovn.lab.node(0).unwrap();
    let db = node.ovs().db_socket();
    let mgmt = node.ovs().mgmt_socket("br-int");
    let plug = VifPlug::connect(&db).unwrap();
    let node_db = OvsdbSession::connect(&db, "Open_vSwitch").unwrap();
    let (sb, far) = ovn_far_chassis(&ovn, s.remote);
    let mut c = Converge::default();
    let sampler = FlowSampler::start(&mgmt, Duration::from_millis(100));
    let t0 = sampler.started();
    // One transaction per VPC: far fewer, larger writes than the one
    // request per object stacknet gets (in OVN's favour).
    for v in 0..s.vpcs {
        nb.transact(&w2_vpc_ops(v, s.nics)).unwrap();
    }
    ovn_bind(
        &ovn,
        &sb,
        (0..s.vpcs)
            .flat_map(|v| (1..s.nics).map(move |n| (v, n)))
            .map(|(v, n)| (format!("p{v}_{n}"), far[s.remote_of(n)])),
    );
    c.written_s = t0.elapsed().as_secs_f64();
    for v in 0..s.vpcs {
        plug.plug(&format!("v{v}"), &format!("p{v}_0")).unwrap();
    }
    for v in 0..s.vpcs {
        let port = format!("v{v}");
        wait_ready(&port, || node_db.ovn_installed(&port).unwrap());
    }
    c.ready_s = t0.elapsed().as_secs_f64();
    ovn.central
        .nbctl_within(READY_TIMEOUT, &["--wait=hv", "sync"])
        .unwrap();
    c.hv_sync_s = t0.elapsed().as_secs_f64();
    w2_finish(&mut c, sampler, &mgmt, &pids);
    c
}

// --------------------------------------------------- workload 3: rule change

/// What one system measured in workload 3 (one deployment, then a change
/// per round).
#[derive(Default)]
struct RuleChange {
    /// First write → every member's address flow on the node (s).
    setup_s: f64,
    /// Per round: one IP added to the big group → its flow on the node (ms,
    /// from the start of the write).
    ip_ms: Vec<f64>,
    /// Per round: one rule (from the big group) added → its flow (ms).
    rule_ms: Vec<f64>,
    /// Cost of one poll (ms): the resolution.
    poll_ms: Vec<f64>,
    procs: BTreeMap<String, ProcUsage>,
    flows: u64,
    load: Vec<f64>,
}

fn workload3(k: &Knobs, out: &mut Out) {
    let members = k.size("VS_OVN_MEMBERS", 10_000, 1_000);
    let remote = k.size("VS_OVN_REMOTE_NODES", 4, 2).max(1);
    println!(
        "\nworkload 3: a group of {members} members (NICs / LSPs in a port group, bound on {remote} \
         remote nodes); two NICs \
         bound on the node in a group whose ingress rule admits TCP 22 from it; per round one IP \
         added to the big group, then one rule (TCP port, from the big group) added; enforced = \
         its flow on br-int (polled)"
    );
    let mut res: BTreeMap<String, RuleChange> = BTreeMap::new();
    for sys in &k.systems {
        let r = match sys.as_str() {
            "stacknet" => w3_stacknet(k, members, remote),
            "ovn" => w3_ovn(k, members, remote),
            other => panic!("unknown system {other}"),
        };
        println!(
            "  {sys:>8}: setup {:6.2} s; IP added p50 {:7.2} ms, rule added p50 {:7.2} ms \
             (poll {:5.2} ms); {} flows; CPU {:6.2} s, RSS {:7.1} MiB",
            r.setup_s,
            pct(&r.ip_ms, 0.5),
            pct(&r.rule_ms, 0.5),
            pct(&r.poll_ms, 0.5),
            r.flows,
            sum_cpu(&r.procs),
            sum_rss_mib(&r.procs)
        );
        res.insert(sys.clone(), r);
        out.put("workload3", w3_report(members, &res, false));
    }
    out.put("workload3", w3_report(members, &res, true));
}

fn w3_report(members: usize, res: &BTreeMap<String, RuleChange>, print: bool) -> Value {
    let get = |sys: &str, f: &dyn Fn(&RuleChange) -> Vec<f64>| -> Vec<f64> {
        res.get(sys).map(f).unwrap_or_default()
    };
    let fig = |name: &str, f: &dyn Fn(&RuleChange) -> Vec<f64>| -> Figure2 {
        (name.to_string(), get("stacknet", f), get("ovn", f))
    };
    let rows = vec![
        fig("setup: first write -> all member flows (s)", &|r| {
            vec![r.setup_s]
        }),
        fig("one IP added to the group -> enforced (ms)", &|r| {
            r.ip_ms.clone()
        }),
        fig("one rule added -> enforced (ms)", &|r| r.rule_ms.clone()),
        fig("one poll of br-int (ms, the resolution)", &|r| {
            r.poll_ms.clone()
        }),
        fig("control-plane CPU, whole run (s)", &|r| {
            vec![sum_cpu(&r.procs)]
        }),
        fig("control-plane peak RSS, sum (MiB)", &|r| {
            vec![sum_rss_mib(&r.procs)]
        }),
        fig("OpenFlow flows on br-int", &|r| vec![r.flows as f64]),
        fig("load average (1 min) during the changes", &|r| {
            r.load.clone()
        }),
    ];
    let title = format!(
        "workload 3, a {members}-member group; changes: {} per system (after the warm-up)",
        res.values().map(|r| r.ip_ms.len()).max().unwrap_or(0)
    );
    json!({"workload": {"members": members}, "table": table(&title, &rows, print)})
}

/// Times `change` (the clock starts before it) until `node` holds a flow
/// matching `filter`, which it must not hold before.
fn enforce_ms(node: &tests::Node, filter: &str, change: impl FnOnce()) -> f64 {
    assert!(
        !has_flow(node, filter),
        "{filter} present before the change"
    );
    let t = Instant::now();
    change();
    flow_wait_ms(node, filter, true, t)
}

fn poll_cost_ms(node: &tests::Node, filter: &str) -> f64 {
    let t = Instant::now();
    has_flow(node, filter);
    ms(t.elapsed())
}

/// A filter for stacknet's ingress flows from remote address `ip` (on the
/// connection's original tuple; OVS wants a valid conntrack state with it).
fn sn_member(ip: &str) -> String {
    format!("ip,ct_state=+trk-inv,ct_nw_src={ip}")
}

fn w3_stacknet(k: &Knobs, members: usize, remote: usize) -> RuleChange {
    let mut cloud = Cloud::start(1).unwrap();
    let pids = stacknet_pids(&mut cloud);
    let node0 = cloud.lab.node(0).unwrap().name().to_string();
    let mut r = RuleChange::default();
    let t0 = Instant::now();
    let vpc = cloud.vpc("w3", "10.0.0.0/8").unwrap();
    let subnet = cloud.subnet(&vpc, "s", "10.1.0.0/16").unwrap();
    let default_sg = vpc["default_security_group_id"]
        .as_str()
        .unwrap()
        .to_string();
    let group = |name: &str, rules: Value| -> String {
        cloud
            .api
            .create(
                "/v1/security-groups",
                &json!({"vpc_id": vpc["id"], "name": name, "rules": rules}),
            )
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    sn_far_nodes(&cloud, remote);
    let big = group("big", json!([]));
    let servers = group(
        "servers",
        json!([{"direction": "egress"},
            {"direction": "ingress", "protocol": "tcp", "port_range_min": 22,
             "port_range_max": 22, "remote_group_id": big}]),
    );
    let spares_n = k.warmup + k.reps;
    let spares = std::sync::Mutex::new(vec![Value::Null; spares_n]);
    let last_member = std::sync::Mutex::new(String::new());
    on_clients(&cloud.api, members + spares_n, |api, i| {
        // Spares start in the default group only; a round adds one to the
        // big group.
        let sg = if i < members { &big } else { &default_sg };
        let nic = api
            .create(
                "/v1/nics",
                &json!({"subnet_id": subnet["id"], "security_groups": [sg],
                    "node": format!("far{}", i % remote)}),
            )
            .unwrap();
        if i >= members {
            spares.lock().unwrap()[i - members] = nic;
        } else if i == members - 1 {
            *last_member.lock().unwrap() = nic["ip"].as_str().unwrap().to_string();
        }
    });
    let plug = VifPlug::connect(&cloud.lab.node(0).unwrap().ovs().db_socket()).unwrap();
    for j in 0..2 {
        let nic = cloud
            .api
            .create(
                "/v1/nics",
                &json!({"subnet_id": subnet["id"], "node": node0, "security_groups": [servers]}),
            )
            .unwrap();
        let id = nic["id"].as_str().unwrap();
        plug.plug(&format!("srv{j}"), id).unwrap();
        cloud.wait_nic_up(id).unwrap();
    }
    let node = cloud.lab.node(0).unwrap();
    let last = last_member.into_inner().unwrap();
    flow_wait_ms(node, &sn_member(&last), true, t0);
    r.setup_s = t0.elapsed().as_secs_f64();
    let mgmt = node.ovs().mgmt_socket("br-int");
    settled_count(&mgmt, Duration::from_secs(2));
    let spares = spares.into_inner().unwrap();
    for (round, spare) in spares.iter().enumerate() {
        let ip = spare["ip"].as_str().unwrap();
        let path = format!("/v1/nics/{}", spare["id"].as_str().unwrap());
        let ip_ms = enforce_ms(node, &sn_member(ip), || {
            cloud
                .api
                .patch(&path, &json!({"security_groups": [default_sg, big]}))
                .unwrap()
                .ok("PATCH", &path)
                .unwrap();
        });
        let port = 30_000 + round;
        // The rule's flow for one member (one port: not a conjunctive
        // match, a flow per member).
        let filter = format!("{},ct_nw_proto=6,ct_tp_dst={port}", sn_member(&last));
        let rule_ms = enforce_ms(node, &filter, || {
            cloud
                .api
                .create(
                    &format!("/v1/security-groups/{servers}/rules"),
                    &json!({"direction": "ingress", "protocol": "tcp", "port_range_min": port,
                        "port_range_max": port, "remote_group_id": big}),
                )
                .unwrap();
        });
        if round >= k.warmup {
            r.ip_ms.push(ip_ms);
            r.rule_ms.push(rule_ms);
            r.poll_ms.push(poll_cost_ms(node, &filter));
            r.load.push(load_average());
        }
    }
    r.flows = settled_count(&mgmt, Duration::from_secs(2));
    r.procs = usage_of(&pids).unwrap();
    r
}

/// LSP `i` of workload 3: `p<i>` with address `10.1.x.y`.
fn w3_lsp(i: usize) -> (String, String, String) {
    let ip = format!("10.1.{}.{}", i / 250, i % 250 + 2);
    let addr = format!(
        "0a:00:00:{:02x}:{:02x}:{:02x} {ip}",
        i >> 16,
        (i >> 8) & 0xff,
        i & 0xff
    );
    (format!("p{i}"), addr, ip)
}

fn w3_ovn(k: &Knobs, members: usize, remote: usize) -> RuleChange {
    let ovn = OvnLab::start(1).unwrap();
    let pids = ovn.control_plane_pids();
    let nb = OvsdbSession::connect(&ovn.central.nb_socket(), "OVN_Northbound").unwrap();
    let node = ovn.lab.node(0).unwrap();
    let db = node.ovs().db_socket();
    let plug = VifPlug::connect(&db).unwrap();
    let node_db = OvsdbSession::connect(&db, "Open_vSwitch").unwrap();
    let (sb, far) = ovn_far_chassis(&ovn, remote);
    let mut r = RuleChange::default();
    let t0 = Instant::now();
    // The switch, the big group, the servers' group with its ACLs (as
    // Neutron writes a group whose rule has a remote group).
    let mut ops = vec![
        Operation::Insert {
            table: "Logical_Switch".into(),
            row: named_row([("name", Datum::string("w3"))]),
            uuid_name: None,
        },
        Operation::Insert {
            table: "Port_Group".into(),
            row: named_row([("name", Datum::string("pg_big"))]),
            uuid_name: None,
        },
    ];
    let acls = [
        (
            "from-lport",
            1002,
            "inport == @pg_servers && ip4".to_string(),
            "allow-related",
        ),
        (
            "to-lport",
            1002,
            "outport == @pg_servers && ip4 && ip4.src == $pg_big_ip4 && tcp && tcp.dst == 22"
                .to_string(),
            "allow-related",
        ),
        (
            "from-lport",
            1001,
            "inport == @pg_servers && ip".to_string(),
            "drop",
        ),
        (
            "to-lport",
            1001,
            "outport == @pg_servers && ip".to_string(),
            "drop",
        ),
    ];
    let mut refs = Vec::new();
    for (i, (dir, prio, m, action)) in acls.into_iter().enumerate() {
        ops.push(acl_insert(&format!("acl{i}"), dir, prio, &m, action));
        refs.push(ovsdb::Atom::NamedUuid(format!("acl{i}")));
    }
    ops.push(Operation::Insert {
        table: "Port_Group".into(),
        row: named_row([
            ("name", Datum::string("pg_servers")),
            ("acls", Datum::set(refs)),
        ]),
        uuid_name: None,
    });
    nb.transact(&ops).unwrap();
    // Members and spares in transactions of 500 ports (a CMS writes one
    // port per transaction: batching favours OVN).
    let spares_n = k.warmup + k.reps;
    let total = members + spares_n + 2;
    let mut spare_uuids = Vec::new();
    for chunk in (0..total).collect::<Vec<_>>().chunks(500) {
        let mut ops = Vec::new();
        let mut in_big = Vec::new();
        let mut servers = Vec::new();
        for &i in chunk {
            let (name, addr, _) = w3_lsp(i);
            let un = format!("l{i}");
            ops.push(Operation::Insert {
                table: "Logical_Switch_Port".into(),
                row: named_row([
                    ("name", Datum::string(name)),
                    ("addresses", Datum::set([addr.as_str()])),
                    ("port_security", Datum::set([addr.as_str()])),
                ]),
                uuid_name: Some(un.clone()),
            });
            if i < members {
                in_big.push(ovsdb::Atom::NamedUuid(un.clone()));
            } else if i >= members + spares_n {
                servers.push(ovsdb::Atom::NamedUuid(un.clone()));
            }
            ops.push(Operation::Mutate {
                table: "Logical_Switch".into(),
                conditions: by_name("w3"),
                mutations: vec![Mutation::new(
                    "ports",
                    Mutator::Insert,
                    Datum::named_uuid(un),
                )],
            });
        }
        for (pg, ports) in [("pg_big", in_big), ("pg_servers", servers)] {
            if !ports.is_empty() {
                ops.push(Operation::Mutate {
                    table: "Port_Group".into(),
                    conditions: by_name(pg),
                    mutations: vec![Mutation::new("ports", Mutator::Insert, Datum::set(ports))],
                });
            }
        }
        let res = nb.transact(&ops).unwrap();
        for (j, &i) in chunk.iter().enumerate() {
            if (members..members + spares_n).contains(&i) {
                match &res[2 * j] {
                    OpResult::Insert(u) => spare_uuids.push(*u),
                    other => panic!("insert LSP {i}: {other:?}"),
                }
            }
        }
    }
    ovn_bind(
        &ovn,
        &sb,
        (0..members + spares_n).map(|i| (w3_lsp(i).0, far[i % remote])),
    );
    for j in 0..2 {
        plug.plug(&format!("srv{j}"), &w3_lsp(members + spares_n + j).0)
            .unwrap();
    }
    for j in 0..2 {
        let port = format!("srv{j}");
        // Setup, not a measured latency: a gentler poll than POLL (a
        // 0.5 ms select loop competes with ovn-controller for the node's
        // ovsdb-server while it computes 10,000 members' flows).
        let t = Instant::now();
        while !node_db.ovn_installed(&port).unwrap() {
            assert!(t.elapsed() < READY_TIMEOUT, "{port} never became ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let last = w3_lsp(members - 1).2;
    flow_wait_ms(node, &format!("ip,nw_src={last}"), true, t0);
    r.setup_s = t0.elapsed().as_secs_f64();
    let mgmt = node.ovs().mgmt_socket("br-int");
    settled_count(&mgmt, Duration::from_secs(2));
    for (round, uuid) in spare_uuids.iter().enumerate() {
        let ip = w3_lsp(members + round).2;
        let ip_ms = enforce_ms(node, &format!("ip,nw_src={ip}"), || {
            nb.transact(&[Operation::Mutate {
                table: "Port_Group".into(),
                conditions: by_name("pg_big"),
                mutations: vec![Mutation::new("ports", Mutator::Insert, Datum::uuid(*uuid))],
            }])
            .unwrap();
        });
        let port = 30_000 + round;
        // The rule's flows for one member (conjunctive flows carry the
        // port with each address).
        let filter = format!("tcp,nw_src={last},tp_dst={port}");
        let rule_ms = enforce_ms(node, &filter, || {
            let m = format!(
                "outport == @pg_servers && ip4 && ip4.src == $pg_big_ip4 && tcp && tcp.dst == {port}"
            );
            nb.transact(&[
                acl_insert("acl", "to-lport", 1002, &m, "allow-related"),
                Operation::Mutate {
                    table: "Port_Group".into(),
                    conditions: by_name("pg_servers"),
                    mutations: vec![Mutation::new(
                        "acls",
                        Mutator::Insert,
                        Datum::named_uuid("acl"),
                    )],
                },
            ])
            .unwrap();
        });
        if round >= k.warmup {
            r.ip_ms.push(ip_ms);
            r.rule_ms.push(rule_ms);
            r.poll_ms.push(poll_cost_ms(node, &filter));
            r.load.push(load_average());
        }
    }
    r.flows = settled_count(&mgmt, Duration::from_secs(2));
    r.procs = usage_of(&pids).unwrap();
    r
}

// ------------------------------------------------ workload 4: agent restart

/// One restart of the node's control-plane process.
#[derive(Clone, Copy, Debug, Default)]
struct Restart {
    /// New process started → the system says the node's flows are
    /// complete (ms): stacknet's agent logs its first full reconcile
    /// applied; for OVN, `ovn-nbctl --wait=hv sync` issued right after the
    /// start returns (the chassis reports a new nb_cfg only once its flows
    /// for it are in OVS).
    complete_ms: f64,
    /// New process started → the sampled flow count back at its value
    /// before the restart, when it fell (ms; 0 when it never fell).
    restored_ms: f64,
    /// Flows before the restart, and the lowest count sampled (every 20 ms)
    /// from the stop on.
    flows: u64,
    lowest: u64,
    /// Pings (every 10 ms, VM a → VM b on the node) sent, and lost: a
    /// request unanswered while a later one got its answer.
    sent: u32,
    lost: u32,
    load: f64,
}

fn workload4(k: &Knobs, out: &mut Out) {
    let groups = k.size("VS_OVN_RESTART_GROUPS", 7, 7);
    let rules = k.size("VS_OVN_RESTART_RULES", 1_000, 100);
    println!(
        "\nworkload 4: two VMs on the node, {groups} groups x {rules} ingress rules (TCP 1-65535 \
         from a /32 each) on both, plus their default group; the node's agent / ovn-controller \
         restarted (SIGTERM, started again) while a pings b every 10 ms"
    );
    let mut res: BTreeMap<String, (Vec<Restart>, f64)> = BTreeMap::new();
    for sys in &k.systems {
        let mut setup = 0.0;
        let mut on_round = |round: usize, r: Restart| {
            println!(
                "  {:>8} {sys:>8}: complete {:8.1} ms, count restored {:8.1} ms, lowest {} of {} \
                 flows, pings {} sent {} lost, load {:.2}",
                k.tag(round),
                r.complete_ms,
                r.restored_ms,
                r.lowest,
                r.flows,
                r.sent,
                r.lost,
                r.load
            );
        };
        let all = match sys.as_str() {
            "stacknet" => w4_stacknet(k, groups, rules, &mut setup, &mut on_round),
            "ovn" => w4_ovn(k, groups, rules, &mut setup, &mut on_round),
            other => panic!("unknown system {other}"),
        };
        res.insert(sys.clone(), (all[k.warmup..].to_vec(), setup));
        out.put("workload4", w4_report(groups, rules, &res, false));
    }
    out.put("workload4", w4_report(groups, rules, &res, true));
}

fn w4_report(
    groups: usize,
    rules: usize,
    res: &BTreeMap<String, (Vec<Restart>, f64)>,
    print: bool,
) -> Value {
    let get = |sys: &str, f: &dyn Fn(&Restart) -> f64| -> Vec<f64> {
        res.get(sys)
            .map(|(rs, _)| rs.iter().map(f).collect())
            .unwrap_or_default()
    };
    let fig = |name: &str, f: &dyn Fn(&Restart) -> f64| -> Figure2 {
        (name.to_string(), get("stacknet", f), get("ovn", f))
    };
    let setup = |sys: &str| res.get(sys).map(|r| vec![r.1]).unwrap_or_default();
    let rows = vec![
        (
            "setup: first write -> ping answered (s)".to_string(),
            setup("stacknet"),
            setup("ovn"),
        ),
        fig("flows on br-int before the restart", &|r| r.flows as f64),
        fig(
            "restart -> flows complete (ms, system's own signal)",
            &|r| r.complete_ms,
        ),
        fig("restart -> flow count restored (ms, sampled)", &|r| {
            r.restored_ms
        }),
        fig("lowest flow count during the restart", &|r| r.lowest as f64),
        fig("pings lost (of ~100/s)", &|r| r.lost as f64),
        fig("load average (1 min)", &|r| r.load),
    ];
    let title = format!(
        "workload 4, {groups} x {rules} rules, {} restarts per system (SIGTERM){}",
        res.values().map(|r| r.0.len()).max().unwrap_or(0),
        wait_before_clear_ms()
            .map(|w| format!("; OVN with ovn-ofctrl-wait-before-clear={w} ms"))
            .unwrap_or_default()
    );
    json!({"workload": {"groups": groups, "rules_per_group": rules,
            "ovn_wait_before_clear_ms": wait_before_clear_ms()},
        "table": table(&title, &rows, print)})
}

/// Restarts the node's control-plane process with `restart` (which
/// returns the instant the new process started) and measures it: `done`
/// blocks until the system says the flows are complete.
fn w4_measure(
    (mut ping, out): (tests::Proc, std::path::PathBuf),
    mgmt: &std::path::Path,
    restart: impl FnOnce() -> Instant,
    done: impl FnOnce(),
) -> Restart {
    let flows = aggregate_flow_count(mgmt).unwrap();
    let sampler = FlowSampler::start(mgmt, Duration::from_millis(20));
    let origin = sampler.started();
    std::thread::sleep(Duration::from_millis(500));
    let stopped_at = origin.elapsed().as_secs_f64();
    let started = restart();
    done();
    let complete_ms = ms(started.elapsed());
    // Until the count is back and steady, then a little more traffic.
    let t = Instant::now();
    while aggregate_flow_count(mgmt).unwrap_or(0) < flows {
        assert!(
            t.elapsed() < READY_TIMEOUT,
            "flows never came back to {flows}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let samples = sampler.stop();
    tests::util::signal(ping.pid(), "INT").unwrap();
    tests::wait_until(Duration::from_secs(5), "ping to exit", || {
        !ping.is_running()
    })
    .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let sent = tests::traffic::parse_ping(&text).unwrap().transmitted;
    // Both on the sampler's clock: the count back at `flows`, minus the
    // new process's start (0 when the count never fell).
    let restored = samples.restored_after(stopped_at, flows);
    let new_at = started.duration_since(origin).as_secs_f64();
    let restored_ms = if restored == 0.0 {
        0.0
    } else {
        ((stopped_at + restored - new_at) * 1e3).max(0.0)
    };
    Restart {
        complete_ms,
        restored_ms,
        flows,
        lowest: samples.lowest_after(stopped_at),
        sent,
        lost: tests::traffic::ping_losses(&tests::traffic::ping_replies(&text)),
        load: load_average(),
    }
}

/// Starts `ping` every 10 ms from `vm` to `dst`; its output file.
fn start_ping(vm: &tests::Vm, dst: std::net::Ipv4Addr) -> (tests::Proc, std::path::PathBuf) {
    let out = vm.dir().join("ping.out");
    let ping = vm
        .netns()
        .spawn(
            "ping",
            &["ping", "-n", "-i", "0.01", "-W", "1", &dst.to_string()],
            Some(&out),
        )
        .unwrap();
    (ping, out)
}

/// The source address of rule `r` of group `g`: a distinct /32 each
/// (198.51.0.0 onwards, never a lab address that sends).
fn w4_src(g: usize, rules: usize, r: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(0xc633_0000 + (g * rules + r) as u32)
}

/// Lines of the agent's log saying a bundle went in (appended to across
/// restarts).
fn applied_lines(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("flows applied"))
        .count()
}

fn w4_stacknet(
    k: &Knobs,
    groups: usize,
    rules: usize,
    setup: &mut f64,
    on_round: &mut dyn FnMut(usize, Restart),
) -> Vec<Restart> {
    let mut cloud = Cloud::start(1).unwrap();
    let t0 = Instant::now();
    let vpc = cloud.vpc("restart", "10.40.0.0/16").unwrap();
    let sn = cloud.subnet(&vpc, "s", "10.40.1.0/24").unwrap();
    let mut sgs: Vec<Value> = (0..groups)
        .map(|g| {
            let rs: Vec<Value> = (0..rules)
                .map(|r| {
                    json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 1,
                        "port_range_max": 65535, "remote_cidr": format!("{}/32", w4_src(g, rules, r))})
                })
                .collect();
            cloud
                .api
                .create(
                    "/v1/security-groups",
                    &json!({"vpc_id": vpc["id"], "name": format!("big{g}"), "rules": rs}),
                )
                .unwrap()["id"]
                .clone()
        })
        .collect();
    sgs.push(vpc["default_security_group_id"].clone());
    let node0 = cloud.lab.node(0).unwrap().name().to_string();
    let nic = || {
        cloud
            .api
            .create(
                "/v1/nics",
                &json!({"subnet_id": sn["id"], "node": node0, "security_groups": sgs}),
            )
            .unwrap()
    };
    let (a, b) = (nic(), nic());
    cloud.vm("a", &a, &sn).unwrap();
    cloud.vm("b", &b, &sn).unwrap();
    let ip_b: std::net::Ipv4Addr = b["ip"].as_str().unwrap().parse().unwrap();
    cloud
        .lab
        .vm("a")
        .unwrap()
        .wait_ping(ip_b, READY_TIMEOUT)
        .unwrap();
    *setup = t0.elapsed().as_secs_f64();
    let mgmt = cloud.lab.node(0).unwrap().ovs().mgmt_socket("br-int");
    settled_count(&mgmt, Duration::from_secs(2));
    let log = cloud.lab.node(0).unwrap().dir().join("agent/agent.log");
    (0..k.warmup + k.reps)
        .map(|round| {
            let ping = start_ping(cloud.lab.vm("a").unwrap(), ip_b);
            let before = std::cell::Cell::new(0);
            let lab = &mut cloud.lab;
            let r = w4_measure(
                ping,
                &mgmt,
                || {
                    before.set(applied_lines(&log));
                    lab.stop_agent(0, false).unwrap();
                    let at = Instant::now();
                    lab.start_agent(0, &tests::bins::AgentSpec::default())
                        .unwrap();
                    at
                },
                || {
                    tests::wait_until(READY_TIMEOUT, "agent's first bundle", || {
                        applied_lines(&log) > before.get()
                    })
                    .unwrap()
                },
            );
            on_round(round, r);
            r
        })
        .collect()
}

/// `VS_OVN_WAIT_BEFORE_CLEAR_MS`: run workload 4's OVN restarts with
/// `external_ids:ovn-ofctrl-wait-before-clear` set to it.
fn wait_before_clear_ms() -> Option<usize> {
    std::env::var("VS_OVN_WAIT_BEFORE_CLEAR_MS")
        .ok()
        .and_then(|v| v.parse().ok())
}

fn w4_ovn(
    k: &Knobs,
    groups: usize,
    rules: usize,
    setup: &mut f64,
    on_round: &mut dyn FnMut(usize, Restart),
) -> Vec<Restart> {
    let mut ovn = OvnLab::start(1).unwrap();
    let nb = OvsdbSession::connect(&ovn.central.nb_socket(), "OVN_Northbound").unwrap();
    let t0 = Instant::now();
    let vms = [
        ("a", "0a:00:00:28:01:0a", "10.40.1.10"),
        ("b", "0a:00:00:28:01:0b", "10.40.1.11"),
    ];
    // The switch, the two ports and their group with a default group's
    // ACLs (egress allowed, ingress from the group: a pings b).
    let mut ops = Vec::new();
    let mut ports = Vec::new();
    for (name, mac, ip) in vms {
        let addr = format!("{mac} {ip}");
        ops.push(Operation::Insert {
            table: "Logical_Switch_Port".into(),
            row: named_row([
                ("name", Datum::string(name)),
                ("addresses", Datum::set([addr.as_str()])),
                ("port_security", Datum::set([addr.as_str()])),
            ]),
            uuid_name: Some(format!("lsp_{name}")),
        });
        ports.push(ovsdb::Atom::NamedUuid(format!("lsp_{name}")));
    }
    ops.push(Operation::Insert {
        table: "Logical_Switch".into(),
        row: named_row([
            ("name", Datum::string("w4")),
            ("ports", Datum::set(ports.clone())),
        ]),
        uuid_name: None,
    });
    let base = [
        (
            "from-lport",
            1002,
            "inport == @pg_big && ip4",
            "allow-related",
        ),
        (
            "to-lport",
            1002,
            "outport == @pg_big && ip4 && ip4.src == $pg_big_ip4",
            "allow-related",
        ),
        ("from-lport", 1001, "inport == @pg_big && ip", "drop"),
        ("to-lport", 1001, "outport == @pg_big && ip", "drop"),
    ];
    let mut refs = Vec::new();
    for (i, (dir, prio, m, action)) in base.into_iter().enumerate() {
        ops.push(acl_insert(&format!("acl{i}"), dir, prio, m, action));
        refs.push(ovsdb::Atom::NamedUuid(format!("acl{i}")));
    }
    ops.push(Operation::Insert {
        table: "Port_Group".into(),
        row: named_row([
            ("name", Datum::string("pg_big")),
            ("ports", Datum::set(ports)),
            ("acls", Datum::set(refs)),
        ]),
        uuid_name: None,
    });
    nb.transact(&ops).unwrap();
    // One transaction per group of rules, as a CMS writes a group.
    for g in 0..groups {
        let mut ops = Vec::new();
        let mut refs = Vec::new();
        for r in 0..rules {
            let m = format!(
                "outport == @pg_big && ip4 && ip4.src == {} && tcp && tcp.dst >= 1 && tcp.dst <= 65535",
                w4_src(g, rules, r)
            );
            ops.push(acl_insert(
                &format!("r{r}"),
                "to-lport",
                1002,
                &m,
                "allow-related",
            ));
            refs.push(ovsdb::Atom::NamedUuid(format!("r{r}")));
        }
        ops.push(Operation::Mutate {
            table: "Port_Group".into(),
            conditions: by_name("pg_big"),
            mutations: vec![Mutation::new("acls", Mutator::Insert, Datum::set(refs))],
        });
        nb.transact(&ops).unwrap();
    }
    for (name, mac, ip) in vms {
        let spec = tests::VmSpec::new(name, 0, name, mac).with_ip(ip.parse().unwrap(), 24, None);
        ovn.lab.add_vm(spec).unwrap();
    }
    let ip_b: std::net::Ipv4Addr = vms[1].2.parse().unwrap();
    ovn.lab
        .vm("a")
        .unwrap()
        .wait_ping(ip_b, READY_TIMEOUT)
        .unwrap();
    *setup = t0.elapsed().as_secs_f64();
    let mgmt = ovn.lab.node(0).unwrap().ovs().mgmt_socket("br-int");
    settled_count(&mgmt, Duration::from_secs(2));
    // OVN's own remedy for the restart gap: a new ovn-controller waits this
    // long before it clears the switch's flows, to compute its own first.
    if let Some(wait) = wait_before_clear_ms() {
        ovn.lab
            .node(0)
            .unwrap()
            .ovs()
            .vsctl(&[
                "set",
                "Open_vSwitch",
                ".",
                &format!("external_ids:ovn-ofctrl-wait-before-clear={wait}"),
            ])
            .unwrap();
    }
    (0..k.warmup + k.reps)
        .map(|round| {
            let ping = start_ping(ovn.lab.vm("a").unwrap(), ip_b);
            let (ctrl, lab, central) = (&mut ovn.controllers[0], &ovn.lab, &ovn.central);
            let r = w4_measure(
                ping,
                &mgmt,
                || ctrl.restart(lab.node(0).unwrap(), false).unwrap(),
                || {
                    central
                        .nbctl_within(READY_TIMEOUT, &["--wait=hv", "sync"])
                        .unwrap();
                },
            );
            on_round(round, r);
            r
        })
        .collect()
}
