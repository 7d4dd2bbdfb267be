//! Security groups and port security, walked through the interpreter with
//! a conntrack model that keeps state across packets (the same flows are
//! checked on a real OVS by `on_ovs` and end to end by the lab scenarios).

use std::collections::BTreeMap;

use openflow::flow::Field;
use proto::{
    AddressPair, Direction, Ipv4Prefix, NodeState, PortRange, Remote, RuleProtocol, SecurityGroup,
    SgRule,
};

use super::*;

const WEB_MAC: &str = "02:00:00:00:0a:10";
const DB_MAC: &str = "02:00:00:00:0a:20";
const APP_MAC: &str = "02:00:00:00:0a:30";
const CLI_MAC: &str = "02:00:00:00:0a:40";
const OFF_MAC: &str = "02:00:00:00:0a:50";
const GW: &str = "02:00:00:00:0a:01";
const VNI: u32 = 100;
const WEB: u32 = 5;
const DB: u32 = 6;
const CLI: u32 = 7;
const OFF: u32 = 8;

fn anyone() -> Remote {
    Remote::Cidr(Ipv4Prefix {
        addr: Ipv4Addr::UNSPECIFIED,
        len: 0,
    })
}

fn rule(id: &str, direction: Direction, protocol: RuleProtocol, remote: Remote) -> SgRule {
    SgRule {
        id: id.into(),
        direction,
        protocol,
        remote,
    }
}

fn tcp_ports(min: u16, max: u16) -> RuleProtocol {
    RuleProtocol::Tcp {
        ports: Some(PortRange { min, max }),
    }
}

fn group(id: &str, vpc: &str, rules: Vec<SgRule>) -> SecurityGroup {
    SecurityGroup {
        id: id.into(),
        vpc_id: vpc.into(),
        rules,
    }
}

fn member(mut n: Nic, groups: &[&str]) -> Nic {
    n.security_groups = groups.iter().map(|g| g.to_string()).collect();
    n
}

/// One VPC on n1:
/// - web (port 5, 10.0.1.10, sg-web): egress any; ingress tcp 80 from
///   anyone, icmp echo from sg-cli
/// - db (port 6, 10.0.1.20, sg-db): egress any; ingress tcp 5432 from
///   sg-web
/// - app (on n2, 10.0.1.30, sg-app)
/// - cli (port 7, 10.0.1.40, sg-cli): egress any, no ingress rule
/// - off (port 8, 10.0.1.50): port security off
fn world() -> (NodeState, PortMap) {
    let egress_any = |id: &str| rule(id, Direction::Egress, RuleProtocol::Any, anyone());
    let groups = vec![
        group(
            "sg-web",
            "v",
            vec![
                egress_any("w-out"),
                rule("w-80", Direction::Ingress, tcp_ports(80, 80), anyone()),
                rule(
                    "w-ping",
                    Direction::Ingress,
                    RuleProtocol::Icmp {
                        icmp_type: Some(8),
                        icmp_code: None,
                    },
                    Remote::Group("sg-cli".into()),
                ),
            ],
        ),
        group(
            "sg-db",
            "v",
            vec![
                egress_any("d-out"),
                rule(
                    "d-pg",
                    Direction::Ingress,
                    tcp_ports(5432, 5432),
                    Remote::Group("sg-web".into()),
                ),
            ],
        ),
        group("sg-app", "v", vec![egress_any("a-out")]),
        group("sg-cli", "v", vec![egress_any("c-out")]),
    ];
    let mut off = nic("off", "v", "s", OFF_MAC, "10.0.1.50", NODE);
    off.port_security = false;
    off.security_groups = vec![];
    let mut state = node_state(
        vec![vpc("v", VNI)],
        vec![subnet("s", "v", "10.0.1.0/24", "10.0.1.1", GW)],
        vec![
            member(
                nic("web", "v", "s", WEB_MAC, "10.0.1.10", NODE),
                &["sg-web"],
            ),
            member(nic("db", "v", "s", DB_MAC, "10.0.1.20", NODE), &["sg-db"]),
            member(
                nic("app", "v", "s", APP_MAC, "10.0.1.30", PEER),
                &["sg-app"],
            ),
            member(
                nic("cli", "v", "s", CLI_MAC, "10.0.1.40", NODE),
                &["sg-cli"],
            ),
            off,
        ],
        &[PEER],
    );
    state.security_groups = groups.into_iter().map(|g| (g.id.clone(), g)).collect();
    let ports = PortMap::new()
        .with_nic("web", WEB)
        .with_nic("db", DB)
        .with_nic("cli", CLI)
        .with_nic("off", OFF)
        .with_tunnel(PEER, TUN);
    (state, ports)
}

fn tcp(mut pkt: Packet, sport: u16, dport: u16) -> Packet {
    pkt.insert(Field::IpProto, 6);
    pkt.insert(Field::TcpSrc, sport.into());
    pkt.insert(Field::TcpDst, dport.into());
    pkt
}

fn echo(mut pkt: Packet, ty: u8) -> Packet {
    pkt.insert(Field::IpProto, 1);
    pkt.insert(Field::IcmpType, ty.into());
    pkt.insert(Field::IcmpCode, 0);
    pkt
}

/// A frame from a local port to a NIC of the same subnet.
fn l2(port: u32, src_mac: &str, src: &str, dst_mac: &str, dst: &str) -> Packet {
    ipv4(port, src_mac, dst_mac, src, dst)
}

/// Where the packet went: the output port, or None if dropped.
fn fate(flows: &[Flow], pkt: Packet, ct: &mut Conntrack) -> Option<u32> {
    let t = trace_ct(flows, pkt, ct);
    assert!(t.outputs.len() <= 1, "{t:#?}");
    t.outputs.first().map(|(p, _)| *p)
}

#[test]
fn ingress_is_denied_unless_a_rule_allows_it() {
    let (state, ports) = world();
    let flows = render(&state, &ports, 1);
    let ct = &mut Conntrack::default();
    let cli_web = || l2(CLI, CLI_MAC, "10.0.1.40", WEB_MAC, "10.0.1.10");
    assert_eq!(fate(&flows, tcp(cli_web(), 40000, 80), ct), Some(WEB));
    assert_eq!(
        fate(&flows, tcp(cli_web(), 40001, 22), ct),
        None,
        "no rule for 22"
    );
    assert_eq!(
        fate(&flows, udp(cli_web(), 40002, 80), ct),
        None,
        "tcp only"
    );
    assert_eq!(
        fate(&flows, echo(cli_web(), 8), ct),
        Some(WEB),
        "cli is in sg-cli"
    );
    assert_eq!(fate(&flows, echo(cli_web(), 13), ct), None, "echo only");
    // db is not in sg-cli: no ping; the same from web to db on 5432 is
    // allowed (web is in sg-web), from cli it is not.
    let db_web = l2(DB, DB_MAC, "10.0.1.20", WEB_MAC, "10.0.1.10");
    assert_eq!(fate(&flows, echo(db_web, 8), ct), None);
    let web_db = l2(WEB, WEB_MAC, "10.0.1.10", DB_MAC, "10.0.1.20");
    assert_eq!(fate(&flows, tcp(web_db, 40003, 5432), ct), Some(DB));
    let cli_db = l2(CLI, CLI_MAC, "10.0.1.40", DB_MAC, "10.0.1.20");
    assert_eq!(fate(&flows, tcp(cli_db, 40004, 5432), ct), None);
    // From the tunnel the receiver's rules apply the same way.
    let app_web = || from_tunnel(VNI, l2(TUN, APP_MAC, "10.0.1.30", WEB_MAC, "10.0.1.10"));
    assert_eq!(fate(&flows, tcp(app_web(), 40005, 80), ct), Some(WEB));
    assert_eq!(fate(&flows, echo(app_web(), 8), ct), None);
}

#[test]
fn a_nic_in_no_group_sends_and_receives_nothing() {
    let (mut state, ports) = world();
    state.nics.get_mut("cli").unwrap().security_groups.clear();
    let flows = render(&state, &ports, 1);
    let ct = &mut Conntrack::default();
    let cli_web = l2(CLI, CLI_MAC, "10.0.1.40", WEB_MAC, "10.0.1.10");
    assert_eq!(fate(&flows, tcp(cli_web, 40000, 80), ct), None);
    let web_cli = l2(WEB, WEB_MAC, "10.0.1.10", CLI_MAC, "10.0.1.40");
    assert_eq!(fate(&flows, tcp(web_cli, 40000, 80), ct), None);
}

#[test]
fn replies_pass_fresh_connections_from_outside_do_not() {
    let (state, ports) = world();
    let flows = render(&state, &ports, 1);
    let ct = &mut Conntrack::default();
    // cli has no ingress rule at all; what it opens is answered.
    let out = tcp(
        l2(CLI, CLI_MAC, "10.0.1.40", WEB_MAC, "10.0.1.10"),
        40000,
        80,
    );
    let back = tcp(
        l2(WEB, WEB_MAC, "10.0.1.10", CLI_MAC, "10.0.1.40"),
        80,
        40000,
    );
    assert_eq!(
        fate(&flows, back.clone(), ct),
        None,
        "not before it was opened"
    );
    assert_eq!(fate(&flows, out.clone(), ct), Some(WEB));
    assert_eq!(fate(&flows, back.clone(), ct), Some(CLI));
    assert_eq!(fate(&flows, out, ct), Some(WEB));
    assert_eq!(fate(&flows, back, ct), Some(CLI));
    // A new connection from web to cli is refused.
    let fresh = tcp(
        l2(WEB, WEB_MAC, "10.0.1.10", CLI_MAC, "10.0.1.40"),
        80,
        40001,
    );
    assert_eq!(fate(&flows, fresh, ct), None);
    // Ping replies too.
    let ping = echo(l2(CLI, CLI_MAC, "10.0.1.40", WEB_MAC, "10.0.1.10"), 8);
    let pong = echo(l2(WEB, WEB_MAC, "10.0.1.10", CLI_MAC, "10.0.1.40"), 0);
    assert_eq!(fate(&flows, ping, ct), Some(WEB));
    assert_eq!(fate(&flows, pong, ct), Some(CLI));
}

#[test]
fn removing_a_rule_cuts_what_it_allowed_and_nothing_else() {
    let (state, ports) = world();
    let flows = render(&state, &ports, 1);
    let ct = &mut Conntrack::default();
    let http = tcp(
        l2(CLI, CLI_MAC, "10.0.1.40", WEB_MAC, "10.0.1.10"),
        40000,
        80,
    );
    let http_back = tcp(
        l2(WEB, WEB_MAC, "10.0.1.10", CLI_MAC, "10.0.1.40"),
        80,
        40000,
    );
    let ping = echo(l2(CLI, CLI_MAC, "10.0.1.40", WEB_MAC, "10.0.1.10"), 8);
    assert_eq!(fate(&flows, http.clone(), ct), Some(WEB));
    assert_eq!(fate(&flows, http_back.clone(), ct), Some(CLI));
    assert_eq!(fate(&flows, ping.clone(), ct), Some(WEB));

    // An unrelated change (a new rule) keeps both connections: they are
    // re-judged once and re-committed with the new token.
    let mut more = state.clone();
    more.security_groups
        .get_mut("sg-web")
        .unwrap()
        .rules
        .push(rule(
            "w-443",
            Direction::Ingress,
            tcp_ports(443, 443),
            anyone(),
        ));
    let flows2 = render(&more, &ports, 1);
    assert_ne!(flows, flows2);
    assert_eq!(
        fate(&flows2, http_back.clone(), ct),
        Some(CLI),
        "reply first"
    );
    assert_eq!(fate(&flows2, http.clone(), ct), Some(WEB));
    assert_eq!(fate(&flows2, ping.clone(), ct), Some(WEB));

    // Removing the port-80 rule cuts that connection in both directions;
    // the ping (another rule) still passes.
    let mut less = more.clone();
    less.security_groups
        .get_mut("sg-web")
        .unwrap()
        .rules
        .retain(|r| r.id != "w-80");
    let flows3 = render(&less, &ports, 1);
    assert_eq!(fate(&flows3, http_back.clone(), ct), None);
    assert_eq!(fate(&flows3, http.clone(), ct), None);
    assert_eq!(fate(&flows3, ping, ct), Some(WEB));
    // Putting it back lets the same connection through again.
    assert_eq!(fate(&flows2, http, ct), Some(WEB));
}

#[test]
fn remote_groups_follow_membership() {
    let (state, ports) = world();
    let flows = render(&state, &ports, 1);
    let ct = &mut Conntrack::default();
    // app (on n2) is not in sg-web: db refuses it.
    let pg = || {
        from_tunnel(
            VNI,
            tcp(
                l2(TUN, APP_MAC, "10.0.1.30", DB_MAC, "10.0.1.20"),
                41000,
                5432,
            ),
        )
    };
    assert_eq!(fate(&flows, pg(), ct), None);
    // app joins sg-web: allowed at once.
    let mut joined = state.clone();
    joined.nics.get_mut("app").unwrap().security_groups = vec!["sg-app".into(), "sg-web".into()];
    let flows2 = render(&joined, &ports, 1);
    assert_eq!(fate(&flows2, pg(), ct), Some(DB));
    let back = tcp(
        l2(DB, DB_MAC, "10.0.1.20", APP_MAC, "10.0.1.30"),
        5432,
        41000,
    );
    let t = trace_ct(&flows2, back.clone(), ct);
    assert_eq!(t.single_output().0, TUN, "reply to app over the tunnel");
    // app leaves: the established connection is cut, both ways.
    let flows3 = render(&state, &ports, 1);
    assert_eq!(fate(&flows3, pg(), ct), None);
    assert!(trace_ct(&flows3, back, ct).dropped());
}

#[test]
fn a_rule_of_one_vpc_never_admits_another_vpcs_traffic() {
    // vpc w has sg-w whose ingress rule names sg-x, a group of vpc x; the
    // only member of sg-x (in vpc x) has the same address as a NIC of w.
    let mut state = node_state(
        vec![vpc("w", 100), vpc("x", 200)],
        vec![
            subnet("sw", "w", "10.0.1.0/24", "10.0.1.1", GW),
            subnet("sx", "x", "10.0.1.0/24", "10.0.1.1", GW),
        ],
        vec![
            member(nic("w1", "w", "sw", WEB_MAC, "10.0.1.10", NODE), &["sg-w"]),
            member(nic("w2", "w", "sw", CLI_MAC, "10.0.1.40", NODE), &["sg-w2"]),
            member(nic("x1", "x", "sx", CLI_MAC, "10.0.1.40", NODE), &["sg-x"]),
        ],
        &[],
    );
    state.security_groups = [
        group(
            "sg-w",
            "w",
            vec![rule(
                "in",
                Direction::Ingress,
                RuleProtocol::Any,
                Remote::Group("sg-x".into()),
            )],
        ),
        group(
            "sg-w2",
            "w",
            vec![rule("out", Direction::Egress, RuleProtocol::Any, anyone())],
        ),
        group(
            "sg-x",
            "x",
            vec![rule("out", Direction::Egress, RuleProtocol::Any, anyone())],
        ),
    ]
    .into_iter()
    .map(|g| (g.id.clone(), g))
    .collect();
    let ports = PortMap::new()
        .with_nic("w1", 5)
        .with_nic("w2", 6)
        .with_nic("x1", 7);
    let flows = render(&state, &ports, 1);
    let ct = &mut Conntrack::default();
    // w2 has x1's address, but it is not a member of sg-x.
    let pkt = tcp(l2(6, CLI_MAC, "10.0.1.40", WEB_MAC, "10.0.1.10"), 40000, 22);
    assert_eq!(fate(&flows, pkt, ct), None);
    // The address set of sg-x as seen from vpc w is empty: no rule flow
    // matches an address at all.
    assert!(flows
        .iter()
        .filter(|f| f.table == table::SG_INGRESS)
        .all(|f| f.matches.get(Field::CtNwSrc).is_none()));
}

/// A group with `ports` port-range rules from a remote group of `members`
/// NICs: the rule-table flows it costs.
fn rule_flows(members: usize, ports: u16) -> (usize, Vec<Flow>, NodeState, PortMap) {
    let mut nics = vec![member(
        nic("srv", "v", "s", WEB_MAC, "10.0.1.10", NODE),
        &["sg-srv"],
    )];
    for i in 0..members {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 2, 0)) + i as u32 + 2);
        let m = Mac([2, 0, 0, 2, (i >> 8) as u8, i as u8]);
        nics.push(member(
            nic(
                &format!("m{i}"),
                "v",
                "s2",
                &m.to_string(),
                &ip.to_string(),
                PEER,
            ),
            &["sg-clients"],
        ));
    }
    let mut state = node_state(
        vec![vpc("v", VNI)],
        vec![
            subnet("s", "v", "10.0.1.0/24", "10.0.1.1", GW),
            subnet("s2", "v", "10.0.0.0/16", "10.0.0.1", "02:00:00:00:0b:01"),
        ],
        nics,
        &[PEER],
    );
    // Each rule: tcp [1000p, 1000p+9] from sg-clients (a range of 10
    // splits into 3 masked matches: 1000-1007 is not aligned, say).
    let rules = (0..ports)
        .map(|p| {
            rule(
                &format!("r{p}"),
                Direction::Ingress,
                tcp_ports(1000 + 16 * p, 1000 + 16 * p + 9),
                Remote::Group("sg-clients".into()),
            )
        })
        .collect();
    state.security_groups = [
        group("sg-srv", "v", rules),
        group("sg-clients", "v", vec![]),
    ]
    .into_iter()
    .map(|g| (g.id.clone(), g))
    .collect();
    let ports_map = PortMap::new().with_nic("srv", 5).with_tunnel(PEER, TUN);
    let flows = render(&state, &ports_map, 1);
    let tag = security::group_tag("sg-srv");
    let n = flows
        .iter()
        .filter(|f| f.table == table::SG_INGRESS && cookie_object(f.cookie) == tag)
        .count();
    (n, flows, state, ports_map)
}

#[test]
fn large_rule_sets_grow_as_n_plus_m_and_stay_exact() {
    let masks_per_rule = security::port_masks(1000, 1009).len();
    for (members, rules) in [(10, 5), (100, 5), (10, 50), (200, 40)] {
        let (n, ..) = rule_flows(members, rules);
        // One flow per member address (all rules' clauses share it), the
        // masked port matches of every rule and a conj_id flow per rule.
        let want = members + usize::from(rules) * (masks_per_rule + 1);
        assert_eq!(n, want, "{members} members × {rules} rules");
        assert!(n < members * usize::from(rules), "not N×M");
    }
    // And it admits exactly the member × port pairs.
    let (_, flows, state, _) = rule_flows(20, 4);
    let ct = &mut Conntrack::default();
    let from = |i: usize, dport: u16| {
        let m = &state.nics[&format!("m{i}")];
        from_tunnel(
            VNI,
            tcp(
                l2(
                    TUN,
                    &m.mac.to_string(),
                    &m.ip.to_string(),
                    WEB_MAC,
                    "10.0.1.10",
                ),
                50000,
                dport,
            ),
        )
    };
    for (dport, ok) in [
        (1000, true),
        (1009, true),
        (1010, false),
        (1016, true),
        (1025, true),
        (1026, false),
        (1064, false),
        (999, false),
    ] {
        for i in [0, 7, 19] {
            assert_eq!(
                fate(&flows, from(i, dport), ct).is_some(),
                ok,
                "member {i} port {dport}"
            );
        }
    }
    let stranger = from_tunnel(
        VNI,
        tcp(
            l2(TUN, "02:00:00:02:00:63", "10.0.2.99", WEB_MAC, "10.0.1.10"),
            50000,
            1000,
        ),
    );
    assert_eq!(fate(&flows, stranger, ct), None, "not a member");
}

#[test]
fn port_security_off_lifts_every_check() {
    let (state, ports) = world();
    let flows = render(&state, &ports, 1);
    let ct = &mut Conntrack::default();
    // Any source MAC and IP, a DHCP offer even: all delivered. web still
    // judges what reaches it (port 80 is open to anyone).
    let spoofed = tcp(
        l2(OFF, "02:66:66:66:66:66", "192.0.2.66", WEB_MAC, "10.0.1.10"),
        1,
        80,
    );
    assert_eq!(fate(&flows, spoofed, ct), Some(WEB));
    let offer = udp(l2(OFF, OFF_MAC, "10.0.1.50", CLI_MAC, "10.0.1.40"), 67, 68);
    assert_eq!(fate(&flows, offer, ct), None, "cli's ingress refuses it");
    let offer = udp(l2(OFF, OFF_MAC, "10.0.1.50", WEB_MAC, "10.0.1.10"), 67, 68);
    let t = trace_ct(&flows, offer, ct);
    assert!(
        t.path.iter().any(|(table, _)| *table == table::SERVICES),
        "past port security: {t:#?}"
    );
    // Traffic to it is delivered without conntrack, from anyone.
    let to_off = tcp(l2(CLI, CLI_MAC, "10.0.1.40", OFF_MAC, "10.0.1.50"), 1, 9999);
    let t = trace_ct(&flows, to_off, ct);
    assert_eq!(t.single_output().0, OFF);
    assert!(t.path.iter().all(|(table, _)| *table != table::INGRESS_CT));
    // The same offer from a NIC with port security is dropped first thing.
    let offer = udp(l2(CLI, CLI_MAC, "10.0.1.40", WEB_MAC, "10.0.1.10"), 67, 68);
    let t = trace_ct(&flows, offer, ct);
    assert!(t.dropped());
    assert_eq!(t.path.last().map(|(t, _)| *t), Some(table::PORT_SECURITY));
}

#[test]
fn allowed_address_pairs_may_send_and_be_reached() {
    let (mut state, ports) = world();
    let vip = "02:00:00:00:0a:99";
    state.nics.get_mut("cli").unwrap().allowed_address_pairs = vec![
        AddressPair {
            ip: Ipv4Prefix::host(ip("10.0.1.100")),
            mac: Some(mac(vip)),
        },
        AddressPair {
            ip: Ipv4Prefix {
                addr: ip("10.0.9.0"),
                len: 24,
            },
            mac: None,
        },
    ];
    let flows = render(&state, &ports, 1);
    let ct = &mut Conntrack::default();
    let send = |src_mac: &str, src: &str| tcp(l2(CLI, src_mac, src, WEB_MAC, "10.0.1.10"), 1, 80);
    assert_eq!(fate(&flows, send(vip, "10.0.1.100"), ct), Some(WEB));
    assert_eq!(fate(&flows, send(CLI_MAC, "10.0.9.7"), ct), Some(WEB));
    assert_eq!(
        fate(&flows, send(CLI_MAC, "10.0.1.100"), ct),
        None,
        "pair's MAC only"
    );
    assert_eq!(fate(&flows, send(vip, "10.0.9.7"), ct), None);
    assert_eq!(fate(&flows, send(CLI_MAC, "10.0.1.41"), ct), None);
    // ARP from the pair's address and MAC passes port security.
    let mut reply = arp_request(CLI, vip, "10.0.1.100", "10.0.1.10");
    reply.insert(Field::ArpOp, 2);
    reply.insert(Field::EthDst, mac_value(mac(WEB_MAC)));
    assert_eq!(trace(&flows, reply.clone()).single_output().0, WEB);
    reply.insert(Field::ArpSpa, ip_value(ip("10.0.1.20")));
    assert!(trace(&flows, reply).dropped(), "db's address");
    // The pair's address is answered and delivered to cli.
    let (p, out) =
        trace(&flows, arp_request(WEB, WEB_MAC, "10.0.1.10", "10.0.1.100")).single_output();
    assert_eq!((p, get(&out, Field::ArpSha)), (WEB, mac_value(mac(vip))));
    let reply = tcp(l2(WEB, WEB_MAC, "10.0.1.10", vip, "10.0.1.100"), 80, 1);
    assert_eq!(
        fate(&flows, reply, ct),
        Some(CLI),
        "reply to the pair's address"
    );
    // Remote groups count pairs: sg-cli members now include 10.0.9.0/24,
    // so web answers pings from there.
    let ping = echo(l2(CLI, CLI_MAC, "10.0.9.7", WEB_MAC, "10.0.1.10"), 8);
    assert_eq!(fate(&flows, ping, ct), Some(WEB));
}

#[test]
fn invalid_packets_are_dropped() {
    let (state, ports) = world();
    let flows = render(&state, &ports, 1);
    let mut pkt = tcp(l2(CLI, CLI_MAC, "10.0.1.40", WEB_MAC, "10.0.1.10"), 1, 80);
    pkt.insert(Field::CtState, u128::from(ct_state::TRK | ct_state::INV));
    let invalid = flows
        .iter()
        .find(|f| f.table == table::EGRESS_STATE && f.priority == security::sg_priority::INVALID);
    let f = invalid.expect("an +inv drop flow");
    assert!(f.actions.is_empty() && f.goto_table.is_none());
    assert!(matches(f, &pkt));
}

#[test]
fn group_flows_are_shared_and_nic_flows_depend_on_the_nic_only() {
    let (state, ports) = world();
    let mut changed = state.clone();
    changed
        .security_groups
        .get_mut("sg-db")
        .unwrap()
        .rules
        .push(rule(
            "d-22",
            Direction::Ingress,
            tcp_ports(22, 22),
            anyone(),
        ));
    let before = render(&state, &ports, 1);
    let after = render(&changed, &ports, 1);
    let diff: Vec<&Flow> = after.iter().filter(|f| !before.contains(f)).collect();
    let gone: Vec<&Flow> = before.iter().filter(|f| !after.contains(f)).collect();
    let db_tag = security::group_tag("sg-db");
    assert!(!diff.is_empty());
    for f in diff.iter().chain(gone.iter()) {
        assert_eq!(cookie_object(f.cookie), db_tag, "{f:?}");
    }
    // A membership change touches the NIC and the groups naming the one it
    // joined, nothing else.
    let mut joined = state.clone();
    joined
        .nics
        .get_mut("cli")
        .unwrap()
        .security_groups
        .push("sg-web".into());
    let after = render(&joined, &ports, 1);
    let touched: BTreeMap<u32, usize> =
        after
            .iter()
            .filter(|f| !before.contains(f))
            .fold(BTreeMap::new(), |mut m, f| {
                *m.entry(cookie_object(f.cookie)).or_default() += 1;
                m
            });
    let allowed = [
        object_tag(ObjectKind::Nic, "cli"),
        security::group_tag("sg-db"),
        security::group_tag("sg-web"),
    ];
    assert!(touched.keys().all(|t| allowed.contains(t)), "{touched:?}");
}
