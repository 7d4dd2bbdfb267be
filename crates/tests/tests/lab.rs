//! The lab's own behaviour: process management for our binaries (with a
//! stand-in daemon), diagnostics, and cleanup on panic.

// Test helpers outside #[test] fns: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;

use tests::bins::{port_open, AgentCtx, AgentSpec, FlowctlCtx, FlowctlSpec};
use tests::util::list_netns;
use tests::{Lab, LabConfig, VmSpec};

const FAKE: &str = env!("CARGO_BIN_EXE_lab-fake-daemon");

#[test]
fn flowctl_and_agents_start_stop_restart() {
    tests::require_root_and_tools().unwrap();
    let mut lab = Lab::new(LabConfig {
        nodes: 2,
        ..LabConfig::default()
    })
    .unwrap();
    let spec = FlowctlSpec::new(FAKE, |c: &FlowctlCtx| {
        vec![
            "--listen".into(),
            c.api_addr.to_string(),
            "--listen".into(),
            c.agent_addr.to_string(),
            "--require".into(),
            c.cluster_secret_file.display().to_string(),
        ]
    });
    let ctx = lab.start_flowctl(&spec).unwrap();
    assert!(ctx.api_addr.ip().is_loopback());
    assert!(port_open(ctx.api_addr) && port_open(ctx.agent_addr));
    assert_eq!(lab.api_url().unwrap(), format!("http://{}", ctx.api_addr));
    assert!(
        lab.start_flowctl(&spec).is_err(),
        "second start must be refused"
    );
    lab.stop_flowctl(false).unwrap();
    assert!(!port_open(ctx.api_addr));
    // A restart keeps the ports and the store path.
    let again = lab.start_flowctl(&spec).unwrap();
    assert_eq!(again.api_addr, ctx.api_addr);
    assert_eq!(again.store_path, ctx.store_path);
    lab.stop_flowctl(true).unwrap();

    // A daemon that exits at once is reported with its log.
    let bad = FlowctlSpec::new(FAKE, |_: &FlowctlCtx| vec!["--bogus".into(), "x".into()]);
    let err = lab.start_flowctl(&bad).unwrap_err().to_string();
    assert!(err.contains("unknown flag --bogus"), "{err}");

    // Agents get paths that exist and a token that verifies.
    for i in 0..2 {
        let ctx = lab.agent_ctx(i).unwrap();
        assert!(ctx.ovsdb_socket.exists());
        assert_eq!(ctx.node, format!("node{i}"));
        assert_eq!(ctx.underlay_ip, Ipv4Addr::new(192, 0, 2, 10 + i as u8));
        let token = std::fs::read_to_string(&ctx.token_file).unwrap();
        assert!(proto::auth::verify_node_token(
            lab.cluster_secret().as_bytes(),
            &ctx.node,
            &token
        ));
        let secret = std::fs::read(lab.dir().join("cluster.secret")).unwrap();
        assert_eq!(secret, lab.cluster_secret().as_bytes());
    }
    let agent = AgentSpec::new(FAKE, |c: &AgentCtx| {
        vec![
            "--require".into(),
            c.ovsdb_socket.display().to_string(),
            "--require".into(),
            c.token_file.display().to_string(),
        ]
    });
    lab.start_agent(1, &agent).unwrap();
    let pid = lab.node_mut(1).unwrap().agent().unwrap().pid();
    tests::wait_until(std::time::Duration::from_secs(5), "agent log", || {
        std::fs::read_to_string(lab.node(1).unwrap().dir().join("agent/agent.log"))
            .is_ok_and(|s| s.contains("args: --require"))
    })
    .unwrap();
    assert!(lab.node_mut(1).unwrap().agent().unwrap().is_running());
    lab.stop_agent(1, true).unwrap();
    assert!(!tests::util::pid_alive(pid));
    assert!(lab.node_mut(1).unwrap().agent().is_none());
}

#[test]
fn dump_shows_node_state() {
    tests::require_root_and_tools().unwrap();
    let mut lab = Lab::new(LabConfig {
        nodes: 1,
        ..LabConfig::default()
    })
    .unwrap();
    lab.add_vm(VmSpec::new("d", 0, "nic-d", "02:00:00:00:0d:01"))
        .unwrap();
    lab.node(0)
        .unwrap()
        .ovs()
        .ofctl(&["add-flow", "br-int", "priority=321,actions=drop"])
        .unwrap();
    // An outside host on the underlay reaches the node through br-phy.
    lab.add_host("out", &["192.0.2.200/24", "203.0.113.10/24"], None)
        .unwrap();
    let s = lab.ping("out", Ipv4Addr::new(192, 0, 2, 10), 3).unwrap();
    assert!(s.all_received(), "{s:?}");
    assert!(lab.add_host("d", &[], None).is_err(), "name taken by a VM");
    let d = lab.dump();
    assert!(d.contains("priority=321 actions=drop"), "{d}");
    assert!(d.contains("iface-id=nic-d"), "{d}");
    assert!(d.contains("192.0.2.10/24"), "{d}");
    assert!(d.contains("===== vm d"), "{d}");
}

#[test]
fn lab_is_removed_after_a_panic() {
    tests::require_root_and_tools().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let mut lab = Lab::new(LabConfig {
            nodes: 1,
            ..LabConfig::default()
        })
        .unwrap();
        lab.add_vm(VmSpec::new("p", 0, "nic-p", "02:00:00:00:0e:01"))
            .unwrap();
        let pid = lab.node(0).unwrap().ovs().vswitchd_pid().unwrap();
        tx.send((lab.run_name().to_string(), lab.dir().to_path_buf(), pid))
            .unwrap();
        panic!("deliberate failure inside a lab test");
    });
    assert!(result.is_err());
    let (run, dir, pid) = rx.recv().unwrap();
    assert!(!Path::new(&dir).exists(), "run dir left behind");
    assert!(!tests::util::pid_alive(pid), "ovs-vswitchd left running");
    let left: Vec<String> = list_netns()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{run}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
}
