//! Compilation cost at Set scale: 100 VPCs × 100 NICs over 45 nodes.
//!
//! `cargo bench -p flowctl` prints:
//! - full: decoding the listing, and compiling every node's state;
//! - incremental: applying one NIC add (a watch event) at 10,000 NICs.
//!
//! Two placements: "spread" puts each NIC on a random node (every node
//! carries every VPC: the worst case, each state holds all 10,000 NICs);
//! "packed" keeps each VPC on 5 nodes.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use api::model::{self, keys};
use api::store::{EventKind, KeyValue, WatchEvent};
use flowctl::compile::{compile_node, Compiler, Model};
use proto::Mac;

const VPCS: usize = 100;
const NICS_PER_VPC: usize = 100;
const NODES: usize = 45;

fn kv(key: String, value: Vec<u8>, rev: u64) -> KeyValue {
    KeyValue {
        key,
        value,
        create_revision: rev,
        mod_revision: rev,
        version: 1,
        lease: 0,
    }
}

fn nic_record(v: usize, i: usize, node: usize) -> (String, Vec<u8>) {
    let id = format!("nic-{v:03}-{i:03}");
    let n = model::Nic {
        id: id.clone(),
        name: id.clone(),
        subnet_id: format!("subnet-{v:03}"),
        vpc_id: format!("vpc-{v:03}"),
        mac: Mac([2, 0, 0, v as u8, (i >> 8) as u8, i as u8]),
        ip: Ipv4Addr::new(10, v as u8, (i >> 8) as u8, (i & 0xff) as u8 + 10),
        node: Some(format!("node-{node:02}")),
        interface_id: id.clone(),
        port_security: true,
        security_groups: vec![],
        allowed_address_pairs: vec![],
        created_at: "2024-01-01T00:00:00Z".into(),
    };
    (keys::nic(&id), serde_json::to_vec(&n).unwrap_or_default())
}

/// A small deterministic generator (no dependency, same numbers each run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

fn world(place: impl Fn(usize, usize, &mut Lcg) -> usize) -> Vec<KeyValue> {
    let mut rng = Lcg(7);
    let mut out = Vec::new();
    let mut rev = 1;
    for n in 0..NODES {
        let node = model::Node {
            name: format!("node-{n:02}"),
            set: "set-1".into(),
            underlay_ip: Ipv4Addr::new(192, 0, 2, n as u8 + 1),
            roles: vec![model::NodeRole::Compute],
            drained: false,
            gateway_priority: 0,
            created_at: "2024-01-01T00:00:00Z".into(),
        };
        out.push(kv(
            keys::node(&node.name),
            serde_json::to_vec(&node).unwrap_or_default(),
            rev,
        ));
        rev += 1;
    }
    for v in 0..VPCS {
        let vpc = model::Vpc {
            id: format!("vpc-{v:03}"),
            name: format!("vpc-{v:03}"),
            set: "set-1".into(),
            cidrs: vec![format!("10.{v}.0.0/16")
                .parse()
                .unwrap_or_else(|_| unreachable!())],
            vni: 1000 + v as u32,
            default_security_group_id: None,
            external_network_ids: vec![],
            created_at: "2024-01-01T00:00:00Z".into(),
        };
        out.push(kv(
            keys::vpc(&vpc.id),
            serde_json::to_vec(&vpc).unwrap_or_default(),
            rev,
        ));
        let subnet = model::Subnet {
            id: format!("subnet-{v:03}"),
            name: "s".into(),
            vpc_id: vpc.id.clone(),
            cidr: format!("10.{v}.0.0/20")
                .parse()
                .unwrap_or_else(|_| unreachable!()),
            gateway_ip: Ipv4Addr::new(10, v as u8, 0, 1),
            gateway_mac: Mac([2, 0x5e, 0, 0, 0, v as u8]),
            dns_servers: vec![Ipv4Addr::new(10, v as u8, 0, 2)],
            mtu: 1450,
            created_at: "2024-01-01T00:00:00Z".into(),
        };
        out.push(kv(
            keys::subnet(&subnet.id),
            serde_json::to_vec(&subnet).unwrap_or_default(),
            rev,
        ));
        rev += 1;
        for i in 0..NICS_PER_VPC {
            let (k, val) = nic_record(v, i, place(v, i, &mut rng));
            out.push(kv(k, val, rev));
            rev += 1;
        }
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn bench(name: &str, listing: &[KeyValue]) {
    let rev = listing.iter().map(|k| k.mod_revision).max().unwrap_or(0);
    const RUNS: usize = 5;
    let mut decode = Duration::MAX;
    let mut full = Duration::MAX;
    let mut objects = 0;
    let mut clone = Duration::MAX;
    for _ in 0..RUNS {
        let t = Instant::now();
        let model = Model::from_listing(listing, rev);
        decode = decode.min(t.elapsed());
        let t = Instant::now();
        let states: Vec<_> = (0..NODES)
            .map(|n| compile_node(&model, &format!("node-{n:02}")))
            .collect();
        full = full.min(t.elapsed());
        objects = states
            .iter()
            .map(|s| s.nics.len() + s.subnets.len() + s.peers.len())
            .sum();
        // The floor: the same objects, allocated by a plain clone.
        let t = Instant::now();
        let copies = states.clone();
        clone = clone.min(t.elapsed());
        std::hint::black_box(copies);
        std::hint::black_box(states);
    }
    println!(
        "{name}: full compile of {NODES} nodes ({} NICs, {objects} objects in all states): \
         {:.1} ms (+ {:.1} ms decoding the listing; merely cloning the result takes {:.1} ms), \
         best of {RUNS}",
        VPCS * NICS_PER_VPC,
        ms(full),
        ms(decode),
        ms(clone)
    );

    let mut c = Compiler::from_listing(listing, rev);
    const ADDS: usize = 200;
    let mut total = Duration::ZERO;
    let mut worst = Duration::ZERO;
    let mut changed = 0;
    for a in 0..ADDS {
        let v = a % VPCS;
        let (key, value) = nic_record(v, 500 + a, a % NODES);
        let ev = WatchEvent {
            kind: EventKind::Put,
            kv: kv(key, value, rev + 1 + a as u64),
        };
        let t = Instant::now();
        let out = c.apply(std::slice::from_ref(&ev));
        let d = t.elapsed();
        total += d;
        worst = worst.max(d);
        changed += out.changes.len();
    }
    println!(
        "{name}: incremental NIC add at {} NICs: {:.1} µs mean, {:.1} µs worst over {ADDS} adds \
         ({:.1} nodes changed per add)",
        VPCS * NICS_PER_VPC,
        total.as_secs_f64() * 1e6 / ADDS as f64,
        worst.as_secs_f64() * 1e6,
        changed as f64 / ADDS as f64
    );
}

fn main() {
    bench("spread", &world(|_, _, rng| rng.next(NODES)));
    bench("packed", &world(|v, i, _| (v * 5 + i % 5) % NODES));
}
