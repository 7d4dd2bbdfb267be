//! Our encodings decoded by the real peer: `ovs-ofctl ofp-print <hex>`
//! must print the flow we meant. Needs `ovs-ofctl` on PATH (no switch).

// Test helpers outside #[test] fns: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::process::Command;

use openflow::flow::{mac_bits, port};
use openflow::message::*;
use openflow::{Action, Field, Flow, Match, Message};
use proto::Mac;

fn ofp_print(msg: &Message, xid: u32) -> String {
    let bytes = msg.to_bytes(xid).unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new("ovs-ofctl")
        .args(["ofp-print", &hex])
        .output()
        .expect("ovs-ofctl on PATH");
    assert!(
        out.status.success(),
        "ofp-print failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains("decode error"), "{text}");
    text.trim_end().to_string()
}

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

fn l2_flow() -> Flow {
    Flow {
        table: 20,
        priority: 300,
        cookie: 0x5a00_0000_0000_0001,
        matches: Match::new()
            .metadata(0x10)
            .eth_dst(mac("fa:16:3e:00:00:01"))
            .eth_type(0x0800)
            .ipv4_src_prefix(Ipv4Addr::new(10, 0, 0, 0), 8)
            .ipv4_dst(Ipv4Addr::new(10, 0, 1, 5)),
        actions: vec![
            Action::DecTtl,
            Action::SetField {
                field: Field::EthSrc,
                value: mac_bits(mac("fa:16:3e:ff:ff:ff")),
            },
            Action::SetField {
                field: Field::TunnelId,
                value: 0x1234,
            },
            Action::Output(7),
        ],
        goto_table: None,
    }
}

#[test]
fn flow_mod_add() {
    let text = ofp_print(
        &Message::FlowMod(FlowMod::new(FlowModCommand::Add, l2_flow())),
        9,
    );
    assert_eq!(
        text,
        "OFPT_FLOW_MOD (OF1.4) (xid=0x9): ADD table:20 \
         priority=300,ip,metadata=0x10,dl_dst=fa:16:3e:00:00:01,\
         nw_src=10.0.0.0/8,nw_dst=10.0.1.5 cookie:0x5a00000000000001 \
         actions=dec_ttl,set_field:fa:16:3e:ff:ff:ff->eth_src,\
         set_field:0x1234->tun_id,output:7"
    );
}

#[test]
fn flow_mod_nicira_fields_and_actions() {
    let flow = Flow {
        table: 0,
        priority: 100,
        cookie: 7,
        matches: Match::new()
            .in_port(3)
            .reg(1, 0xabc)
            .set_masked(Field::CtState, 0x21, Some(0x21))
            .set(Field::CtMark, 5)
            .set(
                Field::TunIpv4Dst,
                u32::from(Ipv4Addr::new(192, 0, 2, 9)).into(),
            )
            .eth_type(0x0806)
            .arp_op(1)
            .arp_tpa(Ipv4Addr::new(10, 0, 0, 1)),
        actions: vec![
            Action::Move {
                src: Field::ArpSha,
                src_ofs: 0,
                dst: Field::EthDst,
                dst_ofs: 0,
                n_bits: 48,
            },
            Action::Move {
                src: Field::Reg(1),
                src_ofs: 0,
                dst: Field::Metadata,
                dst_ofs: 32,
                n_bits: 16,
            },
            Action::Controller {
                max_len: 0xffff,
                userdata: vec![0xde, 0xad],
            },
            Action::Resubmit { table: 3 },
            Action::Group(5),
        ],
        goto_table: Some(40),
    };
    let text = ofp_print(
        &Message::FlowMod(FlowMod::new(FlowModCommand::Add, flow)),
        1,
    );
    assert_eq!(
        text,
        "OFPT_FLOW_MOD (OF1.4) (xid=0x1): ADD \
         priority=100,ct_state=+new+trk,ct_mark=0x5,arp,reg1=0xabc,\
         tun_dst=192.0.2.9,in_port=3,arp_tpa=10.0.0.1,arp_op=1 cookie:0x7 \
         actions=move:NXM_NX_ARP_SHA[]->NXM_OF_ETH_DST[],\
         move:NXM_NX_REG1[0..15]->OXM_OF_METADATA[32..47],\
         controller(userdata=de.ad),resubmit(,3),group:5,goto_table:40"
    );
}

#[test]
fn flow_mod_strict_commands() {
    // A delete sends no instructions, and with cookie_mask 0 the cookie
    // restricts nothing, so OVS does not print it.
    let del = FlowMod::new(FlowModCommand::DeleteStrict, l2_flow());
    assert_eq!(
        ofp_print(&Message::FlowMod(del), 2),
        "OFPT_FLOW_MOD (OF1.4) (xid=0x2): DEL_STRICT table:20 \
         priority=300,ip,metadata=0x10,dl_dst=fa:16:3e:00:00:01,\
         nw_src=10.0.0.0/8,nw_dst=10.0.1.5 actions=drop"
    );
    // OpenFlow 1.2+ modify leaves the cookie alone, so OVS ignores ours.
    let modify = FlowMod::new(
        FlowModCommand::ModifyStrict,
        Flow {
            actions: vec![],
            goto_table: Some(21),
            ..l2_flow()
        },
    );
    assert_eq!(
        ofp_print(&Message::FlowMod(modify), 3),
        "OFPT_FLOW_MOD (OF1.4) (xid=0x3): MOD_STRICT table:20 \
         priority=300,ip,metadata=0x10,dl_dst=fa:16:3e:00:00:01,\
         nw_src=10.0.0.0/8,nw_dst=10.0.1.5 actions=goto_table:21"
    );
}

#[test]
fn bundle_messages() {
    let mut out = Vec::new();
    emit_bundle_flow_mod(
        &mut out,
        4,
        17,
        OFPBF_ATOMIC | OFPBF_ORDERED,
        FlowModCommand::Add,
        &l2_flow(),
    )
    .unwrap();
    let (_, msg) = Message::parse(&out).unwrap();
    assert_eq!(
        ofp_print(&msg, 4),
        "OFPT_BUNDLE_ADD_MESSAGE (OF1.4) (xid=0x4):\n bundle_id=0x11 flags=atomic ordered\n\
         OFPT_FLOW_MOD (OF1.4) (xid=0x4): ADD table:20 \
         priority=300,ip,metadata=0x10,dl_dst=fa:16:3e:00:00:01,\
         nw_src=10.0.0.0/8,nw_dst=10.0.1.5 cookie:0x5a00000000000001 \
         actions=dec_ttl,set_field:fa:16:3e:ff:ff:ff->eth_src,\
         set_field:0x1234->tun_id,output:7"
    );
    let commit = Message::BundleControl(BundleControl {
        bundle_id: 17,
        ctrl_type: BundleCtrlType::CommitRequest,
        flags: OFPBF_ATOMIC | OFPBF_ORDERED,
        properties: vec![],
    });
    assert_eq!(
        ofp_print(&commit, 5),
        "OFPT_BUNDLE_CONTROL (OF1.4) (xid=0x5):\n bundle_id=0x11 type=COMMIT_REQUEST flags=atomic ordered"
    );
}

#[test]
fn group_mod_fast_failover() {
    let g = GroupMod {
        command: GroupModCommand::Add,
        group_type: GroupType::FastFailover,
        group_id: 9,
        buckets: vec![
            Bucket {
                weight: 0,
                watch_port: 4,
                watch_group: OFPG_ANY,
                actions: vec![Action::Output(4)],
            },
            Bucket {
                weight: 0,
                watch_port: 5,
                watch_group: OFPG_ANY,
                actions: vec![Action::Output(5)],
            },
        ],
    };
    assert_eq!(
        ofp_print(&Message::GroupMod(g), 6),
        "OFPT_GROUP_MOD (OF1.4) (xid=0x6):\n ADD group_id=9,type=ff,\
         bucket=watch_port:4,actions=output:4,\
         bucket=watch_port:5,actions=output:5"
    );
}

#[test]
fn packet_out_and_config() {
    let po = PacketOut::new(
        port::CONTROLLER,
        vec![Action::Output(port::TABLE)],
        vec![0; 14],
    );
    let text = ofp_print(&Message::PacketOut(po), 7);
    assert!(
        text.starts_with(
            "OFPT_PACKET_OUT (OF1.4) (xid=0x7): in_port=CONTROLLER actions=TABLE data_len=14"
        ),
        "{text}"
    );
    let cfg = Message::SetConfig(SwitchConfig {
        flags: 0,
        miss_send_len: 0xffff,
    });
    assert_eq!(
        ofp_print(&cfg, 8),
        "OFPT_SET_CONFIG (OF1.4) (xid=0x8): frags=normal miss_send_len=65535"
    );
    assert_eq!(
        ofp_print(&Message::NxSetPacketInFormat(NXPIF_NXT_PACKET_IN2), 9),
        "NXT_SET_PACKET_IN_FORMAT (OF1.4) (xid=0x9): format=nxt_packet_in2"
    );
}

#[test]
fn flow_stats_request() {
    let req = Message::MultipartRequest(MultipartRequest {
        flags: 0,
        body: MultipartRequestBody::Flow(FlowStatsRequest {
            table_id: 20,
            cookie: 0x5a00_0000_0000_0000,
            cookie_mask: 0xff00_0000_0000_0000,
            matches: Match::new().metadata(0x10),
            ..FlowStatsRequest::default()
        }),
    });
    // ofp-print does not show a stats request's cookie (the live tests
    // check that OVS honours it); the bytes must still hold it.
    assert_eq!(
        ofp_print(&req, 10),
        "OFPST_FLOW request (OF1.4) (xid=0xa): table=20 metadata=0x10"
    );
    let bytes = req.to_bytes(10).unwrap();
    // header 8, multipart header 8, table/pad 4, out_port 4, out_group 4, pad 4
    assert_eq!(bytes[32..40], 0x5a00_0000_0000_0000u64.to_be_bytes());
    assert_eq!(bytes[40..48], 0xff00_0000_0000_0000u64.to_be_bytes());
}

fn ct_flow() -> Flow {
    use openflow::flow::{ct_state, tcp_flags};
    use openflow::{CtNat, CtZone, NatRange};
    Flow {
        table: 30,
        priority: 1000,
        cookie: 0x42,
        matches: Match::new()
            .eth_type(0x0800)
            .ip_proto(6)
            .tcp_dst(443)
            .tcp_flags(tcp_flags::SYN, tcp_flags::ACK)
            .ct_state(ct_state::TRK | ct_state::NEW, ct_state::INV | ct_state::EST)
            .ct_zone(12)
            .ct_mark(0x10, 0xf0)
            .ct_label(1 << 70, 1 << 70)
            .reg(6, 12),
        actions: vec![
            Action::Ct {
                commit: true,
                zone: CtZone::Field {
                    field: Field::Reg(6),
                    ofs: 0,
                },
                table: Some(31),
                nat: Some(CtNat::Dst(NatRange::addr_port(
                    Ipv4Addr::new(10, 0, 0, 5),
                    8443,
                ))),
                actions: vec![Action::SetField {
                    field: Field::CtMark,
                    value: 0x17,
                }],
            },
            Action::CtClear,
        ],
        goto_table: None,
    }
}

#[test]
fn flow_mod_conntrack() {
    assert_eq!(
        ofp_print(
            &Message::FlowMod(FlowMod::new(FlowModCommand::Add, ct_flow())),
            11
        ),
        "OFPT_FLOW_MOD (OF1.4) (xid=0xb): ADD table:30 \
         priority=1000,ct_state=+new-est-inv+trk,ct_zone=12,ct_mark=0x10/0xf0,\
         ct_label=0x400000000000000000/0x400000000000000000,tcp,reg6=0xc,tp_dst=443,\
         tcp_flags=+syn-ack cookie:0x42 \
         actions=ct(commit,table=31,zone=NXM_NX_REG6[0..15],\
         nat(dst=10.0.0.5:8443),exec(set_field:0x17->ct_mark)),ct_clear"
    );
}

#[test]
fn flow_mod_conjunction_and_ct_tuple() {
    use openflow::flow::ct_state;
    let clause = Flow {
        table: 40,
        priority: 2000,
        cookie: 0,
        matches: Match::new()
            .eth_type(0x0800)
            .ipv4_src_prefix(Ipv4Addr::new(10, 1, 0, 0), 16)
            .reg(7, 3),
        actions: vec![
            Action::Conjunction {
                id: 100,
                clause: 0,
                n_clauses: 2,
            },
            Action::Conjunction {
                id: 101,
                clause: 1,
                n_clauses: 3,
            },
        ],
        goto_table: None,
    };
    assert_eq!(
        ofp_print(
            &Message::FlowMod(FlowMod::new(FlowModCommand::Add, clause)),
            12
        ),
        "OFPT_FLOW_MOD (OF1.4) (xid=0xc): ADD table:40 priority=2000,ip,reg7=0x3,\
         nw_src=10.1.0.0/16 actions=conjunction(100,1/2),conjunction(101,2/3)"
    );
    let hit = Flow {
        table: 40,
        priority: 2000,
        cookie: 0,
        matches: Match::new()
            .conj_id(100)
            .eth_type(0x0800)
            .ip_proto(1)
            .icmp_type(8)
            .icmp_code(0)
            .ct_state(ct_state::TRK, ct_state::INV)
            .ct_nw_proto(17)
            .ct_nw_src(Ipv4Addr::new(10, 0, 0, 1))
            .ct_nw_dst(Ipv4Addr::new(198, 51, 100, 7))
            .ct_tp_src(5353)
            .ct_tp_dst(53),
        actions: vec![],
        goto_table: Some(41),
    };
    assert_eq!(
        ofp_print(
            &Message::FlowMod(FlowMod::new(FlowModCommand::Add, hit)),
            13
        ),
        "OFPT_FLOW_MOD (OF1.4) (xid=0xd): ADD table:40 priority=2000,conj_id=100,\
         ct_state=-inv+trk,ct_nw_src=10.0.0.1,ct_nw_dst=198.51.100.7,ct_nw_proto=17,\
         ct_tp_src=5353,ct_tp_dst=53,icmp,icmp_type=8,icmp_code=0 actions=goto_table:41"
    );
}

#[test]
fn meter_mod_and_meter_instruction() {
    use openflow::meter::{flags, MeterBand, MeterMod, MeterModCommand};
    let mm = Message::MeterMod(MeterMod {
        command: MeterModCommand::Add,
        flags: flags::KBPS | flags::BURST | flags::STATS,
        meter_id: 70,
        bands: vec![MeterBand::Drop {
            rate: 20_000,
            burst_size: 4_000,
        }],
    });
    assert_eq!(
        ofp_print(&mm, 14),
        "OFPT_METER_MOD (OF1.4) (xid=0xe): ADD meter=70 kbps burst stats \
         bands=\ntype=drop rate=20000 burst_size=4000"
    );
    let flow = Flow {
        table: 60,
        priority: 5,
        cookie: 0,
        matches: Match::new()
            .eth_type(0x0800)
            .ipv4_src(Ipv4Addr::new(203, 0, 113, 10)),
        actions: vec![Action::Meter(70), Action::Output(2)],
        goto_table: Some(61),
    };
    assert_eq!(
        ofp_print(
            &Message::FlowMod(FlowMod::new(FlowModCommand::Add, flow)),
            15
        ),
        "OFPT_FLOW_MOD (OF1.4) (xid=0xf): ADD table:60 priority=5,ip,\
         nw_src=203.0.113.10 actions=meter:70,output:2,goto_table:61"
    );
}

#[test]
fn group_mod_select_with_ct_buckets() {
    use openflow::{CtNat, CtZone, NatRange};
    let backend = |d: u8, w: u16| Bucket {
        weight: w,
        watch_port: port::ANY,
        watch_group: OFPG_ANY,
        actions: vec![Action::Ct {
            commit: true,
            zone: CtZone::Imm(7),
            table: Some(45),
            nat: Some(CtNat::Dst(NatRange::addr_port(
                Ipv4Addr::new(10, 0, 2, d),
                8080,
            ))),
            actions: vec![],
        }],
    };
    let g = GroupMod {
        command: GroupModCommand::Add,
        group_type: GroupType::Select,
        group_id: 30,
        buckets: vec![backend(1, 100), backend(2, 50)],
    };
    assert_eq!(
        ofp_print(&Message::GroupMod(g), 16),
        "OFPT_GROUP_MOD (OF1.4) (xid=0x10):\n ADD group_id=30,type=select,\
         bucket=weight:100,actions=ct(commit,table=45,zone=7,nat(dst=10.0.2.1:8080)),\
         bucket=weight:50,actions=ct(commit,table=45,zone=7,nat(dst=10.0.2.2:8080))"
    );
}
