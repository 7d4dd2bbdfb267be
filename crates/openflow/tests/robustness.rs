//! Parsing untrusted bytes never panics: every truncation and many random
//! corruptions of valid messages, and random byte streams into a
//! connection. Whatever parses must re-encode to a stable form.

// Test helpers outside #[test] fns: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;

use openflow::conn::{Config, Connection};
use openflow::flow::port;
use openflow::message::*;
use openflow::meter::{BandStats, MeterBand, MeterConfig, MeterMod, MeterModCommand, MeterStats};
use openflow::{Action, Field, Flow, Match, Message};

/// Deterministic xorshift, so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn flow() -> Flow {
    Flow {
        table: 1,
        priority: 9,
        cookie: 3,
        matches: Match::new()
            .in_port(2)
            .eth_type(0x0800)
            .ipv4_dst_prefix(Ipv4Addr::new(10, 0, 0, 0), 8)
            .ip_proto(6)
            .set(Field::TcpDst, 80)
            .reg(4, 1)
            .set_masked(Field::CtState, 0x21, Some(0x21))
            .set(Field::CtLabel, 5),
        actions: vec![
            Action::DecTtl,
            Action::SetField {
                field: Field::Reg(1),
                value: 2,
            },
            Action::Move {
                src: Field::Reg(1),
                src_ofs: 0,
                dst: Field::Metadata,
                dst_ofs: 0,
                n_bits: 32,
            },
            Action::Controller {
                max_len: 100,
                userdata: vec![1, 2, 3, 4, 5, 6, 7, 8, 9],
            },
            Action::Resubmit { table: 4 },
            Action::Group(1),
            Action::Output(port::LOCAL),
        ],
        goto_table: Some(2),
    }
}

/// Conntrack, NAT, conjunctions and a meter instruction.
fn ext_flow() -> Flow {
    use openflow::{CtNat, CtZone, NatRange};
    Flow {
        table: 3,
        priority: 7,
        cookie: 1,
        matches: Match::new()
            .conj_id(4)
            .eth_type(0x0800)
            .ip_proto(6)
            .tcp_flags(2, 0x10)
            .ct_state(0x21, 0x10)
            .ct_nw_src(Ipv4Addr::new(10, 0, 0, 1))
            .ct_tp_dst(443)
            .ct_label(1 << 90, 1 << 90),
        actions: vec![
            Action::Meter(3),
            Action::Ct {
                commit: true,
                zone: CtZone::Field {
                    field: Field::Reg(2),
                    ofs: 16,
                },
                table: Some(4),
                nat: Some(CtNat::Src(NatRange {
                    addrs: Some((Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(203, 0, 113, 2))),
                    ports: Some((1000, 2000)),
                    persistent: true,
                    hash: true,
                    random: false,
                })),
                actions: vec![Action::SetField {
                    field: Field::CtMark,
                    value: 1,
                }],
            },
            Action::Ct {
                commit: false,
                zone: CtZone::Imm(3),
                table: None,
                nat: Some(CtNat::Existing),
                actions: vec![],
            },
            Action::CtClear,
            Action::Conjunction {
                id: 9,
                clause: 1,
                n_clauses: 4,
            },
        ],
        goto_table: Some(5),
    }
}

fn corpus() -> Vec<Message> {
    let pin = PacketIn {
        buffer_id: NO_BUFFER,
        total_len: 64,
        reason: 1,
        table_id: 2,
        cookie: 9,
        matches: Match::new().in_port(1).reg(3, 4).metadata(5),
        userdata: vec![],
        data: vec![0xab; 60],
    };
    vec![
        Message::Hello(Hello::ours()),
        Message::EchoRequest(vec![1, 2, 3]),
        Message::Error(OfpError {
            err_type: 2,
            code: 4,
            experimenter: None,
            data: Message::BarrierRequest.to_bytes(5).unwrap(),
        }),
        Message::FeaturesReply(FeaturesReply {
            datapath_id: 1,
            n_buffers: 0,
            n_tables: 254,
            auxiliary_id: 0,
            capabilities: 0x4f,
            reserved: 0,
        }),
        Message::SetConfig(SwitchConfig {
            flags: 0,
            miss_send_len: 0xffff,
        }),
        Message::FlowMod(FlowMod::new(FlowModCommand::Add, flow())),
        Message::BundleAdd(BundleAdd {
            bundle_id: 4,
            flags: 3,
            message: Box::new(Message::FlowMod(FlowMod::new(
                FlowModCommand::ModifyStrict,
                flow(),
            ))),
            properties: vec![],
        }),
        Message::BundleControl(BundleControl {
            bundle_id: 4,
            ctrl_type: BundleCtrlType::CommitReply,
            flags: 3,
            properties: vec![],
        }),
        Message::MultipartReply(MultipartReply {
            flags: OFPMPF_MORE,
            body: MultipartReplyBody::Flow(vec![FlowStats {
                flow: flow(),
                duration_sec: 1,
                duration_nsec: 2,
                idle_timeout: 0,
                hard_timeout: 0,
                flags: 0,
                importance: 0,
                packet_count: 10,
                byte_count: 1000,
            }]),
        }),
        Message::MultipartRequest(MultipartRequest {
            flags: 0,
            body: MultipartRequestBody::Flow(FlowStatsRequest::default()),
        }),
        Message::PacketIn(pin.clone()),
        Message::NxPacketIn2(PacketIn {
            userdata: vec![7; 11],
            ..pin
        }),
        Message::PacketOut(PacketOut::new(
            port::CONTROLLER,
            vec![Action::Output(port::TABLE)],
            vec![1; 42],
        )),
        Message::FlowMod(FlowMod::new(FlowModCommand::Add, ext_flow())),
        Message::MeterMod(MeterMod {
            command: MeterModCommand::Add,
            flags: 0xd,
            meter_id: 3,
            bands: vec![
                MeterBand::Drop {
                    rate: 1000,
                    burst_size: 100,
                },
                MeterBand::DscpRemark {
                    rate: 10,
                    burst_size: 1,
                    prec_level: 1,
                },
            ],
        }),
        Message::MultipartRequest(MultipartRequest {
            flags: 0,
            body: MultipartRequestBody::MeterStats(3),
        }),
        Message::MultipartReply(MultipartReply {
            flags: 0,
            body: MultipartReplyBody::MeterConfig(vec![MeterConfig {
                flags: 1,
                meter_id: 3,
                bands: vec![MeterBand::Drop {
                    rate: 5,
                    burst_size: 0,
                }],
            }]),
        }),
        Message::MultipartReply(MultipartReply {
            flags: 0,
            body: MultipartReplyBody::MeterStats(vec![MeterStats {
                meter_id: 3,
                flow_count: 1,
                packet_in_count: 2,
                byte_in_count: 3,
                duration_sec: 4,
                duration_nsec: 5,
                bands: vec![BandStats {
                    packet_count: 6,
                    byte_count: 7,
                }],
            }]),
        }),
        Message::GroupMod(GroupMod {
            command: GroupModCommand::Add,
            group_type: GroupType::Select,
            group_id: 1,
            buckets: vec![Bucket {
                weight: 1,
                watch_port: port::ANY,
                watch_group: OFPG_ANY,
                actions: vec![Action::Output(1), Action::DecTtl],
            }],
        }),
    ]
}

/// Parsing must not panic; whatever parses must encode to a fixed point.
fn check(bytes: &[u8]) {
    let Ok((xid, m)) = Message::parse(bytes) else {
        return;
    };
    let Ok(once) = m.to_bytes(xid) else {
        return;
    };
    let (_, again) = Message::parse(&once).expect("our own encoding parses");
    assert_eq!(again.to_bytes(xid).unwrap(), once, "{m:?}");
}

#[test]
fn corpus_round_trips() {
    for m in corpus() {
        let bytes = m.to_bytes(42).unwrap();
        assert_eq!(Message::parse(&bytes).unwrap(), (42, m));
    }
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for m in corpus() {
        let bytes = m.to_bytes(1).unwrap();
        for cut in 0..bytes.len() {
            let mut b = bytes[..cut].to_vec();
            // Also with the header's length fixed up, so the body parsers
            // see the short input.
            let _ = Message::parse(&b);
            if cut >= 8 {
                b[2..4].copy_from_slice(&(cut as u16).to_be_bytes());
                check(&b);
            }
        }
    }
}

#[test]
fn random_corruption_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for m in corpus() {
        let bytes = m.to_bytes(1).unwrap();
        for _ in 0..3000 {
            let mut b = bytes.clone();
            for _ in 0..1 + rng.below(4) {
                let i = 8 + rng.below(b.len() - 8);
                b[i] = rng.next() as u8;
            }
            check(&b);
        }
    }
}

#[test]
fn random_streams_into_a_connection() {
    let mut rng = Rng(12345);
    let valid: Vec<u8> = corpus()
        .iter()
        .flat_map(|m| m.to_bytes(rng.next() as u32).unwrap())
        .collect();
    for round in 0..300 {
        let mut c = Connection::new(Config::default());
        let mut stream = Message::Hello(Hello::ours()).to_bytes(1).unwrap();
        stream.extend_from_slice(&valid);
        if round > 0 {
            for _ in 0..rng.below(8) {
                let i = rng.below(stream.len());
                stream[i] = rng.next() as u8;
            }
        }
        let mut pos = 0;
        while pos < stream.len() {
            let n = 1 + rng.below(200);
            let end = (pos + n).min(stream.len());
            if c.handle_input(&stream[pos..end]).is_err() {
                break;
            }
            pos = end;
        }
        while c.poll_event().is_some() {}
        if round == 0 {
            assert!(c.is_ready());
        }
    }
}
