use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use api::model::{self, keys};
use proptest::prelude::*;
use proto::NodeState;

use super::*;
use crate::testutil::*;

/// A state compared without its revision.
fn norm(mut st: NodeState) -> NodeState {
    st.revision = 0;
    st
}

#[test]
fn a_node_gets_only_the_vpcs_of_its_nics() {
    let kv = small_world();
    let m = Model::from_listing(&kv.listing(), kv.rev);

    let n1 = compile_node(&m, "n1");
    assert_eq!(n1.node.underlay_ip, Some(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(n1.revision, kv.rev);
    assert_eq!(n1.vpcs.keys().collect::<Vec<_>>(), ["vpc-a"]);
    assert_eq!(n1.vpcs["vpc-a"].vni, 100);
    assert_eq!(n1.subnets.keys().collect::<Vec<_>>(), ["sub-a"]);
    // The unbound nic-a3 is nowhere; nic-b1's VPC is not here.
    assert_eq!(n1.nics.keys().collect::<Vec<_>>(), ["nic-a1", "nic-a2"]);
    assert_eq!(n1.nics["nic-a2"].node, "n2");
    assert_eq!(n1.peers.keys().collect::<Vec<_>>(), ["n2"]);
    assert_eq!(n1.peers["n2"].underlay_ip, Ipv4Addr::new(192, 0, 2, 2));
    assert_eq!(n1.local_nics().count(), 1);

    let s = &n1.subnets["sub-a"];
    assert_eq!(s.mtu, 1450);
    assert_eq!(s.lease_secs, LEASE_SECS);
    assert_eq!(s.cidr.to_string(), "10.0.1.0/24");
    assert_eq!(s.gateway_ip, Ipv4Addr::new(10, 0, 1, 1));

    let n3 = compile_node(&m, "n3");
    assert_eq!(n3.vpcs.keys().collect::<Vec<_>>(), ["vpc-b"]);
    assert!(n3.peers.is_empty(), "alone in vpc-b: no tunnel");

    let unknown = compile_node(&m, "n9");
    assert_eq!(unknown.node.underlay_ip, None);
    assert!(unknown.vpcs.is_empty() && unknown.nics.is_empty());
}

#[test]
fn keys_outside_the_model_are_ignored() {
    assert_eq!(
        classify("/stacknet/nics/nic-1"),
        Some(KeyKind::Nic("nic-1"))
    );
    assert_eq!(
        classify("/stacknet/status/nics/nic-1"),
        Some(KeyKind::NicStatus("nic-1"))
    );
    assert_eq!(classify("/stacknet/index/mac/vpc-a/02:00"), None);
    assert_eq!(classify("/stacknet/nics/"), None);
    assert_eq!(classify("/stacknet/nics/a/b"), None);
    assert_eq!(classify("/elsewhere/nics/a"), None);

    let mut kv = small_world();
    let mut c = Compiler::from_listing(&kv.listing(), kv.rev);
    let ev = kv.txn(vec![
        status("nic-a1", "n1"),
        Op::Put(
            "/stacknet/index/ip/sub-a/10.0.1.5".into(),
            b"nic-a1".to_vec(),
        ),
        Op::Put("/stacknet/nics/nic-a1/extra".into(), b"junk".to_vec()),
    ]);
    let out = c.apply(&ev);
    assert!(out.changes.is_empty());
    assert!(out.touched.is_empty());
    assert_eq!(out.statuses.iter().collect::<Vec<_>>(), ["nic-a1"]);
    assert_eq!(c.revision(), kv.rev);
    assert_eq!(c.model().status("nic-a1").unwrap().record.node, "n1");
}

#[test]
fn a_nic_change_touches_only_the_nodes_of_its_vpc() {
    let mut kv = small_world();
    let mut c = Compiler::from_listing(&kv.listing(), kv.rev);

    // A new NIC in vpc-a on n2: n1 and n2 carry vpc-a, n3 does not.
    let out = c.apply(&kv.txn(vec![nic("nic-a4", "vpc-a", "sub-a", Some("n2"), 14)]));
    assert_eq!(out.touched.iter().collect::<Vec<_>>(), ["n1", "n2"]);
    assert_eq!(out.changes.len(), 2);
    assert!(matches!(
        &out.changes["n1"][..],
        [Change::Upsert { object: Object::Nic(n) }] if n.id == "nic-a4"
    ));

    // nic-b1 moves n3 → n1: n3 loses vpc-b entirely, n1 gains all of it.
    let out = c.apply(&kv.txn(vec![nic("nic-b1", "vpc-b", "sub-b", Some("n1"), 21)]));
    assert_eq!(out.touched.iter().collect::<Vec<_>>(), ["n1", "n3"]);
    let n3 = c.state("n3");
    assert!(n3.vpcs.is_empty() && n3.subnets.is_empty() && n3.nics.is_empty());
    let n1 = c.state("n1");
    assert_eq!(n1.vpcs.len(), 2);
    assert!(n1.subnets.contains_key("sub-b"));
    assert_eq!(n1.nics["nic-b1"].node, "n1");
    assert_eq!(c.model().nic("nic-b1").unwrap().bound_since, kv.rev);

    // A status write or a rename of a NIC changes no node.
    let renamed = {
        let mut n: model::Nic =
            serde_json::from_slice(&kv.map[&keys::nic("nic-a1")].value).unwrap();
        n.name = "web".into();
        Op::Put(keys::nic("nic-a1"), serde_json::to_vec(&n).unwrap())
    };
    let before = c.model().nic("nic-a1").unwrap().bound_since;
    let out = c.apply(&kv.txn(vec![renamed]));
    assert!(out.changes.is_empty());
    assert_eq!(c.model().nic("nic-a1").unwrap().bound_since, before);
    assert_eq!(c.model().nic("nic-a1").unwrap().mod_revision, kv.rev);
}

#[test]
fn a_node_record_change_reaches_its_peers() {
    let mut kv = small_world();
    let mut c = Compiler::from_listing(&kv.listing(), kv.rev);
    let out = c.apply(&kv.txn(vec![node("n2", 42)]));
    // n2's own info, and n1's peer entry for n2; n3 shares nothing with n2.
    assert_eq!(out.changes.keys().collect::<Vec<_>>(), ["n1", "n2"]);
    assert_eq!(
        c.state("n1").peers["n2"].underlay_ip,
        Ipv4Addr::new(192, 0, 2, 42)
    );
    assert_eq!(
        c.state("n2").node.underlay_ip,
        Some(Ipv4Addr::new(192, 0, 2, 42))
    );

    // Without its record, n2 is no tunnel endpoint and its NICs vanish
    // from n1 (they are unreachable).
    c.apply(&kv.txn(vec![Op::Del(keys::node("n2"))]));
    let n1 = c.state("n1");
    assert!(n1.peers.is_empty());
    assert!(!n1.nics.contains_key("nic-a2"));
    assert!(c.state("n2").nics.contains_key("nic-a2"));
}

#[test]
fn relist_reports_the_difference() {
    let mut kv = small_world();
    let mut c = Compiler::from_listing(&kv.listing(), kv.rev);
    kv.txn(vec![Op::Del(keys::nic("nic-a2"))]);
    kv.txn(vec![vpc("vpc-b", 201)]);
    let out = c.relist(&kv.listing(), kv.rev);
    assert_eq!(out.changes.keys().collect::<Vec<_>>(), ["n1", "n2", "n3"]);
    assert_eq!(out.nics.iter().collect::<Vec<_>>(), ["nic-a2"]);
    assert_eq!(c.state("n3").vpcs["vpc-b"].vni, 201);
    assert!(c.state("n2").vpcs.is_empty());
    assert_eq!(c.revision(), kv.rev);
}

#[test]
fn security_groups_reach_exactly_the_nodes_of_their_vpc() {
    let mut kv = small_world();
    kv.txn(vec![
        group("sg-a", "vpc-a", &[22], None),
        group("sg-b", "vpc-b", &[80], None),
        nic_in("nic-a1", "vpc-a", "sub-a", Some("n1"), 11, &["sg-a"]),
    ]);
    let mut c = Compiler::from_listing(&kv.listing(), kv.rev);
    let n1 = c.state("n1");
    assert_eq!(n1.security_groups.keys().collect::<Vec<_>>(), ["sg-a"]);
    let g = &n1.security_groups["sg-a"];
    assert_eq!(g.vpc_id, "vpc-a");
    assert_eq!(
        g.rules[0].protocol,
        proto::RuleProtocol::Tcp {
            ports: Some(proto::PortRange { min: 22, max: 22 })
        }
    );
    assert_eq!(g.rules[0].direction, proto::Direction::Ingress);
    assert_eq!(
        g.rules[0].remote,
        proto::Remote::Cidr(proto::Ipv4Prefix {
            addr: Ipv4Addr::UNSPECIFIED,
            len: 0
        })
    );
    assert_eq!(n1.nics["nic-a1"].security_groups, ["sg-a"]);
    assert!(n1.nics["nic-a1"].port_security);
    assert_eq!(
        c.state("n3").security_groups.keys().collect::<Vec<_>>(),
        ["sg-b"]
    );

    // A rule change in vpc-a reaches n1 and n2 (they carry vpc-a), not n3.
    let out = c.apply(&kv.txn(vec![group("sg-a", "vpc-a", &[22, 443], Some("sg-a"))]));
    assert_eq!(out.changes.keys().collect::<Vec<_>>(), ["n1", "n2"]);
    assert!(matches!(
        &out.changes["n2"][..],
        [Change::Upsert { object: Object::SecurityGroup(g) }] if g.rules.len() == 2
            && g.rules[1].remote == proto::Remote::Group("sg-a".into())
    ));
    // Deleting the group removes it there too.
    let out = c.apply(&kv.txn(vec![Op::Del(keys::security_group("sg-a"))]));
    assert_eq!(out.changes.keys().collect::<Vec<_>>(), ["n1", "n2"]);
    assert!(c.state("n1").security_groups.is_empty());
    // A node that joins vpc-b gets its groups.
    c.apply(&kv.txn(vec![nic("nic-b2", "vpc-b", "sub-b", Some("n2"), 22)]));
    assert_eq!(
        c.state("n2").security_groups.keys().collect::<Vec<_>>(),
        ["sg-b"]
    );
}

/// small_world plus three gateway nodes (g1 preferred), an external
/// network attached to n1 and the gateway nodes, EIPs and a NAT gateway of
/// vpc-a.
fn nat_world() -> Kv {
    let mut kv = small_world();
    kv.txn(vec![
        gateway_node("g1", 31, false, 10),
        gateway_node("g2", 32, false, 5),
        gateway_node("g3", 33, false, 5),
        ext_net("ext-1", &["n1", "g1", "g2", "g3"]),
        eip("eip-1", "ext-1", 10, Some("nic-a1")),
        // nic-a2's node n2 is not attached to ext-1: its EIP goes nowhere.
        eip("eip-2", "ext-1", 11, Some("nic-a2")),
        eip("eip-3", "ext-1", 12, None),
        nat_gateway("gw-1", "vpc-a", "ext-1", &["eip-3"]),
    ]);
    kv
}

/// Asserts the incremental states equal a full compile of the same store.
#[track_caller]
fn assert_matches_full(c: &Compiler, kv: &Kv) {
    let full = Model::from_listing(&kv.listing(), kv.rev);
    let mut names = full.node_names();
    names.extend(c.states().keys().cloned());
    for n in &names {
        assert_eq!(norm(c.state(n)), norm(compile_node(&full, n)), "node {n}");
    }
}

#[test]
fn external_networks_eips_and_nat_gateways_reach_the_right_nodes() {
    let kv = nat_world();
    let c = Compiler::from_listing(&kv.listing(), kv.rev);
    let has_net = |n: &str| c.state(n).external_networks.contains_key("ext-1");
    for n in ["n1", "g1", "g2", "g3"] {
        assert!(has_net(n), "{n}");
    }
    assert!(!has_net("n2") && !has_net("n3"));
    let x = &c.state("g1").external_networks["ext-1"];
    assert_eq!(x.physnet, "public");
    assert_eq!(x.gateway_ip, Ipv4Addr::new(203, 0, 113, 1));

    // The EIP lives only where its NIC is, if that node is attached.
    let n1 = c.state("n1");
    assert_eq!(n1.eips.keys().collect::<Vec<_>>(), ["eip-1"]);
    assert_eq!(n1.eips["eip-1"].nic_id, "nic-a1");
    assert_eq!(n1.eips["eip-1"].ip, Ipv4Addr::new(203, 0, 113, 10));
    for n in ["n2", "n3", "g1"] {
        assert!(c.state(n).eips.is_empty(), "{n}");
    }

    // The gateway: on every carrier of vpc-a and every gateway node,
    // ranked by priority (g1 first), with its rules resolved.
    let gw = &n1.nat_gateways["gw-1"];
    assert_eq!(gw.gateways[0], "g1");
    let mut ranked = gw.gateways.clone();
    ranked.sort();
    assert_eq!(ranked, ["g1", "g2", "g3"]);
    assert_eq!(gw.eips.len(), 1);
    assert_eq!(gw.eips[0].ip, Ipv4Addr::new(203, 0, 113, 12));
    assert_eq!(gw.snat_rules[0].source.to_string(), "10.0.0.0/16");
    assert_eq!(gw.snat_rules[0].eip, Ipv4Addr::new(203, 0, 113, 12));
    assert_eq!(gw.dnat_rules[0].internal_ip, Ipv4Addr::new(10, 0, 0, 11));
    for n in ["n1", "n2", "g1", "g2", "g3"] {
        assert_eq!(&c.state(n).nat_gateways["gw-1"], gw, "{n}");
    }
    assert!(c.state("n3").nat_gateways.is_empty());

    // A gateway node carries the whole VPC to deliver inbound traffic.
    let g1 = c.state("g1");
    assert_eq!(g1.vpcs.keys().collect::<Vec<_>>(), ["vpc-a"]);
    assert_eq!(g1.subnets.keys().collect::<Vec<_>>(), ["sub-a"]);
    assert_eq!(g1.nics.keys().collect::<Vec<_>>(), ["nic-a1", "nic-a2"]);
    assert_eq!(g1.local_nics().count(), 0);

    // BFD exactly on the links between a gateway node and the VPC's other
    // carriers, on both sides; not between two compute nodes.
    let bfd = |a: &str, b: &str| c.state(a).peers[b].bfd;
    assert_eq!(
        g1.peers.keys().collect::<Vec<_>>(),
        ["g2", "g3", "n1", "n2"]
    );
    assert!(g1.peers.values().all(|p| p.bfd));
    assert_eq!(
        n1.peers.keys().collect::<Vec<_>>(),
        ["g1", "g2", "g3", "n2"]
    );
    for g in ["g1", "g2", "g3"] {
        assert!(bfd("n1", g) && bfd(g, "n1") && bfd("n2", g) && bfd(g, "n2"));
    }
    assert!(!bfd("n1", "n2") && !bfd("n2", "n1"));
    assert!(c.state("n3").peers.is_empty());
}

#[test]
fn draining_a_gateway_node_moves_it_last_and_back() {
    let mut kv = nat_world();
    let mut c = Compiler::from_listing(&kv.listing(), kv.rev);
    assert_eq!(c.state("n1").nat_gateways["gw-1"].gateways[0], "g1");
    let out = c.apply(&kv.txn(vec![gateway_node("g1", 31, true, 10)]));
    assert_matches_full(&c, &kv);
    // Every carrier of vpc-a learns the new ranking: g1 goes last, and
    // keeps the VPC so it still translates what reaches it meanwhile.
    let mut changed: Vec<&String> = out.changes.keys().collect();
    changed.sort();
    assert_eq!(changed, ["g1", "g2", "g3", "n1", "n2"]);
    let gw = &c.state("n1").nat_gateways["gw-1"];
    assert_eq!(gw.gateways.len(), 3);
    assert_eq!(gw.gateways.last().map(String::as_str), Some("g1"));
    let g1 = c.state("g1");
    assert!(g1.vpcs.contains_key("vpc-a") && g1.nat_gateways.contains_key("gw-1"));
    assert!(c.state("n1").peers["g1"].bfd);

    // Back, and preferred again.
    c.apply(&kv.txn(vec![gateway_node("g1", 31, false, 10)]));
    assert_matches_full(&c, &kv);
    assert_eq!(c.state("n2").nat_gateways["gw-1"].gateways[0], "g1");

    // A priority change reorders; dropping below two nodes is the API's
    // concern, the compiler just ranks what there is.
    c.apply(&kv.txn(vec![gateway_node("g3", 33, false, 20)]));
    assert_matches_full(&c, &kv);
    assert_eq!(c.state("n2").nat_gateways["gw-1"].gateways[0], "g3");

    // Deleting the gateway takes the VPC off the gateway nodes and BFD
    // off the compute nodes' tunnels.
    c.apply(&kv.txn(vec![Op::Del(keys::nat_gateway("gw-1"))]));
    assert_matches_full(&c, &kv);
    assert!(c.state("g3").vpcs.is_empty());
    let n1 = c.state("n1");
    assert_eq!(n1.peers.keys().collect::<Vec<_>>(), ["n2"]);
    assert!(!n1.peers["n2"].bfd);
}

#[test]
fn eips_follow_their_nic_and_binding() {
    let mut kv = nat_world();
    let mut c = Compiler::from_listing(&kv.listing(), kv.rev);
    // Unbind: gone from n1.
    let out = c.apply(&kv.txn(vec![eip("eip-1", "ext-1", 10, None)]));
    assert_eq!(out.changes.keys().collect::<Vec<_>>(), ["n1"]);
    assert!(c.state("n1").eips.is_empty());
    // Bind to nic-b1 on n3 (not attached): nowhere; attach n3: there.
    c.apply(&kv.txn(vec![eip("eip-1", "ext-1", 10, Some("nic-b1"))]));
    assert!(c.state("n3").eips.is_empty());
    c.apply(&kv.txn(vec![ext_net("ext-1", &["n1", "n3", "g1", "g2", "g3"])]));
    assert_eq!(c.state("n3").eips.keys().collect::<Vec<_>>(), ["eip-1"]);
    assert_matches_full(&c, &kv);
    // The NIC moves to n1: the EIP moves with it.
    c.apply(&kv.txn(vec![nic("nic-b1", "vpc-b", "sub-b", Some("n1"), 21)]));
    assert!(c.state("n3").eips.is_empty());
    assert_eq!(c.state("n1").eips.keys().collect::<Vec<_>>(), ["eip-1"]);
    assert_matches_full(&c, &kv);
}

/// One random store write of the property test.
#[derive(Debug, Clone)]
enum Step {
    Node(u8, u8),
    DelNode(u8),
    Vpc(u8, u32),
    DelVpc(u8),
    Subnet(u8, u8, u16),
    DelSubnet(u8),
    Nic(u8, u8, u8, Option<u8>, u8, u8),
    DelNic(u8),
    Group(u8, u8, u8, Option<u8>),
    DelGroup(u8),
    Status(u8, u8),
    Junk(u8),
    /// Node n as a gateway node: drained, priority.
    GwNode(u8, u8, bool, u8),
    /// External network x attached to the nodes of a bit mask.
    ExtNet(u8, u8),
    DelExtNet(u8),
    /// EIP e of network x, bound to NIC i or not.
    Eip(u8, u8, Option<u8>),
    DelEip(u8),
    /// NAT gateway g of VPC v on network x with the EIPs of a bit mask.
    Gw(u8, u8, u8, u8),
    DelGw(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..5u8, 1..4u8).prop_map(|(n, ip)| Step::Node(n, ip)),
        (0..5u8).prop_map(Step::DelNode),
        (0..3u8, 1..3u32).prop_map(|(v, vni)| Step::Vpc(v, vni)),
        (0..3u8).prop_map(Step::DelVpc),
        (0..5u8, 0..3u8, prop_oneof![Just(1450u16), Just(1400)])
            .prop_map(|(s, v, mtu)| Step::Subnet(s, v, mtu)),
        (0..5u8).prop_map(Step::DelSubnet),
        (
            0..10u8,
            0..3u8,
            0..5u8,
            proptest::option::of(0..5u8),
            1..3u8,
            0..8u8,
        )
            .prop_map(|(i, v, s, n, ip, g)| Step::Nic(i, v, s, n, ip, g)),
        (0..10u8).prop_map(Step::DelNic),
        (0..3u8, 0..3u8, 0..3u8, proptest::option::of(0..3u8))
            .prop_map(|(g, v, rules, remote)| Step::Group(g, v, rules, remote)),
        (0..3u8).prop_map(Step::DelGroup),
        (0..10u8, 0..5u8).prop_map(|(i, n)| Step::Status(i, n)),
        (0..3u8).prop_map(Step::Junk),
        (0..5u8, 1..4u8, any::<bool>(), 0..3u8).prop_map(|(n, ip, d, p)| Step::GwNode(n, ip, d, p)),
        (0..2u8, 0..32u8).prop_map(|(x, m)| Step::ExtNet(x, m)),
        (0..2u8).prop_map(Step::DelExtNet),
        (0..4u8, 0..2u8, proptest::option::of(0..10u8)).prop_map(|(e, x, i)| Step::Eip(e, x, i)),
        (0..4u8).prop_map(Step::DelEip),
        (0..2u8, 0..3u8, 0..2u8, 0..16u8).prop_map(|(g, v, x, m)| Step::Gw(g, v, x, m)),
        (0..2u8).prop_map(Step::DelGw),
    ]
}

fn to_op(s: &Step) -> Op {
    let name = |n: &u8| format!("n{n}");
    match s {
        Step::Node(n, ip) => node(&name(n), *ip),
        Step::DelNode(n) => Op::Del(keys::node(&name(n))),
        Step::Vpc(v, vni) => vpc(&format!("v{v}"), *vni),
        Step::DelVpc(v) => Op::Del(keys::vpc(&format!("v{v}"))),
        Step::Subnet(s, v, mtu) => subnet(&format!("s{s}"), &format!("v{v}"), *s, *mtu),
        Step::DelSubnet(s) => Op::Del(keys::subnet(&format!("s{s}"))),
        Step::Nic(i, v, s, n, ip, groups) => {
            // Bit k of `groups`: member of g{k}.
            let names: Vec<String> = (0..3u8)
                .filter(|k| groups & (1 << k) != 0)
                .map(|k| format!("g{k}"))
                .collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            nic_in(
                &format!("i{i}"),
                &format!("v{v}"),
                &format!("s{s}"),
                n.map(|n| name(&n)).as_deref(),
                *ip,
                &refs,
            )
        }
        Step::Group(g, v, rules, remote) => {
            let ports: Vec<u16> = (0..u16::from(*rules)).map(|p| 22 + p).collect();
            let remote = remote.map(|r| format!("g{r}"));
            group(
                &format!("g{g}"),
                &format!("v{v}"),
                &ports,
                remote.as_deref(),
            )
        }
        Step::DelGroup(g) => Op::Del(keys::security_group(&format!("g{g}"))),
        Step::DelNic(i) => Op::Del(keys::nic(&format!("i{i}"))),
        Step::Status(i, n) => status(&format!("i{i}"), &name(n)),
        Step::Junk(j) => Op::Put(format!("/stacknet/index/x/{j}"), vec![b'{']),
        Step::GwNode(n, ip, drained, prio) => {
            gateway_node(&name(n), *ip, *drained, u32::from(*prio))
        }
        Step::ExtNet(x, mask) => {
            let nodes: Vec<String> = (0..5u8)
                .filter(|k| mask & (1 << k) != 0)
                .map(|k| name(&k))
                .collect();
            let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
            ext_net(&format!("x{x}"), &refs)
        }
        Step::DelExtNet(x) => Op::Del(keys::external_network(&format!("x{x}"))),
        Step::Eip(e, x, i) => {
            let nic = i.map(|i| format!("i{i}"));
            eip(&format!("e{e}"), &format!("x{x}"), 10 + e, nic.as_deref())
        }
        Step::DelEip(e) => Op::Del(keys::eip(&format!("e{e}"))),
        Step::Gw(g, v, x, mask) => {
            let eips: Vec<String> = (0..4u8)
                .filter(|k| mask & (1 << k) != 0)
                .map(|k| format!("e{k}"))
                .collect();
            let refs: Vec<&str> = eips.iter().map(String::as_str).collect();
            nat_gateway(&format!("g{g}"), &format!("v{v}"), &format!("x{x}"), &refs)
        }
        Step::DelGw(g) => Op::Del(keys::nat_gateway(&format!("g{g}"))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// After any sequence of transactions the incremental states equal a
    /// full compile of the same store, and the changes reported, applied to
    /// the previous states, reproduce them.
    #[test]
    fn incremental_equals_full(
        initial in proptest::collection::vec(step(), 0..20),
        txns in proptest::collection::vec(proptest::collection::vec(step(), 1..4), 1..30),
    ) {
        let mut kv = Kv::default();
        kv.txn(initial.iter().map(to_op).collect());
        let mut c = Compiler::from_listing(&kv.listing(), kv.rev);
        // What an agent holding every delta would have.
        let mut shadow: BTreeMap<String, NodeState> = c
            .states()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for t in &txns {
            let evs = kv.txn(t.iter().map(to_op).collect());
            let out = c.apply(&evs);
            prop_assert_eq!(c.revision(), kv.rev);
            for (n, changes) in &out.changes {
                let st = shadow.entry(n.clone()).or_insert_with(|| NodeState {
                    node: proto::NodeInfo { name: n.clone(), underlay_ip: None },
                    ..NodeState::default()
                });
                for ch in changes {
                    st.apply(ch);
                }
            }
            let full = Model::from_listing(&kv.listing(), kv.rev);
            let mut names = full.node_names();
            names.extend(c.states().keys().cloned());
            for n in &names {
                let want = norm(compile_node(&full, n));
                prop_assert_eq!(&norm(c.state(n)), &want, "node {}", n);
                let agent = shadow.get(n).cloned().map(norm).unwrap_or_else(|| {
                    norm(compile_node(&Model::default(), n))
                });
                prop_assert_eq!(&agent, &want, "agent view of {}", n);
            }
        }
        // A relist from scratch agrees too.
        let mut fresh = Compiler::default();
        let out = fresh.relist(&kv.listing(), kv.rev);
        for (n, changes) in out.changes {
            let mut st = compile_node(&Model::default(), &n);
            for ch in &changes {
                st.apply(ch);
            }
            prop_assert_eq!(norm(st), norm(c.state(&n)));
        }
    }
}
