//! Against a real ovs-vswitchd (netdev datapath) in a private namespace and
//! directory (`tests::OvsSandbox`): bundles, dumps, errors, packet-in/out.

// Test helpers outside #[test] fns: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use openflow::conn::{Change, Config};
use openflow::flow::{mac_bits, port};
use openflow::message::*;
use openflow::{canonical, Action, Error, Field, Flow, FlowKey, Match, Message, Switch};
use proto::Mac;
use tests::{require_root_and_ovs, OvsSandbox};

const BR: &str = "br0";

/// A sandbox with an empty secure-mode netdev bridge that speaks 1.0-1.5.
fn sandbox(label: &str) -> OvsSandbox {
    require_root_and_ovs().unwrap();
    let sb = OvsSandbox::start(label).unwrap();
    sb.add_bridge(BR).unwrap();
    sb.vsctl(&[
        "set",
        "bridge",
        BR,
        "protocols=OpenFlow10,OpenFlow13,OpenFlow14,OpenFlow15",
        // Secure: no implicit NORMAL flow, the table starts empty.
        "fail_mode=secure",
    ])
    .unwrap();
    sb
}

async fn connect(sb: &OvsSandbox) -> (Switch, openflow::PacketIns) {
    Switch::connect_unix(sb.mgmt_socket(BR), Config::default())
        .await
        .unwrap()
}

/// `ovs-ofctl dump-flows` lines without statistics, sorted.
fn ofctl_flows(sb: &OvsSandbox) -> Vec<String> {
    let out = sb
        .ofctl(&["--no-stats", "--no-names", "dump-flows", BR])
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

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

fn flows() -> Vec<Flow> {
    vec![
        Flow {
            table: 0,
            priority: 0,
            cookie: 0xa1,
            matches: Match::new(),
            actions: vec![],
            goto_table: None,
        },
        Flow {
            table: 0,
            priority: 100,
            cookie: 0xa1,
            matches: Match::new()
                .in_port(1)
                .eth_src(mac("fa:16:3e:00:00:01"))
                .eth_type(0x0806)
                .arp_op(1)
                .arp_tpa(Ipv4Addr::new(10, 0, 0, 1)),
            actions: vec![
                Action::Move {
                    src: Field::EthSrc,
                    src_ofs: 0,
                    dst: Field::EthDst,
                    dst_ofs: 0,
                    n_bits: 48,
                },
                Action::SetField {
                    field: Field::Reg(0),
                    value: 7,
                },
                Action::Controller {
                    max_len: 0xffff,
                    userdata: vec![1, 2, 3],
                },
            ],
            goto_table: Some(10),
        },
        Flow {
            table: 10,
            priority: 200,
            cookie: 0xa2,
            matches: Match::new()
                .metadata(0x10)
                .eth_type(0x0800)
                .eth_dst(mac("fa:16:3e:00:00:02"))
                .ipv4_dst_prefix(Ipv4Addr::new(10, 0, 1, 0), 24)
                .set_masked(Field::CtState, 0x22, Some(0x22))
                .reg(3, 9),
            actions: vec![
                Action::DecTtl,
                Action::SetField {
                    field: Field::EthDst,
                    value: mac_bits(mac("fa:16:3e:00:00:03")),
                },
                Action::SetField {
                    field: Field::TunnelId,
                    value: 0x64,
                },
                Action::SetField {
                    field: Field::TunIpv4Dst,
                    value: u32::from(Ipv4Addr::new(192, 0, 2, 2)).into(),
                },
                Action::Group(5),
                Action::Resubmit { table: 20 },
                Action::Output(2),
            ],
            goto_table: None,
        },
        Flow {
            table: 20,
            priority: 50,
            cookie: 0xb0,
            matches: Match::new()
                .tunnel_id(0x64)
                .set(
                    Field::TunIpv4Src,
                    u32::from(Ipv4Addr::new(192, 0, 2, 1)).into(),
                )
                .eth_type(0x0800)
                .ip_proto(17)
                .udp_dst(67),
            actions: vec![Action::Controller {
                max_len: 128,
                userdata: vec![],
            }],
            goto_table: None,
        },
    ]
}

/// The same flows as `ovs-ofctl --no-stats dump-flows` prints them (field
/// order is OVS's, sorted like `ofctl_flows`).
fn flows_text() -> Vec<String> {
    let mut v: Vec<String> = [
        "cookie=0xa1, priority=0 actions=drop",
        "cookie=0xa1, priority=100,arp,in_port=1,dl_src=fa:16:3e:00:00:01,arp_tpa=10.0.0.1,arp_op=1 \
         actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:0x7->reg0,\
         controller(userdata=01.02.03),goto_table:10",
        "cookie=0xa2, table=10, priority=200,ct_state=+est+trk,ip,reg3=0x9,metadata=0x10,\
         dl_dst=fa:16:3e:00:00:02,nw_dst=10.0.1.0/24 actions=dec_ttl,\
         set_field:fa:16:3e:00:00:03->eth_dst,set_field:0x64->tun_id,\
         set_field:192.0.2.2->tun_dst,group:5,resubmit(,20),output:2",
        "cookie=0xb0, table=20, priority=50,udp,tun_id=0x64,tun_src=192.0.2.1,tp_dst=67 \
         actions=CONTROLLER:128",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.sort();
    v
}

fn group5() -> Message {
    Message::GroupMod(GroupMod {
        command: GroupModCommand::Add,
        group_type: GroupType::FastFailover,
        group_id: 5,
        buckets: vec![
            Bucket {
                weight: 0,
                watch_port: 1,
                watch_group: OFPG_ANY,
                actions: vec![Action::Output(1)],
            },
            Bucket {
                weight: 0,
                watch_port: 2,
                watch_group: OFPG_ANY,
                actions: vec![Action::Output(2)],
            },
        ],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_installs_exactly_and_dump_reads_back() {
    let sb = sandbox("ofb");
    let (sw, _pins) = connect(&sb).await;
    sw.send_checked(group5()).await.unwrap();
    let groups = sb.ofctl(&["dump-groups", BR]).unwrap();
    assert!(
        groups.contains("group_id=5,type=ff,bucket=watch_port:1,actions=output:1,bucket=watch_port:2,actions=output:2"),
        "{groups}"
    );

    sw.apply_bundle(flows().into_iter().map(Change::Add).collect())
        .await
        .unwrap();
    assert_eq!(ofctl_flows(&sb), flows_text());

    // Our dump decodes back to what we installed (in canonical form).
    let dumped: Vec<Flow> = sw
        .dump_flows(FlowStatsRequest::default())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.flow)
        .collect();
    assert_eq!(
        sorted(dumped),
        sorted(flows().iter().map(canonical).collect())
    );

    // Cookie filter: only 0xa? flows.
    let mine = sw
        .dump_flows(FlowStatsRequest {
            cookie: 0xa0,
            cookie_mask: 0xf0,
            ..FlowStatsRequest::default()
        })
        .await
        .unwrap();
    let mut cookies: Vec<u64> = mine.iter().map(|s| s.flow.cookie).collect();
    cookies.sort();
    assert_eq!(cookies, vec![0xa1, 0xa1, 0xa2]);

    // Modify, delete and add in one bundle.
    let f = flows();
    let modified = Flow {
        actions: vec![Action::Output(port::LOCAL)],
        ..f[3].clone()
    };
    let added = Flow {
        table: 20,
        priority: 40,
        cookie: 0xb1,
        matches: Match::new()
            .eth_type(0x0800)
            .ipv4_src(Ipv4Addr::new(10, 0, 0, 9)),
        actions: vec![Action::Output(port::IN_PORT)],
        goto_table: None,
    };
    sw.apply_bundle(vec![
        Change::ModifyStrict(modified),
        Change::DeleteStrict(f[0].key()),
        Change::Add(added),
    ])
    .await
    .unwrap();
    let mut want = flows_text();
    want.retain(|l| !l.starts_with("cookie=0xa1, priority=0 ") && !l.starts_with("cookie=0xb0"));
    want.push(
        "cookie=0xb0, table=20, priority=50,udp,tun_id=0x64,tun_src=192.0.2.1,tp_dst=67 actions=LOCAL"
            .to_string(),
    );
    want.push("cookie=0xb1, table=20, priority=40,ip,nw_src=10.0.0.9 actions=IN_PORT".to_string());
    want.sort();
    assert_eq!(ofctl_flows(&sb), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofctl_flows_dumped_by_driver_in_many_parts() {
    let sb = sandbox("ofd");
    // Enough flows that OVS splits the reply into several parts.
    let n = 3000u32;
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "table=1,priority=10,cookie=0x{:x},ip,metadata=0x{:x},nw_dst=10.{}.{}.0/24,\
             actions=set_field:0x{:x}->reg1,resubmit(,2),goto_table:3\n",
            0x7700_0000u64 + u64::from(i),
            i % 7,
            i / 256,
            i % 256,
            i
        ));
    }
    text.push_str("table=0,priority=1,cookie=0x1,arp,arp_tpa=10.0.0.1,actions=controller(userdata=aa.bb),output:CONTROLLER\n");
    let file = sb.dir().join("flows.txt");
    std::fs::write(&file, text).unwrap();
    sb.ofctl(&["add-flows", BR, file.to_str().unwrap()])
        .unwrap();

    let (sw, _pins) = connect(&sb).await;
    let dumped = sorted(
        sw.dump_flows(FlowStatsRequest::default())
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.flow)
            .collect(),
    );
    let mut want: Vec<Flow> = (0..n)
        .map(|i| Flow {
            table: 1,
            priority: 10,
            cookie: 0x7700_0000u64 + u64::from(i),
            matches: Match::new()
                .eth_type(0x0800)
                .metadata(u64::from(i % 7))
                .ipv4_dst_prefix(Ipv4Addr::new(10, (i / 256) as u8, (i % 256) as u8, 0), 24),
            actions: vec![
                Action::SetField {
                    field: Field::Reg(1),
                    value: i.into(),
                },
                Action::Resubmit { table: 2 },
            ],
            goto_table: Some(3),
        })
        .collect();
    want.push(Flow {
        table: 0,
        priority: 1,
        cookie: 1,
        matches: Match::new()
            .eth_type(0x0806)
            .arp_tpa(Ipv4Addr::new(10, 0, 0, 1)),
        actions: vec![
            Action::Controller {
                max_len: 0xffff,
                userdata: vec![0xaa, 0xbb],
            },
            Action::Controller {
                max_len: 0xffff,
                userdata: vec![],
            },
        ],
        goto_table: None,
    });
    assert_eq!(dumped.len(), want.len());
    assert_eq!(dumped, sorted(want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flow_fails_the_whole_bundle() {
    let sb = sandbox("ofe");
    let (sw, _pins) = connect(&sb).await;
    let before = Flow {
        table: 0,
        priority: 1,
        cookie: 1,
        matches: Match::new(),
        actions: vec![Action::Output(port::LOCAL)],
        goto_table: None,
    };
    sw.apply_bundle(vec![Change::Add(before)]).await.unwrap();
    let installed = ofctl_flows(&sb);
    assert_eq!(installed, vec!["cookie=0x1, priority=1 actions=LOCAL"]);

    let good = |t: u8, p: u16| Flow {
        table: t,
        priority: p,
        cookie: 2,
        matches: Match::new().reg(0, u32::from(p)),
        actions: vec![Action::Output(port::LOCAL)],
        goto_table: None,
    };
    // Rejected when added: goto_table must go forward.
    let backwards = Flow {
        goto_table: Some(1),
        ..good(5, 3)
    };
    let err = sw
        .apply_bundle(vec![
            Change::Add(good(1, 1)),
            Change::Add(good(1, 2)),
            Change::Add(backwards),
            Change::Add(good(2, 4)),
            Change::DeleteStrict(FlowKey {
                table: 0,
                priority: 1,
                matches: Match::new(),
            }),
        ])
        .await
        .unwrap_err();
    match &err {
        Error::Bundle { error, change } => {
            assert_eq!(*change, Some(2), "{err}");
            assert_eq!(error.name(), Some("OFPBIC_BAD_TABLE_ID"), "{err}");
            // The error quotes the offending bundle-add message.
            assert_eq!(
                error.offending().map(|(t, _)| t),
                Some(msg_type::BUNDLE_ADD_MESSAGE)
            );
        }
        e => panic!("unexpected {e}"),
    }
    assert_eq!(ofctl_flows(&sb), installed, "nothing may change");

    // Rejected at commit: table 7 holds at most 2 flows.
    sb.vsctl(&[
        "--",
        "--id=@ft",
        "create",
        "Flow_Table",
        "flow_limit=2",
        "overflow_policy=refuse",
        "--",
        "set",
        "Bridge",
        BR,
        "flow_tables:7=@ft",
    ])
    .unwrap();
    let err = sw
        .apply_bundle(vec![
            Change::Add(good(6, 1)),
            Change::Add(good(7, 1)),
            Change::Add(good(7, 2)),
            Change::Add(good(7, 3)),
            Change::Add(good(8, 1)),
        ])
        .await
        .unwrap_err();
    match &err {
        Error::Bundle { error, change } => {
            assert_eq!(error.name(), Some("OFPFMFC_TABLE_FULL"), "{err}");
            assert_eq!(*change, Some(3), "{err}");
        }
        e => panic!("unexpected {e}"),
    }
    assert_eq!(ofctl_flows(&sb), installed, "nothing may change");

    // The connection is still good afterwards.
    sw.barrier().await.unwrap();
}

fn arp_request() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&[0xfa, 0x16, 0x3e, 0, 0, 1]);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0xfa, 0x16, 0x3e, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
    f.resize(60, 0);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_out_comes_back_as_packet_in() {
    let sb = sandbox("ofp");
    let (sw, mut pins) = connect(&sb).await;
    sw.apply_bundle(vec![
        Change::Add(Flow {
            table: 0,
            priority: 10,
            cookie: 0xc0ffee,
            matches: Match::new().eth_type(0x0806),
            actions: vec![
                Action::SetField {
                    field: Field::Reg(2),
                    value: 0x42,
                },
                Action::SetField {
                    field: Field::Metadata,
                    value: 0x99,
                },
            ],
            goto_table: Some(3),
        }),
        Change::Add(Flow {
            table: 3,
            priority: 10,
            cookie: 0xc0ffef,
            matches: Match::new().eth_type(0x0806).arp_op(1),
            actions: vec![Action::Controller {
                max_len: 0xffff,
                userdata: vec![7, 7, 7],
            }],
            goto_table: None,
        }),
        Change::Add(Flow {
            table: 0,
            priority: 5,
            cookie: 0xbeef,
            matches: Match::new(),
            actions: vec![Action::Controller {
                max_len: 20,
                userdata: vec![],
            }],
            goto_table: None,
        }),
    ])
    .await
    .unwrap();

    let frame = arp_request();
    sw.packet_out(PacketOut::new(
        port::CONTROLLER,
        vec![Action::Output(port::TABLE)],
        frame.clone(),
    ))
    .await
    .unwrap();
    let pin = tokio::time::timeout(Duration::from_secs(10), pins.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pin.data, frame);
    assert_eq!(pin.total_len, 60);
    assert_eq!(pin.userdata, vec![7, 7, 7]);
    assert_eq!(pin.table_id, 3);
    assert_eq!(pin.cookie, 0xc0ffef);
    assert_eq!(pin.reason, 1, "OFPR_ACTION");
    assert_eq!(pin.matches.get(Field::Reg(2)).map(|f| f.value), Some(0x42));
    assert_eq!(
        pin.matches.get(Field::Metadata).map(|f| f.value),
        Some(0x99)
    );
    assert_eq!(
        pin.matches.get(Field::InPort).map(|f| f.value),
        Some(port::CONTROLLER.into())
    );

    // A non-ARP frame hits the priority-5 flow: no userdata. OVS does not
    // buffer packets and sends them whole whatever max_len says
    // (connmgr_send_async_msg never looks at it).
    let mut ip = frame.clone();
    ip[12..14].copy_from_slice(&[0x08, 0x00]);
    sw.packet_out(PacketOut::new(
        port::CONTROLLER,
        vec![Action::Output(port::TABLE)],
        ip.clone(),
    ))
    .await
    .unwrap();
    let pin = tokio::time::timeout(Duration::from_secs(10), pins.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pin.data, ip);
    assert_eq!(pin.total_len, 60);
    assert!(pin.userdata.is_empty());
    assert_eq!(pin.cookie, 0xbeef);

    // A packet-out the switch refuses reports the error.
    let err = sw
        .packet_out(PacketOut::new(
            port::CONTROLLER,
            vec![Action::Output(port::ANY)],
            ip,
        ))
        .await
        .unwrap_err();
    match err {
        Error::Switch(e) => assert_eq!(e.name(), Some("OFPBAC_BAD_OUT_PORT"), "{e}"),
        e => panic!("unexpected {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connection_is_detected() {
    let mut sb = sandbox("ofc");
    let (sw, mut pins) = connect(&sb).await;
    sw.barrier().await.unwrap();
    assert!(!sw.is_closed());
    sb.kill_vswitchd().unwrap();
    tokio::time::timeout(Duration::from_secs(10), sw.closed())
        .await
        .unwrap();
    assert!(sw.is_closed());
    assert!(pins.recv().await.is_none());
    assert!(matches!(sw.barrier().await, Err(Error::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_switch_without_openflow14() {
    let sb = sandbox("ofv");
    sb.vsctl(&["set", "bridge", BR, "protocols=OpenFlow10,OpenFlow13"])
        .unwrap();
    let err = match Switch::connect_unix(sb.mgmt_socket(BR), Config::default()).await {
        Ok(_) => panic!("connected without OpenFlow 1.4"),
        Err(e) => e,
    };
    match err {
        Error::VersionNegotiation { peer_bitmap } => {
            assert_eq!(peer_bitmap, (1 << 1) | (1 << 4), "{peer_bitmap:#x}")
        }
        e => panic!("unexpected {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_request() {
    let sb = sandbox("off");
    let (sw, _pins) = connect(&sb).await;
    match sw.request(Message::FeaturesRequest).await.unwrap() {
        Message::FeaturesReply(f) => {
            let dpid = sb
                .vsctl(&["get", "bridge", BR, "datapath_id"])
                .unwrap()
                .trim()
                .trim_matches('"')
                .to_string();
            assert_eq!(format!("{:016x}", f.datapath_id), dpid);
            assert_eq!(f.n_tables, 254);
        }
        m => panic!("unexpected {m:?}"),
    }
}

/// Prints what ovs-vswitchd sends for a few requests, as hex, for the
/// captured-bytes tests (`cargo test -p openflow --test ovs_live --
/// --ignored --nocapture print_switch_bytes`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn print_switch_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sb = sandbox("ofx");
    sb.ofctl(&[
        "add-flow",
        BR,
        "table=2,priority=300,cookie=0x77,ip,metadata=0x5,nw_dst=10.0.0.0/8,\
         actions=set_field:0x1->reg4,resubmit(,3),goto_table:9",
    ])
    .unwrap();
    sb.ofctl(&[
        "add-flow",
        BR,
        "table=0,priority=9,cookie=0x99,arp,actions=set_field:0x42->reg2,controller(userdata=07.07.07)",
    ])
    .unwrap();
    for pin2 in [false, true] {
        let mut s = tokio::net::UnixStream::connect(sb.mgmt_socket(BR))
            .await
            .unwrap();
        let mut reqs = vec![(1, Message::Hello(Hello::ours()))];
        if pin2 {
            reqs.push((2, Message::NxSetPacketInFormat(NXPIF_NXT_PACKET_IN2)));
        }
        reqs.extend([
            (
                3,
                Message::SetConfig(SwitchConfig {
                    flags: 0,
                    miss_send_len: 0xffff,
                }),
            ),
            (4, Message::FeaturesRequest),
            (
                5,
                Message::MultipartRequest(MultipartRequest {
                    flags: 0,
                    body: MultipartRequestBody::Flow(FlowStatsRequest {
                        table_id: 2,
                        ..FlowStatsRequest::default()
                    }),
                }),
            ),
            (
                6,
                Message::PacketOut(PacketOut::new(
                    port::CONTROLLER,
                    vec![Action::Output(port::TABLE)],
                    arp_request(),
                )),
            ),
            (
                7,
                Message::FlowMod(FlowMod::new(
                    FlowModCommand::Add,
                    Flow {
                        table: 4,
                        priority: 1,
                        cookie: 0,
                        matches: Match::new(),
                        actions: vec![],
                        goto_table: Some(2),
                    },
                )),
            ),
            (8, Message::BarrierRequest),
        ]);
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
        println!("--- packet_in2={pin2}");
        let mut rest = &buf[..];
        while let Ok(Some(len)) = openflow::wire::frame_len(rest) {
            let hex: String = rest[..len].iter().map(|b| format!("{b:02x}")).collect();
            println!("{hex}");
            rest = &rest[len..];
        }
    }
}
