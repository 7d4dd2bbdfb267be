//! Proof of the lab and of the OVS userspace tunnelling recipe, with none of
//! our product: two nodes, br-int made with ovs-vsctl, a VXLAN port to the
//! other node's underlay IP, flows installed with ovs-ofctl, VMs on
//! different nodes talking across the underlay.

// Test helpers outside #[test] fns: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use tests::traffic::DhcpClient;
use tests::{Lab, LabConfig, VmSpec};

const VNI: u32 = 5001;
const MAC_A: &str = "02:00:00:00:0a:01";
const MAC_B: &str = "02:00:00:00:0b:01";
const IP_A: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 11);
const IP_B: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 12);

/// The tunnel port on node `i` towards node `peer`; `local_ip` is optional
/// (OVS picks the source from its route table, learned from br-phy).
fn tunnel(lab: &Lab, i: usize, peer: usize, key: &str, with_local_ip: bool) -> String {
    let name = format!("vx{peer}");
    let remote = lab.node(peer).unwrap().underlay_ip().to_string();
    let local = lab.node(i).unwrap().underlay_ip().to_string();
    let mut args: Vec<String> = [
        "add-port",
        "br-int",
        &name,
        "--",
        "set",
        "Interface",
        &name,
        "type=vxlan",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        format!("options:remote_ip={remote}"),
        format!("options:key={key}"),
    ]);
    if with_local_ip {
        args.push(format!("options:local_ip={local}"));
    }
    lab.node(i).unwrap().ovs().vsctl(&args).unwrap();
    name
}

/// Forwarding by MAC and tunnel key on node `i`: the local VM's port tags
/// traffic with the VNI; known remote MACs go to the tunnel; the tunnel's
/// traffic with our VNI goes to the local VM; broadcasts cross once.
fn install_flows(lab: &Lab, i: usize, vm: &str, vx: &str, local_mac: &str, remote_mac: &str) {
    let port = lab.vm(vm).unwrap().port().to_string();
    let flows = [
        format!(
            "table=0,priority=100,in_port={port},actions=set_field:{VNI}->tun_id,resubmit(,10)"
        ),
        format!("table=0,priority=100,in_port={vx},tun_id={VNI},actions=resubmit(,10)"),
        format!("table=10,priority=100,dl_dst={local_mac},actions=output:{port}"),
        format!("table=10,priority=100,dl_dst={remote_mac},actions=output:{vx}"),
        format!("table=10,priority=50,in_port={port},dl_dst=ff:ff:ff:ff:ff:ff,actions=output:{vx}"),
        format!("table=10,priority=50,in_port={vx},dl_dst=ff:ff:ff:ff:ff:ff,actions=output:{port}"),
    ];
    let ovs = lab.node(i).unwrap().ovs();
    for f in flows {
        ovs.ofctl(&["add-flow", "br-int", &f]).unwrap();
    }
}

#[test]
fn vxlan_between_nodes_ping_and_tcp_both_ways() {
    tests::require_root_and_tools().unwrap();
    let mut lab = Lab::new(LabConfig::default()).unwrap();

    // The underlay works: node0 reaches node1's br-phy address.
    let n1_ip = lab.node(1).unwrap().underlay_ip();
    let out = lab
        .node(0)
        .unwrap()
        .netns()
        .run(&["ping", "-c", "1", "-W", "2", &n1_ip.to_string()])
        .unwrap();
    assert!(out.contains("1 received"), "{out}");

    lab.add_vm(VmSpec::new("a", 0, "nic-a", MAC_A).with_ip(IP_A, 24, None))
        .unwrap();
    lab.add_vm(VmSpec::new("b", 1, "nic-b", MAC_B).with_ip(IP_B, 24, None))
        .unwrap();
    for (vm, node, ip, mac) in [("a", 0, IP_A, MAC_A), ("b", 1, IP_B, MAC_B)] {
        let v = lab.vm(vm).unwrap();
        assert_eq!(v.ipv4().unwrap(), vec![ip]);
        let ext = lab
            .node(node)
            .unwrap()
            .ovs()
            .vsctl(&["get", "Interface", v.port(), "external_ids:iface-id"])
            .unwrap();
        assert_eq!(ext.trim().trim_matches('"'), format!("nic-{vm}"));
        let link = v.run(&["ip", "-o", "link", "show", "eth0"]).unwrap();
        assert!(link.contains("mtu 1450") && link.contains(mac), "{link}");
    }

    let vx0 = tunnel(&lab, 0, 1, "flow", true);
    let vx1 = tunnel(&lab, 1, 0, "flow", true);
    // br-int is fail_mode=secure: without flows nothing passes.
    let none = lab.ping("a", IP_B, 2).unwrap();
    assert_eq!(none.received, 0, "{none:?}");

    install_flows(&lab, 0, "a", &vx0, MAC_A, MAC_B);
    install_flows(&lab, 1, "b", &vx1, MAC_B, MAC_A);

    // Capture the underlay while the VMs talk: the traffic must be VXLAN
    // with our VNI carrying the VMs' frames.
    let u0 = lab.underlay_port(0);
    let cap = lab
        .capture(lab.underlay(), &u0, "udp dst port 4789", "underlay0")
        .unwrap();
    lab.vm("a")
        .unwrap()
        .wait_ping(IP_B, Duration::from_secs(10))
        .unwrap();
    let stats = lab.ping("a", IP_B, 5).unwrap();
    assert!(stats.all_received(), "{stats:?}");
    let stats = lab.ping("b", IP_A, 5).unwrap();
    assert!(stats.all_received(), "{stats:?}");
    let captured = cap.stop().unwrap();
    let mut vxlan_from_a = 0;
    for f in &captured.frames {
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("non-IPv4 frame on the underlay:\n{}", captured.text)
        };
        let Some(TransportSlice::Udp(udp)) = &p.transport else {
            panic!("non-UDP frame:\n{}", captured.text)
        };
        assert_eq!(udp.destination_port(), 4789);
        let vx = udp.payload();
        assert_eq!(vx[0], 0x08, "VXLAN I flag");
        let vni = u32::from_be_bytes([0, vx[4], vx[5], vx[6]]);
        assert_eq!(vni, VNI, "{}", captured.text);
        let inner_src = &vx[8 + 6..8 + 12];
        if ip.header().source_addr() == lab.node(0).unwrap().underlay_ip()
            && inner_src == [0x02, 0, 0, 0, 0x0a, 0x01]
        {
            vxlan_from_a += 1;
        }
    }
    assert!(
        vxlan_from_a >= 5,
        "expected VXLAN frames from a:\n{}",
        captured.text
    );

    // TCP both ways, 1 MiB each, byte-for-byte (needs TX offload off).
    let t = lab.tcp("a", "b", IP_B, 5001, 1 << 20).unwrap();
    assert_eq!(t.bytes, 1 << 20);
    let t = lab.tcp("b", "a", IP_A, 5002, 1 << 20).unwrap();
    assert_eq!(t.bytes, 1 << 20);

    // ARP resolved across the tunnel to the right MAC.
    assert_eq!(
        lab.vm("a").unwrap().arping(IP_B).unwrap().as_deref(),
        Some(MAC_B)
    );

    // OVS resolved the peer's underlay MAC on br-phy (the tunnel ARP cache).
    let arp = lab
        .node(0)
        .unwrap()
        .ovs()
        .appctl(&["tnl/arp/show"])
        .unwrap();
    assert!(
        arp.contains(&n1_ip.to_string()) && arp.contains("br-phy"),
        "{arp}"
    );

    // Unplugging removes the port and the namespace.
    let port_b = lab.vm("b").unwrap().port().to_string();
    lab.remove_vm("b").unwrap();
    let ports = lab
        .node(1)
        .unwrap()
        .ovs()
        .vsctl(&["list-ports", "br-int"])
        .unwrap();
    assert!(!ports.contains(&port_b), "{ports}");
    lab.teardown().unwrap();
}

#[test]
fn dhcp_clients_across_vxlan_with_normal_switching() {
    tests::require_root_and_tools().unwrap();
    let mut lab = Lab::new(LabConfig::default()).unwrap();
    // A DHCP server VM on node0 (busybox udhcpd), clients on node1.
    lab.add_vm(
        VmSpec::new("srv", 0, "nic-srv", "02:00:00:00:0c:01").with_ip(
            Ipv4Addr::new(10, 2, 0, 1),
            24,
            None,
        ),
    )
    .unwrap();
    lab.add_vm(VmSpec::new("c1", 1, "nic-c1", "02:00:00:00:0c:02"))
        .unwrap();
    lab.add_vm(VmSpec::new("c2", 1, "nic-c2", "02:00:00:00:0c:03"))
        .unwrap();
    for (i, peer) in [(0, 1), (1, 0)] {
        tunnel(&lab, i, peer, "77", false);
        let ovs = lab.node(i).unwrap().ovs();
        ovs.ofctl(&["add-flow", "br-int", "priority=0,actions=NORMAL"])
            .unwrap();
    }
    let srv_dir = lab.vm("srv").unwrap().dir().to_path_buf();
    let conf = srv_dir.join("udhcpd.conf");
    std::fs::write(
        &conf,
        format!(
            "start 10.2.0.100\nend 10.2.0.110\ninterface eth0\n\
             lease_file {}\npidfile {}\n\
             option subnet 255.255.255.0\noption router 10.2.0.1\n\
             option dns 192.0.2.53\noption mtu 1400\noption lease 600\n",
            srv_dir.join("udhcpd.leases").display(),
            srv_dir.join("udhcpd.pid").display()
        ),
    )
    .unwrap();
    std::fs::write(srv_dir.join("udhcpd.leases"), b"").unwrap();
    let _server = lab
        .vm("srv")
        .unwrap()
        .netns()
        .spawn(
            "udhcpd",
            &["busybox", "udhcpd", "-f", conf.to_str().unwrap()],
            Some(&srv_dir.join("udhcpd.log")),
        )
        .unwrap();

    for (vm, client) in [("c1", DhcpClient::Udhcpc), ("c2", DhcpClient::Dhclient)] {
        let lease = lab
            .vm_mut(vm)
            .unwrap()
            .dhcp(client, Duration::from_secs(30))
            .unwrap();
        let ip = lease.ip.unwrap();
        assert!(
            ip.octets()[..3] == [10, 2, 0] && ip.octets()[3] >= 100,
            "{lease:?}"
        );
        assert_eq!(lease.prefix_len, Some(24), "{lease:?}");
        assert_eq!(lease.router, Some(Ipv4Addr::new(10, 2, 0, 1)), "{lease:?}");
        assert_eq!(lease.dns, vec![Ipv4Addr::new(192, 0, 2, 53)], "{lease:?}");
        assert_eq!(lease.mtu, Some(1400), "{client:?}: {lease:?}");
        assert_eq!(lease.lease_secs, Some(600), "{lease:?}");
        let v = lab.vm(vm).unwrap();
        assert_eq!(v.ipv4().unwrap(), vec![ip]);
        let link = v.run(&["ip", "-o", "link", "show", "eth0"]).unwrap();
        assert!(link.contains("mtu 1400"), "{link}");
        let route = v.run(&["ip", "route", "show", "default"]).unwrap();
        assert!(route.contains("via 10.2.0.1"), "{route}");
        // The address works across the tunnel.
        let s = v.ping(Ipv4Addr::new(10, 2, 0, 1), 3).unwrap();
        assert!(s.all_received(), "{s:?}");
    }
    // The host's resolver config was not touched by the hooks.
    let c1 = lab.vm("c1").unwrap().lease().unwrap().ip.unwrap();
    let c2 = lab.vm("c2").unwrap().lease().unwrap().ip.unwrap();
    assert_ne!(c1, c2);
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert!(!resolv.contains("192.0.2.53"));
}

#[test]
fn vm_moves_between_nodes_and_keeps_talking() {
    tests::require_root_and_tools().unwrap();
    let mut lab = Lab::new(LabConfig::default()).unwrap();
    lab.add_vm(VmSpec::new("a", 0, "nic-a", MAC_A).with_ip(IP_A, 24, None))
        .unwrap();
    lab.add_vm(VmSpec::new("b", 1, "nic-b", MAC_B).with_ip(IP_B, 24, None))
        .unwrap();
    for (i, peer) in [(0, 1), (1, 0)] {
        tunnel(&lab, i, peer, "9", false);
        lab.node(i)
            .unwrap()
            .ovs()
            .ofctl(&["add-flow", "br-int", "priority=0,actions=NORMAL"])
            .unwrap();
    }
    lab.vm("b")
        .unwrap()
        .wait_ping(IP_A, Duration::from_secs(10))
        .unwrap();
    // A process inside the VM survives the move (same namespace).
    let sleeper = lab
        .vm("b")
        .unwrap()
        .netns()
        .spawn("sleeper", &["sleep", "600"], None)
        .unwrap();
    let old_port = lab.vm("b").unwrap().port().to_string();
    for to in [0, 1] {
        lab.move_vm("b", to).unwrap();
        let b = lab.vm("b").unwrap();
        assert_eq!(b.node(), to);
        assert_ne!(b.port(), old_port);
        assert_eq!(b.ipv4().unwrap(), vec![IP_B]);
        let ports = lab
            .node(to)
            .unwrap()
            .ovs()
            .vsctl(&["list-ports", "br-int"])
            .unwrap();
        assert!(ports.contains(b.port()), "{ports}");
        let other = lab
            .node(1 - to)
            .unwrap()
            .ovs()
            .vsctl(&["list-ports", "br-int"])
            .unwrap();
        assert!(
            !other.contains(b.port()) && !other.contains(&old_port),
            "{other}"
        );
        // b speaks first so NORMAL relearns where its MAC lives.
        b.wait_ping(IP_A, Duration::from_secs(10)).unwrap();
        let s = lab.ping("a", IP_B, 3).unwrap();
        assert!(s.all_received(), "after move to node{to}: {s:?}");
        lab.tcp("a", "b", IP_B, 6000 + to as u16, 256 * 1024)
            .unwrap();
    }
    let pid = sleeper.pid();
    assert!(lab.vm("b").unwrap().netns().pids().unwrap().contains(&pid));
}
