//! The server against real DHCP clients. ISC dhclient and busybox udhcpc run
//! in a client namespace; a raw socket in a server namespace (a few lines of
//! Python, the only way to get one without `unsafe`) hands every frame to
//! [`respond`] and sends the reply back. The clients check our checksums
//! (udhcpc drops any frame with a bad IP or UDP checksum) and report what
//! they understood through their hook scripts.
//!
//! Lab rules: two namespaces with a per-run prefix, the veth pair created
//! straight into them in one command, everything removed by a Drop guard.
//! Hooks write only into the run's temp dir and never touch resolv.conf.
//! Needs root, `ip`, `python3`, `dhclient` and `busybox`, and fails saying
//! so without them (like the lab's tests).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{the_nic, the_subnet, CLIENT_MAC};
use crate::dhcp::{respond, DhcpFrame, MessageType, Outcome};

const BRIDGE: &str = r#"
import os, select, socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
print("ready", flush=True)
buf = b""
while True:
    r, _, _ = select.select([s, 0], [], [])
    if s in r:
        data, addr = s.recvfrom(65535)
        if addr[2] != socket.PACKET_OUTGOING:
            print(data.hex(), flush=True)
    if 0 in r:
        chunk = os.read(0, 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            s.send(bytes.fromhex(line.decode()))
"#;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn require_lab() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false);
    let missing: Vec<&str> = ["ip", "python3", "dhclient", "busybox"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    assert!(
        root && missing.is_empty(),
        "needs root (namespaces) and these tools: {missing:?}; \
         install: apt-get install iproute2 python3 isc-dhcp-client busybox"
    );
}

fn run(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(status.success(), "{args:?}: {status}");
}

/// (request type, reply type) for every DHCP frame the server saw.
type ServerLog = Arc<Mutex<Vec<(Option<MessageType>, Option<MessageType>)>>>;

/// Two namespaces joined by a veth pair, and every process started in them.
/// Dropping it kills the processes (by pid) and deletes the namespaces,
/// which deletes the veth pair with them.
struct Lab {
    client_ns: String,
    server_ns: String,
    client_if: String,
    server_if: String,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        static RUN: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "pld{}x{}",
            std::process::id() % 100_000,
            RUN.fetch_add(1, Ordering::SeqCst)
        );
        let mut lab = Lab {
            client_ns: format!("{prefix}c"),
            server_ns: format!("{prefix}s"),
            client_if: format!("{prefix}a"),
            server_if: format!("{prefix}b"),
            children: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        // Namespaces first, each registered for cleanup by the guard.
        run(&["ip", "netns", "add", &lab.client_ns]);
        run(&["ip", "netns", "add", &lab.server_ns]);
        let mac = CLIENT_MAC.to_string();
        run(&[
            "ip",
            "link",
            "add",
            &lab.client_if,
            "netns",
            &lab.client_ns,
            "address",
            &mac,
            "type",
            "veth",
            "peer",
            "name",
            &lab.server_if,
            "netns",
            &lab.server_ns,
        ]);
        run(&[
            "ip",
            "-n",
            &lab.client_ns,
            "link",
            "set",
            &lab.client_if,
            "up",
        ]);
        run(&[
            "ip",
            "-n",
            &lab.server_ns,
            "link",
            "set",
            &lab.server_if,
            "up",
        ]);
        lab.children.reserve(4);
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the raw-socket bridge and a thread answering every frame as
    /// the DHCP server of `the_nic()`. Returns the requests seen with what
    /// the server did.
    fn serve(&mut self) -> ServerLog {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.server_ns,
                "python3",
                "-c",
                BRIDGE,
                &self.server_if,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut input = child.stdin.take().unwrap();
        self.children.push(child);
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&log);
        std::thread::spawn(move || {
            let (nic, subnet) = (the_nic(), the_subnet());
            for line in out.lines() {
                let Ok(line) = line else { return };
                let frame = super::unhex(line.trim());
                // Router solicitations and the like: not for us.
                let Ok(parsed) = DhcpFrame::parse(&frame) else {
                    continue;
                };
                let outcome = respond(&frame, &nic, &subnet).unwrap();
                let replied = match &outcome {
                    Outcome::Reply {
                        message_type,
                        frame,
                        ..
                    } => {
                        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
                        if writeln!(input, "{hex}").is_err() {
                            return;
                        }
                        Some(*message_type)
                    }
                    Outcome::Ignored(_) => None,
                };
                seen.lock()
                    .unwrap()
                    .push((parsed.message.message_type(), replied));
            }
        });
        log
    }

    /// Starts a client in the client namespace.
    fn spawn_client(&mut self, args: &[&str]) -> usize {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.client_ns])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    fn stop(&mut self, idx: usize) {
        let child = &mut self.children[idx];
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits for a child to exit by itself.
    fn wait_exit(&mut self, idx: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.children[idx].try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Polls `cond` until it holds or `timeout` passes.
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Writes an executable hook script that appends the environment the client
/// passes it (one `key=value` per line, a blank line after each call).
fn hook(path: &Path, events: &Path) {
    let script = format!(
        "#!/bin/sh\n{{ echo \"arg=$1\"; env; echo; }} >> '{}'\nexit 0\n",
        events.display()
    );
    std::fs::write(path, script).unwrap();
    run(&["chmod", "+x", path.to_str().unwrap()]);
}

/// The hook calls recorded in `events`, each as a map.
fn calls(events: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(events).unwrap_or_default();
    text.split("\n\n")
        .filter(|c| !c.trim().is_empty())
        .map(|c| {
            c.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
                .collect()
        })
        .collect()
}

fn find_call(events: &Path, key: &str, value: &str) -> Option<HashMap<String, String>> {
    calls(events)
        .into_iter()
        .find(|c| c.get(key).map(String::as_str) == Some(value))
}

#[test]
fn dhclient_gets_a_lease_then_reboots_into_it() {
    require_lab();
    let mut lab = Lab::new();
    let log = lab.serve();
    let events = lab.path("events");
    let script = lab.path("hook.sh");
    hook(&script, &events);
    let lease = lab.path("dhclient.leases");
    let pid = lab.path("dhclient.pid");
    let args = |lab: &Lab| -> Vec<String> {
        vec![
            "dhclient".into(),
            "-d".into(),
            "-1".into(),
            "-sf".into(),
            script.display().to_string(),
            "-lf".into(),
            lease.display().to_string(),
            "-pf".into(),
            pid.display().to_string(),
            lab.client_if.clone(),
        ]
    };
    let a = args(&lab);
    let client = lab.spawn_client(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let bound = wait_until(Duration::from_secs(30), || {
        find_call(&events, "reason", "BOUND").is_some()
    });
    lab.stop(client);
    assert!(bound, "no lease; server saw {:?}", log.lock().unwrap());
    let b = find_call(&events, "reason", "BOUND").unwrap();
    assert_eq!(b["new_ip_address"], "10.0.1.10");
    assert_eq!(b["new_subnet_mask"], "255.255.255.0");
    assert_eq!(b["new_broadcast_address"], "10.0.1.255");
    assert_eq!(b["new_routers"], "10.0.1.1");
    assert_eq!(b["new_domain_name_servers"], "10.0.0.2 10.0.0.3");
    assert_eq!(b["new_interface_mtu"], "1450");
    assert_eq!(b["new_dhcp_lease_time"], "3600");
    assert_eq!(b["new_dhcp_renewal_time"], "1800");
    assert_eq!(b["new_dhcp_rebinding_time"], "3150");
    assert_eq!(b["new_dhcp_server_identifier"], "10.0.1.1");
    {
        let log = log.lock().unwrap();
        assert!(
            log.contains(&(Some(MessageType::Discover), Some(MessageType::Offer))),
            "{log:?}"
        );
        assert!(
            log.contains(&(Some(MessageType::Request), Some(MessageType::Ack))),
            "{log:?}"
        );
        log.iter()
            .for_each(|e| assert_ne!(e.1, Some(MessageType::Nak), "{log:?}"));
    }

    // Second start with the lease file: INIT-REBOOT (REQUEST without a
    // server id), acknowledged.
    log.lock().unwrap().clear();
    std::fs::remove_file(&events).unwrap();
    let a = args(&lab);
    let client = lab.spawn_client(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let rebooted = wait_until(Duration::from_secs(30), || {
        find_call(&events, "reason", "REBOOT").is_some()
    });
    lab.stop(client);
    assert!(
        rebooted,
        "no reboot; events {:?}, server saw {:?}",
        calls(&events),
        log.lock().unwrap()
    );
    assert_eq!(
        find_call(&events, "reason", "REBOOT").unwrap()["new_ip_address"],
        "10.0.1.10"
    );
    let log = log.lock().unwrap();
    assert_eq!(
        log.first(),
        Some(&(Some(MessageType::Request), Some(MessageType::Ack))),
        "{log:?}"
    );
}

#[test]
fn udhcpc_checks_our_checksums_and_takes_the_lease() {
    require_lab();
    // Unicast replies (default) and broadcast replies (-B).
    for extra in [None, Some("-B")] {
        let mut lab = Lab::new();
        let log = lab.serve();
        let events = lab.path("events");
        let script = lab.path("hook.sh");
        hook(&script, &events);
        let script = script.display().to_string();
        let iface = lab.client_if.clone();
        let mut args = vec![
            "busybox", "udhcpc", "-f", "-q", "-n", "-t", "4", "-T", "2", "-s", &script, "-i",
            &iface,
        ];
        if let Some(e) = extra {
            args.push(e);
        }
        let client = lab.spawn_client(&args);
        let status = lab.wait_exit(client, Duration::from_secs(30));
        assert!(
            status.map(|s| s.success()).unwrap_or(false),
            "{extra:?}: udhcpc got no lease ({status:?}); server saw {:?}",
            log.lock().unwrap()
        );
        let b = find_call(&events, "arg", "bound").expect("bound hook call");
        assert_eq!(b["ip"], "10.0.1.10");
        assert_eq!(b["subnet"], "255.255.255.0");
        assert_eq!(b["router"], "10.0.1.1");
        assert_eq!(b["dns"], "10.0.0.2 10.0.0.3");
        assert_eq!(b["mtu"], "1450");
        assert_eq!(b["lease"], "3600");
        assert_eq!(b["serverid"], "10.0.1.1");
    }
}
