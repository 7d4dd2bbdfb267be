//! `stacknet-demo`: brings stacknet up on this machine and shows it working.
//!
//! A lab of two compute nodes (namespaces with their own Open vSwitch), the
//! all-in-one flowctl (REST API + embedded store + distribution) and an agent
//! per node; then, through the `flowctl` CLI as an operator would: a VPC with
//! two subnets and three NICs, and three VMs plugged in (one addressed by
//! DHCP). It shows traffic inside a subnet across nodes and routed between
//! subnets, then tears everything down (`--keep` waits for Enter first).

use std::io::BufRead;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::traffic::DhcpClient;
use tests::{bins, require_root_and_tools, Cloud, LabError, Result, VmSpec};

fn main() {
    if let Err(e) = run() {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let keep = std::env::args().any(|a| a == "--keep");
    require_root_and_tools()?;
    step("Starting a lab of 2 nodes, flowctl (API + embedded store) and an agent per node");
    let started = Instant::now();
    let mut cloud = Cloud::start(2)?;
    println!(
        "    up in {:.1}s; API at {}",
        started.elapsed().as_secs_f64(),
        cloud.api.base()
    );
    let credentials = cloud
        .lab
        .flowctl()
        .map(|c| c.admin_credentials_file())
        .ok_or_else(|| LabError::Invalid("flowctl not started".into()))?;
    println!(
        "    the first system admin's API key is in {}",
        credentials.display()
    );
    let cli = Cli {
        api: cloud.api.base().to_string(),
        credentials,
    };
    cli.show(&["node", "list"])?;

    step("Creating a VPC with two subnets and three NICs through the flowctl CLI");
    let vpc = cli.json(&["vpc", "create", "demo", "--cidr", "10.100.0.0/16"])?;
    let vpc_id = text(&vpc["id"])?;
    let web = cli.json(&[
        "subnet",
        "create",
        "--vpc",
        vpc_id,
        "--name",
        "web",
        "--cidr",
        "10.100.1.0/24",
        "--wait",
    ])?;
    let db = cli.json(&[
        "subnet",
        "create",
        "--vpc",
        vpc_id,
        "--name",
        "db",
        "--cidr",
        "10.100.2.0/24",
        "--wait",
    ])?;
    let node = |i: usize| cloud.lab.node(i).map(|n| n.name().to_string());
    let (n0, n1) = (node(0)?, node(1)?);
    let web1 = cli.json(&[
        "nic",
        "create",
        // Answered 202 with an operation; --wait follows it until every
        // affected node's agent acked, then prints the NIC.
        "--wait",
        "--subnet",
        text(&web["id"])?,
        "--name",
        "web1",
        "--node",
        &n0,
    ])?;
    let web2 = cli.json(&[
        "nic",
        "create",
        // Answered 202 with an operation; --wait follows it until every
        // affected node's agent acked, then prints the NIC.
        "--wait",
        "--subnet",
        text(&web["id"])?,
        "--name",
        "web2",
        "--node",
        &n1,
    ])?;
    let db1 = cli.json(&[
        "nic",
        "create",
        // Answered 202 with an operation; --wait follows it until every
        // affected node's agent acked, then prints the NIC.
        "--wait",
        "--subnet",
        text(&db["id"])?,
        "--name",
        "db1",
        "--node",
        &n1,
    ])?;
    cli.show(&["subnet", "list"])?;
    cli.show(&["op", "list"])?;

    step("Plugging the VMs: web1 (node0, DHCP), web2 (node1), db1 (node1)");
    let spec = VmSpec::new("web1", 0, text(&web1["id"])?, text(&web1["mac"])?)
        .with_dhcp(DhcpClient::Dhclient);
    cloud.lab.add_vm(spec)?;
    let lease = cloud.lab.vm("web1")?.lease().cloned().unwrap_or_default();
    println!(
        "    web1 got {} via DHCP (router {}, MTU {}) from the node's agent",
        show(lease.ip),
        show(lease.router),
        show(lease.mtu)
    );
    cloud.vm("web2", &web2, &web)?;
    cloud.vm("db1", &db1, &db)?;
    cloud.wait_nic_up(text(&web1["id"])?)?;
    cli.show(&["nic", "list"])?;

    step("Traffic");
    let web2_ip: Ipv4Addr = parse(&web2["ip"])?;
    let db1_ip: Ipv4Addr = parse(&db1["ip"])?;
    let web1_ip: Ipv4Addr = parse(&web1["ip"])?;
    cloud
        .lab
        .vm("web1")?
        .wait_ping(web2_ip, Duration::from_secs(20))?;
    report(
        "web1 → web2  same subnet, across nodes (VXLAN)",
        cloud.lab.ping("web1", web2_ip, 5)?,
    );
    report(
        "web1 → db1   routed on node0 (distributed router)",
        cloud.lab.ping("web1", db1_ip, 5)?,
    );
    report(
        "db1  → web1  routed on node1",
        cloud.lab.ping("db1", web1_ip, 5)?,
    );
    let lab = &cloud.lab;
    let tcp = lab
        .vm("web1")?
        .tcp_to(lab.vm("db1")?, db1_ip, 5432, 4 << 20)?;
    println!("    web1 → db1   TCP: {} bytes delivered intact", tcp.bytes);

    let flows = cloud.lab.node(0)?.flows("br-int")?;
    println!(
        "    node0 br-int holds {} flows installed by its agent",
        flows.lines().count().saturating_sub(1)
    );

    if keep {
        step("Running. Try: STACKNET_API=<api> flowctl nic list. Press Enter to tear down.");
        let _ = std::io::stdin().lock().lines().next();
    }
    step("Tearing down (namespaces, OVS instances, processes)");
    cloud.lab.teardown()?;
    println!("    done.");
    Ok(())
}

/// Runs the flowctl CLI against the demo's API.
struct Cli {
    api: String,
    /// The key pair the CLI signs with (STACKNET_CREDENTIALS).
    credentials: std::path::PathBuf,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(bins::binary("flowctl")?)
            .env("STACKNET_API", &self.api)
            .env("STACKNET_CREDENTIALS", &self.credentials)
            .args(args)
            .output()
            .map_err(|source| LabError::Spawn {
                cmd: format!("flowctl {}", args.join(" ")),
                source,
            })?;
        if !out.status.success() {
            return Err(LabError::Command {
                cmd: format!("flowctl {}", args.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let text = self.run(&all)?;
        serde_json::from_str(&text).map_err(|_| LabError::Parse {
            what: "flowctl JSON",
            output: text,
        })
    }

    fn show(&self, args: &[&str]) -> Result<()> {
        println!("    $ flowctl {}", args.join(" "));
        for line in self.run(args)?.lines() {
            println!("    {line}");
        }
        Ok(())
    }
}

fn step(what: &str) {
    println!("\n==> {what}");
}

fn report(what: &str, stats: tests::traffic::PingStats) {
    println!(
        "    {what}: {}/{} replies, avg {:.2} ms",
        stats.received,
        stats.transmitted,
        stats.rtt_avg_ms.unwrap_or(f64::NAN)
    );
}

fn text(v: &Value) -> Result<&str> {
    v.as_str()
        .ok_or_else(|| LabError::Invalid(format!("expected a string, got {v}")))
}

fn parse<T: std::str::FromStr>(v: &Value) -> Result<T> {
    text(v)?.parse().map_err(|_| LabError::Parse {
        what: "address",
        output: v.to_string(),
    })
}

fn show<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "?".into(), |v| v.to_string())
}
