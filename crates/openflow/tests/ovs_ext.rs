//! Conntrack, conjunctions, meters and groups against a real ovs-vswitchd
//! (netdev datapath, userspace conntrack) in a private namespace and
//! directory (`tests::OvsSandbox`): what we install reads back the same
//! through ovs-ofctl and through our own dump, and real packets go through
//! the connection tracker, the conjunctive match and the meter.

// Test helpers outside #[test] fns: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use openflow::conn::{Change, Config};
use openflow::flow::{ct_state, port, tcp_flags};
use openflow::message::*;
use openflow::meter::{self, BandStats, MeterBand, MeterConfig, MeterMod, MeterModCommand};
use openflow::{
    canonical, Action, CtNat, CtZone, Field, Flow, Match, Message, NatRange, PacketIns, Switch,
};
use tests::{require_root_and_ovs, OvsSandbox};

const BR: &str = "br0";

fn sandbox(label: &str) -> OvsSandbox {
    require_root_and_ovs().unwrap();
    let sb = OvsSandbox::start(label).unwrap();
    sb.add_bridge(BR).unwrap();
    sb.vsctl(&[
        "set",
        "bridge",
        BR,
        "protocols=OpenFlow10,OpenFlow13,OpenFlow14,OpenFlow15",
        "fail_mode=secure",
    ])
    .unwrap();
    sb
}

async fn connect(sb: &OvsSandbox) -> (Switch, PacketIns) {
    Switch::connect_unix(sb.mgmt_socket(BR), Config::default())
        .await
        .unwrap()
}

/// `ovs-ofctl dump-flows` (OpenFlow 1.4) without statistics, sorted.
fn ofctl_flows(sb: &OvsSandbox) -> Vec<String> {
    let out = sb
        .ofctl(&[
            "-O",
            "OpenFlow14",
            "--no-stats",
            "--no-names",
            "dump-flows",
            BR,
        ])
        .unwrap();
    let mut lines: Vec<String> = out
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with("OFPST_FLOW"))
        .collect();
    lines.sort();
    lines
}

fn sorted(mut v: Vec<Flow>) -> Vec<Flow> {
    v.sort_by_key(Flow::key);
    v
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn flow(table: u8, priority: u16, cookie: u64, matches: Match, actions: Vec<Action>) -> Flow {
    Flow {
        table,
        priority,
        cookie,
        matches,
        actions,
        goto_table: None,
    }
}

fn meter5() -> MeterMod {
    MeterMod {
        command: MeterModCommand::Add,
        flags: meter::flags::KBPS | meter::flags::BURST | meter::flags::STATS,
        meter_id: 5,
        bands: vec![MeterBand::Drop {
            rate: 10_000,
            burst_size: 2_000,
        }],
    }
}

/// One flow of every new kind.
fn ext_flows() -> Vec<Flow> {
    let ipv4 = || Match::new().eth_type(0x0800);
    vec![
        flow(
            0,
            100,
            0xe1,
            ipv4()
                .ip_proto(6)
                .tcp_flags(tcp_flags::SYN, tcp_flags::ACK)
                .reg(6, 9),
            vec![Action::Ct {
                commit: false,
                zone: CtZone::Field {
                    field: Field::Reg(6),
                    ofs: 0,
                },
                table: Some(1),
                nat: None,
                actions: vec![],
            }],
        ),
        Flow {
            goto_table: Some(2),
            ..flow(
                1,
                100,
                0xe2,
                ipv4().ct_state(ct_state::TRK | ct_state::NEW, ct_state::INV),
                vec![Action::Ct {
                    commit: true,
                    zone: CtZone::Imm(9),
                    table: None,
                    nat: Some(CtNat::Src(NatRange {
                        addrs: Some((ip(203, 0, 113, 1), ip(203, 0, 113, 9))),
                        ports: Some((1024, 65535)),
                        persistent: true,
                        hash: false,
                        random: true,
                    })),
                    actions: vec![
                        Action::SetField {
                            field: Field::CtMark,
                            value: 5,
                        },
                        Action::SetField {
                            field: Field::CtLabel,
                            value: 1 << 64,
                        },
                    ],
                }],
            )
        },
        flow(
            1,
            90,
            0xe3,
            ipv4()
                .ct_state(ct_state::TRK | ct_state::EST, 0)
                .ct_zone(9)
                .ct_mark(5, 0xff)
                .ct_label(1 << 64, 1 << 64),
            vec![Action::Ct {
                commit: false,
                zone: CtZone::Imm(9),
                table: Some(2),
                nat: Some(CtNat::Existing),
                actions: vec![],
            }],
        ),
        flow(
            1,
            80,
            0xe4,
            ipv4().ct_state(ct_state::TRK | ct_state::INV, 0),
            vec![Action::CtClear, Action::Resubmit { table: 5 }],
        ),
        flow(
            2,
            2000,
            0xe5,
            ipv4().ipv4_src_prefix(ip(10, 1, 0, 0), 16),
            vec![Action::Conjunction {
                id: 100,
                clause: 0,
                n_clauses: 2,
            }],
        ),
        flow(
            2,
            2000,
            0xe5,
            ipv4().ip_proto(6).tcp_dst(443),
            vec![Action::Conjunction {
                id: 100,
                clause: 1,
                n_clauses: 2,
            }],
        ),
        Flow {
            goto_table: Some(3),
            ..flow(2, 2000, 0xe6, ipv4().conj_id(100), vec![])
        },
        flow(
            3,
            10,
            0xe7,
            ipv4()
                .ct_state(ct_state::TRK, ct_state::INV)
                .ct_nw_proto(6)
                .ct_nw_src(ip(10, 1, 0, 1))
                .ct_nw_dst(ip(10, 2, 0, 1))
                .ct_tp_src(1234)
                .ct_tp_dst(443),
            vec![Action::Output(1)],
        ),
        flow(
            3,
            9,
            0xe8,
            ipv4().ip_proto(1).icmp_type(8).icmp_code(0),
            vec![Action::Meter(5), Action::Output(1)],
        ),
    ]
}

fn ext_flows_text() -> Vec<String> {
    let mut v: Vec<String> = [
        "cookie=0xe1, priority=100,tcp,reg6=0x9,tcp_flags=+syn-ack \
         actions=ct(table=1,zone=NXM_NX_REG6[0..15])",
        "cookie=0xe2, table=1, priority=100,ct_state=+new-inv+trk,ip \
         actions=ct(commit,zone=9,nat(src=203.0.113.1-203.0.113.9:1024-65535,persistent,random),\
         exec(set_field:0x5->ct_mark,set_field:0x10000000000000000->ct_label)),goto_table:2",
        "cookie=0xe3, table=1, priority=90,ct_state=+est+trk,ct_zone=9,ct_mark=0x5/0xff,\
         ct_label=0x10000000000000000/0x10000000000000000,ip \
         actions=ct(table=2,zone=9,nat)",
        "cookie=0xe4, table=1, priority=80,ct_state=+inv+trk,ip actions=ct_clear,resubmit(,5)",
        "cookie=0xe5, table=2, priority=2000,ip,nw_src=10.1.0.0/16 actions=conjunction(100,1/2)",
        "cookie=0xe5, table=2, priority=2000,tcp,tp_dst=443 actions=conjunction(100,2/2)",
        "cookie=0xe6, table=2, priority=2000,conj_id=100,ip actions=goto_table:3",
        "cookie=0xe7, table=3, priority=10,ct_state=-inv+trk,ct_nw_src=10.1.0.1,\
         ct_nw_dst=10.2.0.1,ct_nw_proto=6,ct_tp_src=1234,ct_tp_dst=443,ip actions=output:1",
        "cookie=0xe8, table=3, priority=9,icmp,icmp_type=8,icmp_code=0 \
         actions=meter:5,output:1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conntrack_conjunction_and_meter_flows_install_and_read_back() {
    let sb = sandbox("oxi");
    let (sw, _pins) = connect(&sb).await;

    // A flow may only name a meter that exists.
    let err = sw
        .apply_bundle(vec![Change::Add(ext_flows().pop().unwrap())])
        .await
        .unwrap_err();
    match &err {
        openflow::Error::Bundle { error, change } => {
            assert_eq!(error.name(), Some("OFPMMFC_INVALID_METER"), "{err}");
            assert_eq!(*change, Some(0));
        }
        e => panic!("unexpected {e}"),
    }
    sw.send_checked(Message::MeterMod(meter5())).await.unwrap();
    let meters = sb.ofctl(&["-O", "OpenFlow14", "dump-meters", BR]).unwrap();
    assert!(
        meters.contains("meter=5 kbps burst stats bands=\ntype=drop rate=10000 burst_size=2000"),
        "{meters}"
    );
    assert_eq!(
        sw.meter_configs(meter::OFPM_ALL).await.unwrap(),
        vec![MeterConfig {
            flags: meter5().flags,
            meter_id: 5,
            bands: meter5().bands,
        }]
    );

    sw.apply_bundle(ext_flows().into_iter().map(Change::Add).collect())
        .await
        .unwrap();
    assert_eq!(ofctl_flows(&sb), ext_flows_text());
    let dumped: Vec<Flow> = sw
        .dump_flows(FlowStatsRequest::default())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.flow)
        .collect();
    assert_eq!(
        sorted(dumped),
        sorted(ext_flows().iter().map(canonical).collect())
    );

    // Modify the meter, then delete it: OVS removes the flow using it.
    sw.send_checked(Message::MeterMod(MeterMod {
        command: MeterModCommand::Modify,
        flags: meter::flags::PKTPS,
        meter_id: 5,
        bands: vec![MeterBand::Drop {
            rate: 100,
            burst_size: 0,
        }],
    }))
    .await
    .unwrap();
    let cfg = sw.meter_configs(5).await.unwrap();
    assert_eq!(cfg.len(), 1);
    assert_eq!(cfg[0].flags, meter::flags::PKTPS);
    sw.send_checked(Message::MeterMod(MeterMod {
        command: MeterModCommand::Delete,
        flags: 0,
        meter_id: 5,
        bands: vec![],
    }))
    .await
    .unwrap();
    assert!(sw.meter_configs(meter::OFPM_ALL).await.unwrap().is_empty());
    let mut want = ext_flows_text();
    want.retain(|l| !l.starts_with("cookie=0xe8"));
    assert_eq!(ofctl_flows(&sb), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_and_fast_failover_groups_with_ct_buckets() {
    let sb = sandbox("oxg");
    let (sw, _pins) = connect(&sb).await;
    let backend = |d: u8, w: u16| Bucket {
        weight: w,
        watch_port: port::ANY,
        watch_group: OFPG_ANY,
        actions: vec![Action::Ct {
            commit: true,
            zone: CtZone::Imm(7),
            table: Some(45),
            nat: Some(CtNat::Dst(NatRange::addr_port(ip(10, 0, 2, d), 8080))),
            actions: vec![],
        }],
    };
    sw.send_checked(Message::GroupMod(GroupMod {
        command: GroupModCommand::Add,
        group_type: GroupType::Select,
        group_id: 30,
        buckets: vec![backend(1, 100), backend(2, 50)],
    }))
    .await
    .unwrap();
    let watch = |p: u32| Bucket {
        weight: 0,
        watch_port: p,
        watch_group: OFPG_ANY,
        actions: vec![Action::Output(p)],
    };
    sw.send_checked(Message::GroupMod(GroupMod {
        command: GroupModCommand::Add,
        group_type: GroupType::FastFailover,
        group_id: 31,
        buckets: vec![watch(1), watch(2)],
    }))
    .await
    .unwrap();
    let groups = sb
        .ofctl(&["-O", "OpenFlow14", "--no-names", "dump-groups", BR])
        .unwrap();
    assert!(
        groups.contains(
            "group_id=30,type=select,\
             bucket=weight:100,actions=ct(commit,table=45,zone=7,nat(dst=10.0.2.1:8080)),\
             bucket=weight:50,actions=ct(commit,table=45,zone=7,nat(dst=10.0.2.2:8080))"
        ),
        "{groups}"
    );
    assert!(
        groups.contains(
            "group_id=31,type=ff,bucket=watch_port:1,actions=output:1,\
             bucket=watch_port:2,actions=output:2"
        ),
        "{groups}"
    );
    // A flow using the select group installs (the load-balancer pattern).
    sw.apply_bundle(vec![Change::Add(flow(
        0,
        10,
        0x30,
        Match::new()
            .eth_type(0x0800)
            .ip_proto(6)
            .ipv4_dst(ip(198, 51, 100, 10))
            .tcp_dst(80),
        vec![Action::Group(30)],
    ))])
    .await
    .unwrap();
    assert_eq!(
        ofctl_flows(&sb),
        vec!["cookie=0x30, priority=10,tcp,nw_dst=198.51.100.10,tp_dst=80 actions=group:30"]
    );
    // Deleting the group takes the flow with it.
    sw.send_checked(Message::GroupMod(GroupMod {
        command: GroupModCommand::Delete,
        group_type: GroupType::All,
        group_id: 30,
        buckets: vec![],
    }))
    .await
    .unwrap();
    assert!(ofctl_flows(&sb).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_change_atomically_with_their_flows() {
    let sb = sandbox("oxb");
    let (sw, _pins) = connect(&sb).await;
    let group = |id: u32, out: u32| GroupMod {
        command: GroupModCommand::Add,
        group_type: GroupType::FastFailover,
        group_id: id,
        buckets: vec![Bucket {
            weight: 0,
            watch_port: out,
            watch_group: OFPG_ANY,
            actions: vec![Action::Output(out)],
        }],
    };
    let user = |id: u32, prio: u16| {
        flow(
            0,
            prio,
            0x40,
            Match::new().reg(1, id),
            vec![Action::Group(id)],
        )
    };
    // The group and the flow that uses it, in one bundle.
    sw.apply_bundle(vec![Change::Group(group(40, 1)), Change::Add(user(40, 10))])
        .await
        .unwrap();
    let groups = || {
        sb.ofctl(&["-O", "OpenFlow14", "--no-names", "dump-groups", BR])
            .unwrap()
    };
    assert!(groups().contains("group_id=40,type=ff"), "{}", groups());
    assert_eq!(
        ofctl_flows(&sb),
        vec!["cookie=0x40, priority=10,reg1=0x28 actions=group:40"]
    );

    // A bundle whose last change fails leaves the group it added out too.
    let err = sw
        .apply_bundle(vec![
            Change::Group(group(41, 2)),
            Change::Add(user(41, 11)),
            Change::Add(Flow {
                goto_table: Some(0),
                ..flow(3, 1, 0x41, Match::new(), vec![])
            }),
        ])
        .await
        .unwrap_err();
    match &err {
        openflow::Error::Bundle { change, .. } => assert_eq!(*change, Some(2), "{err}"),
        e => panic!("unexpected {e}"),
    }
    assert!(!groups().contains("group_id=41"), "{}", groups());

    // Modify the group and delete the flow, then delete the group.
    sw.apply_bundle(vec![
        Change::Group(GroupMod {
            command: GroupModCommand::Modify,
            ..group(40, 3)
        }),
        Change::DeleteStrict(user(40, 10).key()),
        Change::Group(GroupMod {
            command: GroupModCommand::Delete,
            buckets: vec![],
            ..group(40, 0)
        }),
    ])
    .await
    .unwrap();
    assert!(!groups().contains("group_id=40"), "{}", groups());
    assert!(ofctl_flows(&sb).is_empty());
}

// ------------------------------------------------------------ packets

/// The Internet checksum of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet/IPv4/TCP frame with correct checksums (the userspace
/// connection tracker marks packets with bad ones invalid).
fn tcp_frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&1000u32.to_be_bytes());
    tcp.extend_from_slice(&0u32.to_be_bytes());
    tcp.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6, 0, tcp.len() as u8]);
    pseudo.extend_from_slice(&tcp);
    let c = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());

    let mut iph = vec![
        0x45,
        0,
        0,
        (20 + tcp.len()) as u8,
        0,
        1,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ];
    iph.extend_from_slice(&src.octets());
    iph.extend_from_slice(&dst.octets());
    let c = checksum(&iph);
    iph[10..12].copy_from_slice(&c.to_be_bytes());

    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&iph);
    f.extend_from_slice(&tcp);
    f
}

const SYN: u8 = 0x02;

async fn send(sw: &Switch, frame: Vec<u8>) {
    sw.packet_out(PacketOut::new(
        port::CONTROLLER,
        vec![Action::Output(port::TABLE)],
        frame,
    ))
    .await
    .unwrap();
}

async fn next_pin(pins: &mut PacketIns) -> PacketIn {
    tokio::time::timeout(Duration::from_secs(10), pins.recv())
        .await
        .unwrap()
        .unwrap()
}

fn value(p: &PacketIn, f: Field) -> Option<u128> {
    p.matches.get(f).map(|m| m.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_go_through_conntrack_and_conjunctions() {
    let sb = sandbox("oxp");
    let (sw, mut pins) = connect(&sb).await;
    let tcp = || Match::new().eth_type(0x0800).ip_proto(6);
    let to_controller = |tag: u8| Action::Controller {
        max_len: 0xffff,
        userdata: vec![tag],
    };
    sw.apply_bundle(
        vec![
            // Zone from a register, mark written at commit, recirculate.
            flow(
                0,
                100,
                1,
                tcp(),
                vec![
                    Action::SetField {
                        field: Field::Reg(6),
                        value: 9,
                    },
                    Action::Ct {
                        commit: true,
                        zone: CtZone::Field {
                            field: Field::Reg(6),
                            ofs: 0,
                        },
                        table: Some(1),
                        nat: None,
                        actions: vec![Action::SetField {
                            field: Field::CtMark,
                            value: 0x5,
                        }],
                    },
                ],
            ),
            Flow {
                goto_table: Some(2),
                ..flow(
                    1,
                    100,
                    2,
                    tcp()
                        .ct_state(ct_state::TRK | ct_state::NEW, ct_state::INV)
                        .ct_zone(9)
                        .ct_mark(5, 0xffff_ffff),
                    vec![],
                )
            },
            flow(1, 1, 3, Match::new(), vec![to_controller(0xee)]),
            // Source in 10.1.0.0/16 AND port 443 or 8443.
            flow(
                2,
                50,
                4,
                tcp().ipv4_src_prefix(ip(10, 1, 0, 0), 16),
                vec![Action::Conjunction {
                    id: 7,
                    clause: 0,
                    n_clauses: 2,
                }],
            ),
            flow(
                2,
                50,
                4,
                tcp().tcp_dst(443),
                vec![Action::Conjunction {
                    id: 7,
                    clause: 1,
                    n_clauses: 2,
                }],
            ),
            flow(
                2,
                50,
                4,
                tcp().tcp_dst(8443),
                vec![Action::Conjunction {
                    id: 7,
                    clause: 1,
                    n_clauses: 2,
                }],
            ),
            flow(2, 50, 5, tcp().conj_id(7), vec![to_controller(7)]),
            flow(
                2,
                1,
                6,
                Match::new(),
                vec![Action::CtClear, to_controller(2)],
            ),
        ]
        .into_iter()
        .map(Change::Add)
        .collect(),
    )
    .await
    .unwrap();

    // Both clauses match: the conjunction's flow sees the tracked packet.
    send(
        &sw,
        tcp_frame(ip(10, 1, 0, 1), ip(10, 2, 0, 1), 1234, 443, SYN),
    )
    .await;
    let p = next_pin(&mut pins).await;
    assert_eq!(p.userdata, vec![7], "{p:?}");
    assert_eq!(p.table_id, 2);
    assert_eq!(
        value(&p, Field::CtState),
        Some(u128::from(ct_state::TRK | ct_state::NEW))
    );
    assert_eq!(value(&p, Field::CtZone), Some(9));
    assert_eq!(value(&p, Field::CtMark), Some(5));
    assert_eq!(value(&p, Field::ConjId), None, "conj_id is not metadata");
    assert_eq!(
        value(&p, Field::CtNwSrc),
        Some(u32::from(ip(10, 1, 0, 1)).into())
    );
    assert_eq!(value(&p, Field::CtTpDst), Some(443));

    send(
        &sw,
        tcp_frame(ip(10, 1, 0, 2), ip(10, 2, 0, 1), 1235, 8443, SYN),
    )
    .await;
    assert_eq!(next_pin(&mut pins).await.userdata, vec![7]);

    // Only one clause (source outside 10.1/16): no conjunction. ct_clear
    // before the packet-in wipes the conntrack fields.
    send(
        &sw,
        tcp_frame(ip(10, 9, 0, 1), ip(10, 2, 0, 1), 1236, 443, SYN),
    )
    .await;
    let p = next_pin(&mut pins).await;
    assert_eq!(p.userdata, vec![2], "{p:?}");
    assert_eq!(value(&p, Field::CtState), None, "{p:?}");
    assert_eq!(value(&p, Field::CtMark), None, "{p:?}");

    // A bad checksum makes the packet invalid: it misses table 1's +new.
    let mut bad = tcp_frame(ip(10, 1, 0, 3), ip(10, 2, 0, 1), 1237, 443, SYN);
    bad[24] ^= 0xff;
    send(&sw, bad).await;
    let p = next_pin(&mut pins).await;
    assert_eq!(p.userdata, vec![0xee], "{p:?}");
    let st = value(&p, Field::CtState).unwrap() as u32;
    assert_eq!(
        st & (ct_state::TRK | ct_state::INV),
        ct_state::TRK | ct_state::INV
    );

    // Conntrack holds the committed connections, with their mark.
    let conns = sb.appctl(&["dpctl/dump-conntrack", "zone=9"]).unwrap();
    assert!(
        conns.contains("src=10.1.0.1,dst=10.2.0.1,sport=1234,dport=443")
            && conns.contains("mark=5"),
        "{conns}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_drops_what_exceeds_its_rate() {
    let sb = sandbox("oxm");
    let (sw, _pins) = connect(&sb).await;
    sw.send_checked(Message::MeterMod(MeterMod {
        command: MeterModCommand::Add,
        flags: meter::flags::PKTPS | meter::flags::BURST | meter::flags::STATS,
        meter_id: 9,
        bands: vec![MeterBand::Drop {
            rate: 1,
            burst_size: 1,
        }],
    }))
    .await
    .unwrap();
    sw.apply_bundle(vec![Change::Add(flow(
        0,
        10,
        9,
        Match::new().eth_type(0x0800),
        vec![Action::Meter(9), Action::Output(port::LOCAL)],
    ))])
    .await
    .unwrap();
    let n = 20u64;
    let start = std::time::Instant::now();
    for i in 0..n {
        send(
            &sw,
            tcp_frame(ip(10, 1, 0, 1), ip(10, 2, 0, 1), 2000 + i as u16, 80, SYN),
        )
        .await;
    }
    let stats = sw.meter_stats(9).await.unwrap();
    assert_eq!(stats.len(), 1, "{stats:?}");
    let s = &stats[0];
    assert_eq!(s.meter_id, 9);
    assert_eq!(s.flow_count, 1);
    assert_eq!(s.packet_in_count, n, "{s:?}");
    assert_eq!(s.bands.len(), 1);
    let BandStats { packet_count, .. } = s.bands[0];
    // 1 packet/s with a burst of 1: of a train sent in `elapsed`, about
    // 1 + elapsed seconds' worth pass, the rest is dropped.
    let passed = n - packet_count.min(n);
    let elapsed = start.elapsed().as_secs();
    assert!(passed >= 1 && passed <= 2 + elapsed, "{s:?} in {elapsed}s");
    let text = sb
        .ofctl(&["-O", "OpenFlow14", "meter-stats", BR, "meter=9"])
        .unwrap();
    assert!(
        text.contains(&format!("packet_in_count:{n}"))
            && text.contains(&format!("packet_count:{packet_count}")),
        "{text}"
    );
}

/// Prints what ovs-vswitchd sends back for meters and a conntrack flow, as
/// hex, for tests/captured.rs (`cargo test -p openflow --test ovs_ext --
/// --ignored --nocapture print_switch_ext_bytes`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn print_switch_ext_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sb = sandbox("oxx");
    for args in [
        vec![
            "add-meter",
            BR,
            "meter=5,kbps,burst,stats,bands=type=drop,rate=10000,burst_size=2000",
        ],
        vec![
            "add-flow",
            BR,
            "table=3,priority=9,cookie=0xe8,icmp,icmp_type=8,actions=meter:5,\
             ct(commit,zone=9,nat(src=203.0.113.1)),ct_clear",
        ],
    ] {
        sb.ofctl(&args).unwrap();
    }
    let mut s = tokio::net::UnixStream::connect(sb.mgmt_socket(BR))
        .await
        .unwrap();
    let reqs = [
        (1, Message::Hello(Hello::ours())),
        (
            2,
            Message::MultipartRequest(MultipartRequest {
                flags: 0,
                body: MultipartRequestBody::MeterConfig(meter::OFPM_ALL),
            }),
        ),
        (
            3,
            Message::MultipartRequest(MultipartRequest {
                flags: 0,
                body: MultipartRequestBody::MeterStats(5),
            }),
        ),
        (
            4,
            Message::MultipartRequest(MultipartRequest {
                flags: 0,
                body: MultipartRequestBody::Flow(FlowStatsRequest {
                    table_id: 3,
                    ..FlowStatsRequest::default()
                }),
            }),
        ),
        (5, Message::BarrierRequest),
    ];
    for (xid, m) in reqs {
        s.write_all(&m.to_bytes(xid).unwrap()).await.unwrap();
    }
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let mut rest = &buf[..];
    while let Ok(Some(len)) = openflow::wire::frame_len(rest) {
        let hex: String = rest[..len].iter().map(|b| format!("{b:02x}")).collect();
        println!("{hex}");
        rest = &rest[len..];
    }
}
