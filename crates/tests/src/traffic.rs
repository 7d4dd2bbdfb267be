//! Traffic tools run inside lab namespaces: ping, TCP transfers, ARP probes,
//! packet captures and DHCP clients, plus parsers for their output.

use std::fmt::Write as _;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::error::{LabError, Result};
use crate::netns::Netns;
use crate::process::{tail_file, Proc};
use crate::util::{describe, run_cmd, wait_until};

/// Result of a `ping` run.
#[derive(Debug, Clone, PartialEq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
    /// Average round trip in ms, when anything came back.
    pub rtt_avg_ms: Option<f64>,
}

impl PingStats {
    /// Every probe was answered.
    pub fn all_received(&self) -> bool {
        self.transmitted > 0 && self.received == self.transmitted
    }
}

/// Parse iputils `ping -q` output (the summary lines).
pub fn parse_ping(output: &str) -> Result<PingStats> {
    let bad = || LabError::Parse {
        what: "ping output",
        output: output.to_string(),
    };
    let line = output
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .ok_or_else(bad)?;
    // "3 packets transmitted, 3 received, 0% packet loss, time 2003ms"
    let mut parts = line.split(',').map(str::trim);
    let num = |s: Option<&str>| -> Option<u32> { s?.split_whitespace().next()?.parse().ok() };
    let transmitted = num(parts.next()).ok_or_else(bad)?;
    let received = num(parts.next()).ok_or_else(bad)?;
    // "rtt min/avg/max/mdev = 0.285/0.428/0.659/0.164 ms"
    let rtt_avg_ms = output
        .lines()
        .find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse().ok());
    Ok(PingStats {
        transmitted,
        received,
        rtt_avg_ms,
    })
}

/// One reply line of a running `ping`'s output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PingReply {
    pub seq: u32,
    /// Unix seconds, with `ping -D`.
    pub at: Option<f64>,
}

/// The replies in `ping` output, in order.
pub fn ping_replies(output: &str) -> Vec<PingReply> {
    output
        .lines()
        .filter_map(|l| {
            let seq = l.split("icmp_seq=").nth(1)?.split_whitespace().next()?;
            let at = l
                .strip_prefix('[')
                .and_then(|r| r.split(']').next())
                .and_then(|t| t.parse().ok());
            Some(PingReply {
                seq: seq.parse().ok()?,
                at,
            })
        })
        .collect()
}

/// Requests without a reply up to the last reply: those still in flight
/// when ping stopped are not losses.
pub fn ping_losses(replies: &[PingReply]) -> u32 {
    let seqs: std::collections::BTreeSet<u32> = replies.iter().map(|r| r.seq).collect();
    let last = seqs.last().copied().unwrap_or(0);
    last.saturating_sub(seqs.len() as u32)
}

/// The longest run of requests lost between two replies.
pub fn longest_ping_gap(replies: &[PingReply]) -> u32 {
    replies
        .windows(2)
        .map(|w| w[1].seq.saturating_sub(w[0].seq + 1))
        .max()
        .unwrap_or(0)
}

/// Ping `dst` from inside `ns`: `count` probes 200 ms apart, 1 s wait each.
/// Lost replies are not an error (see [`PingStats`]); a ping that cannot run
/// at all (no route, bad address) is.
pub fn ping(ns: &Netns, dst: Ipv4Addr, count: u32) -> Result<PingStats> {
    let mut cmd = ns.command("ping");
    cmd.args(["-n", "-q", "-i", "0.2", "-W", "1", "-c"])
        .arg(count.max(1).to_string())
        .arg(dst.to_string());
    let desc = describe(&cmd);
    let out = cmd.output().map_err(|source| LabError::Spawn {
        cmd: desc.clone(),
        source,
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // ping exits 1 when replies were missing, 2 on other errors.
    if out.status.code() == Some(0) || out.status.code() == Some(1) {
        parse_ping(&stdout)
    } else {
        Err(LabError::Command {
            cmd: desc,
            status: out.status.to_string(),
            stderr: format!("{}{}", String::from_utf8_lossy(&out.stderr).trim(), stdout),
        })
    }
}

/// What a TCP transfer moved.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferStats {
    pub bytes: usize,
    pub elapsed: Duration,
}

/// Send `bytes` random bytes over TCP from namespace `from` to a listener
/// started in `to` on `dst:port`, and check the listener received exactly
/// the bytes sent. `dir` holds the payload and the received copy. Uses `nc`
/// (netcat-openbsd).
pub fn tcp_transfer(
    from: &Netns,
    to: &Netns,
    dst: Ipv4Addr,
    port: u16,
    bytes: usize,
    dir: &Path,
) -> Result<TransferStats> {
    let mut payload = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut payload);
    let tx = dir.join(format!("tcp-{port}.tx"));
    let rx = dir.join(format!("tcp-{port}.rx"));
    let rx_err = dir.join(format!("tcp-{port}.rx.err"));
    write_file(&tx, &payload)?;

    let mut listen = to.command("nc");
    listen
        .args(["-l", "-n"])
        .arg(dst.to_string())
        .arg(port.to_string());
    listen
        .stdin(std::process::Stdio::null())
        .stdout(create_file(&rx)?)
        .stderr(create_file(&rx_err)?);
    let mut server = Proc::spawn_raw("nc-listen", listen)?;
    let port_s = format!(":{port}");
    let mut listening = || {
        to.run(&["ss", "-Hltn"])
            .map(|o| o.lines().any(|l| l.contains(&port_s)))
            .unwrap_or(false)
    };
    wait_until(Duration::from_secs(5), "nc listener", &mut listening)?;

    let start = Instant::now();
    let mut client = from.command("timeout");
    client
        .args(["60", "nc", "-N", "-n", "-w", "10"])
        .arg(dst.to_string())
        .arg(port.to_string())
        .stdin(open_file(&tx)?);
    let sent = run_cmd(&mut client);
    let done = wait_until(Duration::from_secs(30), "nc listener to finish", || {
        !server.is_running()
    });
    let elapsed = start.elapsed();
    if let Err(e) = sent {
        return Err(LabError::Check(format!(
            "TCP send to {dst}:{port} failed: {e}; listener said: {}",
            tail_file(&rx_err, 5)
        )));
    }
    done?;
    let got = std::fs::read(&rx).map_err(|source| LabError::Io {
        op: "read",
        path: rx.clone(),
        source,
    })?;
    if got != payload {
        let first_diff = got.iter().zip(&payload).position(|(a, b)| a != b);
        return Err(LabError::Check(format!(
            "TCP to {dst}:{port}: sent {} bytes, received {} (first difference at {:?})",
            payload.len(),
            got.len(),
            first_diff
        )));
    }
    let _ = std::fs::remove_file(&tx);
    let _ = std::fs::remove_file(&rx);
    Ok(TransferStats { bytes, elapsed })
}

/// One ARP request for `ip` out of `iface` (busybox arping); the MAC that
/// answered, or `None` when nobody did within `wait_secs`.
pub fn arping(ns: &Netns, iface: &str, ip: Ipv4Addr, wait_secs: u32) -> Result<Option<String>> {
    let mut cmd = ns.command("busybox");
    cmd.args(["arping", "-c", "1", "-w"])
        .arg(wait_secs.max(1).to_string())
        .args(["-I", iface])
        .arg(ip.to_string());
    let desc = describe(&cmd);
    let out = cmd
        .output()
        .map_err(|source| LabError::Spawn { cmd: desc, source })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // "Unicast reply from 10.0.0.2 [02:00:00:00:00:02] 0.123ms"
    Ok(stdout
        .lines()
        .find(|l| l.contains("reply from"))
        .and_then(|l| l.split('[').nth(1))
        .and_then(|r| r.split(']').next())
        .map(|m| m.to_ascii_lowercase()))
}

/// A running `tcpdump` writing a pcap file; stop it to get the frames.
#[derive(Debug)]
pub struct Capture {
    proc: Proc,
    file: PathBuf,
    err: PathBuf,
}

/// Frames a capture saw.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Raw link-layer frames (Ethernet), in order.
    pub frames: Vec<Vec<u8>>,
    /// `tcpdump -nn -e -r` rendering, for failure messages.
    pub text: String,
}

impl Capture {
    /// Start capturing on `iface` inside `ns` with a pcap `filter` (may be
    /// empty); files go to `dir/<name>.pcap`. Returns once tcpdump listens.
    pub fn start(ns: &Netns, iface: &str, filter: &str, dir: &Path, name: &str) -> Result<Capture> {
        let file = dir.join(format!("{name}.pcap"));
        let err = dir.join(format!("{name}.pcap.err"));
        let mut cmd = ns.command("tcpdump");
        // -Z root: tcpdump would otherwise drop to its own user and could not
        // write into the root-owned run directory. -U: write each packet now.
        // --immediate-mode: without it packets wait in the kernel ring for a
        // buffer timeout and a quick stop loses them ("received by filter"
        // but never written).
        cmd.args([
            "-i",
            iface,
            "--immediate-mode",
            "-U",
            "-n",
            "-Z",
            "root",
            "-s",
            "0",
            "-w",
        ])
        .arg(&file);
        if !filter.trim().is_empty() {
            cmd.arg(filter);
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(create_file(&err.with_extension("out"))?)
            .stderr(create_file(&err)?);
        let mut proc = Proc::spawn_raw("tcpdump", cmd)?;
        let ready = wait_until(Duration::from_secs(10), "tcpdump to listen", || {
            std::fs::read_to_string(&err).is_ok_and(|s| s.contains("listening on"))
                || !proc.is_running()
        });
        if ready.is_err() || !proc.is_running() {
            return Err(LabError::Check(format!(
                "tcpdump on {iface} in {} did not start: {}",
                ns.name(),
                tail_file(&err, 5)
            )));
        }
        Ok(Capture { proc, file, err })
    }

    /// The pcap file being written.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Frames captured so far (tcpdump keeps running).
    pub fn frames_so_far(&self) -> Result<Vec<Vec<u8>>> {
        let data = std::fs::read(&self.file).map_err(|source| LabError::Io {
            op: "read",
            path: self.file.clone(),
            source,
        })?;
        parse_pcap(&data)
    }

    /// Stop tcpdump and return what it captured.
    pub fn stop(mut self) -> Result<Captured> {
        self.proc.stop()?;
        let frames = self.frames_so_far()?;
        let text = run_cmd(
            Command::new("tcpdump")
                .args(["-nn", "-e", "-r"])
                .arg(&self.file),
        )
        .unwrap_or_else(|e| format!("<{e}>; {}", tail_file(&self.err, 3)));
        Ok(Captured { frames, text })
    }
}

/// Parse a classic pcap file into its frames (micro- or nanosecond
/// timestamps, either byte order). pcapng is not supported: tcpdump `-w`
/// writes classic pcap.
pub fn parse_pcap(data: &[u8]) -> Result<Vec<Vec<u8>>> {
    let bad = |why: &str| LabError::Parse {
        what: "pcap file",
        output: why.to_string(),
    };
    if data.is_empty() {
        // tcpdump has not flushed its header yet: nothing captured.
        return Ok(Vec::new());
    }
    let header = data.get(..24).ok_or_else(|| bad("short global header"))?;
    let magic = [header[0], header[1], header[2], header[3]];
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err(bad("bad magic")),
    };
    let u32_at = |b: &[u8]| -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut frames = Vec::new();
    let mut off = 24;
    while off < data.len() {
        let Some(rec) = data.get(off..off + 16) else {
            // A record header cut by a concurrent write: stop at the last whole one.
            break;
        };
        let incl = u32_at(&rec[8..12]) as usize;
        let Some(frame) = data.get(off + 16..off + 16 + incl) else {
            break;
        };
        frames.push(frame.to_vec());
        off += 16 + incl;
    }
    Ok(frames)
}

/// A DHCP lease as the client's hook script reported it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DhcpLease {
    pub ip: Option<Ipv4Addr>,
    pub prefix_len: Option<u8>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub mtu: Option<u32>,
    pub lease_secs: Option<u32>,
    pub server_id: Option<Ipv4Addr>,
    /// Every variable the hook saw, `key=value`, for assertions on the rest.
    pub raw: Vec<(String, String)>,
}

/// Which DHCP client a VM runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DhcpClient {
    /// busybox `udhcpc` (requests the MTU option too).
    #[default]
    Udhcpc,
    /// ISC `dhclient`.
    Dhclient,
}

/// udhcpc hook: configures only the namespace's interface and records the
/// lease in the VM's directory; never touches host files.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# stacknet lab udhcpc hook: configures only this namespace's interface and
# records the lease in @LEASE@. Never writes /etc/resolv.conf.
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    if [ -n "$mtu" ]; then ip link set "$interface" mtu "$mtu"; fi
    if [ -n "$router" ]; then
      set -- $router
      ip route replace default via "$1" dev "$interface"
    fi
    {
      echo "ip=$ip"; echo "mask=$mask"; echo "router=$router"; echo "dns=$dns"
      echo "mtu=$mtu"; echo "lease=$lease"; echo "serverid=$serverid"
      echo "subnet=$subnet"; echo "domain=$domain"; echo "hostname=$hostname"
    } > "@LEASE@.tmp"
    mv "@LEASE@.tmp" "@LEASE@"
    ;;
esac
exit 0
"#;

/// dhclient hook (`-sf`): same contract as [`UDHCPC_SCRIPT`], with ISC
/// variable names translated to the udhcpc ones.
const DHCLIENT_SCRIPT: &str = r#"#!/bin/sh
# stacknet lab dhclient hook: configures only this namespace's interface and
# records the lease in @LEASE@. Never writes /etc/resolv.conf.
case "$reason" in
  PREINIT)
    ip link set "$interface" up
    ;;
  BOUND|RENEW|REBIND|REBOOT)
    ip -4 addr flush dev "$interface"
    pfx=$(awk -v m="$new_subnet_mask" 'BEGIN{n=split(m,o,".");c=0;for(i=1;i<=n;i++){v=o[i];while(v>0){c+=v%2;v=int(v/2)}};print c}')
    ip addr add "$new_ip_address/$pfx" dev "$interface"
    if [ -n "$new_interface_mtu" ]; then ip link set "$interface" mtu "$new_interface_mtu"; fi
    if [ -n "$new_routers" ]; then
      set -- $new_routers
      ip route replace default via "$1" dev "$interface"
    fi
    {
      echo "ip=$new_ip_address"; echo "mask=$pfx"; echo "router=$new_routers"
      echo "dns=$new_domain_name_servers"; echo "mtu=$new_interface_mtu"
      echo "lease=$new_dhcp_lease_time"; echo "serverid=$new_dhcp_server_identifier"
      echo "subnet=$new_subnet_mask"; echo "domain=$new_domain_name"; echo "hostname=$new_host_name"
    } > "@LEASE@.tmp"
    mv "@LEASE@.tmp" "@LEASE@"
    ;;
esac
exit 0
"#;

/// Parse the `key=value` lines our hook scripts write.
pub fn parse_lease(text: &str) -> DhcpLease {
    let mut lease = DhcpLease::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        lease.raw.push((k.to_string(), v.to_string()));
        let ip = |s: &str| s.split_whitespace().next().and_then(|x| x.parse().ok());
        match k {
            "ip" => lease.ip = ip(v),
            "mask" => lease.prefix_len = v.parse().ok(),
            "router" => lease.router = ip(v),
            "dns" => {
                lease.dns = v
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            }
            "mtu" => lease.mtu = v.parse().ok(),
            "lease" => lease.lease_secs = v.parse().ok(),
            "serverid" => lease.server_id = ip(v),
            _ => {}
        }
    }
    lease
}

/// Run a DHCP client once on `iface` in `ns` until it has a lease (or
/// `timeout`), files in `dir`. The client is not left running.
pub fn dhcp(
    ns: &Netns,
    iface: &str,
    client: DhcpClient,
    dir: &Path,
    timeout: Duration,
) -> Result<DhcpLease> {
    let lease_file = dir.join("dhcp.lease");
    let _ = std::fs::remove_file(&lease_file);
    let secs = timeout.as_secs().max(2).to_string();
    let out = match client {
        DhcpClient::Udhcpc => {
            let script = dir.join("udhcpc.sh");
            write_script(&script, UDHCPC_SCRIPT, &lease_file)?;
            let tries = (timeout.as_secs().max(2) / 2).to_string();
            let mut cmd = ns.command("timeout");
            cmd.args([secs.as_str(), "busybox", "udhcpc", "-f", "-q", "-n"])
                .args([
                    "-i", iface, "-t", &tries, "-T", "2", "-A", "1", "-O", "mtu", "-s",
                ])
                .arg(&script);
            run_cmd(&mut cmd)
        }
        DhcpClient::Dhclient => {
            let script = dir.join("dhclient.sh");
            write_script(&script, DHCLIENT_SCRIPT, &lease_file)?;
            let conf = dir.join("dhclient.conf");
            write_file(
                &conf,
                b"request subnet-mask, broadcast-address, routers, domain-name-servers, \
                  domain-name, host-name, interface-mtu;\n",
            )?;
            let (lf, pf) = (dir.join("dhclient.leases"), dir.join("dhclient.pid"));
            let mut cmd = ns.command("timeout");
            cmd.args([secs.as_str(), "dhclient", "-4", "-1", "-d", "-v"])
                .arg("-cf")
                .arg(&conf)
                .arg("-lf")
                .arg(&lf)
                .arg("-pf")
                .arg(&pf)
                .arg("-sf")
                .arg(&script)
                .arg(iface);
            // `-d` keeps dhclient in the foreground (no daemon left behind);
            // it then never exits on its own, so run it in the background
            // and stop it as soon as the hook has recorded a lease.
            let log = dir.join("dhclient.log");
            let mut p = Proc::spawn("dhclient", cmd, Some(&log))?;
            let got = wait_until(timeout, "dhclient lease", || {
                lease_file.exists() || !p.is_running()
            });
            p.stop()?;
            match got {
                Ok(()) if lease_file.exists() => Ok(String::new()),
                _ => Err(LabError::Check(format!(
                    "dhclient got no lease: {}",
                    tail_file(&log, 10)
                ))),
            }
        }
    };
    out?;
    let text = std::fs::read_to_string(&lease_file).map_err(|source| LabError::Io {
        op: "read",
        path: lease_file.clone(),
        source,
    })?;
    let lease = parse_lease(&text);
    if lease.ip.is_none() {
        return Err(LabError::Parse {
            what: "DHCP lease",
            output: text,
        });
    }
    Ok(lease)
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).map_err(|source| LabError::Io {
        op: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// Write a hook script with the lease file path baked in (dhclient runs
/// its script with a scrubbed environment, so no env var gets through).
fn write_script(path: &Path, text: &str, lease_file: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let text = text.replace("@LEASE@", &lease_file.to_string_lossy());
    write_file(path, text.as_bytes())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|source| {
        LabError::Io {
            op: "chmod",
            path: path.to_path_buf(),
            source,
        }
    })
}

fn create_file(path: &Path) -> Result<File> {
    File::create(path).map_err(|source| LabError::Io {
        op: "create",
        path: path.to_path_buf(),
        source,
    })
}

fn open_file(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| LabError::Io {
        op: "open",
        path: path.to_path_buf(),
        source,
    })
}

/// Hex dump helper for failure messages.
pub fn hex(frame: &[u8]) -> String {
    let mut s = String::with_capacity(frame.len() * 3);
    for (i, b) in frame.iter().enumerate() {
        if i > 0 && i % 16 == 0 {
            s.push('\n');
        }
        let _ = write!(s, "{b:02x} ");
    }
    s
}

/// python3: a TCP listener on each port given (argv); accepted connections
/// are echoed. Run it in a VM with [`crate::Vm::spawn_python`].
pub const ECHO_SERVER: &str = r#"
import socket, sys, threading
def handle(c):
    try:
        while True:
            d = c.recv(4096)
            if not d:
                return
            c.sendall(d)
    except OSError:
        return
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
"#;

/// Tells each client the address it came from: TCP (a line, then close)
/// and UDP (a datagram back), on `ADDR PORT...` (bound to ADDR, so UDP
/// answers come from the address asked). What "the outside sees as the
/// source" means, measured where it is seen.
pub const WHOAMI_SERVER: &str = r#"
import socket, sys, threading
def tcp(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(128)
    while True:
        c, peer = s.accept()
        try:
            c.sendall((peer[0] + "\n").encode())
        except OSError:
            pass
        c.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    while True:
        _, peer = s.recvfrom(2048)
        s.sendto((peer[0] + "\n").encode(), peer)
addr = sys.argv[1]
for p in sys.argv[2:]:
    threading.Thread(target=tcp, args=(int(p),), daemon=True).start()
    threading.Thread(target=udp, args=(int(p),), daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
"#;

/// Asks a [`WHOAMI_SERVER`] once: `HOST PORT tcp|udp` → prints the source
/// address it saw, or `fail`.
pub const WHOAMI_CLIENT: &str = r#"
import socket, sys
host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    if proto == "tcp":
        c = socket.create_connection((host, port), timeout=2)
        print(c.makefile().readline().strip())
    else:
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(2)
        c.sendto(b"?", (host, port))
        print(c.recvfrom(2048)[0].decode().strip())
except OSError:
    print("fail")
"#;

/// A new TCP connection to a [`WHOAMI_SERVER`] every `INTERVAL_MS` for
/// `SECS`: `HOST PORT INTERVAL_MS SECS` → one line per attempt,
/// `<seconds since start> ok <source seen>` or `<seconds> fail`.
pub const CONNECT_LOOP: &str = r#"
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
interval, secs = int(sys.argv[3]) / 1000.0, float(sys.argv[4])
start = time.monotonic()
n = 0
while time.monotonic() - start < secs:
    t = time.monotonic() - start
    try:
        c = socket.create_connection((host, port), timeout=0.5)
        c.settimeout(0.5)
        seen = c.makefile().readline().strip()
        c.close()
        print("%.3f ok %s" % (t, seen), flush=True)
    except OSError:
        print("%.3f fail" % t, flush=True)
    n += 1
    time.sleep(max(0.0, start + n * interval - time.monotonic()))
print("done", flush=True)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_reply_lines() {
        let out = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\
            [1764180000.100000] 64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.5 ms\n\
            [1764180000.110000] 64 bytes from 10.0.0.2: icmp_seq=2 ttl=64 time=0.5 ms\n\
            64 bytes from 10.0.0.2: icmp_seq=6 ttl=64 time=0.5 ms\n";
        let r = ping_replies(out);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].at, Some(1764180000.1));
        assert_eq!(r[2], PingReply { seq: 6, at: None });
        assert_eq!(ping_losses(&r), 3);
        assert_eq!(longest_ping_gap(&r), 3);
        assert_eq!(ping_losses(&[]), 0);
    }

    #[test]
    fn ping_summary() {
        // iputils-ping 20221126 output.
        let out = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\n\
                   --- 10.0.0.2 ping statistics ---\n\
                   3 packets transmitted, 3 received, 0% packet loss, time 2026ms\n\
                   rtt min/avg/max/mdev = 0.285/0.428/0.659/0.164 ms\n";
        let s = parse_ping(out).unwrap();
        assert_eq!(s.transmitted, 3);
        assert_eq!(s.received, 3);
        assert_eq!(s.rtt_avg_ms, Some(0.428));
        assert!(s.all_received());
        let lost = "4 packets transmitted, 0 received, +4 errors, 100% packet loss, time 3059ms\n";
        let s = parse_ping(lost).unwrap();
        assert_eq!((s.transmitted, s.received, s.rtt_avg_ms), (4, 0, None));
        assert!(!s.all_received());
        assert!(parse_ping("garbage").is_err());
    }

    #[test]
    fn pcap_both_orders() {
        let frame = [0xffu8; 14];
        let mut le = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        le.extend([0; 8]);
        le.extend(65535u32.to_le_bytes());
        le.extend(1u32.to_le_bytes());
        le.extend([0; 8]);
        le.extend(14u32.to_le_bytes());
        le.extend(14u32.to_le_bytes());
        le.extend(frame);
        le.extend([1, 2, 3]); // a record header cut short by a live writer
        assert_eq!(parse_pcap(&le).unwrap(), vec![frame.to_vec()]);
        let mut be = vec![0xa1, 0xb2, 0xc3, 0xd4, 0, 2, 0, 4];
        be.extend([0; 8]);
        be.extend(65535u32.to_be_bytes());
        be.extend(1u32.to_be_bytes());
        be.extend([0; 8]);
        be.extend(2u32.to_be_bytes());
        be.extend(2u32.to_be_bytes());
        be.extend([7, 8]);
        assert_eq!(parse_pcap(&be).unwrap(), vec![vec![7, 8]]);
        assert!(parse_pcap(&[1, 2, 3, 4]).is_err());
        assert!(parse_pcap(&[]).unwrap().is_empty());
    }

    #[test]
    fn lease_lines() {
        let l = parse_lease(
            "ip=10.0.0.5\nmask=24\nrouter=10.0.0.1 10.0.0.254\ndns=192.0.2.53 192.0.2.54\n\
             mtu=1450\nlease=86400\nserverid=10.0.0.1\nsubnet=255.255.255.0\n",
        );
        assert_eq!(l.ip, Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(l.prefix_len, Some(24));
        assert_eq!(l.router, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(l.dns.len(), 2);
        assert_eq!(l.mtu, Some(1450));
        assert_eq!(l.lease_secs, Some(86400));
        assert_eq!(l.server_id, Some(Ipv4Addr::new(10, 0, 0, 1)));
    }
}
