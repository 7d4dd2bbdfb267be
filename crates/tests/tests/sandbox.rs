//! Smoke tests of the OVS sandbox and namespaces (real ovsdb-server and
//! ovs-vswitchd, netdev datapath, private namespace and directory).

// Test helpers outside #[test] fns: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use tests::util::{list_netns, pid_alive, RunDir};
use tests::{cleanup_stale, require_root_and_ovs, Netns, OvsSandbox};

#[test]
fn sandbox_starts_configures_and_cleans_up() {
    require_root_and_ovs().unwrap();
    let sb = OvsSandbox::start("smoke").unwrap();
    let dir = sb.dir().to_path_buf();
    let ns = sb.netns().name().to_string();
    assert!(sb.db_socket().exists());
    assert!(list_netns().unwrap().contains(&ns));

    sb.add_bridge("br0").unwrap();
    assert_eq!(sb.vsctl(&["list-br"]).unwrap().trim(), "br0");
    assert!(sb.mgmt_socket("br0").exists());
    assert_eq!(
        sb.vsctl(&["get", "bridge", "br0", "datapath_type"])
            .unwrap()
            .trim(),
        "netdev"
    );
    // The bridge's internal port is a tap inside the sandbox namespace, not
    // in the root namespace.
    sb.netns().run(&["ip", "link", "show", "br0"]).unwrap();
    assert!(tests::util::run("ip", &["link", "show", "br0"]).is_err());

    sb.ofctl(&["add-flow", "br0", "table=0,priority=123,ip,actions=drop"])
        .unwrap();
    let flows = sb.ofctl(&["dump-flows", "br0"]).unwrap();
    assert!(flows.contains("priority=123,ip actions=drop"), "{flows}");
    // ofctl against the mgmt socket path explicitly works too.
    let mgmt = format!("unix:{}", sb.mgmt_socket("br0").display());
    let flows2 = sb.ofctl(&["dump-flows", &mgmt]).unwrap();
    assert!(flows2.contains("priority=123"), "{flows2}");
    let dp = sb.appctl(&["dpif/show"]).unwrap();
    assert!(dp.contains("netdev@ovs-netdev"), "{dp}");

    let pids: Vec<u32> = ["ovsdb-server.pid", "ovs-vswitchd.pid"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(dir.join(f))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(pids.iter().all(|&p| pid_alive(p)));
    drop(sb);
    assert!(pids.iter().all(|&p| !pid_alive(p)), "daemons survived drop");
    assert!(!dir.exists(), "sandbox dir survived drop");
    assert!(!list_netns().unwrap().contains(&ns), "netns survived drop");
}

#[test]
fn vswitchd_restart_keeps_database() {
    require_root_and_ovs().unwrap();
    let mut sb = OvsSandbox::start("rst").unwrap();
    sb.add_bridge("br-int").unwrap();
    sb.ofctl(&["add-flow", "br-int", "priority=7,actions=drop"])
        .unwrap();
    let old = sb.vswitchd_pid().unwrap();
    sb.kill_vswitchd().unwrap();
    assert!(!pid_alive(old));
    assert!(sb.appctl(&["version"]).is_err());
    sb.restart_vswitchd().unwrap();
    assert_ne!(sb.vswitchd_pid().unwrap(), old);
    // Bridges come back from OVSDB; flows do not (they lived in the process).
    assert!(sb.mgmt_socket("br-int").exists());
    let flows = sb.ofctl(&["dump-flows", "br-int"]).unwrap();
    assert!(!flows.contains("priority=7"), "{flows}");
}

#[test]
fn netns_runs_commands_and_reports_errors() {
    require_root_and_ovs().unwrap();
    let run = RunDir::new().unwrap();
    let ns = Netns::create(&format!("{}-t", run.name())).unwrap();
    let out = ns.run(&["ip", "-o", "link", "show", "lo"]).unwrap();
    assert!(out.contains("UP"), "{out}");
    let err = ns
        .run(&["ip", "link", "show", "nosuchdev0"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nosuchdev0") && err.contains("ip netns exec"),
        "{err}"
    );
    // A process left running inside is killed with the namespace.
    let mut p = ns.spawn("sleeper", &["sleep", "600"], None).unwrap();
    let pid = p.pid();
    // `ip netns exec` enters the namespace right after the fork: wait for it.
    tests::wait_until(
        std::time::Duration::from_secs(5),
        "sleeper in netns",
        || ns.pids().unwrap().contains(&pid),
    )
    .unwrap();
    let name = ns.name().to_string();
    ns.delete().unwrap();
    assert!(!p.is_running());
    assert!(!pid_alive(pid));
    assert!(!list_netns().unwrap().contains(&name));
    assert!(Netns::create("not-ours").is_err());
}

#[test]
fn stale_runs_are_swept() {
    require_root_and_ovs().unwrap();
    // This process's automatic sweep runs at most once; have it run now so
    // it cannot race with the fake below.
    tests::util::sweep_stale_once();
    // Fake a killed run: a run dir whose owner is a dead process, with a
    // namespace and a daemon recorded in a pid file.
    let run = RunDir::new().unwrap();
    let name = run.name().to_string();
    let dir: PathBuf = run.path().to_path_buf();
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    std::fs::write(dir.join("owner"), format!("{dead_pid} 0\n")).unwrap();
    let ns = Netns::create(&format!("{name}-x")).unwrap();
    let mut sleeper = ns
        .command("sh")
        .args(["-c", &format!("exec sleep 600 {}", dir.display())])
        .spawn()
        .unwrap();
    std::fs::write(dir.join("sleep.pid"), sleeper.id().to_string()).unwrap();
    std::mem::forget(ns); // as if the run had been killed
    std::mem::forget(run);

    let removed = cleanup_stale(&name).unwrap();
    assert_eq!(removed, vec![name.clone()]);
    sleeper.wait().unwrap();
    assert!(!dir.exists());
    assert!(!list_netns().unwrap().iter().any(|n| n.starts_with(&name)));
}
