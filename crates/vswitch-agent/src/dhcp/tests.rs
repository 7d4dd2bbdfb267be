use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use etherparse::{NetHeaders, PacketHeaders, PayloadSlice, TransportHeader};
use proptest::prelude::*;
use proto::{Ipv4Prefix, Mac, Nic, NodeInfo, NodeState, Subnet};

use super::*;
use crate::pipeline::PortMap;

mod real_clients;

/// DHCPDISCOVER from ISC dhclient 4.4 (`dhclient -d -1 -sf /bin/true IF` in
/// a namespace, captured with `tcpdump -w` on the veth peer). Client MAC
/// 02:11:22:33:44:55, xid 0x224d5d78, TOS 0x10, TTL 128.
const DHCLIENT_DISCOVER: &str = "ffffffffffff021122334455080045100148000000008011399600000000ffffffff004400430134cb0401010600224d5d78000000000000000000000000000000000000000002112233445500000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000638253633501010c02766d370d011c02030f06770c2c2f1a792aff00000000000000000000000000000000000000000000000000000000000000000000000000";

/// DHCPDISCOVER from busybox 1.35 udhcpc (`busybox udhcpc -f -n -q -i IF
/// -s /bin/true -x hostname:vm1`, same capture). xid 0x6b03ec73, with max
/// message size, vendor class and client id.
const UDHCPC_DISCOVER: &str = "ffffffffffff02112233445508004500014800000000401179a600000000ffffffff00440043013429ef010106006b03ec73000000000000000000000000000000000000000002112233445500000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000638253633501013902024037070103060c0f1c2a0c03766d313c0c756468637020312e33352e303d0701021122334455ff000000000000000000000000000000";

const CLIENT_MAC: Mac = Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
const GW_MAC: Mac = Mac([0x02, 0, 0, 0, 0x01, 0x01]);

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn the_nic() -> Nic {
    Nic {
        id: "nic-1".into(),
        vpc_id: "vpc-1".into(),
        subnet_id: "sub-1".into(),
        mac: CLIENT_MAC,
        ip: ip("10.0.1.10"),
        node: "n1".into(),
        port_security: true,
        security_groups: vec![],
        allowed_address_pairs: vec![],
    }
}

fn the_subnet() -> Subnet {
    Subnet {
        id: "sub-1".into(),
        vpc_id: "vpc-1".into(),
        cidr: Ipv4Prefix {
            addr: ip("10.0.1.0"),
            len: 24,
        },
        gateway_ip: ip("10.0.1.1"),
        gateway_mac: GW_MAC,
        dns_servers: vec![ip("10.0.0.2"), ip("10.0.0.3")],
        mtu: 1450,
        lease_secs: 3600,
    }
}

/// A client request built field by field from RFC 2131, sent like dhclient
/// does (from 0.0.0.0 unless `ciaddr` is set).
fn request(kind: MessageType, ciaddr: &str, options: Vec<DhcpOption>) -> Vec<u8> {
    let ciaddr = ip(ciaddr);
    let mut chaddr = [0u8; 16];
    chaddr[..6].copy_from_slice(&CLIENT_MAC.0);
    let mut opts = vec![DhcpOption {
        code: option::MESSAGE_TYPE,
        data: vec![kind.into()],
    }];
    opts.extend(options);
    DhcpFrame {
        eth_src: CLIENT_MAC,
        eth_dst: if ciaddr.is_unspecified() {
            Mac([0xff; 6])
        } else {
            GW_MAC
        },
        ip_src: ciaddr,
        ip_dst: if ciaddr.is_unspecified() {
            Ipv4Addr::BROADCAST
        } else {
            ip("10.0.1.1")
        },
        udp_src: CLIENT_PORT,
        udp_dst: SERVER_PORT,
        message: DhcpMessage {
            op: 1,
            htype: 1,
            hlen: 6,
            hops: 0,
            xid: 0xdead_beef,
            secs: 3,
            flags: 0,
            ciaddr,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            sname: [0; 64],
            file: [0; 128],
            options: opts,
        },
    }
    .emit()
}

fn ipv4_opt(code: u8, a: &str) -> DhcpOption {
    DhcpOption {
        code,
        data: ip(a).octets().to_vec(),
    }
}

/// Checks a frame with an independent parser (etherparse): both checksums
/// right, UDP 67→68. Returns the parsed reply.
fn check_wire(frame: &[u8]) -> DhcpFrame {
    let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("not IPv4: {h:?}")
    };
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 checksum"
    );
    assert_eq!(ip.time_to_live, 64);
    let Some(TransportHeader::Udp(udp)) = &h.transport else {
        panic!("not UDP: {h:?}")
    };
    let PayloadSlice::Udp(payload) = h.payload else {
        panic!("no UDP payload")
    };
    assert_eq!((udp.source_port, udp.destination_port), (67, 68));
    assert_ne!(udp.checksum, 0, "checksum must be filled in");
    assert_eq!(
        udp.checksum,
        udp.calc_checksum_ipv4(ip, payload).unwrap(),
        "UDP checksum"
    );
    assert!(payload.len() >= 300, "BOOTP minimum size");
    // Parse it back with our own parser, as a reply.
    let message = DhcpMessage::parse(payload).unwrap();
    assert_eq!(message.op, 2);
    let mac = |b: &[u8]| Mac(b.try_into().unwrap());
    DhcpFrame {
        eth_src: mac(&frame[6..12]),
        eth_dst: mac(&frame[0..6]),
        ip_src: Ipv4Addr::from(ip.source),
        ip_dst: Ipv4Addr::from(ip.destination),
        udp_src: udp.source_port,
        udp_dst: udp.destination_port,
        message,
    }
}

fn reply_of(outcome: Outcome) -> (MessageType, DhcpFrame) {
    match outcome {
        Outcome::Reply {
            message_type,
            reply,
            frame,
        } => {
            assert_eq!(check_wire(&frame), *reply);
            (message_type, *reply)
        }
        Outcome::Ignored(why) => panic!("ignored: {why}"),
    }
}

fn answer(frame: &[u8]) -> (MessageType, DhcpFrame) {
    reply_of(respond(frame, &the_nic(), &the_subnet()).unwrap())
}

fn u32_opt(m: &DhcpMessage, code: u8) -> Option<u32> {
    m.option(code)
        .map(|d| u32::from_be_bytes(d.as_slice().try_into().unwrap()))
}

fn ip_opt(m: &DhcpMessage, code: u8) -> Option<Ipv4Addr> {
    u32_opt(m, code).map(Ipv4Addr::from)
}

// ------------------------------------------------------------------ parsing

#[test]
fn parses_a_real_dhclient_discover() {
    let bytes = unhex(DHCLIENT_DISCOVER);
    let f = DhcpFrame::parse(&bytes).unwrap();
    assert_eq!(f.eth_src, CLIENT_MAC);
    assert_eq!(f.eth_dst, Mac([0xff; 6]));
    assert_eq!(
        (f.ip_src, f.ip_dst),
        (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST)
    );
    assert_eq!((f.udp_src, f.udp_dst), (68, 67));
    let m = &f.message;
    assert_eq!(m.xid, 0x224d_5d78);
    assert_eq!(m.message_type(), Some(MessageType::Discover));
    assert_eq!(m.client_mac(), Some(CLIENT_MAC));
    assert!(!m.broadcast());
    assert_eq!(m.option(option::HOST_NAME).unwrap(), b"vm");
    let prl = m.option(option::PARAMETER_REQUEST_LIST).unwrap();
    assert!(prl.contains(&option::SUBNET_MASK) && prl.contains(&option::INTERFACE_MTU));
    assert_eq!(m.requested_ip(), None);
    assert_eq!(m.server_id(), None);
    // Emitting gives back the captured UDP payload byte for byte.
    assert_eq!(m.emit(), bytes[42..]);
}

#[test]
fn parses_a_real_udhcpc_discover() {
    let bytes = unhex(UDHCPC_DISCOVER);
    let f = DhcpFrame::parse(&bytes).unwrap();
    let m = &f.message;
    assert_eq!(m.xid, 0x6b03_ec73);
    assert_eq!(m.message_type(), Some(MessageType::Discover));
    assert_eq!(m.option(57).unwrap(), 576u16.to_be_bytes());
    assert_eq!(m.option(option::HOST_NAME).unwrap(), b"vm1");
    assert_eq!(m.option(60).unwrap(), b"udhcp 1.35.0");
    assert_eq!(
        m.option(option::CLIENT_ID).unwrap(),
        [1, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55]
    );
    assert_eq!(m.emit(), bytes[42..]);
}

#[test]
fn our_checksum_agrees_with_real_clients() {
    for hex in [DHCLIENT_DISCOVER, UDHCPC_DISCOVER] {
        let bytes = unhex(hex);
        assert_eq!(checksum(&[&bytes[14..34]]), 0, "IPv4 header verifies");
        let mut udp = bytes[34..].to_vec();
        let sent = u16::from_be_bytes([udp[6], udp[7]]);
        udp[6..8].fill(0);
        assert_eq!(
            udp_checksum(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, &udp),
            sent
        );
    }
    // Odd lengths: the last byte is the high half of a 16-bit word.
    assert_eq!(checksum(&[&[0x01]]), !0x0100);
    assert_eq!(checksum(&[&[0xff, 0xff], &[0xff, 0xff]]), 0);
}

#[test]
fn options_are_joined_and_split_per_rfc_3396() {
    let mut m = DhcpMessage::parse(&unhex(DHCLIENT_DISCOVER)[42..]).unwrap();
    let long: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
    m.options.push(DhcpOption {
        code: 77,
        data: long.clone(),
    });
    let bytes = m.emit();
    let back = DhcpMessage::parse(&bytes).unwrap();
    assert_eq!(back.option(77).unwrap(), long);
    assert_eq!(back.options.iter().filter(|o| o.code == 77).count(), 3);
}

#[test]
fn rejects_what_is_not_a_dhcp_request() {
    let good = unhex(DHCLIENT_DISCOVER);
    let with = |at: usize, bytes: &[u8]| {
        let mut f = good.clone();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        f
    };
    // 802.1Q tag where the ethertype is.
    assert_eq!(
        DhcpFrame::parse(&with(12, &[0x81, 0x00])),
        Err(DhcpError::NotIpv4(0x8100))
    );
    // IPv4 header checksum broken.
    assert_eq!(
        DhcpFrame::parse(&with(24, &[0, 0])),
        Err(DhcpError::BadIpv4Checksum)
    );
    // Version 6 in an IPv4 ethertype.
    assert_eq!(
        DhcpFrame::parse(&with(14, &[0x65])),
        Err(DhcpError::BadIpv4Header)
    );
    // Fix the IP checksum after changing a header field.
    let reip = |mut f: Vec<u8>| {
        f[24..26].fill(0);
        let s = checksum(&[&f[14..34]]);
        f[24..26].copy_from_slice(&s.to_be_bytes());
        f
    };
    assert_eq!(
        DhcpFrame::parse(&reip(with(20, &[0x20, 0]))),
        Err(DhcpError::Fragment)
    );
    assert_eq!(
        DhcpFrame::parse(&reip(with(23, &[6]))),
        Err(DhcpError::NotUdp(6))
    );
    assert_eq!(
        DhcpFrame::parse(&with(34, &[0, 68, 0, 53])),
        Err(DhcpError::NotToServerPort { src: 68, dst: 53 })
    );
    assert_eq!(
        DhcpFrame::parse(&with(38, &[0xff, 0xff])),
        Err(DhcpError::BadUdpLength(0xffff))
    );
    assert_eq!(
        DhcpFrame::parse(&with(42, &[2])),
        Err(DhcpError::NotRequest(2))
    );
    assert_eq!(
        DhcpFrame::parse(&with(43, &[6])),
        Err(DhcpError::NotEthernet { htype: 6, hlen: 6 })
    );
    assert_eq!(
        DhcpFrame::parse(&with(278, &[0])),
        Err(DhcpError::NoMagicCookie)
    );
    // Option 53 claims 200 bytes.
    assert_eq!(
        DhcpFrame::parse(&with(283, &[200])),
        Err(DhcpError::BadOption(53))
    );
    // Plain BOOTP: the message type option turned into padding.
    let bootp = with(282, &[0, 0, 0]);
    let f = DhcpFrame::parse(&bootp).unwrap();
    assert_eq!(
        respond_to(&f, &the_nic(), &the_subnet()),
        Err(DhcpError::NoMessageType)
    );
    // Ethernet padding after the IP packet is fine.
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 20]);
    assert_eq!(DhcpFrame::parse(&padded), DhcpFrame::parse(&good));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for hex in [DHCLIENT_DISCOVER, UDHCPC_DISCOVER] {
        let bytes = unhex(hex);
        for len in 0..bytes.len() {
            let cut = &bytes[..len];
            assert!(DhcpFrame::parse(cut).is_err(), "{len} bytes parsed");
            assert!(respond(cut, &the_nic(), &the_subnet()).is_err());
        }
        assert!(DhcpFrame::parse(&bytes).is_ok());
    }
}

/// Deterministic mutations of real frames: single and multiple byte flips
/// anywhere. Nothing may panic, whatever the result.
#[test]
fn mutated_frames_never_panic() {
    let mut seed: u64 = 0x5eed;
    let mut rand = move || {
        // xorshift64*
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let (nic, subnet) = (the_nic(), the_subnet());
    let originals = [
        unhex(DHCLIENT_DISCOVER),
        unhex(UDHCPC_DISCOVER),
        request(
            MessageType::Request,
            "0.0.0.0",
            vec![
                ipv4_opt(option::SERVER_ID, "10.0.1.1"),
                ipv4_opt(option::REQUESTED_IP, "10.0.1.10"),
            ],
        ),
    ];
    let mut replies = 0;
    for i in 0..30_000 {
        let mut f = originals[i % originals.len()].clone();
        for _ in 0..=(rand() % 4) {
            let at = (rand() as usize) % f.len();
            f[at] = rand() as u8;
        }
        if rand() % 8 == 0 {
            let len = (rand() as usize) % f.len();
            f.truncate(len);
        }
        if let Ok(Outcome::Reply { frame, .. }) = respond(&f, &nic, &subnet) {
            check_wire(&frame);
            replies += 1;
        }
    }
    // Flips in the options or padding leave many frames valid: the server
    // did answer mutated input, not only reject it.
    assert!(replies > 100, "{replies}");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        let _ = DhcpFrame::parse(&bytes);
        let _ = DhcpMessage::parse(&bytes);
        let _ = respond(&bytes, &the_nic(), &the_subnet());
    }

    /// A valid header in front of arbitrary options.
    #[test]
    fn arbitrary_options_never_panic(opts in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut payload = unhex(DHCLIENT_DISCOVER)[42..282].to_vec();
        payload.extend_from_slice(&opts);
        if let Ok(m) = DhcpMessage::parse(&payload) {
            // Whatever parsed emits and parses back the same.
            prop_assert_eq!(DhcpMessage::parse(&m.emit()).unwrap(), m);
        }
    }
}

// ------------------------------------------------------------------ server

#[test]
fn discover_gets_an_offer_with_every_option() {
    let (kind, offer) = answer(&unhex(DHCLIENT_DISCOVER));
    assert_eq!(kind, MessageType::Offer);
    let m = &offer.message;
    assert_eq!(m.message_type(), Some(MessageType::Offer));
    assert_eq!(m.xid, 0x224d_5d78);
    assert_eq!(m.yiaddr, ip("10.0.1.10"));
    assert_eq!(m.ciaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(m.client_mac(), Some(CLIENT_MAC));
    assert_eq!(m.server_id(), Some(ip("10.0.1.1")));
    assert_eq!(u32_opt(m, option::LEASE_TIME), Some(3600));
    assert_eq!(u32_opt(m, option::RENEWAL_TIME), Some(1800));
    assert_eq!(u32_opt(m, option::REBINDING_TIME), Some(3150));
    assert_eq!(ip_opt(m, option::SUBNET_MASK), Some(ip("255.255.255.0")));
    assert_eq!(ip_opt(m, option::BROADCAST_ADDRESS), Some(ip("10.0.1.255")));
    assert_eq!(ip_opt(m, option::ROUTER), Some(ip("10.0.1.1")));
    assert_eq!(
        m.option(option::DNS_SERVERS).unwrap(),
        [10, 0, 0, 2, 10, 0, 0, 3]
    );
    assert_eq!(
        m.option(option::INTERFACE_MTU).unwrap(),
        1450u16.to_be_bytes()
    );
    // Message type first, as clients expect.
    assert_eq!(m.options[0].code, option::MESSAGE_TYPE);
    // From the gateway, unicast to the offered address at the client's MAC
    // (broadcast flag not set).
    assert_eq!((offer.eth_src, offer.ip_src), (GW_MAC, ip("10.0.1.1")));
    assert_eq!((offer.eth_dst, offer.ip_dst), (CLIENT_MAC, ip("10.0.1.10")));
}

#[test]
fn broadcast_flag_is_honoured() {
    let mut f = DhcpFrame::parse(&unhex(UDHCPC_DISCOVER)).unwrap();
    f.message.flags = FLAG_BROADCAST;
    let (_, offer) = answer(&f.emit());
    assert_eq!(
        (offer.eth_dst, offer.ip_dst),
        (Mac([0xff; 6]), Ipv4Addr::BROADCAST)
    );
    assert!(offer.message.broadcast(), "flags copied");
}

#[test]
fn request_selecting_the_offer_is_acked() {
    let req = request(
        MessageType::Request,
        "0.0.0.0",
        vec![
            ipv4_opt(option::SERVER_ID, "10.0.1.1"),
            ipv4_opt(option::REQUESTED_IP, "10.0.1.10"),
        ],
    );
    let (kind, ack) = answer(&req);
    assert_eq!(kind, MessageType::Ack);
    assert_eq!(ack.message.yiaddr, ip("10.0.1.10"));
    assert_eq!(ack.message.xid, 0xdead_beef);
    assert_eq!(u32_opt(&ack.message, option::LEASE_TIME), Some(3600));
    assert_eq!(ack.ip_dst, ip("10.0.1.10"));
}

#[test]
fn request_for_the_wrong_address_is_naked() {
    for opts in [
        // SELECTING, wrong address.
        vec![
            ipv4_opt(option::SERVER_ID, "10.0.1.1"),
            ipv4_opt(option::REQUESTED_IP, "10.0.1.11"),
        ],
        // INIT-REBOOT from another network.
        vec![ipv4_opt(option::REQUESTED_IP, "192.168.1.50")],
    ] {
        let (kind, nak) = answer(&request(MessageType::Request, "0.0.0.0", opts));
        assert_eq!(kind, MessageType::Nak);
        let m = &nak.message;
        assert_eq!(m.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.server_id(), Some(ip("10.0.1.1")));
        assert_eq!(m.option(option::LEASE_TIME), None);
        assert_eq!(m.option(option::SUBNET_MASK), None);
        assert!(m.option(option::MESSAGE).is_some());
        assert_eq!(
            (nak.eth_dst, nak.ip_dst),
            (Mac([0xff; 6]), Ipv4Addr::BROADCAST)
        );
    }
    // RENEWING with an address that is not the NIC's.
    let (kind, _) = answer(&request(MessageType::Request, "10.0.1.99", vec![]));
    assert_eq!(kind, MessageType::Nak);
}

#[test]
fn init_reboot_and_renewal_are_acked() {
    let (kind, ack) = answer(&request(
        MessageType::Request,
        "0.0.0.0",
        vec![ipv4_opt(option::REQUESTED_IP, "10.0.1.10")],
    ));
    assert_eq!(kind, MessageType::Ack);
    assert_eq!(ack.ip_dst, ip("10.0.1.10"));
    // RENEWING: unicast from the leased address, answered to it.
    let (kind, ack) = answer(&request(MessageType::Request, "10.0.1.10", vec![]));
    assert_eq!(kind, MessageType::Ack);
    assert_eq!(ack.message.ciaddr, ip("10.0.1.10"));
    assert_eq!(ack.message.yiaddr, ip("10.0.1.10"));
    assert_eq!((ack.eth_dst, ack.ip_dst), (CLIENT_MAC, ip("10.0.1.10")));
}

#[test]
fn request_for_another_server_is_ignored() {
    let req = request(
        MessageType::Request,
        "0.0.0.0",
        vec![
            ipv4_opt(option::SERVER_ID, "10.0.1.254"),
            ipv4_opt(option::REQUESTED_IP, "10.0.1.10"),
        ],
    );
    assert_eq!(
        respond(&req, &the_nic(), &the_subnet()),
        Ok(Outcome::Ignored(Ignored::OtherServer))
    );
}

#[test]
fn release_decline_and_inform() {
    let (nic, subnet) = (the_nic(), the_subnet());
    let release = request(
        MessageType::Release,
        "10.0.1.10",
        vec![ipv4_opt(option::SERVER_ID, "10.0.1.1")],
    );
    assert_eq!(
        respond(&release, &nic, &subnet),
        Ok(Outcome::Ignored(Ignored::Released))
    );
    let decline = request(
        MessageType::Decline,
        "0.0.0.0",
        vec![
            ipv4_opt(option::REQUESTED_IP, "10.0.1.10"),
            ipv4_opt(option::SERVER_ID, "10.0.1.1"),
        ],
    );
    assert_eq!(
        respond(&decline, &nic, &subnet),
        Ok(Outcome::Ignored(Ignored::Declined))
    );
    // INFORM: configuration without an address or a lease, to ciaddr.
    let (kind, ack) = answer(&request(MessageType::Inform, "10.0.1.10", vec![]));
    assert_eq!(kind, MessageType::Ack);
    let m = &ack.message;
    assert_eq!(m.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(m.option(option::LEASE_TIME), None);
    assert_eq!(m.option(option::RENEWAL_TIME), None);
    assert_eq!(ip_opt(m, option::ROUTER), Some(ip("10.0.1.1")));
    assert_eq!(ack.ip_dst, ip("10.0.1.10"));
    let inform = request(MessageType::Inform, "10.0.1.77", vec![]);
    assert_eq!(
        respond(&inform, &nic, &subnet),
        Ok(Outcome::Ignored(Ignored::InformFromWrongAddress))
    );
    // Server-side types from a client.
    let offer = request(MessageType::Offer, "0.0.0.0", vec![]);
    assert_eq!(
        respond(&offer, &nic, &subnet),
        Ok(Outcome::Ignored(Ignored::NotForServer(MessageType::Offer)))
    );
    let odd = request(MessageType::Unknown(42), "0.0.0.0", vec![]);
    assert_eq!(
        respond(&odd, &nic, &subnet),
        Ok(Outcome::Ignored(Ignored::NotForServer(
            MessageType::Unknown(42)
        )))
    );
}

#[test]
fn foreign_and_relayed_requests_are_ignored() {
    let subnet = the_subnet();
    let mut other = the_nic();
    other.mac = Mac([0x02, 0, 0, 0, 0, 0x99]);
    let discover = unhex(DHCLIENT_DISCOVER);
    assert_eq!(
        respond(&discover, &other, &subnet),
        Ok(Outcome::Ignored(Ignored::ForeignClient))
    );
    let mut f = DhcpFrame::parse(&discover).unwrap();
    f.message.giaddr = ip("10.0.1.254");
    assert_eq!(
        respond(&f.emit(), &the_nic(), &subnet),
        Ok(Outcome::Ignored(Ignored::Relayed))
    );
    let mut outside = the_nic();
    outside.ip = ip("10.0.2.10");
    assert_eq!(
        respond(&discover, &outside, &subnet),
        Ok(Outcome::Ignored(Ignored::NicOutsideSubnet))
    );
}

#[test]
fn lease_time_edge_cases() {
    let discover = unhex(DHCLIENT_DISCOVER);
    let mut subnet = the_subnet();
    subnet.lease_secs = 0;
    subnet.dns_servers.clear();
    subnet.mtu = 0;
    let (_, offer) = reply_of(respond(&discover, &the_nic(), &subnet).unwrap());
    let m = &offer.message;
    assert_eq!(u32_opt(m, option::LEASE_TIME), Some(DEFAULT_LEASE_SECS));
    assert_eq!(
        u32_opt(m, option::RENEWAL_TIME),
        Some(DEFAULT_LEASE_SECS / 2)
    );
    assert_eq!(m.option(option::DNS_SERVERS), None);
    assert_eq!(
        m.option(option::INTERFACE_MTU),
        None,
        "MTU below 68 is not sent"
    );
    subnet.lease_secs = u32::MAX;
    let (_, offer) = reply_of(respond(&discover, &the_nic(), &subnet).unwrap());
    assert_eq!(u32_opt(&offer.message, option::LEASE_TIME), Some(u32::MAX));
    assert_eq!(offer.message.option(option::RENEWAL_TIME), None, "infinite");
}

#[test]
fn responds_by_port() {
    let mut state = NodeState {
        node: NodeInfo {
            name: "n1".into(),
            underlay_ip: None,
        },
        ..NodeState::default()
    };
    state.nics.insert("nic-1".into(), the_nic());
    state.subnets.insert("sub-1".into(), the_subnet());
    let mut remote = the_nic();
    remote.id = "nic-r".into();
    remote.node = "n2".into();
    state.nics.insert("nic-r".into(), remote);
    let ports = PortMap::new().with_nic("nic-1", 5).with_nic("nic-r", 6);
    let discover = unhex(DHCLIENT_DISCOVER);
    let (kind, _) = reply_of(respond_on_port(&state, &ports, 5, &discover).unwrap());
    assert_eq!(kind, MessageType::Offer);
    assert_eq!(
        respond_on_port(&state, &ports, 9, &discover),
        Err(DhcpError::UnknownPort(9))
    );
    assert_eq!(
        respond_on_port(&state, &ports, 6, &discover),
        Err(DhcpError::UnknownPort(6)),
        "not a local NIC"
    );
    state.subnets.clear();
    assert_eq!(
        respond_on_port(&state, &ports, 5, &discover),
        Err(DhcpError::UnknownPort(5)),
        "no subnet"
    );
}

// ------------------------------------------------------------ rate limiter

#[test]
fn rate_limiter_allows_a_burst_then_the_rate() {
    let t0 = Instant::now();
    let mut rl = RateLimiter::new(2.0, 5);
    let nic = "nic-1".to_string();
    for i in 0..5 {
        assert!(rl.check(&nic, t0), "burst {i}");
    }
    assert!(!rl.check(&nic, t0));
    assert!(!rl.check(&nic, t0 + Duration::from_millis(400)));
    assert!(rl.retry_after(&nic, t0 + Duration::from_millis(400)) <= Duration::from_millis(100));
    assert!(
        rl.check(&nic, t0 + Duration::from_millis(500)),
        "one token per 500 ms"
    );
    assert!(!rl.check(&nic, t0 + Duration::from_millis(500)));
    assert_eq!(rl.take_suppressed(), 3);
    assert_eq!(rl.take_suppressed(), 0);
    // Sustained: over 10 s at most 2/s pass.
    let mut passed = 0;
    for ms in (1000..11_000).step_by(10) {
        if rl.check(&nic, t0 + Duration::from_millis(ms)) {
            passed += 1;
        }
    }
    assert!((19..=21).contains(&passed), "{passed}");
}

#[test]
fn rate_limiter_keys_are_independent_and_pruned() {
    let t0 = Instant::now();
    let mut rl = RateLimiter::new(1.0, 1);
    assert!(rl.check(&1u32, t0));
    assert!(!rl.check(&1u32, t0));
    assert!(rl.check(&2u32, t0), "another NIC has its own bucket");
    assert_eq!(rl.len(), 2);
    // Time going backwards counts as no time.
    assert!(!rl.check(&1u32, t0 - Duration::from_secs(5)));
    assert!(rl.check(&1u32, t0 + Duration::from_secs(1)));
    rl.prune(t0 + Duration::from_millis(1500));
    assert_eq!(rl.len(), 1, "key 2 refilled, key 1 not yet");
    rl.prune(t0 + Duration::from_secs(3));
    assert!(rl.is_empty());
    assert!(rl.check(&1u32, t0 + Duration::from_secs(3)));
    rl.remove(&1u32);
    assert!(rl.is_empty());
    // A zero rate never refills; a zero burst still lets one through.
    let mut never = RateLimiter::new(0.0, 0);
    assert!(never.check(&"x", t0));
    assert!(!never.check(&"x", t0 + Duration::from_secs(3600)));
    assert_eq!(never.retry_after(&"x", t0), Duration::MAX);
    let mut glacial = RateLimiter::new(1e-300, 1);
    assert!(glacial.check(&"x", t0));
    assert_eq!(glacial.retry_after(&"x", t0), Duration::MAX);
}
