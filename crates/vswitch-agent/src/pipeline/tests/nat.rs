//! EIPs and NAT gateways: the stateless EIP path walked through the
//! interpreter, the gateway choice (groups, who answers for the NAT
//! gateway's EIPs). The stateful NAT itself is exercised on real OVS by
//! the lab scenarios (crates/tests/tests/nat.rs).

use openflow::message::{GroupModCommand, GroupType};
use proto::{DnatRule, Eip, ExternalAddress, ExternalNetwork, L4Protocol, NatGateway, SnatRule};

use super::*;

const EXT: u32 = 50;
const EIP_MAC: &str = "02:e1:00:00:00:01";
const NEXT_HOP: &str = "02:99:00:00:00:01";
const NATGW_MAC: &str = "02:a7:00:00:00:01";
const NATGW_EIP_MAC: &str = "02:e1:00:00:00:02";

fn outside() -> ExternalNetwork {
    ExternalNetwork {
        id: "ext-1".into(),
        physnet: "internet".into(),
        cidr: Ipv4Prefix {
            addr: ip("203.0.113.0"),
            len: 24,
        },
        gateway_ip: ip("203.0.113.1"),
    }
}

fn eip() -> Eip {
    Eip {
        id: "eip-1".into(),
        external_network_id: "ext-1".into(),
        ip: ip("203.0.113.10"),
        mac: mac(EIP_MAC),
        nic_id: "nic-a1".into(),
        rate_limit_kbps: None,
    }
}

fn nat_gateway(gateways: &[&str]) -> NatGateway {
    NatGateway {
        id: "natgw-1".into(),
        vpc_id: "vpc-a".into(),
        external_network_id: "ext-1".into(),
        mac: mac(NATGW_MAC),
        gateways: gateways.iter().map(|g| g.to_string()).collect(),
        eips: vec![ExternalAddress {
            ip: ip("203.0.113.20"),
            mac: mac(NATGW_EIP_MAC),
        }],
        snat_rules: vec![SnatRule {
            id: "snat-1".into(),
            source: Ipv4Prefix {
                addr: ip("10.0.0.0"),
                len: 16,
            },
            eip: ip("203.0.113.20"),
        }],
        dnat_rules: vec![DnatRule {
            id: "dnat-1".into(),
            protocol: L4Protocol::Tcp,
            eip: ip("203.0.113.20"),
            external_port: 8080,
            internal_ip: ip("10.0.1.30"),
            internal_port: 80,
        }],
    }
}

/// The fixture lab with an external network on port [`EXT`], nic-a1
/// holding an EIP, and the next hop resolved.
fn with_eip() -> (NodeState, PortMap) {
    let (mut state, mut ports) = lab();
    state.external_networks.insert("ext-1".into(), outside());
    state.eips.insert("eip-1".into(), eip());
    ports.set_external("internet", EXT);
    ports.set_next_hop("ext-1", mac(NEXT_HOP));
    (state, ports)
}

fn to_outside(src_mac: &str, src: &str) -> Packet {
    ipv4(5, src_mac, GW1_MAC, src, "198.51.100.10")
}

#[test]
fn a_nic_with_an_eip_leaves_as_the_eip() {
    let (state, ports) = with_eip();
    let flows = render(&state, &ports, 1);
    let (out_port, pkt) = trace(&flows, to_outside(A1_MAC, "10.0.1.10")).single_output();
    assert_eq!(out_port, EXT);
    assert_eq!(get(&pkt, Field::Ipv4Src), ip_value(ip("203.0.113.10")));
    assert_eq!(get(&pkt, Field::Ipv4Dst), ip_value(ip("198.51.100.10")));
    assert_eq!(get(&pkt, Field::EthSrc), mac_value(mac(EIP_MAC)));
    assert_eq!(get(&pkt, Field::EthDst), mac_value(mac(NEXT_HOP)));
    assert_eq!(get(&pkt, Field::NwTtl), 63);
}

#[test]
fn the_eip_is_reached_from_outside_and_answered_for() {
    let (state, ports) = with_eip();
    let flows = render(&state, &ports, 1);
    let mut inbound = ipv4(EXT, NEXT_HOP, EIP_MAC, "198.51.100.10", "203.0.113.10");
    inbound.insert(Field::IpProto, 1);
    let (out_port, pkt) = trace(&flows, inbound).single_output();
    assert_eq!(out_port, 5, "delivered to nic-a1's port");
    assert_eq!(get(&pkt, Field::Ipv4Dst), ip_value(ip("10.0.1.10")));
    assert_eq!(get(&pkt, Field::EthDst), mac_value(mac(A1_MAC)));
    assert_eq!(get(&pkt, Field::EthSrc), mac_value(mac(GW1_MAC)));

    let who_has = arp_request(EXT, NEXT_HOP, "203.0.113.1", "203.0.113.10");
    let (out_port, reply) = trace(&flows, who_has).single_output();
    assert_eq!(out_port, EXT);
    assert_eq!(get(&reply, Field::ArpSha), mac_value(mac(EIP_MAC)));
    assert_eq!(get(&reply, Field::ArpOp), 2);
    // Nobody else's address is answered on the external port.
    let other = arp_request(EXT, NEXT_HOP, "203.0.113.1", "203.0.113.99");
    assert!(trace(&flows, other).dropped());
    // The gateway's ARP replies go up to the agent.
    let mut reply = arp_request(EXT, NEXT_HOP, "203.0.113.1", "203.0.113.10");
    reply.insert(Field::ArpOp, 2);
    let t = trace(&flows, reply);
    assert_eq!(t.controller.len(), 1);
    assert_eq!(t.controller[0].0, vec![userdata::ARP_REPLY]);
}

#[test]
fn without_an_eip_or_gateway_nothing_leaves_and_unknown_vpc_addresses_stay_in() {
    let (state, ports) = with_eip();
    let flows = render(&state, &ports, 1);
    // nic-a2 has no EIP and the VPC no NAT gateway.
    assert!(trace(
        &flows,
        ipv4(6, A2_MAC, GW2_MAC, "10.0.2.20", "198.51.100.10")
    )
    .dropped());
    // An unused address of a subnet is not sent out even by the EIP's NIC.
    assert!(trace(&flows, to_outside(A1_MAC, "10.0.1.10")).outputs.len() == 1);
    assert!(trace(&flows, ipv4(5, A1_MAC, GW1_MAC, "10.0.1.10", "10.0.1.77")).dropped());
}

#[test]
fn without_a_next_hop_the_eip_is_reachable_but_nothing_leaves() {
    let (mut state, _) = with_eip();
    let mut ports = lab().1;
    ports.set_external("internet", EXT);
    state.revision += 1;
    let flows = render(&state, &ports, 1);
    assert!(trace(&flows, to_outside(A1_MAC, "10.0.1.10")).dropped());
    let inbound = ipv4(EXT, NEXT_HOP, EIP_MAC, "198.51.100.10", "203.0.113.10");
    assert_eq!(trace(&flows, inbound).single_output().0, 5);
}

#[test]
fn vms_without_an_eip_go_to_the_nat_gateways_group() {
    let (mut state, mut ports) = with_eip();
    state
        .nat_gateways
        .insert("natgw-1".into(), nat_gateway(&["gw1", "gw2"]));
    ports.set_tunnel("gw1", 201);
    ports.set_tunnel("gw2", 202);
    let flows = render(&state, &ports, 1);
    let t = trace(
        &flows,
        ipv4(6, A2_MAC, GW2_MAC, "10.0.2.20", "198.51.100.10"),
    );
    assert!(t.outputs.is_empty());
    assert_eq!(t.groups.len(), 1);
    let (group, pkt) = &t.groups[0];
    assert_eq!(*group, crate::pipeline::nat::group_id("natgw-1"));
    assert_eq!(get(pkt, Field::EthDst), mac_value(mac(NATGW_MAC)));
    // The EIP still wins for its own NIC.
    assert_eq!(
        trace(&flows, to_outside(A1_MAC, "10.0.1.10"))
            .single_output()
            .0,
        EXT
    );

    let groups = render_groups(&state, &ports);
    assert_eq!(groups.len(), 1);
    let g = &groups[0];
    assert_eq!(g.group_type, GroupType::FastFailover);
    assert_eq!(g.command, GroupModCommand::AddOrModify);
    let watched: Vec<u32> = g.buckets.iter().map(|b| b.watch_port).collect();
    assert_eq!(watched, [201, 202], "rank order, each watching its tunnel");
    assert_eq!(
        g.buckets[0].actions,
        vec![set_field(Field::TunnelId, 100), Action::Output(201)]
    );
    // No gateway is a compute node's business but this: no SNAT here.
    assert!(!flows
        .iter()
        .any(|f| f.table == table::SNAT && f.priority > 0));
}

/// This node ("n1") as the second-ranked gateway of natgw-1, with no NIC.
fn gateway_node(first_alive: bool) -> (NodeState, PortMap) {
    let (mut state, mut ports) = lab();
    state.nics.retain(|_, n| n.node != NODE);
    state.external_networks.insert("ext-1".into(), outside());
    state
        .nat_gateways
        .insert("natgw-1".into(), nat_gateway(&["gw1", NODE]));
    ports = ports.with_tunnel("gw1", 201);
    if !first_alive {
        ports.set_peer_down("gw1");
    }
    ports.set_external("internet", EXT);
    ports.set_next_hop("ext-1", mac(NEXT_HOP));
    (state, ports)
}

#[test]
fn a_gateway_node_carries_the_vpc_and_snats_what_it_is_sent() {
    let (state, ports) = gateway_node(true);
    let flows = render(&state, &ports, 1);
    assert!(!flows.is_empty(), "a gateway renders its VPC without NICs");
    // From a compute node over the tunnel, to the NAT gateway's MAC.
    let pkt = from_tunnel(
        100,
        ipv4(TUN, A3_MAC, NATGW_MAC, "10.0.1.30", "198.51.100.10"),
    );
    let path = trace(&flows, pkt).path;
    assert!(
        path.iter().any(|(t, _)| *t == table::SNAT),
        "reaches the SNAT stage: {path:?}"
    );
    // Its own bucket hands packets to its SNAT stage.
    let groups = render_groups(&state, &ports);
    assert_eq!(
        groups[0].buckets[1].actions,
        vec![Action::Resubmit {
            table: table::L2_LOOKUP
        }]
    );
}

#[test]
fn only_the_first_live_gateway_answers_for_the_eips() {
    let who_has = || arp_request(EXT, NEXT_HOP, "203.0.113.1", "203.0.113.20");
    let (state, ports) = gateway_node(true);
    let standby = render(&state, &ports, 1);
    assert!(
        trace(&standby, who_has()).dropped(),
        "gw1 is alive: standby"
    );
    assert!(announced_addresses(&state, &ports).is_empty());

    let (state, ports) = gateway_node(false);
    let active = render(&state, &ports, 1);
    let (port, reply) = trace(&active, who_has()).single_output();
    assert_eq!(port, EXT);
    assert_eq!(get(&reply, Field::ArpSha), mac_value(mac(NATGW_EIP_MAC)));
    assert_eq!(
        announced_addresses(&state, &ports),
        vec![("ext-1".to_string(), ip("203.0.113.20"), mac(NATGW_EIP_MAC))]
    );
}
