//! A real etcd cluster on 127.0.0.1 for the etcd backend's tests: members
//! on free ports, data in the run directory, every process ours by pid and
//! stopped on drop; members can be killed and restarted, the leader found.
//!
//! Each member also serves plain-HTTP metrics on its own port, which is how
//! health and leadership are read (no etcd client needed here, and it works
//! the same when the client port requires TLS).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bins::free_port;
use crate::error::{LabError, Result};
use crate::process::Proc;
use crate::util::{run_cmd, signal, sweep_stale_once, wait_for, wait_until, RunDir};

/// Debian's etcd-server.
pub const ETCD: &str = "/usr/bin/etcd";

/// How long a member (or the cluster) gets to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Files of a throwaway CA: the members' server certificate and a client
/// certificate, all PEM.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Makes a CA in `dir` (named `name`) and certificates signed by it, with
/// the `openssl` command: the server's for 127.0.0.1 and localhost, and a
/// client's (CN `stacknet`). Keys are P-256.
pub fn make_tls(dir: &Path, name: &str) -> Result<TlsFiles> {
    std::fs::create_dir_all(dir).map_err(|source| LabError::Io {
        op: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let s = |p: &PathBuf| p.to_string_lossy().into_owned();
    let openssl = |args: &[String]| run_cmd(Command::new("openssl").args(args));
    let ec_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (ca, ca_key) = (p("ca.pem"), p("ca.key"));
    let mut args: Vec<String> = vec!["req".into(), "-x509".into()];
    args.extend(ec_key.iter().map(|a| a.to_string()));
    args.extend(
        [
            "-keyout",
            &s(&ca_key),
            "-out",
            &s(&ca),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}-ca"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]
        .map(String::from),
    );
    openssl(&args)?;
    let leaf = |leaf: &str, cn: &str, ext: &str| -> Result<(PathBuf, PathBuf)> {
        let (cert, key, csr, extfile) = (
            p(&format!("{leaf}.pem")),
            p(&format!("{leaf}.key")),
            p(&format!("{leaf}.csr")),
            p(&format!("{leaf}.ext")),
        );
        std::fs::write(&extfile, ext).map_err(|source| LabError::Io {
            op: "write",
            path: extfile.clone(),
            source,
        })?;
        let mut args: Vec<String> = vec!["req".into()];
        args.extend(ec_key.iter().map(|a| a.to_string()));
        args.extend(
            [
                "-keyout",
                &s(&key),
                "-out",
                &s(&csr),
                "-subj",
                &format!("/CN={cn}"),
            ]
            .map(String::from),
        );
        openssl(&args)?;
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &s(&csr),
                "-CA",
                &s(&ca),
                "-CAkey",
                &s(&ca_key),
                "-CAcreateserial",
                "-out",
                &s(&cert),
                "-days",
                "2",
                "-extfile",
                &s(&extfile),
            ]
            .map(String::from),
        )?;
        Ok((cert, key))
    };
    let (server_cert, server_key) = leaf(
        "server",
        "etcd",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
    )?;
    let (client_cert, client_key) = leaf(
        "client",
        "stacknet",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=clientAuth\n",
    )?;
    Ok(TlsFiles {
        ca,
        server_cert,
        server_key,
        client_cert,
        client_key,
    })
}

/// One member: its ports, directory and process (None while down).
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    proc: Option<Proc>,
}

/// A running etcd cluster; stopped (every member, by pid) on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    tls: Option<TlsFiles>,
    token: String,
    // Last: removed after the processes are stopped.
    dir: RunDir,
}

impl EtcdCluster {
    /// `members` members, plain HTTP.
    pub fn start(members: usize) -> Result<EtcdCluster> {
        Self::start_with(members, false)
    }

    /// `members` members whose client port takes TLS only and requires a
    /// client certificate from the cluster's CA ([`EtcdCluster::tls`]).
    pub fn start_tls(members: usize) -> Result<EtcdCluster> {
        Self::start_with(members, true)
    }

    fn start_with(members: usize, tls: bool) -> Result<EtcdCluster> {
        if members == 0 {
            return Err(LabError::Invalid("an etcd cluster needs a member".into()));
        }
        if !Path::new(ETCD).exists() {
            return Err(LabError::Requirements(format!(
                "{ETCD} is missing (Debian package etcd-server)"
            )));
        }
        sweep_stale_once();
        // A port taken between choosing and binding fails the start; that
        // race is rare, so try a few times with fresh ports.
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(members, tls) {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(error = %e, "etcd cluster did not start; trying again");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| LabError::Invalid("etcd cluster did not start".into())))
    }

    fn try_start(members: usize, tls: bool) -> Result<EtcdCluster> {
        let dir = RunDir::new()?;
        let tls = if tls {
            Some(make_tls(&dir.path().join("tls"), "etcd")?)
        } else {
            None
        };
        let mut ms = Vec::new();
        for i in 0..members {
            ms.push(Member {
                name: format!("m{i}"),
                client_port: free_port()?,
                peer_port: free_port()?,
                metrics_port: free_port()?,
                proc: None,
            });
        }
        let mut cluster = EtcdCluster {
            members: ms,
            tls,
            token: dir.name().to_string(),
            dir,
        };
        for i in 0..members {
            cluster.spawn(i)?;
        }
        cluster.wait_healthy(START_TIMEOUT)?;
        Ok(cluster)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let client = format!("{}://127.0.0.1:{}", self.scheme(), m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd = Command::new(ETCD);
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .arg("--listen-metrics-urls")
            .arg(format!("http://127.0.0.1:{}", m.metrics_port))
            // Tests do not survive power loss; fsync only slows them down.
            .arg("--unsafe-no-fsync")
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let log = self.dir.path().join(format!("{}.log", m.name));
        let proc = Proc::spawn(&format!("etcd-{}", m.name), cmd, Some(&log))?;
        // Lets cleanup_stale kill it if this test process dies uncleanly.
        let pidfile = self.dir.path().join(format!("{}.pid", m.name));
        std::fs::write(&pidfile, format!("{}\n", proc.pid())).map_err(|source| LabError::Io {
            op: "write",
            path: pidfile,
            source,
        })?;
        tracing::info!(member = %m.name, pid = proc.pid(), client = %client, "etcd member started");
        self.members[i].proc = Some(proc);
        Ok(())
    }

    /// Number of members (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// `127.0.0.1:port` of every member's client URL, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// `etcd://a,b,c`, the `--store` form.
    pub fn store_url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// The CA and certificates of a TLS cluster.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The run directory (logs are `m<i>.log` there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id of member `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members.get(i)?.proc.as_ref().map(Proc::pid)
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        self.members
            .get_mut(i)
            .and_then(|m| m.proc.as_mut())
            .is_some_and(Proc::is_running)
    }

    fn member(&mut self, i: usize) -> Result<&mut Member> {
        let n = self.members.len();
        self.members
            .get_mut(i)
            .ok_or_else(|| LabError::Invalid(format!("no etcd member {i} (of {n})")))
    }

    /// SIGKILL member `i` (a crash).
    pub fn kill_member(&mut self, i: usize) -> Result<()> {
        let m = self.member(i)?;
        if let Some(mut p) = m.proc.take() {
            p.kill()?;
            tracing::info!(member = %m.name, "etcd member killed");
        }
        Ok(())
    }

    /// SIGTERM member `i` (a clean stop).
    pub fn stop_member(&mut self, i: usize) -> Result<()> {
        let m = self.member(i)?;
        if let Some(mut p) = m.proc.take() {
            p.stop()?;
        }
        Ok(())
    }

    /// SIGSTOP member `i`: it keeps its sockets open but answers nothing,
    /// like a hung machine or a black-holed link (no reset is sent).
    pub fn pause_member(&mut self, i: usize) -> Result<()> {
        let pid = self
            .pid(i)
            .ok_or_else(|| LabError::Invalid(format!("etcd member {i} is down")))?;
        signal(pid, "STOP")
    }

    /// SIGCONT a paused member.
    pub fn resume_member(&mut self, i: usize) -> Result<()> {
        let pid = self
            .pid(i)
            .ok_or_else(|| LabError::Invalid(format!("etcd member {i} is down")))?;
        signal(pid, "CONT")
    }

    /// Starts member `i` again on its data and ports (killed first if it
    /// still runs) without waiting: after the whole cluster went down, no
    /// member is healthy until a quorum is back, so start them all, then
    /// [`EtcdCluster::wait_healthy`].
    pub fn start_member(&mut self, i: usize) -> Result<()> {
        self.kill_member(i)?;
        self.spawn(i)
    }

    /// Starts member `i` again on its data and ports (killed first if it
    /// still runs) and waits until it is healthy (it has a leader).
    pub fn restart_member(&mut self, i: usize) -> Result<()> {
        self.kill_member(i)?;
        self.spawn(i)?;
        let port = self.members[i].metrics_port;
        wait_until(START_TIMEOUT, &format!("etcd member {i} healthy"), || {
            healthy(port)
        })
    }

    /// Every running member healthy (which needs a leader).
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let ports: Vec<u16> = self
            .members
            .iter()
            .filter(|m| m.proc.is_some())
            .map(|m| m.metrics_port)
            .collect();
        let result = wait_until(timeout, "etcd cluster healthy", || {
            ports.iter().all(|p| healthy(*p))
        });
        if result.is_err() {
            for i in 0..self.members.len() {
                if !self.is_running(i) {
                    if let Some(p) = &self.members[i].proc {
                        return Err(LabError::Check(format!(
                            "etcd member {i} exited: {}",
                            p.log_tail(20)
                        )));
                    }
                }
            }
        }
        result
    }

    /// The index of the member that is leader now, per the members' own
    /// metrics; waits up to `timeout` for one (during an election there
    /// is none).
    pub fn wait_leader(&self, timeout: Duration) -> Result<usize> {
        wait_for(timeout, "an etcd leader", || self.leader_now())
    }

    /// [`EtcdCluster::wait_leader`] with 10 s.
    pub fn leader(&self) -> Result<usize> {
        self.wait_leader(Duration::from_secs(10))
    }

    /// The leader if one running member says it is leader right now.
    pub fn leader_now(&self) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.proc.is_some() && is_leader(m.metrics_port))
    }

    /// The last lines of member `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let log = self.dir.path().join(format!("m{i}.log"));
        crate::process::tail_file(&log, lines)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut p) = m.proc.take() {
                if let Err(e) = p.kill() {
                    tracing::warn!(member = %m.name, error = %e, "could not stop etcd member");
                }
            }
        }
    }
}

/// etcd's `/health`: true when the member has a leader and no alarm.
fn healthy(metrics_port: u16) -> bool {
    crate::util::http_get(SocketAddr::from(([127, 0, 0, 1], metrics_port)), "/health")
        .is_some_and(|b| b.contains("\"health\":\"true\""))
}

fn is_leader(metrics_port: u16) -> bool {
    crate::util::http_get(SocketAddr::from(([127, 0, 0, 1], metrics_port)), "/metrics")
        .is_some_and(|b| b.lines().any(|l| l.trim() == "etcd_server_is_leader 1"))
}
