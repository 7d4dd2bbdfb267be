//! The `flowctl` binary: `serve` all-in-one, `node-token`, and the operator
//! CLI against it; then a scripted agent with the printed token.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::FakeAgent;
use proto::ServerMessage;

const BIN: &str = env!("CARGO_BIN_EXE_flowctl");

/// Kills the server (by its pid) however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The admin credentials `flowctl serve` wrote (one server per test binary).
static CREDS: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

fn flowctl(api: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("STACKNET_API", api)
        .env_remove("STACKNET_KEY_ID")
        .env_remove("STACKNET_SECRET");
    match CREDS.get() {
        Some(c) => cmd.env("STACKNET_CREDENTIALS", c),
        None => cmd.env_remove("STACKNET_CREDENTIALS"),
    };
    cmd.output().unwrap()
}

fn ok(api: &str, args: &[&str]) -> String {
    let out = flowctl(api, args);
    assert!(
        out.status.success(),
        "flowctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(api: &str, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&ok(api, &a)).unwrap()
}

fn wait_healthy(api: &str, server: &mut Server) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("flowctl serve exited: {status}");
        }
        if std::net::TcpStream::connect(api.trim_start_matches("http://")).is_ok() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "flowctl serve did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(dir: &Path, secret: &Path) -> (Server, String, String) {
    let (agent_port, api_port) = (free_port(), free_port());
    let agent = format!("127.0.0.1:{agent_port}");
    let api = format!("http://127.0.0.1:{api_port}");
    let child = Command::new(BIN)
        .args(["serve", "--store"])
        .arg(dir.join("store.redb"))
        .args(["--agent-listen", &agent, "--api-listen"])
        .arg(format!("127.0.0.1:{api_port}"))
        .arg("--cluster-secret-file")
        .arg(secret)
        .arg("--admin-credentials")
        .arg(dir.join("admin.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    wait_healthy(&api, &mut server);
    (server, agent, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_cli_and_agent() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a-cluster-secret-of-some-length\n").unwrap();
    let (_server, agent, api) = start(dir.path(), &secret);
    // Without credentials the CLI says how to give them.
    let out = flowctl(&api, &["vpc", "list"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("STACKNET_CREDENTIALS"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let creds = dir.path().join("admin.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&creds).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "credentials readable by others");
    CREDS.set(creds).unwrap();

    ok(
        &api,
        &["node", "create", "n1", "--underlay-ip", "192.0.2.11"],
    );
    ok(
        &api,
        &["node", "create", "n2", "--underlay-ip", "192.0.2.12"],
    );
    let vpc = json(&api, &["vpc", "create", "blue", "--cidr", "10.1.0.0/16"]);
    let vpc_id = vpc["id"].as_str().unwrap().to_string();
    let subnet = json(
        &api,
        &[
            "subnet",
            "create",
            "--vpc",
            &vpc_id,
            "--cidr",
            "10.1.1.0/24",
            "--wait",
        ],
    );
    let subnet_id = subnet["id"].as_str().unwrap().to_string();
    // A group of a VPC no node carries yet (no NIC is bound) is done at once: --wait prints it.
    let g = json(&api, &["sg", "create", "db", "--vpc", &vpc_id, "--wait"]);
    assert_eq!(g["name"], "db", "{g}");
    let out = flowctl(
        &api,
        &[
            "sg",
            "create",
            "x",
            "--vpc",
            &vpc_id,
            "--callback-url",
            "ftp://no",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("callback_url"),
        "{err}"
    );
    // A NIC is programmed on its node: the CLI prints the operation.
    let op = json(
        &api,
        &[
            "nic", "create", "--subnet", &subnet_id, "--name", "web", "--node", "n1",
        ],
    );
    assert_eq!(op["state"], "pending", "{op}");
    let nic_id = op["target"]["id"].as_str().unwrap().to_string();
    let nic = json(&api, &["nic", "show", &nic_id]);
    assert_eq!(nic["node"], "n1");
    let shown = json(&api, &["op", "show", op["id"].as_str().unwrap()]);
    assert_eq!(shown["target"]["id"], nic_id.as_str());
    let ops = ok(&api, &["op", "list", "--target", &nic_id]);
    assert!(ops.lines().next().unwrap().starts_with("ID"), "{ops}");
    assert!(
        ops.contains(op["id"].as_str().unwrap()) && ops.contains("nic"),
        "{ops}"
    );

    // Table output.
    let table = ok(&api, &["nic", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID"), "{table}");
    assert!(
        lines[1].contains(&nic_id) && lines[1].contains("web") && lines[1].contains("n1"),
        "{table}"
    );
    let nodes = ok(&api, &["node", "list"]);
    assert_eq!(nodes.lines().count(), 3, "{nodes}");
    let shown = ok(&api, &["vpc", "show", &vpc_id]);
    assert!(shown.contains("10.1.0.0/16"), "{shown}");

    // The agent of n1, with the token `node-token` prints, gets its NIC.
    let token = ok(
        &api,
        &[
            "node-token",
            "--cluster-secret-file",
            secret.to_str().unwrap(),
            "n1",
        ],
    );
    let mut a = FakeAgent::connect(
        agent.parse().unwrap(),
        proto::AgentMessage::Hello {
            version: proto::PROTOCOL_VERSION,
            node: "n1".into(),
            token: token.trim().into(),
            last_applied: None,
        },
    )
    .await;
    let Some(ServerMessage::Snapshot { state }) = a.recv().await else {
        panic!("expected a snapshot");
    };
    assert!(state.nics.contains_key(&nic_id));
    a.send(proto::AgentMessage::Ack {
        revision: state.revision,
        ready_nics: vec![nic_id.clone()],
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while json(&api, &["nic", "show", &nic_id])["status"] != "up" {
        assert!(std::time::Instant::now() < deadline, "NIC never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Unbinding reaches the agent as a removal, and the NIC is down.
    let op = json(&api, &["nic", "update", &nic_id, "--unbind"]);
    assert_eq!(op["action"], "update");
    let unbound = json(&api, &["nic", "show", &nic_id]);
    assert_eq!(unbound["node"], serde_json::Value::Null);
    assert_eq!(unbound["status"], "down");
    let Some(ServerMessage::Delta { changes, .. }) = a.recv().await else {
        panic!("expected a delta");
    };
    assert!(changes.contains(&proto::Change::Remove {
        key: proto::ObjectKey::Nic(nic_id.clone())
    }));

    // A problem answer: its detail on stderr, non-zero exit.
    let out = flowctl(
        &api,
        &["subnet", "create", "--vpc", &vpc_id, "--cidr", "not-a-cidr"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HTTP 4") && err.contains("cidr"), "{err}");
    let out = flowctl(&api, &["vpc", "delete", "vpc-doesnotexist"]);
    assert!(!out.status.success());

    ok(&api, &["nic", "delete", &nic_id]);
    let t = ok(&api, &["nic", "list"]);
    assert_eq!(t.lines().count(), 1, "{t}");
    let metrics = reqwest::get(format!("{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("flowctl_snapshots_sent_total 1"),
        "{metrics}"
    );
}
