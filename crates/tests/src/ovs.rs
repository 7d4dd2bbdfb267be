//! A private Open vSwitch: `ovsdb-server` + `ovs-vswitchd` (netdev datapath)
//! inside a private network namespace, every file in a private directory.
//!
//! ```no_run
//! let sb = tests::ovs::OvsSandbox::start("ofp").unwrap();
//! sb.vsctl(&["add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev"]).unwrap();
//! sb.ofctl(&["add-flow", "br0", "priority=10,actions=drop"]).unwrap();
//! println!("{}", sb.ofctl(&["dump-flows", "br0"]).unwrap());
//! ```

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::netns::Netns;
use crate::process::{tail_file, Proc};
use crate::util::{keep_on_failure, run_cmd, wait_until, RunDir, VSWITCH_SCHEMA};

/// How long daemons get to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// ovsdb-server + ovs-vswitchd in a private netns and directory.
///
/// The directory holds `conf.db`, `db.sock`, `<bridge>.mgmt`,
/// `ovs-vswitchd.ctl`, `ovsdb-server.ctl`, pid and log files. OVS_RUNDIR,
/// OVS_DBDIR and OVS_LOGDIR point there for every daemon and tool run, so
/// nothing touches the system's OVS paths.
///
/// Drop stops the daemons (by pid), deletes the namespace when the sandbox
/// owns it, and removes the directory (kept on panic with
/// `STACKNET_LAB_KEEP=1`).
#[derive(Debug)]
pub struct OvsSandbox {
    // Field order is drop order after `Drop::drop` stops the daemons:
    // namespace before the run directory, so the sweeper never sees a
    // namespace without its directory while the owner lives.
    vswitchd: Option<Proc>,
    ovsdb: Option<Proc>,
    netns: Arc<Netns>,
    dir: PathBuf,
    remove_dir: bool,
    dump_on_panic: bool,
    run: Option<RunDir>,
}

impl OvsSandbox {
    /// Start a sandbox with its own run name, namespace `<run>-<label>` and
    /// directory. `label` is a short tag for logs and names ("ofp", "n1").
    pub fn start(label: &str) -> Result<OvsSandbox> {
        crate::util::sweep_stale_once();
        let run = RunDir::new()?;
        let netns = Arc::new(Netns::create(&format!("{}-{label}", run.name()))?);
        let dir = run.path().join("ovs");
        let mut sb = Self::start_in_dir(netns, dir)?;
        sb.run = Some(run);
        Ok(sb)
    }

    /// Start a sandbox inside an existing namespace, with its files in `dir`
    /// (created; must be short, Unix socket paths are limited to 108 bytes).
    /// The directory is removed on drop; the namespace is dropped with the
    /// last `Arc`.
    pub fn start_in(netns: Arc<Netns>, dir: &Path) -> Result<OvsSandbox> {
        Self::start_in_dir(netns, dir.to_path_buf())
    }

    fn start_in_dir(netns: Arc<Netns>, dir: PathBuf) -> Result<OvsSandbox> {
        std::fs::create_dir_all(&dir).map_err(|source| LabError::Io {
            op: "create",
            path: dir.clone(),
            source,
        })?;
        let mut sb = OvsSandbox {
            vswitchd: None,
            ovsdb: None,
            netns,
            dir,
            remove_dir: true,
            dump_on_panic: true,
            run: None,
        };
        if sb.db_socket().as_os_str().len() > 100 {
            return Err(LabError::Invalid(format!(
                "sandbox dir {} too long for Unix sockets",
                sb.dir.display()
            )));
        }
        let db = sb.dir.join("conf.db");
        run_cmd(
            sb.tool("ovsdb-tool")
                .arg("create")
                .arg(&db)
                .arg(VSWITCH_SCHEMA),
        )?;
        sb.start_ovsdb()?;
        sb.start_vswitchd()?;
        tracing::info!(netns = sb.netns.name(), dir = %sb.dir.display(), "OVS sandbox up");
        Ok(sb)
    }

    fn start_ovsdb(&mut self) -> Result<()> {
        let d = &self.dir;
        let mut cmd = self.netns.command("ovsdb-server");
        cmd.arg(d.join("conf.db"))
            .arg(format!("--remote=punix:{}", self.db_socket().display()))
            .arg(format!(
                "--pidfile={}",
                d.join("ovsdb-server.pid").display()
            ))
            .arg(format!(
                "--log-file={}",
                d.join("ovsdb-server.log").display()
            ))
            .arg(format!(
                "--unixctl={}",
                d.join("ovsdb-server.ctl").display()
            ));
        self.set_env(&mut cmd);
        let p = Proc::spawn("ovsdb-server", cmd, Some(&d.join("ovsdb-server.out")))?;
        self.ovsdb = Some(p);
        let sock = self.db_socket();
        // `init` succeeds once the server answers; it also creates the root row.
        let mut last_err = None;
        let ready = wait_until(START_TIMEOUT, "ovsdb-server", || {
            if !sock.exists() {
                return false;
            }
            match self.vsctl(&["--no-wait", "init"]) {
                Ok(_) => true,
                Err(e) => {
                    last_err = Some(e);
                    false
                }
            }
        });
        if let Err(e) = ready {
            return Err(self.startup_failure(e, last_err, "ovsdb-server.log"));
        }
        Ok(())
    }

    fn start_vswitchd(&mut self) -> Result<()> {
        let d = &self.dir;
        let mut cmd = self.netns.command("ovs-vswitchd");
        cmd.arg(format!("unix:{}", self.db_socket().display()))
            .arg(format!(
                "--pidfile={}",
                d.join("ovs-vswitchd.pid").display()
            ))
            .arg(format!(
                "--log-file={}",
                d.join("ovs-vswitchd.log").display()
            ))
            .arg(format!("--unixctl={}", self.vswitchd_ctl().display()));
        self.set_env(&mut cmd);
        let p = Proc::spawn("ovs-vswitchd", cmd, Some(&d.join("ovs-vswitchd.out")))?;
        self.vswitchd = Some(p);
        let mut last_err = None;
        let ready = wait_until(START_TIMEOUT, "ovs-vswitchd", || {
            if !self.vswitchd_ctl().exists() {
                return false;
            }
            match self.appctl(&["version"]) {
                Ok(_) => true,
                Err(e) => {
                    last_err = Some(e);
                    false
                }
            }
        });
        if let Err(e) = ready {
            return Err(self.startup_failure(e, last_err, "ovs-vswitchd.log"));
        }
        // A database change makes ovs-vsctl wait until vswitchd has applied
        // it, i.e. vswitchd is connected and has configured itself.
        // The value must differ on every start, or nothing changes and
        // ovs-vsctl returns without waiting (after a restart the old
        // bridges' mgmt sockets would not be there yet).
        static STARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stamp = format!("external_ids:stacknet-lab-start={}-{n}", std::process::id());
        self.vsctl(&["--timeout=20", "set", "Open_vSwitch", ".", &stamp])?;
        Ok(())
    }

    fn startup_failure(&self, e: LabError, last: Option<LabError>, log: &str) -> LabError {
        let detail = last.map(|l| l.to_string()).unwrap_or_default();
        LabError::Check(format!(
            "{e}; last error: {detail}; log tail:\n{}",
            tail_file(&self.dir.join(log), 15)
        ))
    }

    fn set_env(&self, cmd: &mut Command) {
        cmd.env("OVS_RUNDIR", &self.dir)
            .env("OVS_DBDIR", &self.dir)
            .env("OVS_LOGDIR", &self.dir)
            .env("OVS_SYSCONFDIR", &self.dir);
    }

    /// Print [`OvsSandbox::dump`] when dropped during a panic (default on;
    /// the lab turns it off and prints its own, fuller dump).
    pub fn set_dump_on_panic(&mut self, on: bool) {
        self.dump_on_panic = on;
    }

    /// A command for an OVS tool with the sandbox environment (runs in the
    /// root namespace: the tools only use the sandbox's Unix sockets).
    pub fn tool(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        self.set_env(&mut c);
        c
    }

    /// The namespace ovs-vswitchd runs in (internal ports appear there).
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// Shared handle to the namespace.
    pub fn netns_arc(&self) -> Arc<Netns> {
        Arc::clone(&self.netns)
    }

    /// The sandbox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// OVS_RUNDIR (the same directory).
    pub fn rundir(&self) -> &Path {
        &self.dir
    }

    /// The OVSDB Unix socket.
    pub fn db_socket(&self) -> PathBuf {
        self.dir.join("db.sock")
    }

    /// The OVSDB remote string, `unix:<dir>/db.sock`.
    pub fn db_remote(&self) -> String {
        format!("unix:{}", self.db_socket().display())
    }

    /// The OpenFlow management socket of `bridge` (`<rundir>/<bridge>.mgmt`).
    pub fn mgmt_socket(&self, bridge: &str) -> PathBuf {
        self.dir.join(format!("{bridge}.mgmt"))
    }

    /// ovs-vswitchd's unixctl socket.
    pub fn vswitchd_ctl(&self) -> PathBuf {
        self.dir.join("ovs-vswitchd.ctl")
    }

    /// ovsdb-server's unixctl socket.
    pub fn ovsdb_ctl(&self) -> PathBuf {
        self.dir.join("ovsdb-server.ctl")
    }

    /// ovs-vswitchd's pid, when running.
    pub fn vswitchd_pid(&self) -> Option<u32> {
        self.vswitchd.as_ref().map(Proc::pid)
    }

    /// `ovs-vsctl --db=unix:<db.sock> --timeout=30 <args>`.
    pub fn vsctl<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        run_cmd(
            self.tool("ovs-vsctl")
                .arg(format!("--db={}", self.db_remote()))
                .arg("--timeout=30")
                .args(args),
        )
    }

    /// `ovs-ofctl -O OpenFlow14 <args>`. A bare bridge name as the switch
    /// argument works (`ofctl(&["dump-flows", "br0"])`): ovs-ofctl maps it
    /// to `<OVS_RUNDIR>/<bridge>.mgmt`, which is this sandbox's socket.
    pub fn ofctl<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        run_cmd(
            self.tool("ovs-ofctl")
                .args(["-O", "OpenFlow14", "--timeout=30"])
                .args(args),
        )
    }

    /// `ovs-appctl -t <dir>/ovs-vswitchd.ctl <args>`.
    pub fn appctl<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        run_cmd(
            self.tool("ovs-appctl")
                .arg("-t")
                .arg(self.vswitchd_ctl())
                .arg("--timeout=30")
                .args(args),
        )
    }

    /// Add a netdev bridge (`datapath_type=netdev`), idempotently.
    pub fn add_bridge(&self, bridge: &str) -> Result<()> {
        self.vsctl(&[
            "--may-exist",
            "add-br",
            bridge,
            "--",
            "set",
            "bridge",
            bridge,
            "datapath_type=netdev",
        ])
        .map(|_| ())
    }

    /// The ofport number OVS assigned to interface `iface` (waits until set).
    pub fn ofport(&self, iface: &str) -> Result<u32> {
        let mut last = String::new();
        crate::util::wait_for(Duration::from_secs(10), "ofport assignment", || {
            let out = self
                .vsctl(&["get", "Interface", iface, "ofport"])
                .unwrap_or_default();
            last = out.trim().to_string();
            last.parse::<i64>()
                .ok()
                .filter(|&n| n > 0)
                .and_then(|n| u32::try_from(n).ok())
        })
        .map_err(|e| LabError::Check(format!("{e}: interface {iface} ofport {last:?}")))
    }

    /// SIGKILL ovs-vswitchd (a crash: no cleanup, flows gone with the
    /// process since the netdev datapath lives in it).
    pub fn kill_vswitchd(&mut self) -> Result<()> {
        if let Some(mut p) = self.vswitchd.take() {
            p.kill()?;
        }
        let _ = std::fs::remove_file(self.vswitchd_ctl());
        Ok(())
    }

    /// Start ovs-vswitchd again (killing it first if it runs) and wait until
    /// it has configured itself from the database.
    pub fn restart_vswitchd(&mut self) -> Result<()> {
        self.kill_vswitchd()?;
        self.start_vswitchd()
    }

    /// A text dump for failure reports: `ovs-vsctl show`, and per bridge its
    /// flows and ports.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        let show = |r: Result<String>| r.unwrap_or_else(|e| format!("<{e}>"));
        s.push_str(&format!("--- ovs-vsctl show ({})\n", self.dir.display()));
        s.push_str(&show(self.vsctl(&["show"])));
        let bridges = self.vsctl(&["list-br"]).unwrap_or_default();
        for br in bridges.lines().map(str::trim).filter(|b| !b.is_empty()) {
            s.push_str(&format!("--- ovs-ofctl dump-ports-desc {br}\n"));
            s.push_str(&show(self.ofctl(&["dump-ports-desc", br])));
            s.push_str(&format!("--- ovs-ofctl dump-flows {br}\n"));
            s.push_str(&show(self.ofctl(&["dump-flows", br])));
            s.push_str(&format!("--- ovs-ofctl dump-groups {br}\n"));
            s.push_str(&show(self.ofctl(&["dump-groups", br])));
        }
        s.push_str("--- ovs-vswitchd.log (tail)\n");
        s.push_str(&tail_file(&self.dir.join("ovs-vswitchd.log"), 20));
        s.push('\n');
        s
    }

    fn teardown(&mut self) -> Vec<LabError> {
        let mut errors = Vec::new();
        for p in [self.vswitchd.take(), self.ovsdb.take()]
            .into_iter()
            .flatten()
        {
            let mut p = p;
            if let Err(e) = p.stop() {
                errors.push(e);
            }
        }
        if self.remove_dir && !keep_on_failure() {
            if let Err(source) = std::fs::remove_dir_all(&self.dir) {
                if source.kind() != std::io::ErrorKind::NotFound {
                    errors.push(LabError::Io {
                        op: "remove",
                        path: self.dir.clone(),
                        source,
                    });
                }
            }
            self.remove_dir = false;
        }
        errors
    }
}

impl Drop for OvsSandbox {
    fn drop(&mut self) {
        if self.dump_on_panic && std::thread::panicking() {
            eprintln!("lab: OVS sandbox state at failure:\n{}", self.dump());
        }
        for e in self.teardown() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "sandbox teardown");
            eprintln!("lab: sandbox teardown: {e}");
        }
    }
}
