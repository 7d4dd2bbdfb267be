//! The client against a bare, real `ovsdb-server` (no ovs-vswitchd) that the
//! tests can stop and start: transactions and their errors, monitors, the
//! write guards, echo probes, and the server going away.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use common::BareOvsdb;
use ovsdb::data::row;
use ovsdb::session::SessionConfig;
use ovsdb::vswitch::plan;
use ovsdb::{
    BridgeConfig, Client, Condition, Datum, Error, MonitorRequest, Notification, OpResult,
    Operation, Replica, TunnelSpec, Vswitch, VswitchEvent,
};
use serde_json::json;

const T: Duration = Duration::from_secs(10);

/// Every await on the server is bounded: a test must fail, never hang.
async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(T, f)
        .await
        .expect("server did not answer in time")
}

fn no_probe() -> SessionConfig {
    SessionConfig {
        probe_interval: None,
        ..Default::default()
    }
}

#[tokio::test]
async fn transact_results_and_typed_errors() {
    let db = BareOvsdb::start();
    let (c, _notes) = Client::connect(&db.target(), no_probe()).await.unwrap();
    assert_eq!(
        within(c.list_dbs()).await.unwrap(),
        ["Open_vSwitch", "_Server"]
    );
    within(c.echo()).await.unwrap();

    let insert = |name: &str| Operation::Insert {
        table: "Bridge".into(),
        row: row([("name", Datum::string(name))]),
        uuid_name: Some("b".into()),
    };
    let root = Operation::Insert {
        table: "Open_vSwitch".into(),
        row: row([("bridges", Datum::named_uuid("b"))]),
        uuid_name: None,
    };
    let r = within(c.transact("Open_vSwitch", &[insert("br0"), root.clone()]))
        .await
        .unwrap();
    let OpResult::Insert(br0) = r[0] else {
        panic!("{r:?}")
    };

    let r = within(c.transact(
        "Open_vSwitch",
        &[Operation::Select {
            table: "Bridge".into(),
            conditions: vec![Condition::uuid(br0)],
            columns: Some(vec!["name".into()]),
        }],
    ))
    .await
    .unwrap();
    assert_eq!(
        r,
        vec![OpResult::Rows(vec![row([("name", Datum::string("br0"))])])]
    );

    // The Bridge name index: a second "br0" fails at commit.
    let err = within(c.transact(
        "Open_vSwitch",
        &[
            insert("br0"),
            Operation::Mutate {
                table: "Open_vSwitch".into(),
                conditions: vec![],
                mutations: vec![ovsdb::Mutation::new(
                    "bridges",
                    ovsdb::Mutator::Insert,
                    Datum::named_uuid("b"),
                )],
            },
        ],
    ))
    .await
    .unwrap_err();
    let Error::Transaction(e) = err else {
        panic!("{err}")
    };
    assert_eq!(e.error, "constraint violation");
    assert_eq!(e.index, None, "index violations are commit errors: {e}");

    // An operation-level error names the operation.
    let err = within(c.transact(
        "Open_vSwitch",
        &[
            Operation::Comment("first".into()),
            Operation::Update {
                table: "Bridge".into(),
                conditions: vec![Condition::uuid(br0)],
                row: row([("no_such_column", Datum::integer(1))]),
            },
        ],
    ))
    .await
    .unwrap_err();
    let Error::Transaction(e) = err else {
        panic!("{err}")
    };
    assert_eq!(e.index, Some(1));
    assert_eq!(e.operation, "update Bridge");
    assert!(
        e.to_string()
            .starts_with("operation 1 (update Bridge) failed: "),
        "{e}"
    );

    // JSON-RPC level errors.
    let err = within(c.get_schema("Nope")).await.unwrap_err();
    assert!(matches!(err, Error::Rpc { .. }), "{err}");
    let err = within(c.transact("Nope", &[])).await.unwrap_err();
    assert!(matches!(err, Error::Rpc { .. }), "{err}");
}

#[tokio::test]
async fn monitor_keeps_a_replica() {
    let db = BareOvsdb::start();
    db.vsctl(&["init"]);
    let (c, mut notes) = Client::connect(&db.target(), no_probe()).await.unwrap();
    let reqs = BTreeMap::from([(
        "Bridge".to_string(),
        MonitorRequest::columns(["name", "fail_mode"]),
    )]);
    db.vsctl(&["add-br", "br0"]);
    let mut replica = Replica::new();
    replica.apply(&c.monitor("Open_vSwitch", json!(7), &reqs).await.unwrap());
    assert!(replica.find_by("Bridge", "name", "br0").is_some());

    db.vsctl(&[
        "add-br",
        "br1",
        "--",
        "set",
        "Bridge",
        "br1",
        "fail_mode=secure",
    ]);
    db.vsctl(&["set", "Bridge", "br0", "fail_mode=standalone"]);
    db.vsctl(&["del-br", "br1"]);
    for _ in 0..3 {
        let n = tokio::time::timeout(T, notes.recv())
            .await
            .unwrap()
            .unwrap();
        let Notification::Update {
            monitor_id,
            updates,
        } = n
        else {
            panic!("{n:?}")
        };
        assert_eq!(monitor_id, json!(7));
        replica.apply(&updates);
    }
    assert_eq!(replica.len("Bridge"), 1);
    let (_, br0) = replica.find_by("Bridge", "name", "br0").unwrap();
    assert_eq!(br0["fail_mode"], Datum::string("standalone"));
    c.monitor_cancel(json!(7)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_database_gets_a_root_row_and_the_bridge() {
    let db = BareOvsdb::start();
    let vs = Vswitch::connect(&db.target(), BridgeConfig::new("br-int", "netdev"))
        .await
        .unwrap();
    assert!(vs.ensure_bridge().await.unwrap());
    assert!(!vs.ensure_bridge().await.unwrap());
    let roots = common::parse_vsctl_list(&db.vsctl(&["--format=json", "list", "Open_vSwitch"]));
    assert_eq!(roots.len(), 1);
    assert_eq!(db.vsctl(&["list-br"]).trim(), "br-int");
    assert_eq!(
        db.vsctl(&["get", "Bridge", "br-int", "fail_mode"]).trim(),
        "secure"
    );
}

/// A transaction planned from a view that has since changed is refused as a
/// whole by its `wait` guard: this is what stops two agents (or an agent and
/// its restarted self) from creating the same bridge or port twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_plans_are_refused_by_their_guards() {
    let db = BareOvsdb::start();
    db.vsctl(&["init"]);
    let vs = Vswitch::connect(&db.target(), BridgeConfig::new("br-int", "netdev"))
        .await
        .unwrap();
    let cfg = vs.config().clone();
    let stale = vs.replica();
    let ops = plan::plan_bridge(&stale, &cfg).unwrap().unwrap();
    vs.transact(&ops).await.unwrap();
    let err = vs.transact(&ops).await.unwrap_err();
    let Error::Transaction(e) = err else {
        panic!("{err}")
    };
    assert!(e.is_wait_failure(), "{e}");
    assert_eq!(e.index, Some(0));
    assert_eq!(db.vsctl(&["list-br"]).trim(), "br-int");

    // Same for a tunnel port, planned before another writer added it.
    let spec = TunnelSpec {
        peer: "n2".into(),
        remote_ip: "192.0.2.2".parse().unwrap(),
        local_ip: None,
        bfd: false,
        cpath_down: false,
    };
    let mut rx = vs.ofports();
    while vs.replica().find_by("Bridge", "name", "br-int").is_none() {
        let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
    }
    let ops = plan::plan_tunnel(&vs.replica(), &cfg, &spec)
        .unwrap()
        .unwrap();
    vs.transact(&ops).await.unwrap();
    let Error::Transaction(e) = vs.transact(&ops).await.unwrap_err() else {
        panic!()
    };
    assert!(e.is_wait_failure(), "{e}");
    assert_eq!(db.vsctl(&["list-ports", "br-int"]).trim(), "vx-n2");
    // And the high-level call, seeing the port, writes nothing.
    assert_eq!(vs.ensure_tunnel(&spec).await.unwrap(), "vx-n2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answering_echo_keeps_the_session_alive() {
    let db = BareOvsdb::start();
    let probe_sock = db.dir().join("probe.sock");
    let target = format!("punix:{}", probe_sock.display());
    db.vsctl(&["init"]);
    // A remote on which the server probes idle clients every second.
    db.vsctl(&[
        "set-manager",
        &target,
        "--",
        "set",
        "Manager",
        ".",
        "inactivity_probe=1000",
    ]);
    common::wait_until(T, || probe_sock.exists());

    // Our probes off, so only the server's echo keeps traffic flowing.
    let (c, _notes) = Client::connect(&format!("unix:{}", probe_sock.display()), no_probe())
        .await
        .unwrap();
    // A control that never answers.
    let mut mute = std::os::unix::net::UnixStream::connect(&probe_sock).unwrap();
    mute.set_read_timeout(Some(T)).unwrap();

    let mute_log = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        // Returns at EOF: the server hung up on the silent client.
        let r = mute.read_to_end(&mut got);
        (r.is_ok(), String::from_utf8_lossy(&got).to_string())
    });
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let (eof, seen) = mute_log.await.unwrap();
    assert!(eof, "the silent client was not dropped");
    assert!(seen.contains(r#""method":"echo""#), "{seen}");

    assert!(c.is_connected());
    assert!(c.echoes_answered() >= 2, "{}", c.echoes_answered());
    c.list_dbs().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_going_away_is_noticed_and_survived() {
    let mut db = BareOvsdb::start();
    db.vsctl(&["init"]);
    let (c, mut notes) = Client::connect(&db.target(), no_probe()).await.unwrap();
    let vs = Vswitch::connect(&db.target(), BridgeConfig::new("br-int", "netdev"))
        .await
        .unwrap();
    vs.ensure_bridge().await.unwrap();
    let mut events = vs.events();

    db.kill();
    tokio::time::timeout(T, c.closed()).await.unwrap();
    assert!(!c.is_connected());
    assert!(tokio::time::timeout(T, notes.recv())
        .await
        .unwrap()
        .is_none());
    assert!(matches!(c.list_dbs().await, Err(Error::Disconnected)));

    let ev = tokio::time::timeout(T, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev, VswitchEvent::Disconnected);
    assert!(matches!(
        vs.ensure_tunnel(&TunnelSpec {
            peer: "n2".into(),
            remote_ip: "192.0.2.2".parse().unwrap(),
            local_ip: None,
            bfd: false,
            cpath_down: false
        })
        .await,
        Err(Error::Disconnected)
    ));

    // The database survives on disk; the Vswitch reconnects by itself.
    db.restart();
    loop {
        let ev = tokio::time::timeout(T, events.recv())
            .await
            .unwrap()
            .unwrap();
        if ev == VswitchEvent::Reconnected {
            break;
        }
    }
    assert!(vs.is_connected());
    assert!(!vs.ensure_bridge().await.unwrap(), "replica reloaded");
    assert_eq!(
        vs.ensure_tunnel(&TunnelSpec {
            peer: "n2".into(),
            remote_ip: "192.0.2.2".parse().unwrap(),
            local_ip: None,
            bfd: false,
            cpath_down: false
        })
        .await
        .unwrap(),
        "vx-n2"
    );
    assert_eq!(db.vsctl(&["list-ports", "br-int"]).trim(), "vx-n2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_deleted_behind_our_back_is_reported() {
    let db = BareOvsdb::start();
    db.vsctl(&["init"]);
    let vs = within(Vswitch::connect(
        &db.target(),
        BridgeConfig::new("br-int", "netdev"),
    ))
    .await
    .unwrap();
    assert!(within(vs.ensure_bridge()).await.unwrap());
    // With no ovs-vswitchd, the lock probe finds it down.
    let mut st = vs.vswitchd_state();
    within(st.wait_for(|s| *s == ovsdb::VswitchdState::Down))
        .await
        .unwrap();
    let mut events = vs.events();
    db.vsctl(&["del-br", "br-int"]);
    assert_eq!(
        within(events.recv()).await.unwrap(),
        VswitchEvent::BridgeRemoved
    );
    assert!(within(vs.ensure_bridge()).await.unwrap(), "recreated");
    assert_eq!(db.vsctl(&["list-br"]).trim(), "br-int");
}
