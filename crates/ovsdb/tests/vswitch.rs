//! The Open_vSwitch operations against a real ovsdb-server + ovs-vswitchd
//! (netdev datapath) in a private namespace and directory
//! (`tests::OvsSandbox`). Results are checked with `ovs-vsctl`.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use ovsdb::vswitch::{OWNER_KEY, PEER_KEY, PROTOCOLS};
use ovsdb::{BridgeConfig, Datum, Error, TunnelSpec, Vswitch, VswitchEvent, VswitchdState};
use tests::OvsSandbox;

const T: Duration = Duration::from_secs(15);

fn cfg() -> BridgeConfig {
    BridgeConfig::new("br-int", "netdev")
}

/// `ovs-vsctl list Bridge`, without the columns ovs-vswitchd fills in on its
/// own schedule (they change under us after a bridge is created).
fn bridges(sb: &OvsSandbox) -> Vec<ovsdb::Row> {
    let mut rows =
        common::parse_vsctl_list(&sb.vsctl(&["--format=json", "list", "Bridge"]).unwrap());
    for r in &mut rows {
        for c in ["datapath_id", "datapath_version", "status", "rstp_status"] {
            r.remove(c);
        }
    }
    rows
}

fn get(sb: &OvsSandbox, args: &[&str]) -> String {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    sb.vsctl(&a).unwrap().trim().to_string()
}

fn spec(peer: &str, remote: &str) -> TunnelSpec {
    TunnelSpec {
        peer: peer.into(),
        remote_ip: remote.parse().unwrap(),
        local_ip: Some("192.0.2.1".parse().unwrap()),
        bfd: false,
        cpath_down: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_bridge_creates_what_vsctl_shows_and_is_idempotent() {
    let sb = OvsSandbox::start("ovb").unwrap();
    let vs = Vswitch::connect(&sb.db_remote(), cfg()).await.unwrap();
    assert!(vs.ensure_bridge().await.unwrap(), "first call creates");

    let rows = bridges(&sb);
    assert_eq!(rows.len(), 1);
    let br = &rows[0];
    assert_eq!(br["name"], Datum::string("br-int"));
    assert_eq!(br["datapath_type"], Datum::string("netdev"));
    assert_eq!(br["fail_mode"], Datum::string("secure"));
    assert_eq!(br["protocols"], Datum::set(PROTOCOLS));
    assert_eq!(
        br["other_config"],
        Datum::map([("disable-in-band", "true")])
    );
    assert_eq!(br["external_ids"], Datum::map([(OWNER_KEY, "stacknet")]));
    assert_eq!(sb.vsctl(&["list-ports", "br-int"]).unwrap().trim(), "");
    // ovs-vswitchd took it up: the bridge's own port got an ofport.
    assert_eq!(sb.ofport("br-int").unwrap(), 65534);
    let uuid = br["_uuid"].clone();

    // Second call, and a second agent: no writes, same row.
    assert!(!vs.ensure_bridge().await.unwrap());
    let other = Vswitch::connect(&sb.db_remote(), cfg()).await.unwrap();
    assert!(!other.ensure_bridge().await.unwrap());
    assert_eq!(bridges(&sb), rows);

    // Drift is repaired in place; keys others set are kept.
    sb.vsctl(&[
        "set",
        "Bridge",
        "br-int",
        "fail_mode=standalone",
        "protocols=OpenFlow13",
        "other_config:disable-in-band=false",
        "other_config:mac-aging-time=10",
        "external_ids:site=lab",
    ])
    .unwrap();
    let mut ofports = vs.ofports();
    tokio::time::timeout(T, async {
        // Wait until our replica saw the drift.
        while vs
            .replica()
            .find_by("Bridge", "fail_mode", "standalone")
            .is_none()
        {
            let _ = tokio::time::timeout(Duration::from_millis(50), ofports.changed()).await;
        }
    })
    .await
    .unwrap();
    assert!(vs.ensure_bridge().await.unwrap());
    let rows = bridges(&sb);
    assert_eq!(rows.len(), 1);
    let br = &rows[0];
    assert_eq!(br["_uuid"], uuid, "never recreated");
    assert_eq!(br["fail_mode"], Datum::string("secure"));
    assert_eq!(br["protocols"], Datum::set(PROTOCOLS));
    assert_eq!(
        br["other_config"],
        Datum::map([("disable-in-band", "true"), ("mac-aging-time", "10")])
    );
    assert_eq!(
        br["external_ids"],
        Datum::map([(OWNER_KEY, "stacknet"), ("site", "lab")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_bridge_with_other_datapath_is_left_alone() {
    let sb = OvsSandbox::start("ovd").unwrap();
    sb.add_bridge("br-int").unwrap();
    let before = bridges(&sb);
    let vs = Vswitch::connect(&sb.db_remote(), BridgeConfig::new("br-int", "system"))
        .await
        .unwrap();
    let err = vs.ensure_bridge().await.unwrap_err();
    assert!(matches!(err, Error::DatapathMismatch { .. }), "{err}");
    assert_eq!(bridges(&sb), before);

    // With the right datapath it is adopted in place.
    let vs = Vswitch::connect(&sb.db_remote(), cfg()).await.unwrap();
    assert!(vs.ensure_bridge().await.unwrap());
    let after = bridges(&sb);
    assert_eq!(after[0]["_uuid"], before[0]["_uuid"]);
    assert_eq!(after[0]["fail_mode"], Datum::string("secure"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_agents_create_one_of_everything() {
    let sb = OvsSandbox::start("ovr").unwrap();
    let mut agents = Vec::new();
    for _ in 0..4 {
        agents.push(Vswitch::connect(&sb.db_remote(), cfg()).await.unwrap());
    }
    // All plan "create" from the same empty view; guards let one win.
    let results = futures_join(agents.iter().map(|a| {
        let a = a.clone();
        tokio::spawn(async move { a.ensure_bridge().await })
    }))
    .await;
    let created = results.iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(created, 1, "{results:?}");
    assert_eq!(bridges(&sb).len(), 1);

    let results = futures_join(agents.iter().map(|a| {
        let a = a.clone();
        tokio::spawn(async move { a.ensure_tunnel(&spec("node-2", "192.0.2.2")).await })
    }))
    .await;
    for r in &results {
        assert_eq!(r.as_ref().unwrap(), "vx-node-2");
    }
    let ports = sb.vsctl(&["list-ports", "br-int"]).unwrap();
    assert_eq!(ports.trim(), "vx-node-2");
    let ifaces =
        common::parse_vsctl_list(&sb.vsctl(&["--format=json", "list", "Interface"]).unwrap());
    assert_eq!(ifaces.len(), 2, "br-int and one tunnel interface");
}

async fn futures_join<T: std::fmt::Debug + Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_ports_appear_change_and_go() {
    let sb = OvsSandbox::start("ovt").unwrap();
    let vs = Vswitch::connect(&sb.db_remote(), cfg()).await.unwrap();
    vs.ensure_bridge().await.unwrap();

    let name = vs
        .ensure_tunnel(&spec("node-2", "192.0.2.2"))
        .await
        .unwrap();
    assert_eq!(name, "vx-node-2");
    assert_eq!(get(&sb, &["Interface", &name, "type"]), "vxlan");
    assert_eq!(
        get(&sb, &["Interface", &name, "options"]),
        r#"{key=flow, local_ip="192.0.2.1", remote_ip="192.0.2.2"}"#
    );
    assert_eq!(
        get(&sb, &["Port", &name, "external_ids"]),
        format!("{{{OWNER_KEY}=stacknet, {PEER_KEY}=node-2}}")
    );
    let ofport = sb.ofport(&name).unwrap();
    let m = vs
        .wait_ofports(T, |m| m.port(&name).is_some())
        .await
        .unwrap();
    assert_eq!(m.port(&name), Some(ofport));
    let t = vs.tunnels();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].peer, "node-2");
    assert_eq!(t[0].remote_ip.as_deref(), Some("192.0.2.2"));

    // Same spec again: nothing written, same row.
    let uuid = get(&sb, &["Interface", &name, "_uuid"]);
    vs.ensure_tunnel(&spec("node-2", "192.0.2.2"))
        .await
        .unwrap();
    assert_eq!(get(&sb, &["Interface", &name, "_uuid"]), uuid);

    // The peer's address changed: updated in place, ofport kept.
    let moved = TunnelSpec {
        local_ip: None,
        ..spec("node-2", "192.0.2.22")
    };
    vs.ensure_tunnel(&moved).await.unwrap();
    assert_eq!(get(&sb, &["Interface", &name, "_uuid"]), uuid);
    assert_eq!(
        get(&sb, &["Interface", &name, "options"]),
        r#"{key=flow, remote_ip="192.0.2.22"}"#
    );

    // A long node name gets a hashed name within 15 characters.
    let long = vs
        .ensure_tunnel(&spec("compute-rack12-node-0042", "192.0.2.3"))
        .await
        .unwrap();
    assert_eq!(long.len(), 15);
    sb.ofport(&long).unwrap();

    // Sync to a different set: node-2 and the long one go, node-4 comes.
    let removed = vs
        .sync_tunnels(&[spec("node-4", "192.0.2.4")])
        .await
        .unwrap();
    assert_eq!(removed.len(), 2);
    assert_eq!(
        sb.vsctl(&["list-ports", "br-int"]).unwrap().trim(),
        "vx-node-4"
    );
    let ifaces = sb.vsctl(&["--columns=name", "list", "Interface"]).unwrap();
    assert!(
        !ifaces.contains("vx-node-2"),
        "rows are garbage-collected: {ifaces}"
    );
    let m = vs
        .wait_ofports(T, |m| {
            m.port("vx-node-2").is_none() && m.port("vx-node-4").is_some()
        })
        .await
        .unwrap();
    assert!(m.port(&long).is_none());

    assert!(vs.remove_tunnel("node-4").await.unwrap());
    assert!(!vs.remove_tunnel("node-4").await.unwrap());
    assert_eq!(sb.vsctl(&["list-ports", "br-int"]).unwrap().trim(), "");
    assert!(vs.tunnels().is_empty());

    // A port by that name that is not ours is refused, and left alone.
    sb.vsctl(&[
        "add-port",
        "br-int",
        "vx-node-5",
        "--",
        "set",
        "Interface",
        "vx-node-5",
        "type=vxlan",
        "options:remote_ip=192.0.2.5",
    ])
    .unwrap();
    let err = vs
        .ensure_tunnel(&spec("node-5", "192.0.2.5"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotOwned { .. }), "{err}");
    vs.sync_tunnels(&[]).await.unwrap();
    assert_eq!(
        sb.vsctl(&["list-ports", "br-int"]).unwrap().trim(),
        "vx-node-5",
        "sync never removes ports that are not ours"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofport_map_follows_interfaces() {
    let sb = OvsSandbox::start("ovp").unwrap();
    let vs = Vswitch::connect(&sb.db_remote(), cfg()).await.unwrap();
    vs.ensure_bridge().await.unwrap();
    let mut rx = vs.ofports();

    sb.vsctl(&[
        "add-port",
        "br-int",
        "p1",
        "--",
        "set",
        "Interface",
        "p1",
        "type=internal",
        "external_ids:iface-id=nic-1",
    ])
    .unwrap();
    let want = sb.ofport("p1").unwrap();
    let m = vs
        .wait_ofports(T, |m| m.iface("nic-1").is_some())
        .await
        .unwrap();
    assert_eq!(m.iface("nic-1"), Some(want));
    assert_eq!(m.port("p1"), Some(want));
    assert!(rx.has_changed().unwrap(), "watchers are woken");

    // An interface that cannot be opened: ofport -1 with the error.
    sb.vsctl(&["add-port", "br-int", "nosuchdev"]).unwrap();
    let m = vs
        .wait_ofports(T, |m| m.failed.contains_key("nosuchdev"))
        .await
        .unwrap();
    assert!(m.port("nosuchdev").is_none());

    // Ports on another bridge are not in br-int's map.
    sb.add_bridge("br-phy").unwrap();
    sb.vsctl(&[
        "add-port",
        "br-phy",
        "p9",
        "--",
        "set",
        "Interface",
        "p9",
        "type=internal",
        "external_ids:iface-id=nic-9",
    ])
    .unwrap();
    sb.ofport("p9").unwrap();

    sb.vsctl(&["del-port", "br-int", "p1"]).unwrap();
    let m = vs
        .wait_ofports(T, |m| m.iface("nic-1").is_none())
        .await
        .unwrap();
    assert_eq!(m.iface("nic-9"), None);
    rx.mark_unchanged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vswitchd_restart_is_noticed() {
    let mut sb = OvsSandbox::start("ovk").unwrap();
    let vs = Vswitch::connect(&sb.db_remote(), cfg()).await.unwrap();
    vs.ensure_bridge().await.unwrap();
    let mut state = vs.vswitchd_state();
    tokio::time::timeout(T, state.wait_for(|s| *s == VswitchdState::Running))
        .await
        .unwrap()
        .unwrap();
    let mut events = vs.events();

    sb.kill_vswitchd().unwrap();
    let ev = tokio::time::timeout(T, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev, VswitchEvent::VswitchdDown);
    assert_eq!(*vs.vswitchd_state().borrow(), VswitchdState::Down);

    let mut sb = tokio::task::spawn_blocking(move || {
        sb.restart_vswitchd().unwrap();
        sb
    })
    .await
    .unwrap();
    let ev = tokio::time::timeout(T, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev, VswitchEvent::VswitchdUp);
    // The restarted ovs-vswitchd configured itself (it held its lock, so
    // our probing did not get in its way).
    assert_eq!(sb.ofport("br-int").unwrap(), 65534);
    assert!(vs.ensure_bridge().await.is_ok());

    // A second restart is seen too.
    sb = tokio::task::spawn_blocking(move || {
        sb.restart_vswitchd().unwrap();
        sb
    })
    .await
    .unwrap();
    let ev = tokio::time::timeout(T, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev, VswitchEvent::VswitchdDown);
    let ev = tokio::time::timeout(T, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev, VswitchEvent::VswitchdUp);
    drop(sb);
}

/// An uplink to an external network: created once, labelled with its
/// physnet; BFD on a tunnel, with "do not forward to me", as OVS shows it;
/// another owner's port of the same name is never taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_ports_and_tunnel_bfd() {
    use ovsdb::vswitch::{ExternalPortSpec, PHYSNET_KEY};
    let sb = OvsSandbox::start("ovx").unwrap();
    let vs = Vswitch::connect(&sb.db_remote(), cfg()).await.unwrap();
    vs.ensure_bridge().await.unwrap();
    let uplink = ExternalPortSpec {
        physnet: "internet".into(),
        iface: "ext-test0".into(),
    };
    assert!(vs.ensure_external_port(&uplink).await.unwrap());
    assert!(
        !vs.ensure_external_port(&uplink).await.unwrap(),
        "idempotent"
    );
    assert_eq!(
        get(
            &sb,
            &["Port", "ext-test0", &format!("external_ids:{PHYSNET_KEY}")]
        ),
        "internet"
    );
    assert_eq!(
        sb.vsctl(&["list-ports", "br-int"]).unwrap().trim(),
        "ext-test0"
    );

    sb.vsctl(&["add-port", "br-int", "theirs"]).unwrap();
    let theirs = ExternalPortSpec {
        physnet: "internet".into(),
        iface: "theirs".into(),
    };
    assert!(matches!(
        vs.ensure_external_port(&theirs).await,
        Err(Error::NotOwned { .. })
    ));

    let mut t = spec("gw1", "192.0.2.7");
    t.bfd = true;
    t.cpath_down = true;
    vs.ensure_tunnel(&t).await.unwrap();
    let name = ovsdb::vswitch::tunnel_port_name("gw1");
    assert_eq!(get(&sb, &["Interface", &name, "bfd:enable"]), "\"true\"");
    assert_eq!(
        get(&sb, &["Interface", &name, "bfd:cpath_down"]),
        "\"true\""
    );
    t.cpath_down = false;
    vs.ensure_tunnel(&t).await.unwrap();
    assert_eq!(
        get(&sb, &["Interface", &name, "bfd:cpath_down"]),
        "\"false\""
    );
    let seen = vs.tunnels();
    assert!(seen
        .iter()
        .any(|p| p.peer == "gw1" && p.bfd && !p.cpath_down));
    t.bfd = false;
    vs.ensure_tunnel(&t).await.unwrap();
    assert_eq!(get(&sb, &["Interface", &name, "bfd"]), "{}");
}
