//! vswitch-agent's control client against the real flowctl server.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use api::model::NicStatus;
use common::*;
use proto::{Change, Object};
use vswitch_agent::control::{ControlClient, ControlConfig, ControlError, Update};

fn config(endpoints: Vec<String>, node: &str) -> ControlConfig {
    let mut cfg = ControlConfig::new(endpoints, node, proto::auth::node_token(SECRET, node));
    cfg.backoff_min = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_millis(200);
    cfg
}

async fn next(c: &mut ControlClient) -> Update {
    tokio::time::timeout(Duration::from_secs(15), c.next())
        .await
        .expect("no update within 15 s")
}

#[tokio::test]
async fn snapshot_delta_ack() {
    let c = Cluster::start(async |s| two_nodes(s).await).await;
    let mut client = ControlClient::new(config(vec![c.addr.to_string()], "n1"));
    let Update::Snapshot(st) = next(&mut client).await else {
        panic!("expected a snapshot first");
    };
    assert_eq!(st.nics.len(), 2);
    client.ack(st.revision, vec!["nic-1".into()]).await;
    let up = c
        .wait_status("nic-1", |s| s.is_some_and(|s| s.status == NicStatus::Up))
        .await
        .unwrap();
    assert_eq!(up.revision, st.revision);

    let (k, v) = nic("nic-3", "vpc-a", "sub-a", Some("n2"), 13);
    let r = put(&*c.store, k, &v).await;
    let u = next(&mut client).await;
    assert_eq!(
        u,
        Update::Delta {
            base: st.revision,
            revision: r,
            changes: vec![Change::Upsert {
                object: Object::Nic(proto::Nic {
                    id: "nic-3".into(),
                    vpc_id: "vpc-a".into(),
                    subnet_id: "sub-a".into(),
                    mac: v.mac,
                    ip: v.ip,
                    node: "n2".into(),
                    port_security: true,
                    security_groups: vec![],
                    allowed_address_pairs: vec![],
                })
            }]
        }
    );
    assert_eq!(client.last_applied(), Some(r));
}

#[tokio::test]
async fn fails_over_and_resumes_with_deltas() {
    let c = Cluster::start(async |s| two_nodes(s).await).await;
    let b = Replica::start(c.store.clone()).await;
    // Nothing listens on the first endpoint.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut client = ControlClient::new(config(
        vec![
            dead.to_string(),
            format!("http://{}", c.addr),
            b.addr.to_string(),
        ],
        "n1",
    ));
    let Update::Snapshot(st) = next(&mut client).await else {
        panic!("expected a snapshot first");
    };
    assert_eq!(
        client.endpoint(),
        Some(format!("http://{}", c.addr).as_str())
    );
    assert!(matches!(
        client.last_error(),
        Some(ControlError::Connect(..))
    ));

    // Replica A dies; a change happens; the client resumes on B with a delta.
    c.replica.kill();
    let (k, v) = nic("nic-9", "vpc-a", "sub-a", Some("n1"), 19);
    let r = put(&*c.store, k, &v).await;
    match next(&mut client).await {
        Update::Delta { base, revision, .. } => assert_eq!((base, revision), (st.revision, r)),
        other => panic!("expected a resume delta, got {other:?}"),
    }
    assert_eq!(client.endpoint(), Some(b.addr.to_string().as_str()));

    // The ack goes to B, which writes the status.
    client.ack(r, vec!["nic-1".into(), "nic-9".into()]).await;
    c.wait_status("nic-9", |s| s.is_some_and(|s| s.status == NicStatus::Up))
        .await;
}

#[tokio::test]
async fn a_black_holed_connection_is_noticed() {
    let c = Cluster::start(async |s| two_nodes(s).await).await;
    let relay = Relay::start(c.addr).await;
    let b = Replica::start(c.store.clone()).await;
    let mut client = ControlClient::new(config(
        vec![relay.addr.to_string(), b.addr.to_string()],
        "n1",
    ));
    let Update::Snapshot(_) = next(&mut client).await else {
        panic!("expected a snapshot first");
    };
    assert_eq!(client.endpoint(), Some(relay.addr.to_string().as_str()));

    // The path goes silent; the connection stays open. Pings (1 s, 3 s
    // timeout) find out and the client moves to B.
    relay.frozen.store(true, Ordering::SeqCst);
    let (k, v) = nic("nic-9", "vpc-a", "sub-a", Some("n1"), 19);
    let r = put(&*c.store, k, &v).await;
    let started = tokio::time::Instant::now();
    let u = next(&mut client).await;
    assert_eq!(u.revision(), r);
    assert!(matches!(u, Update::Delta { .. }));
    assert_eq!(client.endpoint(), Some(b.addr.to_string().as_str()));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_refused_client_keeps_retrying() {
    let c = Cluster::start(async |s| two_nodes(s).await).await;
    let mut cfg = config(vec![c.addr.to_string()], "n1");
    cfg.token = proto::auth::node_token(SECRET, "n2");
    let mut client = ControlClient::new(cfg);
    let got = tokio::time::timeout(Duration::from_millis(500), client.next()).await;
    assert!(got.is_err(), "a refused client must not yield updates");
    match client.last_error() {
        Some(ControlError::Refused(reason)) => assert!(reason.contains("token"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let refused = c
        .replica
        .service
        .shared
        .metrics
        .refused_total
        .load(Ordering::Relaxed);
    assert!(refused >= 2, "retried: {refused}");
}
