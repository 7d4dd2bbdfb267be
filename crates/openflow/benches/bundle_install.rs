//! 100,000 flows into an empty bridge through our bundle, versus
//! `ovs-ofctl -O OpenFlow14 --bundle add-flows` of the same flows (text),
//! each into a fresh bridge of the same ovs-vswitchd; then the latency of a
//! NIC-sized change (10 flows) applied on top of 100,000.
//!
//! `cargo bench -p openflow --bench bundle_install` (needs root and OVS).
//! `BENCH_FLOWS` (default 100000) and `BENCH_ROUNDS` (default 2) tune it.

// A benchmark binary: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use openflow::conn::{Change, Config};
use openflow::flow::mac_bits;
use openflow::{Action, Field, Flow, Match, Switch};
use proto::Mac;
use tests::OvsSandbox;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mac(i: u32) -> Mac {
    let b = i.to_be_bytes();
    Mac([0xfa, 0x16, 0x3e, b[1], b[2], b[3]])
}

fn ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff))
}

/// Realistic flows: half L2 delivery (VPC metadata + destination MAC → set
/// tunnel, output), half L3 routing (VPC metadata + IPv4 destination →
/// TTL, MAC rewrite, next table). All distinct.
fn flow(i: u32, cookie: u64) -> Flow {
    let vpc = u64::from(i % 1000) + 1;
    if i & 1 == 0 {
        Flow {
            table: 10,
            priority: 100,
            cookie,
            matches: Match::new().metadata(vpc).eth_dst(mac(i)),
            actions: vec![
                Action::SetField {
                    field: Field::TunnelId,
                    value: vpc.into(),
                },
                Action::SetField {
                    field: Field::TunIpv4Dst,
                    value: u32::from(Ipv4Addr::new(192, 0, 2, (i % 200) as u8 + 1)).into(),
                },
                Action::Output(1 + i % 4),
            ],
            goto_table: None,
        }
    } else {
        Flow {
            table: 20,
            priority: 200,
            cookie,
            matches: Match::new().metadata(vpc).eth_type(0x0800).ipv4_dst(ip(i)),
            actions: vec![
                Action::DecTtl,
                Action::SetField {
                    field: Field::EthSrc,
                    value: mac_bits(Mac([0xfa, 0x16, 0x3e, 0xff, 0xff, 0xfe])),
                },
                Action::SetField {
                    field: Field::EthDst,
                    value: mac_bits(mac(i)),
                },
            ],
            goto_table: Some(30),
        }
    }
}

/// The same flow as ovs-ofctl text.
fn flow_text(f: &Flow) -> String {
    let mut s = format!(
        "table={},priority={},cookie={:#x}",
        f.table, f.priority, f.cookie
    );
    for m in f.matches.fields() {
        let v = m.value;
        match m.field {
            Field::Metadata => s += &format!(",metadata={v:#x}"),
            Field::EthType => s += &format!(",dl_type={v:#06x}"),
            Field::EthDst => s += &format!(",dl_dst={}", mac_text(v)),
            Field::Ipv4Dst => s += &format!(",nw_dst={}", Ipv4Addr::from(v as u32)),
            other => panic!("bench text for {other:?}"),
        }
    }
    s += ",actions=";
    let acts: Vec<String> = f
        .actions
        .iter()
        .map(|a| match a {
            Action::SetField {
                field: Field::TunnelId,
                value,
            } => format!("set_field:{value:#x}->tun_id"),
            Action::SetField {
                field: Field::TunIpv4Dst,
                value,
            } => format!("set_field:{}->tun_dst", Ipv4Addr::from(*value as u32)),
            Action::SetField {
                field: Field::EthSrc,
                value,
            } => format!("set_field:{}->eth_src", mac_text(*value)),
            Action::SetField {
                field: Field::EthDst,
                value,
            } => format!("set_field:{}->eth_dst", mac_text(*value)),
            Action::Output(p) => format!("output:{p}"),
            Action::DecTtl => "dec_ttl".to_string(),
            other => panic!("bench text for {other:?}"),
        })
        .collect();
    s += &acts.join(",");
    if let Some(t) = f.goto_table {
        s += &format!(",goto_table:{t}");
    }
    s
}

fn mac_text(v: u128) -> String {
    let b = v.to_be_bytes();
    b[10..]
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn flow_count(sb: &OvsSandbox, br: &str) -> usize {
    let out = sb.ofctl(&["dump-aggregate", br]).unwrap();
    out.split("flow_count=")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no flow_count in {out}"))
}

fn fresh_bridge(sb: &OvsSandbox, br: &str) {
    sb.add_bridge(br).unwrap();
    sb.vsctl(&[
        "set",
        "bridge",
        br,
        "protocols=OpenFlow10,OpenFlow13,OpenFlow14,OpenFlow15",
        "fail_mode=secure",
    ])
    .unwrap();
    assert_eq!(flow_count(sb, br), 0);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // binary without it, and must not spend minutes here.
    if !std::env::args().any(|a| a == "--bench") {
        println!("bundle_install: run with `cargo bench`");
        return;
    }
    tests::require_root_and_ovs().unwrap();
    let n = env_num("BENCH_FLOWS", 100_000) as u32;
    let rounds = env_num("BENCH_ROUNDS", 2);
    let flows: Vec<Flow> = (0..n).map(|i| flow(i, 0x1000)).collect();
    let sb = OvsSandbox::start("ofbench").unwrap();
    let file = sb.dir().join("flows.txt");
    let text: String = flows.iter().map(|f| flow_text(f) + "\n").collect();
    std::fs::write(&file, text).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut ours = Vec::new();
    let mut ofctl = Vec::new();
    for round in 0..rounds {
        // ovs-ofctl: process start, text parse, connect, bundle.
        let br = format!("bo{round}");
        fresh_bridge(&sb, &br);
        let t = Instant::now();
        sb.ofctl(&["--bundle", "add-flows", &br, file.to_str().unwrap()])
            .unwrap();
        let dt = t.elapsed();
        assert_eq!(flow_count(&sb, &br), n as usize);
        sb.vsctl(&["del-br", &br]).unwrap();
        ofctl.push(dt);

        // Ours: connect, encode, bundle.
        let br = format!("bs{round}");
        fresh_bridge(&sb, &br);
        let changes: Vec<Change> = flows.iter().cloned().map(Change::Add).collect();
        let t = Instant::now();
        rt.block_on(async {
            let (sw, _pins) = Switch::connect_unix(sb.mgmt_socket(&br), Config::default())
                .await
                .unwrap();
            sw.apply_bundle(changes).await.unwrap();
        });
        let dt = t.elapsed();
        assert_eq!(flow_count(&sb, &br), n as usize);
        ours.push(dt);
        println!(
            "round {round}: ours {:.3} s, ovs-ofctl {:.3} s",
            ours[round].as_secs_f64(),
            ofctl[round].as_secs_f64()
        );
        if round + 1 < rounds {
            sb.vsctl(&["del-br", &br]).unwrap();
        }
    }

    // A NIC's worth of change on top of the last bridge's n flows: add 10
    // flows, then remove them again, timing each bundle.
    let br = format!("bs{}", rounds - 1);
    let mut lat = Vec::new();
    rt.block_on(async {
        let (sw, _pins) = Switch::connect_unix(sb.mgmt_socket(&br), Config::default())
            .await
            .unwrap();
        for k in 0..20u32 {
            let nic: Vec<Flow> = (0..10).map(|j| flow(n + 10 * k + j, 0x2000)).collect();
            let t = Instant::now();
            sw.apply_bundle(nic.iter().cloned().map(Change::Add).collect())
                .await
                .unwrap();
            lat.push(t.elapsed());
            let t = Instant::now();
            sw.apply_bundle(nic.iter().map(|f| Change::DeleteStrict(f.key())).collect())
                .await
                .unwrap();
            lat.push(t.elapsed());
        }
    });
    assert_eq!(flow_count(&sb, &br), n as usize);

    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let (o, c) = (best(&ours), best(&ofctl));
    lat.sort();
    let median = lat[lat.len() / 2];
    let max = lat[lat.len() - 1];
    println!("flows: {n}, rounds: {rounds} (best of)");
    println!("ours (connect + bundle):     {:.3} s", o.as_secs_f64());
    println!("ovs-ofctl --bundle add-flows: {:.3} s", c.as_secs_f64());
    println!(
        "ratio ours/ovs-ofctl: {:.2} (goal <= 1.2)",
        o.as_secs_f64() / c.as_secs_f64()
    );
    println!(
        "10-flow change on {n}: median {:.2} ms, max {:.2} ms over {} bundles (goal < 5 ms)",
        median.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        lat.len()
    );
}
