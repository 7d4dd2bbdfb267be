//! A network namespace owned by the lab.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::process::Proc;
use crate::util::{is_lab_name, run, run_cmd, signal, wait_until};

/// A network namespace made with `ip netns add` and deleted on drop, after
/// every process still running inside it is killed (the namespace is ours
/// and freshly made, so whatever runs inside was started by us).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Create namespace `name`, which must carry the lab name pattern
    /// (`sn<digits><counter>[-suffix]`, see [`crate::util::RunDir`]) so the
    /// stale sweeper can find it. Fails if it already exists. Brings `lo` up.
    pub fn create(name: &str) -> Result<Netns> {
        if !is_lab_name(name) {
            return Err(LabError::Invalid(format!(
                "namespace name {name:?} lacks the lab run prefix"
            )));
        }
        run("ip", &["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        tracing::debug!(netns = name, "created");
        Ok(ns)
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `prog` inside the namespace (`ip netns exec`,
    /// which execs `prog`, so the child's pid is the program's pid).
    pub fn command(&self, prog: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(prog);
        c
    }

    /// Run `args[0] args[1..]` inside; stdout, or an error with the command
    /// and its stderr.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        let (prog, rest) = args
            .split_first()
            .ok_or_else(|| LabError::Invalid("empty command".into()))?;
        let mut cmd = self.command(prog);
        cmd.args(rest);
        run_cmd(&mut cmd)
    }

    /// Start a long-running process inside; output to `log`.
    pub fn spawn<S: AsRef<OsStr>>(
        &self,
        name: &str,
        args: &[S],
        log: Option<&Path>,
    ) -> Result<Proc> {
        let (prog, rest) = args
            .split_first()
            .ok_or_else(|| LabError::Invalid("empty command".into()))?;
        let mut cmd = self.command(prog);
        cmd.args(rest);
        Proc::spawn(name, cmd, log)
    }

    /// Pids of all processes in the namespace.
    pub fn pids(&self) -> Result<Vec<u32>> {
        let out = run("ip", &["netns", "pids", &self.name])?;
        Ok(out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    /// Kill every process inside (TERM, then KILL after 2 s), then delete the
    /// namespace. Interfaces inside go with it; veth peers elsewhere vanish too.
    pub fn delete(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        if self.name.is_empty() {
            return Ok(());
        }
        let name = std::mem::take(&mut self.name);
        let pids = run("ip", &["netns", "pids", &name])
            .map(|o| {
                o.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if !pids.is_empty() {
            tracing::debug!(netns = %name, ?pids, "terminating processes left inside");
            for &p in &pids {
                let _ = signal(p, "TERM");
            }
            let gone = wait_until(Duration::from_secs(2), "namespace processes exit", || {
                pids.iter().all(|&p| !crate::util::pid_alive(p))
            });
            if gone.is_err() {
                for &p in &pids {
                    let _ = signal(p, "KILL");
                }
            }
        }
        run("ip", &["netns", "del", &name])?;
        tracing::debug!(netns = %name, "deleted");
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!(error = %e, "namespace teardown failed");
            eprintln!("lab: namespace teardown failed: {e}");
        }
    }
}
