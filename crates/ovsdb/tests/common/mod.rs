//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ovsdb::{Datum, Row};

pub const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// A bare `ovsdb-server` (no ovs-vswitchd) on a fresh database in a
/// temporary directory. It creates no network interfaces, so it needs no
/// namespace. Killed (by pid) on drop.
pub struct BareOvsdb {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl BareOvsdb {
    pub fn start() -> BareOvsdb {
        let dir = tempfile::Builder::new()
            .prefix("snovsdb")
            .tempdir()
            .unwrap();
        let st = Command::new("ovsdb-tool")
            .arg("create")
            .arg(dir.path().join("conf.db"))
            .arg(SCHEMA)
            .status()
            .unwrap();
        assert!(st.success(), "ovsdb-tool create failed");
        let mut s = BareOvsdb { dir, child: None };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        // setpriv execs ovsdb-server with a parent-death signal, so it goes
        // away with the test thread even if the test process is killed
        // before Drop runs.
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "ovsdb-server"])
            .arg(d.join("conf.db"))
            .arg(format!("--remote=punix:{}", self.socket().display()))
            // Lets a Manager row configure a probing remote (echo test).
            .arg("--remote=db:Open_vSwitch,Open_vSwitch,manager_options")
            .arg(format!(
                "--unixctl={}",
                d.join("ovsdb-server.ctl").display()
            ))
            .arg(format!(
                "--log-file={}",
                d.join("ovsdb-server.log").display()
            ))
            // Every message in the log, shown when a test fails.
            .arg("-vjsonrpc:file:dbg")
            .env("OVS_RUNDIR", d)
            .env("OVS_DBDIR", d)
            .env("OVS_LOGDIR", d)
            .env("OVS_SYSCONFDIR", d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_until(Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(self.socket()).is_ok()
        });
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("db.sock")
    }

    pub fn target(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    /// `ovs-vsctl --no-wait` (there is no ovs-vswitchd to wait for).
    pub fn vsctl(&self, args: &[&str]) -> String {
        let out = Command::new("ovs-vsctl")
            .arg(format!("--db={}", self.target()))
            .arg("--no-wait")
            .arg("--timeout=10")
            .args(args)
            .env("OVS_RUNDIR", self.dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ovs-vsctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for BareOvsdb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir().join("ovsdb-server.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "ovsdb-server log (tail):\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        self.kill();
    }
}

pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            std::time::Instant::now() < end,
            "condition not met in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses `ovs-vsctl --format=json list TABLE` output into rows, using our
/// own decoder for the OVSDB JSON notation it prints.
pub fn parse_vsctl_list(json_text: &str) -> Vec<Row> {
    let v: serde_json::Value = serde_json::from_str(json_text).unwrap();
    let headings: Vec<String> = serde_json::from_value(v["headings"].clone()).unwrap();
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            headings
                .iter()
                .cloned()
                .zip(
                    r.as_array()
                        .unwrap()
                        .iter()
                        .map(|c| Datum::from_json(c).unwrap()),
                )
                .collect::<BTreeMap<_, _>>()
        })
        .collect()
}
