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

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ovsdb::{Condition, Datum, Mutation, Mutator, OpResult, Operation, Row, Uuid};
use serde_json::{json, Value};
use tests::ovn::{
    flow_count, pid_by_cmdline, proc_usage, require_ovn, usage_of, OvnLab, OvsdbSession, ProcUsage,
};
use tests::{require_root_and_tools, Cloud, VifPlug};

const LOCAL: usize = 100;
const RULES: usize = 100;
const GROUPS: usize = 10;
/// How long a NIC may take to come up before the run is declared broken.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
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

fn main() {
    require_root_and_tools().unwrap();
    let systems = std::env::var("VS_OVN_SYSTEMS").unwrap_or_else(|_| "stacknet,ovn".into());
    let systems: Vec<&str> = systems.split(',').map(str::trim).collect();
    if systems.contains(&"ovn") {
        require_ovn().unwrap();
    }
    let nics = env_usize("VS_OVN_NICS", 1_000);
    let w = Workload {
        nics,
        local: LOCAL.min(nics),
        iters: env_usize("VS_OVN_ITERS", 200),
    };
    let warmup = env_usize("VS_OVN_WARMUP", 1);
    let reps = env_usize("VS_OVN_REPS", 5);
    println!(
        "workload 1: {} NICs ({} bound locally), 1 group of {RULES} rules over {GROUPS} remote groups, \
         {} add/delete iterations; {warmup} warm-up + {reps} rounds",
        w.nics, w.local, w.iters
    );
    let mut runs: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    for round in 0..warmup + reps {
        for &sys in &systems {
            let run = match sys {
                "stacknet" => run_stacknet(w),
                "ovn" => run_ovn(w),
                other => panic!("unknown system {other} in VS_OVN_SYSTEMS"),
            };
            let tag = if round < warmup {
                "warm-up".to_string()
            } else {
                format!("round {}", round - warmup + 1)
            };
            println!(
                "  {tag:>8} {sys:>8}: setup {:6.2} s, ready p50 {:7.2} ms p99 {:7.2} ms, \
                 CPU {:6.2} s ({:5.2} s in iterations), RSS {:7.1} MiB, {} flows",
                run.setup_s,
                pct(&run.ready_ms, 0.50),
                pct(&run.ready_ms, 0.99),
                run.cpu_s(),
                run.iter_cpu_s,
                run.rss_mib(),
                run.flows
            );
            if round >= warmup {
                runs.entry(sys).or_default().push(run);
                // Kept current after every run, so a cut-short session
                // still leaves its figures.
                write_json(&report(w, &runs, false));
            }
        }
    }
    let path = write_json(&report(w, &runs, true));
    println!("JSON written to {path}");
}

/// Writes the figures to `VS_OVN_JSON` (default `vs-ovn.json`); returns
/// the path.
fn write_json(v: &Value) -> String {
    let path = std::env::var("VS_OVN_JSON").unwrap_or_else(|_| "vs-ovn.json".into());
    std::fs::write(&path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    path
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

fn run_stacknet(w: Workload) -> Run {
    let mut cloud = Cloud::start(1).unwrap();
    let store = cloud
        .lab
        .flowctl()
        .unwrap()
        .store_path
        .display()
        .to_string();
    let agent = cloud.lab.node_mut(0).unwrap().agent().unwrap().pid();
    let pids = vec![
        ("flowctl".to_string(), pid_by_cmdline(&store).unwrap()),
        ("vswitch-agent".to_string(), agent),
    ];
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
    let body = |i: usize, bound: bool| {
        let mut b = json!({"subnet_id": subnet["id"],
            "security_groups": [servers, remote[i % GROUPS]]});
        if bound {
            b["node"] = json!(node0);
        }
        b
    };

    let started = Instant::now();
    // 8 clients, as the other lab benches preload.
    let next = AtomicUsize::new(0);
    let local_ids = std::sync::Mutex::new(vec![String::new(); w.local]);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let api = cloud.api.clone();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= w.nics {
                        return;
                    }
                    let nic = api.create("/v1/nics", &body(i, i < w.local)).unwrap();
                    if i < w.local {
                        local_ids.lock().unwrap()[i] = nic["id"].as_str().unwrap().to_string();
                    }
                }
            });
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
        let path = format!("/v1/nics/{id}");
        cloud
            .api
            .delete(&path)
            .unwrap()
            .ok("DELETE", &path)
            .unwrap();
    }
    run.iter_cpu_s = cpu_of(&pids) - cpu_before;
    let node = cloud.lab.node(0).unwrap();
    run.flows = settled_flows(node);
    run.procs = usage_of(&pids).unwrap();
    run.vswitchd_cpu_s = proc_usage(node.ovs().vswitchd_pid().unwrap())
        .unwrap()
        .cpu_s;
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

    let started = Instant::now();
    ovn_setup_model(&nb);
    for i in 0..w.nics {
        ovn_add_port(&nb, &format!("p{i}"), &ovn_addr(i), i % GROUPS);
    }
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
        ovn_delete_port(&nb, uuid, i % GROUPS);
    }
    run.iter_cpu_s = cpu_of(&pids) - cpu_before;
    run.flows = settled_flows(node);
    run.procs = usage_of(&pids).unwrap();
    run.vswitchd_cpu_s = proc_usage(node.ovs().vswitchd_pid().unwrap())
        .unwrap()
        .cpu_s;
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
        ("OpenFlow flows on br-int", |rs| {
            rs.iter().map(|r| r.flows as f64).collect()
        }),
        ("ovs-vswitchd CPU, not counted (s)", |rs| {
            rs.iter().map(|r| r.vswitchd_cpu_s).collect()
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
    for (name, f) in &figures {
        let (a, a95) = spread(&f(get("stacknet")));
        let (b, b95) = spread(&f(get("ovn")));
        row(name, a, b, Some(a95), Some(b95));
    }
    // Per process: median over rounds.
    out!();
    out!(
        "{:<28} {:>12} {:>16}",
        "process (median of rounds)",
        "CPU (s)",
        "peak RSS (MiB)"
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
            out!(
                "{:<28} {:>12.2} {:>16.1}",
                format!("{sys}: {n}"),
                pct(&cpu, 0.5),
                pct(&rss, 0.5)
            );
            procs.insert(
                format!("{sys}/{n}"),
                json!({"cpu_s": cpu, "peak_rss_mib": rss}),
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
                        "ready_ms": r.ready_ms, "e2e_ms": r.e2e_ms, "write_ms": r.write_ms})
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
