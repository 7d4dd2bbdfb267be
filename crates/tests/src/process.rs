//! A started process that is stopped when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::util::{describe, signal, wait_until};

/// A child process we started; SIGTERM, then SIGKILL after a grace period,
/// when stopped or dropped. Only ever signals its own pid.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: Option<PathBuf>,
}

impl Proc {
    /// Spawn `cmd`; stdout and stderr go to `log` (appended) or are discarded.
    /// stdin is closed.
    pub fn spawn(name: &str, mut cmd: Command, log: Option<&Path>) -> Result<Proc> {
        let desc = describe(&cmd);
        cmd.stdin(Stdio::null());
        match log {
            Some(path) => {
                let open = || {
                    File::options()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|source| LabError::Io {
                            op: "open",
                            path: path.to_path_buf(),
                            source,
                        })
                };
                cmd.stdout(open()?).stderr(open()?);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            cmd: desc.clone(),
            source,
        })?;
        tracing::debug!(proc = name, pid = child.id(), cmd = %desc, "started");
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.map(Path::to_path_buf),
        })
    }

    /// Spawn `cmd` with the stdio the caller configured.
    pub fn spawn_raw(name: &str, mut cmd: Command) -> Result<Proc> {
        let desc = describe(&cmd);
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            cmd: desc.clone(),
            source,
        })?;
        tracing::debug!(proc = name, pid = child.id(), cmd = %desc, "started");
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            log: None,
        })
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Process id (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Where its output goes.
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// The last `lines` lines of its log ("" without a log).
    pub fn log_tail(&self, lines: usize) -> String {
        self.log
            .as_deref()
            .map(|p| tail_file(p, lines))
            .unwrap_or_default()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Exit status if it has exited (without waiting).
    pub fn try_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; reaps the child.
    pub fn stop_with(&mut self, grace: Duration) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        let pid = child.id();
        let _ = signal(pid, "TERM");
        let exited = wait_until(grace, "process exit", || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if exited.is_err() {
            tracing::debug!(proc = %self.name, pid, "did not exit on TERM; killing");
            let _ = child.kill();
        }
        child.wait().map_err(|source| LabError::Io {
            op: "wait for",
            path: PathBuf::from(format!("/proc/{pid}")),
            source,
        })?;
        tracing::debug!(proc = %self.name, pid, "stopped");
        Ok(())
    }

    /// Stop with a 5 s grace period.
    pub fn stop(&mut self) -> Result<()> {
        self.stop_with(Duration::from_secs(5))
    }

    /// [`Proc::kill`] if `kill` (a crash), else [`Proc::stop`].
    pub fn end(&mut self, kill: bool) -> Result<()> {
        if kill {
            self.kill()
        } else {
            self.stop()
        }
    }

    /// SIGKILL right away (a crash, as far as the process is concerned).
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id();
        let _ = child.kill();
        child.wait().map_err(|source| LabError::Io {
            op: "wait for",
            path: PathBuf::from(format!("/proc/{pid}")),
            source,
        })?;
        tracing::debug!(proc = %self.name, pid, "killed");
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Err(e) = self.stop_with(Duration::from_secs(3)) {
            tracing::warn!(proc = %self.name, error = %e, "stop on drop failed");
        }
    }
}

/// Last `lines` lines of a text file ("" when unreadable).
pub fn tail_file(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
