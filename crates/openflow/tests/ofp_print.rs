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
