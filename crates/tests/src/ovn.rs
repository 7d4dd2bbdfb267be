//! OVN (Debian's ovn-central and ovn-host) on a lab, to run the same work on
//! it as on stacknet: ovn-central (the NB and SB `ovsdb-server`s and
//! `ovn-northd`) as processes with every database, socket, pid and log file
//! in the run directory, and one `ovn-controller` per lab node pointed at
//! that node's own OVS.
//!
//! Like our agent, the OVN daemons run in the root namespace: they only use
//! Unix sockets in the run directory (ovn-controller reaches br-int's
//! OpenFlow socket through `OVS_RUNDIR` = the node's OVS directory). No
//! system service is touched. Every daemon is started with `--pidfile` in
//! the run directory, so the lab's stale sweeper kills the daemons of a
//! killed run, and is stopped by pid when dropped, also on panic.
//!
//! ```no_run
//! let ovn = tests::ovn::OvnLab::start(1).unwrap();
//! ovn.central.nbctl(&["ls-add", "ls0"]).unwrap();
//! ```

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use ovsdb::{Condition, Datum, Mutation, Mutator, OpResult, Operation, Uuid};

use crate::error::{LabError, Result};
use crate::lab::{Lab, LabConfig, Node};
use crate::process::{tail_file, Proc};
use crate::util::{run, run_cmd, wait_until, which};

/// Schemas of Debian's ovn-common.
pub const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";
pub const SB_SCHEMA: &str = "/usr/share/ovn/ovn-sb.ovsschema";

/// What OVN needs on top of the lab's own tools.
pub const OVN_TOOLS: &[&str] = &["ovn-northd", "ovn-controller", "ovn-nbctl", "ovn-sbctl"];

/// How long a daemon gets to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Fail with an install hint unless OVN's binaries and schemas are here.
pub fn require_ovn() -> Result<()> {
    let mut missing: Vec<String> = OVN_TOOLS
        .iter()
        .filter(|t| which(t).is_none())
        .map(|t| format!("`{t}` on PATH"))
        .collect();
    for s in [NB_SCHEMA, SB_SCHEMA] {
        if !Path::new(s).is_file() {
            missing.push(s.to_string());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LabError::Requirements(format!(
            "missing: {}; `bash scripts/vs-ovn.sh` installs ovn-central and ovn-host \
             without starting their system services",
            missing.join(", ")
        )))
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| LabError::Io {
        op: "create",
        path: dir.to_path_buf(),
        source,
    })
}

/// Environment for OVN/OVS daemons and tools: every default path in `dir`.
fn set_env(cmd: &mut Command, dir: &Path) {
    for var in [
        "OVN_RUNDIR",
        "OVN_DBDIR",
        "OVN_LOGDIR",
        "OVN_SYSCONFDIR",
        "OVS_RUNDIR",
        "OVS_DBDIR",
        "OVS_LOGDIR",
        "OVS_SYSCONFDIR",
    ] {
        cmd.env(var, dir);
    }
}

/// `--pidfile` and `--log-file` of daemon `name` in `dir` (the pid file is
/// what the stale sweeper reads), and `--unixctl=<dir>/<name>.ctl` when
/// `ctl` (ovn-controller has no such option: its socket is
/// `$OVN_RUNDIR/ovn-controller.<pid>.ctl`).
fn daemon_args(cmd: &mut Command, dir: &Path, name: &str, ctl: bool) {
    let file = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
    cmd.arg(format!("--pidfile={}", file("pid")))
        .arg(format!("--log-file={}", file("log")));
    if ctl {
        cmd.arg(format!("--unixctl={}", file("ctl")));
    }
}

/// ovn-central: the NB and SB databases and ovn-northd, files in one
/// directory (`nb.db`, `nb.sock`, `sb.db`, `sb.sock`, pid, log and ctl
/// files).
#[derive(Debug)]
pub struct OvnCentral {
    // Stop order: northd first, so it never sees its databases vanish.
    northd: Option<Proc>,
    sb: Option<Proc>,
    nb: Option<Proc>,
    dir: PathBuf,
}

impl OvnCentral {
    /// Create both databases in `dir` (short: Unix socket paths) and start
    /// the servers and ovn-northd; returns once northd is connected to both.
    pub fn start(dir: &Path) -> Result<OvnCentral> {
        require_ovn()?;
        create_dir(dir)?;
        let mut c = OvnCentral {
            northd: None,
            sb: None,
            nb: None,
            dir: dir.to_path_buf(),
        };
        c.nb = Some(c.start_db("nb", NB_SCHEMA)?);
        c.sb = Some(c.start_db("sb", SB_SCHEMA)?);
        // The NB_Global row: ovn-nbctl's `init` is what a CMS does first.
        c.nbctl(&["init"])?;
        let mut cmd = Command::new("ovn-northd");
        cmd.arg(format!("--ovnnb-db={}", c.nb_remote()))
            .arg(format!("--ovnsb-db={}", c.sb_remote()));
        daemon_args(&mut cmd, dir, "ovn-northd", true);
        set_env(&mut cmd, dir);
        c.northd = Some(Proc::spawn(
            "ovn-northd",
            cmd,
            Some(&dir.join("ovn-northd.out")),
        )?);
        // northd creates SB_Global and copies nb_cfg over once it runs
        // against both databases and holds the active lock.
        let mut last = String::new();
        let up = wait_until(START_TIMEOUT, "ovn-northd active", || {
            last = c
                .appctl("ovn-northd", &["status"])
                .unwrap_or_else(|e| e.to_string());
            last.contains("active")
                && c.sbctl(&["--bare", "--columns=_uuid", "list", "SB_Global"])
                    .is_ok_and(|o| !o.trim().is_empty())
        });
        if let Err(e) = up {
            return Err(LabError::Check(format!(
                "{e}: status {last:?}; log tail:\n{}",
                tail_file(&dir.join("ovn-northd.log"), 15)
            )));
        }
        tracing::info!(dir = %dir.display(), "ovn-central up");
        Ok(c)
    }

    fn start_db(&self, name: &str, schema: &str) -> Result<Proc> {
        let db = self.dir.join(format!("{name}.db"));
        run_cmd(
            Command::new("ovsdb-tool")
                .arg("create")
                .arg(&db)
                .arg(schema),
        )?;
        let sock = self.dir.join(format!("{name}.sock"));
        let mut cmd = Command::new("ovsdb-server");
        cmd.arg(&db)
            .arg(format!("--remote=punix:{}", sock.display()));
        let daemon = format!("ovsdb-server-{name}");
        daemon_args(&mut cmd, &self.dir, &daemon, true);
        set_env(&mut cmd, &self.dir);
        let p = Proc::spawn(&daemon, cmd, Some(&self.dir.join(format!("{daemon}.out"))))?;
        wait_until(START_TIMEOUT, &format!("{daemon} socket"), || {
            sock.exists()
                && run_cmd(
                    Command::new("ovsdb-client")
                        .arg("list-dbs")
                        .arg(format!("unix:{}", sock.display())),
                )
                .is_ok()
        })?;
        Ok(p)
    }

    /// The directory holding the databases, sockets and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The NB database's Unix socket.
    pub fn nb_socket(&self) -> PathBuf {
        self.dir.join("nb.sock")
    }

    /// The SB database's Unix socket.
    pub fn sb_socket(&self) -> PathBuf {
        self.dir.join("sb.sock")
    }

    /// `unix:<dir>/nb.sock`.
    pub fn nb_remote(&self) -> String {
        format!("unix:{}", self.nb_socket().display())
    }

    /// `unix:<dir>/sb.sock`, what every ovn-controller is given.
    pub fn sb_remote(&self) -> String {
        format!("unix:{}", self.sb_socket().display())
    }

    /// `ovn-nbctl --db=<nb> --timeout=30 <args>`.
    pub fn nbctl<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        self.nbctl_within(Duration::from_secs(30), args)
    }

    /// `ovn-nbctl --db=<nb> --timeout=<timeout> <args>`, for waits that may
    /// take long (`--wait=hv sync` on a chassis computing 100,000 flows).
    pub fn nbctl_within<S: AsRef<OsStr>>(&self, timeout: Duration, args: &[S]) -> Result<String> {
        let mut cmd = Command::new("ovn-nbctl");
        set_env(&mut cmd, &self.dir);
        run_cmd(
            cmd.arg(format!("--db={}", self.nb_remote()))
                .arg(format!("--timeout={}", timeout.as_secs().max(1)))
                .args(args),
        )
    }

    /// `ovn-sbctl --db=<sb> --timeout=30 <args>`.
    pub fn sbctl<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        let mut cmd = Command::new("ovn-sbctl");
        set_env(&mut cmd, &self.dir);
        run_cmd(
            cmd.arg(format!("--db={}", self.sb_remote()))
                .arg("--timeout=30")
                .args(args),
        )
    }

    /// `ovn-appctl -t <dir>/<daemon>.ctl <args>`.
    pub fn appctl<S: AsRef<OsStr>>(&self, daemon: &str, args: &[S]) -> Result<String> {
        let mut cmd = Command::new("ovn-appctl");
        set_env(&mut cmd, &self.dir);
        run_cmd(
            cmd.arg("-t")
                .arg(self.dir.join(format!("{daemon}.ctl")))
                .arg("--timeout=30")
                .args(args),
        )
    }

    /// (name, pid) of every running ovn-central process.
    pub fn pids(&self) -> Vec<(String, u32)> {
        [&self.northd, &self.nb, &self.sb]
            .into_iter()
            .flatten()
            .map(|p| (p.name().to_string(), p.pid()))
            .collect()
    }

    /// Log tails for failure reports.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for name in ["ovn-northd", "ovsdb-server-nb", "ovsdb-server-sb"] {
            s.push_str(&format!("--- {name}.log (tail)\n"));
            s.push_str(&tail_file(&self.dir.join(format!("{name}.log")), 20));
            s.push('\n');
        }
        s
    }

    fn teardown(&mut self) -> Vec<LabError> {
        [self.northd.take(), self.sb.take(), self.nb.take()]
            .into_iter()
            .flatten()
            .filter_map(|mut p| p.stop().err())
            .collect()
    }
}

impl Drop for OvnCentral {
    fn drop(&mut self) {
        for e in self.teardown() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "ovn-central teardown");
            eprintln!("lab: ovn-central teardown: {e}");
        }
    }
}

/// ovn-controller of one lab node, configured through that node's own
/// OVSDB (`external_ids` of its Open_vSwitch row) and programming its br-int.
#[derive(Debug)]
pub struct OvnController {
    proc: Option<Proc>,
    chassis: String,
    dir: PathBuf,
}

impl OvnController {
    /// Configure `node`'s OVS for OVN (chassis `node.name()`, Geneve with
    /// the node's underlay IP, SB at `central`, br-int as a netdev bridge
    /// with fail_mode=secure) and start ovn-controller with its files in
    /// `dir`; returns once the chassis is registered in the SB database.
    pub fn start(node: &Node, central: &OvnCentral, dir: &Path) -> Result<OvnController> {
        create_dir(dir)?;
        node.ensure_bridge("br-int")?;
        let ovs = node.ovs();
        ovs.vsctl(&[
            "set".to_string(),
            "Open_vSwitch".to_string(),
            ".".to_string(),
            format!("external_ids:system-id={}", node.name()),
            format!("external_ids:ovn-remote={}", central.sb_remote()),
            "external_ids:ovn-encap-type=geneve".to_string(),
            format!("external_ids:ovn-encap-ip={}", node.underlay_ip()),
            "external_ids:ovn-bridge=br-int".to_string(),
            "external_ids:ovn-bridge-datapath-type=netdev".to_string(),
        ])?;
        let mut c = OvnController {
            proc: Some(Self::spawn(node, dir)?),
            chassis: node.name().to_string(),
            dir: dir.to_path_buf(),
        };
        let mut running = true;
        let registered = wait_until(START_TIMEOUT, "chassis in the SB database", || {
            running = c.proc.as_mut().is_some_and(Proc::is_running);
            !running
                || central
                    .sbctl(&["--bare", "--columns=name", "list", "Chassis"])
                    .is_ok_and(|o| o.lines().any(|l| l.trim() == c.chassis))
        });
        if registered.is_err() || !running {
            return Err(LabError::Check(format!(
                "ovn-controller did not register its chassis (running: {running}); \
                 output:\n{}\nlog tail:\n{}",
                tail_file(&dir.join("ovn-controller.out"), 10),
                tail_file(&dir.join("ovn-controller.log"), 20)
            )));
        }
        tracing::info!(chassis = %c.chassis, "ovn-controller up");
        Ok(c)
    }

    /// Starts the ovn-controller process of `node` with its files in `dir`.
    fn spawn(node: &Node, dir: &Path) -> Result<Proc> {
        let ovs = node.ovs();
        let mut cmd = Command::new("ovn-controller");
        cmd.arg(ovs.db_remote());
        daemon_args(&mut cmd, dir, "ovn-controller", false);
        set_env(&mut cmd, dir);
        // ovn-controller finds br-int's OpenFlow socket as
        // `$OVS_RUNDIR/br-int.mgmt`: the node's OVS directory.
        cmd.env("OVS_RUNDIR", ovs.rundir());
        Proc::spawn(
            &format!("ovn-controller-{}", node.name()),
            cmd,
            Some(&dir.join("ovn-controller.out")),
        )
    }

    /// Stops ovn-controller (`kill`: SIGKILL, a crash; else SIGTERM, which
    /// leaves the chassis and its flows in place, as a package upgrade
    /// does) and starts it again on `node`; returns when the new process
    /// is running (its flows are not necessarily in yet), with the
    /// instant just before the new process was spawned.
    pub fn restart(&mut self, node: &Node, kill: bool) -> Result<std::time::Instant> {
        if let Some(mut p) = self.proc.take() {
            p.end(kill)?;
        }
        let at = std::time::Instant::now();
        self.proc = Some(Self::spawn(node, &self.dir)?);
        tracing::info!(chassis = %self.chassis, kill, "ovn-controller restarted");
        Ok(at)
    }

    /// The chassis name (the node's name).
    pub fn chassis(&self) -> &str {
        &self.chassis
    }

    /// ovn-controller's pid (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, Proc::pid)
    }

    /// The directory holding its pid, log and ctl files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Log tail for failure reports.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.dir.join("ovn-controller.log"), lines)
    }
}

impl Drop for OvnController {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            if let Err(e) = p.stop() {
                tracing::warn!(chassis = %self.chassis, error = %e, "ovn-controller stop");
                eprintln!("lab: ovn-controller stop: {e}");
            }
        }
    }
}

/// OVN on a lab: ovn-central in `<run>/ovn`, one ovn-controller per node in
/// `<run>/n<i>/ovn`. Dropping it stops the controllers, then ovn-central,
/// then tears the lab down (which removes the run directory).
pub struct OvnLab {
    // Field order is drop order.
    pub controllers: Vec<OvnController>,
    pub central: OvnCentral,
    pub lab: Lab,
}

impl OvnLab {
    /// A lab of `nodes` nodes running OVN instead of stacknet.
    pub fn start(nodes: usize) -> Result<OvnLab> {
        require_ovn()?;
        let lab = Lab::new(LabConfig {
            nodes,
            ..LabConfig::default()
        })?;
        let central = OvnCentral::start(&lab.dir().join("ovn"))?;
        let mut ovn = OvnLab {
            controllers: Vec::new(),
            central,
            lab,
        };
        for node in ovn.lab.nodes() {
            let c = OvnController::start(node, &ovn.central, &node.dir().join("ovn"))?;
            ovn.controllers.push(c);
        }
        Ok(ovn)
    }

    /// (name, pid) of every OVN control-plane process: ovn-northd, both
    /// database servers and every ovn-controller.
    pub fn control_plane_pids(&self) -> Vec<(String, u32)> {
        let mut v = self.central.pids();
        v.extend(
            self.controllers
                .iter()
                .map(|c| (format!("ovn-controller-{}", c.chassis()), c.pid())),
        );
        v
    }
}

impl Drop for OvnLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("===== OVN =====\n{}", self.central.dump());
            for c in &self.controllers {
                eprintln!(
                    "--- ovn-controller {} (tail)\n{}",
                    c.chassis(),
                    c.log_tail(20)
                );
            }
        }
    }
}

/// One persistent OVSDB session, for the NB database (as a CMS writes it)
/// or a node's database (plug, unplug, watch `ovn-installed`): a tool
/// process per call costs ~15 ms, more than what is measured.
pub struct OvsdbSession {
    rt: tokio::runtime::Runtime,
    client: ovsdb::Client,
    db: String,
}

fn ovsdb_error(what: &str, e: impl std::fmt::Display) -> LabError {
    LabError::Check(format!("OVSDB {what}: {e}"))
}

impl OvsdbSession {
    /// Connects to the server at Unix socket `socket`, for database `db`
    /// (`OVN_Northbound`, `Open_vSwitch`).
    pub fn connect(socket: &Path, db: &str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| LabError::Io {
                op: "start runtime",
                path: socket.to_path_buf(),
                source,
            })?;
        let (client, _updates) = rt
            .block_on(ovsdb::Client::connect_unix(socket, Default::default()))
            .map_err(|e| ovsdb_error("connect", e))?;
        Ok(OvsdbSession {
            rt,
            client,
            db: db.to_string(),
        })
    }

    /// Runs one transaction.
    pub fn transact(&self, ops: &[Operation]) -> Result<Vec<OpResult>> {
        self.rt
            .block_on(self.client.transact(&self.db, ops))
            .map_err(|e| ovsdb_error("transact", e))
    }

    /// Rows of `table` whose `column` equals string `value`, with `columns`.
    pub fn select_eq(
        &self,
        table: &str,
        column: &str,
        value: &str,
        columns: &[&str],
    ) -> Result<Vec<ovsdb::Row>> {
        let res = self.transact(&[Operation::Select {
            table: table.into(),
            conditions: vec![Condition::eq(column, Datum::string(value))],
            columns: Some(columns.iter().map(|c| c.to_string()).collect()),
        }])?;
        match res.into_iter().next() {
            Some(OpResult::Rows(rows)) => Ok(rows),
            other => Err(ovsdb_error("select", format!("unexpected reply {other:?}"))),
        }
    }

    /// The UUID of the row of `table` named `name`.
    pub fn uuid_of(&self, table: &str, name: &str) -> Result<Uuid> {
        self.select_eq(table, "name", name, &["_uuid"])?
            .first()
            .and_then(|r| r.get("_uuid"))
            .and_then(Datum::as_uuid)
            .ok_or_else(|| LabError::Check(format!("no {table} named {name}")))
    }

    /// On a node's database: removes port `name` from br-int (its Interface
    /// goes with it), as a compute driver does when a VM's NIC is unplugged.
    pub fn unplug(&self, name: &str) -> Result<()> {
        let name = &name[..name.len().min(15)];
        let port = self.uuid_of("Port", name)?;
        self.transact(&[Operation::Mutate {
            table: "Bridge".into(),
            conditions: vec![Condition::eq("name", Datum::string("br-int"))],
            mutations: vec![Mutation::new("ports", Mutator::Delete, Datum::uuid(port))],
        }])
        .map(|_| ())
    }

    /// On a node's database: true once ovn-controller marked interface
    /// `name` `external_ids:ovn-installed=true` (its flows are in OVS).
    pub fn ovn_installed(&self, name: &str) -> Result<bool> {
        let name = &name[..name.len().min(15)];
        let rows = self.select_eq("Interface", "name", name, &["external_ids"])?;
        Ok(rows.first().is_some_and(|r| {
            r.get("external_ids")
                .and_then(|d| d.map_get("ovn-installed"))
                == Some("true")
        }))
    }
}

/// CPU and memory of one process, from /proc.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcUsage {
    /// utime + stime of all its threads, seconds.
    pub cpu_s: f64,
    /// Peak resident set (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// Resident set now (VmRSS), KiB: the peak can be a start-up
    /// transient (flowctl hashes the bootstrap password with argon2id,
    /// 19 MiB, once); this is what stays.
    pub rss_kib: u64,
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        run("getconf", &["CLK_TCK"])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime (fields 14 and 15 of /proc/<pid>/stat) and VmHWM of `pid`.
pub fn proc_usage(pid: u32) -> Result<ProcUsage> {
    let read = |file: &str| {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        std::fs::read_to_string(&path).map_err(|source| LabError::Io {
            op: "read",
            path,
            source,
        })
    };
    let stat = read("stat")?;
    let bad = |what: &'static str, output: &str| LabError::Parse {
        what,
        output: output.to_string(),
    };
    // The command name (field 2) may hold spaces; fields after ')' do not.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| bad("/proc stat", &stat))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14, stime 15.
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| bad("/proc stat times", &stat))
    };
    let ticks = tick(11)? + tick(12)?;
    let status = read("status")?;
    let kib = |field: &'static str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(field, &status))
    };
    Ok(ProcUsage {
        cpu_s: ticks as f64 / clock_ticks(),
        peak_rss_kib: kib("VmHWM:")?,
        rss_kib: kib("VmRSS:")?,
    })
}

/// Usage of each named process; a process that is gone is an error (its
/// figures would be missing from the sum).
pub fn usage_of(pids: &[(String, u32)]) -> Result<BTreeMap<String, ProcUsage>> {
    pids.iter()
        .map(|(name, pid)| Ok((name.clone(), proc_usage(*pid)?)))
        .collect()
}

/// The pid of the one running process whose command line contains
/// `needle` (e.g. a run's store path: unique to that run).
pub fn pid_by_cmdline(needle: &str) -> Result<u32> {
    let me = std::process::id();
    let found: Vec<u32> = std::fs::read_dir("/proc")
        .map_err(|source| LabError::Io {
            op: "list",
            path: PathBuf::from("/proc"),
            source,
        })?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect();
    match found.as_slice() {
        [pid] => Ok(*pid),
        _ => Err(LabError::Check(format!(
            "{} processes with {needle:?} in their command line: {found:?}",
            found.len()
        ))),
    }
}

/// OpenFlow flows on `bridge` of `node` (`ovs-ofctl dump-flows --no-stats`).
pub fn flow_count(node: &Node, bridge: &str) -> Result<usize> {
    let dump = node.ovs().ofctl(&["dump-flows", bridge, "--no-stats"])?;
    Ok(dump
        .lines()
        .filter(|l| l.contains("actions=") && !l.contains("_REPLY"))
        .count())
}

/// The flow count of the bridge behind OpenFlow management socket `mgmt`
/// (`ovs-ofctl dump-aggregate`: one short reply, cheap enough to poll
/// every few milliseconds even with 100,000 flows installed).
pub fn aggregate_flow_count(mgmt: &Path) -> Result<u64> {
    let out = run(
        "ovs-ofctl",
        &[
            "dump-aggregate".to_string(),
            format!("unix:{}", mgmt.display()),
        ],
    )?;
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("flow_count="))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| LabError::Parse {
            what: "dump-aggregate",
            output: out.clone(),
        })
}

/// `ovs-ofctl dump-flows <bridge> <filter> --no-stats` on `node`: the
/// flows whose match includes `filter` (OpenFlow's non-strict match), so a
/// poll costs what the few matching flows cost, not the whole table.
pub fn flows_matching(node: &Node, bridge: &str, filter: &str) -> Result<String> {
    node.ovs()
        .ofctl(&["dump-flows", bridge, filter, "--no-stats"])
}

/// Samples a bridge's flow count in a thread every `every` until dropped or
/// [`FlowSampler::stop`]ped: (time since start, count) whenever the count
/// changed, and the lowest count seen. Failed samples (the switch busy or
/// restarting) are counted, not recorded.
pub struct FlowSampler {
    started: std::time::Instant,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Samples>>,
}

/// What a [`FlowSampler`] saw.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    /// (seconds since the sampler started, count), at the start and at
    /// every change.
    pub changes: Vec<(f64, u64)>,
    /// The lowest count seen.
    pub lowest: u64,
    /// Samples taken, and those that failed.
    pub taken: u64,
    pub failed: u64,
}

impl Samples {
    /// Seconds from the start to the last change of the count.
    pub fn last_change_s(&self) -> f64 {
        self.changes.last().map_or(0.0, |c| c.0)
    }

    /// The count at the end.
    pub fn last(&self) -> u64 {
        self.changes.last().map_or(0, |c| c.1)
    }

    /// The lowest count from `after` (seconds since the start) on.
    pub fn lowest_after(&self, after: f64) -> u64 {
        let before = self.changes.iter().rev().find(|c| c.0 < after).map(|c| c.1);
        self.changes
            .iter()
            .filter(|c| c.0 >= after)
            .map(|c| c.1)
            .chain(before)
            .min()
            .unwrap_or(0)
    }

    /// Seconds from `after` until the count was back at `n` or more, when
    /// it fell below `n` after `after`: 0 when it never did, NaN when it
    /// never came back.
    pub fn restored_after(&self, after: f64, n: u64) -> f64 {
        let mut dropped = false;
        for &(t, c) in self.changes.iter().filter(|c| c.0 >= after) {
            if c < n {
                dropped = true;
            } else if dropped {
                return t - after;
            }
        }
        if dropped {
            f64::NAN
        } else {
            0.0
        }
    }
}

impl FlowSampler {
    /// Starts sampling the bridge behind management socket `mgmt`.
    pub fn start(mgmt: &Path, every: Duration) -> FlowSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, mgmt) = (stop.clone(), mgmt.to_path_buf());
        let started = std::time::Instant::now();
        let t0 = started;
        let thread = std::thread::spawn(move || {
            let mut s = Samples {
                lowest: u64::MAX,
                ..Samples::default()
            };
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                s.taken += 1;
                match aggregate_flow_count(&mgmt) {
                    Ok(n) => {
                        s.lowest = s.lowest.min(n);
                        if s.changes.last().is_none_or(|c| c.1 != n) {
                            s.changes.push((t0.elapsed().as_secs_f64(), n));
                        }
                    }
                    Err(_) => s.failed += 1,
                }
                std::thread::sleep(every);
            }
            s
        });
        FlowSampler {
            started,
            stop,
            thread: Some(thread),
        }
    }

    /// When sampling started: the origin of [`Samples::changes`].
    pub fn started(&self) -> std::time::Instant {
        self.started
    }

    /// Stops the thread and returns what it saw.
    pub fn stop(mut self) -> Samples {
        self.finish()
    }

    fn finish(&mut self) -> Samples {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for FlowSampler {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The machine's 1-minute load average (`/proc/loadavg`), NaN if unreadable:
/// printed next to every figure, since the lab shares its cores.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
