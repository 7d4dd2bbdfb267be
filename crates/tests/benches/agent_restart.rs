//! Agent restart on a node holding more than 100,000 flows: time until the
//! flows are complete again, and whether any gap appears.
//!
//! node0 carries two VMs in eight security groups: seven of 1,000 ingress
//! rules each (TCP 1-65535 from a distinct /32, 16 masked port matches a
//! rule: 16,000 flows a group) and the VPC's default group, which lets the
//! VMs talk. While VM a pings b every 10 ms, node0's agent is restarted with
//! SIGTERM, with SIGKILL, and with SIGKILL while flowctl is down (headless,
//! from the local copy). For each: the time from the new process starting to
//! its first full reconcile (the complete table: the agent replaces what
//! differs in one bundle and leaves identical flows alone), the lowest flow
//! count OVS reported while polling every 20 ms (`ovs-ofctl
//! dump-aggregate`), and the pings lost (a request unanswered while a later
//! one was answered: those in flight when ping stops are not losses).
//!
//! Runs the real product on a lab (release binaries: `scripts/bench.sh`).

#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::bins::AgentSpec;
use tests::traffic::parse_ping;
use tests::{require_root_and_tools, wait_until, Cloud};

const GROUPS: usize = 7;
const RULES: usize = 1_000;

fn main() {
    require_root_and_tools().unwrap();
    let mut cloud = Cloud::start(2).unwrap();
    let vpc = cloud.vpc("restart", "10.40.0.0/16").unwrap();
    let sn = cloud.subnet(&vpc, "s", "10.40.1.0/24").unwrap();
    let mut groups: Vec<Value> = (0..GROUPS)
        .map(|g| {
            let rules: Vec<Value> = (0..RULES)
                .map(|r| {
                    let src = Ipv4Addr::from(0xc633_0000 + (g * RULES + r) as u32);
                    json!({"direction": "ingress", "protocol": "tcp",
                           "port_range_min": 1, "port_range_max": 65535, "remote_cidr": format!("{src}/32")})
                })
                .collect();
            let sg = cloud
                .api
                .create(
                    "/v1/security-groups",
                    &json!({"vpc_id": vpc["id"], "name": format!("big{g}"), "rules": rules}),
                )
                .unwrap();
            sg["id"].clone()
        })
        .collect();
    let default_id = vpc["default_security_group_id"].clone();
    assert!(default_id.is_string(), "the VPC's default group: {vpc}");
    groups.push(default_id);
    let nic = |name: &str| {
        let n = cloud
            .api
            .create(
                "/v1/nics",
                &json!({"subnet_id": sn["id"], "node": cloud.lab.node(0).unwrap().name(),
                        "security_groups": groups}),
            )
            .unwrap();
        (name.to_string(), n)
    };
    let (a, b) = (nic("a"), nic("b"));
    for (name, n) in [&a, &b] {
        cloud.vm(name, n, &sn).unwrap();
    }
    let ip_b: Ipv4Addr = b.1["ip"].as_str().unwrap().parse().unwrap();
    cloud
        .lab
        .vm("a")
        .unwrap()
        .wait_ping(ip_b, Duration::from_secs(30))
        .unwrap();
    let flows = flow_count(&cloud.lab.node(0).unwrap().ovs().mgmt_socket("br-int"));
    println!("node0 holds {flows} flows");

    for (what, kill, headless) in [
        ("SIGTERM", false, false),
        ("SIGKILL", true, false),
        ("SIGKILL, flowctl down", true, true),
    ] {
        if headless {
            cloud.lab.stop_flowctl(false).unwrap();
        }
        let r = restart(&mut cloud, kill, ip_b);
        println!(
            "agent restart ({what}): complete {:7.1} ms after the new process started; \
             lowest flow count seen {} of {flows}; pings {} sent, {} lost",
            r.complete.as_secs_f64() * 1e3,
            r.lowest,
            r.sent,
            r.lost
        );
        // Where the time went, from the agent's own account of that sync.
        let log = cloud.lab.node(0).unwrap().dir().join("agent/agent.log");
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let last = |what: &str| {
            text.lines()
                .rev()
                .find(|l| l.contains(what))
                .map(str::to_string)
        };
        if let (Some(dump), Some(line)) = (last("read what is installed"), last("flows applied")) {
            let fields: Vec<&str> = dump
                .split_whitespace()
                .chain(line.split_whitespace())
                .filter(|w| {
                    w.contains("_us=")
                        || w.starts_with("changes=")
                        || w.starts_with("full_reconcile_of=")
                })
                .collect();
            println!("    agent: {}", fields.join(" "));
        }
        if headless {
            cloud.lab.start_flowctl(&Default::default()).unwrap();
        }
    }
}

struct Restart {
    complete: Duration,
    lowest: u64,
    sent: u32,
    lost: u32,
}

fn restart(cloud: &mut Cloud, kill: bool, ip_b: Ipv4Addr) -> Restart {
    let vm = cloud.lab.vm("a").unwrap();
    let out = vm.dir().join("ping.out");
    let mut ping = vm
        .netns()
        .spawn(
            "ping",
            &["ping", "-n", "-i", "0.01", "-W", "1", &ip_b.to_string()],
            Some(&out),
        )
        .unwrap();
    let log = cloud.lab.node(0).unwrap().dir().join("agent/agent.log");
    let lowest = AtomicU64::new(u64::MAX);
    let done = AtomicBool::new(false);
    // By its management socket: the poller must not hold on to the lab.
    let mgmt = cloud.lab.node(0).unwrap().ovs().mgmt_socket("br-int");
    let complete = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                lowest.fetch_min(flow_count(&mgmt), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        // Stops the poller however this closure ends (a panic included:
        // the scope would wait for it forever).
        let _stop = Stop(&done);
        std::thread::sleep(Duration::from_millis(500));
        let applied_before = applied_lines(&log);
        cloud.lab.stop_agent(0, kill).unwrap();
        let t0 = Instant::now();
        cloud.lab.start_agent(0, &AgentSpec::default()).unwrap();
        wait_until(Duration::from_secs(120), "agent's first bundle", || {
            applied_lines(&log) > applied_before
        })
        .unwrap();
        let complete = t0.elapsed();
        std::thread::sleep(Duration::from_millis(500));
        complete
    });
    tests::util::signal(ping.pid(), "INT").unwrap();
    wait_until(Duration::from_secs(5), "ping to exit", || {
        !ping.is_running()
    })
    .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let stats = parse_ping(&text).unwrap();
    Restart {
        complete,
        lowest: lowest.into_inner(),
        sent: stats.transmitted,
        lost: tests::traffic::ping_losses(&tests::traffic::ping_replies(&text)),
    }
}

struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Lines of the agent's log saying a bundle went in (the log is appended
/// to across restarts).
fn applied_lines(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("flows applied"))
        .count()
}

/// `ovs-ofctl dump-aggregate` over the bridge's management socket.
fn flow_count(mgmt: &Path) -> u64 {
    let out = std::process::Command::new("ovs-ofctl")
        .arg("dump-aggregate")
        .arg(format!("unix:{}", mgmt.display()))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("flow_count="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
