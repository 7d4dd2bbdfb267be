//! Small helpers: running commands, polling for conditions, unique per-run
//! names, environment checks and the stale-run sweeper.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};

/// Where every run keeps its directory. Short on purpose: Unix socket paths
/// (db.sock, br-int.mgmt) must stay under 108 bytes.
pub const LAB_ROOT: &str = "/tmp/stacknet-lab";

/// Every lab resource name starts with this.
pub const NAME_PREFIX: &str = "sn";

/// Env var: keep run directories (OVS logs, databases) of failed tests.
pub const KEEP_ENV: &str = "STACKNET_LAB_KEEP";

/// Env var: the `RUST_LOG` of the flowctl and agent processes the lab
/// starts (default `info`), e.g. `info,flowctl=debug` to follow a change.
pub const LOG_ENV: &str = "STACKNET_LAB_LOG";

/// The `RUST_LOG` for our processes in the lab.
pub fn lab_log_filter() -> String {
    std::env::var(LOG_ENV).unwrap_or_else(|_| "info".into())
}

/// OVS schema used for every sandbox database.
pub const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// Render a command for error messages and logs.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run a command to completion; stdout on success, an error naming the
/// command and carrying its stderr otherwise.
pub fn run_cmd(cmd: &mut Command) -> Result<String> {
    let desc = describe(cmd);
    tracing::trace!(cmd = %desc, "run");
    let out = cmd.output().map_err(|source| LabError::Spawn {
        cmd: desc.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: desc,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run `prog args..` in the current (root) namespace.
pub fn run<S: AsRef<OsStr>>(prog: &str, args: &[S]) -> Result<String> {
    run_cmd(Command::new(prog).args(args))
}

/// Poll `cond` until it is true or `timeout` passes. The sleep between polls
/// grows from 10 ms to 200 ms, so fast conditions are seen fast.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    wait_for(timeout, what, || cond().then_some(()))
}

/// Poll `f` until it yields a value or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(LabError::Timeout {
                what: what.to_string(),
                timeout,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

fn to_base36(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// True when `name` has the shape of a run name: `sn` + 4 digits + base36
/// counter, optionally followed by `-<anything>` (netns names).
pub fn is_lab_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
        return false;
    };
    let run = rest.split('-').next().unwrap_or("");
    run.len() >= 5
        && run[..4].bytes().all(|b| b.is_ascii_digit())
        && run[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// The run part (`sn04231`) of a lab name (`sn04231-n1`).
fn run_of(name: &str) -> &str {
    name.split('-').next().unwrap_or(name)
}

/// A reserved, unique per-run name (`sn<pid%10000><counter>`, 7-9 chars, so
/// interface names built from it stay within 15 chars) and its directory
/// under [`LAB_ROOT`]. The directory is created atomically, which is what
/// makes the name unique across concurrent test processes; it records the
/// owning pid so [`cleanup_stale`] can tell live runs from leftovers.
/// Dropping it removes the directory (kept on panic when `STACKNET_LAB_KEEP=1`).
#[derive(Debug)]
pub struct RunDir {
    name: String,
    dir: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl RunDir {
    /// Reserve a fresh run name and directory.
    pub fn new() -> Result<RunDir> {
        let root = Path::new(LAB_ROOT);
        std::fs::create_dir_all(root).map_err(|source| LabError::Io {
            op: "create",
            path: root.to_path_buf(),
            source,
        })?;
        let pid = std::process::id();
        for _ in 0..10_000 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("{NAME_PREFIX}{:04}{}", pid % 10_000, to_base36(n));
            let dir = root.join(&name);
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    let owner = format!("{} {}\n", pid, proc_start_time(pid).unwrap_or_default());
                    let owner_path = dir.join("owner");
                    std::fs::write(&owner_path, owner).map_err(|source| LabError::Io {
                        op: "write",
                        path: owner_path,
                        source,
                    })?;
                    tracing::debug!(run = %name, "reserved run directory");
                    return Ok(RunDir { name, dir });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(LabError::Io {
                        op: "create",
                        path: dir,
                        source,
                    })
                }
            }
        }
        Err(LabError::Invalid("no free run name".into()))
    }

    /// The run name, e.g. `sn04231`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The run directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if keep_on_failure() {
            eprintln!("lab: keeping {} ({}=1)", self.dir.display(), KEEP_ENV);
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(run = %self.name, error = %e, "could not remove run directory");
        }
    }
}

/// True when a test is failing and the user asked to keep its files.
pub fn keep_on_failure() -> bool {
    std::thread::panicking() && std::env::var(KEEP_ENV).is_ok_and(|v| v == "1")
}

/// Field 22 of /proc/PID/stat: lets us tell a live owner from a recycled pid.
fn proc_start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after ')' are plain.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19).map(str::to_string)
}

/// True while process `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Send a signal (`TERM`, `KILL`) to one pid with `kill(1)`; the crate
/// forbids `unsafe`, so no libc call.
pub fn signal(pid: u32, sig: &str) -> Result<()> {
    run("kill", &["-s", sig, &pid.to_string()]).map(|_| ())
}

fn run_is_stale(run_dir: &Path) -> bool {
    let Ok(owner) = std::fs::read_to_string(run_dir.join("owner")) else {
        // A directory without an owner file is being created right now or is
        // broken; only the latter is stale, and we cannot tell: leave it.
        return false;
    };
    let mut it = owner.split_whitespace();
    let pid: Option<u32> = it.next().and_then(|p| p.parse().ok());
    let start = it.next().unwrap_or("");
    match pid {
        Some(pid) => !(pid_alive(pid) && proc_start_time(pid).as_deref() == Some(start)),
        None => true,
    }
}

/// Remove leftovers of killed runs whose names start with `prefix` (use
/// [`NAME_PREFIX`] for all): processes recorded in their pid files (only when
/// the process's command line names the run directory), network namespaces
/// and run directories. Only names with the lab pattern are touched, and a
/// run whose owning process is alive is left alone. Returns the runs removed.
pub fn cleanup_stale(prefix: &str) -> Result<Vec<String>> {
    if !prefix.starts_with(NAME_PREFIX) {
        return Err(LabError::Invalid(format!(
            "prefix {prefix:?} must start with {NAME_PREFIX:?}"
        )));
    }
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    let root = Path::new(LAB_ROOT);
    let mut stale_runs = Vec::new();
    let mut live_runs = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_lab_name(&name) || !name.starts_with(prefix) {
                continue;
            }
            if run_is_stale(&e.path()) {
                stale_runs.push(name);
            } else {
                live_runs.push(name);
            }
        }
    }
    for run in &stale_runs {
        let dir = root.join(run);
        kill_recorded_pids(&dir);
    }
    // Namespaces: stale when their run is stale or has no directory at all
    // (the directory is created first and removed last).
    for ns in list_netns()? {
        if !is_lab_name(&ns) || !ns.starts_with(prefix) {
            continue;
        }
        let owner = run_of(&ns);
        if live_runs.iter().any(|r| r == owner) {
            continue;
        }
        // A run that started after the directories were listed: its
        // directory exists before its namespace, so look again.
        let dir = root.join(owner);
        if dir.exists() && !run_is_stale(&dir) {
            continue;
        }
        if let Ok(pids) = run("ip", &["netns", "pids", &ns]) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                let _ = signal(pid, "KILL");
            }
        }
        match run("ip", &["netns", "del", &ns]) {
            Ok(_) => tracing::info!(netns = %ns, "removed stale namespace"),
            Err(e) => errors.push(e),
        }
        if !removed.iter().any(|r| r == owner) {
            removed.push(owner.to_string());
        }
    }
    for run in stale_runs {
        let dir = root.join(&run);
        if let Err(source) = std::fs::remove_dir_all(&dir) {
            errors.push(LabError::Io {
                op: "remove",
                path: dir,
                source,
            });
        }
        if !removed.contains(&run) {
            removed.push(run);
        }
    }
    if errors.is_empty() {
        Ok(removed)
    } else {
        Err(LabError::Teardown(errors))
    }
}

/// Run [`cleanup_stale`] for all lab names once per process (best effort:
/// failures are logged). Called when a sandbox or lab starts, so leftovers
/// of killed runs do not pile up.
pub fn sweep_stale_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| match cleanup_stale(NAME_PREFIX) {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(?removed, "removed leftovers of killed lab runs")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "stale lab sweep failed"),
    });
}

/// Kill daemons of a dead run: every `*.pid` file below `dir` whose process
/// still runs with `dir` in its command line (so a recycled pid is spared).
fn kill_recorded_pids(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "pid") {
                continue;
            }
            let Some(pid) = std::fs::read_to_string(&p)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains(&*dir.to_string_lossy()) {
                tracing::info!(pid, pidfile = %p.display(), "killing stale lab process");
                let _ = signal(pid, "KILL");
            }
        }
    }
}

/// Names of all network namespaces.
pub fn list_netns() -> Result<Vec<String>> {
    let out = run("ip", &["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Find `prog` on PATH (or as given, when it contains a slash).
pub fn which(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Tools the OVS sandbox needs.
pub const OVS_TOOLS: &[&str] = &[
    "ip",
    "kill",
    "ovsdb-tool",
    "ovsdb-server",
    "ovs-vswitchd",
    "ovs-vsctl",
    "ovs-ofctl",
    "ovs-appctl",
];

/// Tools the multi-node lab needs on top of [`OVS_TOOLS`].
pub const LAB_TOOLS: &[&str] = &["ethtool", "ping", "nc", "tcpdump", "busybox"];

/// Fail with a clear message unless we are root and OVS and the lab tools
/// are installed. Tests call this first and fail (never skip) on error: CI
/// always has them.
pub fn require_root_and_tools() -> Result<()> {
    require(OVS_TOOLS.iter().chain(LAB_TOOLS))
}

/// Like [`require_root_and_tools`] but only for an OVS sandbox.
pub fn require_root_and_ovs() -> Result<()> {
    require(OVS_TOOLS.iter())
}

fn require<'a>(tools: impl Iterator<Item = &'a &'a str>) -> Result<()> {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root (the lab creates network namespaces)".to_string());
    }
    for t in tools {
        if which(t).is_none() {
            missing.push(format!("`{t}` on PATH"));
        }
    }
    if !Path::new(VSWITCH_SCHEMA).is_file() {
        missing.push(format!("{VSWITCH_SCHEMA} (openvswitch-common)"));
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun (netdev datapath internal ports)".to_string());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LabError::Requirements(format!(
            "missing: {}; install: apt-get install iproute2 openvswitch-switch \
             openvswitch-common iputils-ping netcat-openbsd tcpdump ethtool busybox \
             isc-dhcp-client procps",
            missing.join(", ")
        )))
    }
}

/// A plain HTTP/1.0 GET (1 s timeouts); the body if it answered 200.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let timeout = Duration::from_secs(1);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names() {
        assert!(is_lab_name("sn04231"));
        assert!(is_lab_name("sn0423a-n1"));
        assert!(!is_lab_name("sn12-x"));
        assert!(!is_lab_name("eth0"));
        assert!(!is_lab_name("snAB12c"));
        assert_eq!(run_of("sn0423a-n1"), "sn0423a");
        assert_eq!(to_base36(0), "0");
        assert_eq!(to_base36(36 + 11), "1b");
    }

    #[test]
    fn wait_until_times_out_and_succeeds() {
        let mut n = 0;
        wait_until(Duration::from_secs(2), "counter", || {
            n += 1;
            n >= 3
        })
        .unwrap();
        assert_eq!(n, 3);
        let err = wait_until(Duration::from_millis(50), "never", || false).unwrap_err();
        assert!(err.to_string().contains("never"), "{err}");
    }

    #[test]
    fn run_reports_stderr() {
        let err = run("sh", &["-c", "echo boom >&2; exit 3"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("boom") && msg.contains("sh -c"), "{msg}");
        assert_eq!(run("sh", &["-c", "echo hi"]).unwrap(), "hi\n");
    }

    #[test]
    fn run_dirs_are_unique_and_removed() {
        let a = RunDir::new().unwrap();
        let b = RunDir::new().unwrap();
        assert_ne!(a.name(), b.name());
        assert!(is_lab_name(a.name()));
        assert!(a.name().len() <= 9);
        let p = a.path().to_path_buf();
        assert!(p.join("owner").is_file());
        // Our own run is alive: the sweeper must not touch it.
        cleanup_stale(a.name()).unwrap();
        assert!(p.is_dir());
        drop(a);
        assert!(!p.exists());
    }
}
