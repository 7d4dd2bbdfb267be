//! The agent protocol end to end: a scripted agent against the real server
//! and the real embedded store.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::time::Duration;

use api::model::{keys, NicStatus};
use common::*;
use proto::{AgentMessage, Change, Object, ServerMessage};

fn snapshot(m: Option<ServerMessage>) -> proto::NodeState {
    match m {
        Some(ServerMessage::Snapshot { state }) => state,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

fn delta(m: Option<ServerMessage>) -> (u64, u64, Vec<Change>) {
    match m {
        Some(ServerMessage::Delta {
            base,
            revision,
            changes,
        }) => (base, revision, changes),
        other => panic!("expected a delta, got {other:?}"),
    }
}

#[tokio::test]
async fn snapshot_delta_ack_resume() {
    let c = Cluster::start(async |s| two_nodes(s).await).await;

    // Snapshot first.
    let mut a = FakeAgent::hello(c.addr, "n1", None).await;
    let st = snapshot(a.recv().await);
    assert_eq!(st.node.name, "n1");
    assert_eq!(st.nics.len(), 2);
    assert_eq!(st.peers.keys().collect::<Vec<_>>(), ["n2"]);
    let r0 = st.revision;
    assert_eq!(r0, c.store.revision().await.unwrap());

    // Ack: nic-1 (bound here) becomes Up; nic-2 is n2's business.
    a.send(AgentMessage::Ack {
        revision: r0,
        ready_nics: vec!["nic-1".into(), "nic-2".into()],
    })
    .await;
    let up = c.wait_status("nic-1", |s| s.is_some()).await.unwrap();
    assert_eq!(
        (up.status, up.node.as_str(), up.revision),
        (NicStatus::Up, "n1", r0)
    );
    assert_eq!(c.status("nic-2").await, None);

    // A write that concerns n1: one delta based on the snapshot.
    let (k, v) = nic("nic-3", "vpc-a", "sub-a", Some("n2"), 13);
    let r1 = put(&*c.store, k, &v).await;
    let (base, rev, changes) = delta(a.recv().await);
    assert_eq!((base, rev), (r0, r1));
    assert!(matches!(&changes[..], [Change::Upsert { object: Object::Nic(n) }] if n.id == "nic-3"));

    // Writes that do not concern n1 (a status write, n3's own record) send
    // nothing; the next relevant one is based on r1.
    let (k, v) = node("n3", 33);
    put(&*c.store, k, &v).await;
    a.expect_silence(Duration::from_millis(300)).await;
    c.store.delete(&keys::nic("nic-3")).await.unwrap();
    let (base, r2, _) = delta(a.recv().await);
    assert_eq!(base, r1);

    // Reconnect with last_applied: a delta, not a snapshot.
    drop(a);
    let (k, v) = nic("nic-4", "vpc-a", "sub-a", Some("n1"), 14);
    let r3 = put(&*c.store, k, &v).await;
    let mut a = FakeAgent::hello(c.addr, "n1", Some(r2)).await;
    let (base, rev, changes) = delta(a.recv().await);
    assert_eq!((base, rev), (r2, r3));
    assert_eq!(changes.len(), 1);

    // Up to date already: nothing at all until the next change.
    let mut b = FakeAgent::hello(c.addr, "n1", Some(r3)).await;
    b.expect_silence(Duration::from_millis(300)).await;

    // The new local NIC becomes Up on ack; nic-1 stays Up untouched.
    a.send(AgentMessage::Ack {
        revision: r3,
        ready_nics: vec!["nic-1".into(), "nic-4".into()],
    })
    .await;
    let st4 = c.wait_status("nic-4", |s| s.is_some()).await.unwrap();
    assert_eq!((st4.status, st4.revision), (NicStatus::Up, r3));
    assert_eq!(c.status("nic-1").await.unwrap().revision, r0);

    let text = reqwest::get(format!("http://{}/metrics", c.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("flowctl_agents_connected 2"), "{text}");
    assert!(text.contains("flowctl_acks_total 2"), "{text}");
}

#[tokio::test]
async fn bad_hellos_are_refused() {
    let c = Cluster::start(async |s| two_nodes(s).await).await;
    let cases = [
        AgentMessage::Hello {
            version: proto::PROTOCOL_VERSION,
            node: "n1".into(),
            token: proto::auth::node_token(SECRET, "n2"),
            last_applied: None,
        },
        AgentMessage::Hello {
            version: proto::PROTOCOL_VERSION,
            node: "n1".into(),
            token: proto::auth::node_token(b"other-secret", "n1"),
            last_applied: None,
        },
        AgentMessage::Hello {
            version: proto::PROTOCOL_VERSION + 1,
            node: "n1".into(),
            token: proto::auth::node_token(SECRET, "n1"),
            last_applied: None,
        },
        AgentMessage::Hello {
            version: proto::PROTOCOL_VERSION,
            node: "ghost".into(),
            token: proto::auth::node_token(SECRET, "ghost"),
            last_applied: None,
        },
        AgentMessage::Ack {
            revision: 1,
            ready_nics: vec![],
        },
    ];
    for hello in cases {
        let mut a = FakeAgent::connect(c.addr, hello.clone()).await;
        match a.recv().await {
            Some(ServerMessage::Refused { reason }) => assert!(!reason.is_empty()),
            other => panic!("{hello:?} got {other:?}"),
        }
        // And the stream is closed.
        assert_eq!(a.recv().await, None);
    }
}

#[tokio::test]
async fn nack_and_moves_take_status_down() {
    let c = Cluster::start(async |s| two_nodes(s).await).await;
    let mut a = FakeAgent::hello(c.addr, "n1", None).await;
    let r0 = snapshot(a.recv().await).revision;
    a.send(AgentMessage::Ack {
        revision: r0,
        ready_nics: vec!["nic-1".into()],
    })
    .await;
    c.wait_status("nic-1", |s| s.is_some_and(|s| s.status == NicStatus::Up))
        .await;

    // A nack: the node's flows are unknown, so not Up any more.
    a.send(AgentMessage::Nack {
        revision: r0,
        error: "ovs-vswitchd is gone".into(),
    })
    .await;
    let down = c
        .wait_status("nic-1", |s| s.is_some_and(|s| s.status == NicStatus::Down))
        .await
        .unwrap();
    assert_eq!(down.node, "n1");

    // Up again, then the NIC moves to n2: Down, without any agent involved.
    a.send(AgentMessage::Ack {
        revision: r0,
        ready_nics: vec!["nic-1".into()],
    })
    .await;
    c.wait_status("nic-1", |s| s.is_some_and(|s| s.status == NicStatus::Up))
        .await;
    let (k, v) = nic("nic-1", "vpc-a", "sub-a", Some("n2"), 11);
    let moved = put(&*c.store, k, &v).await;
    c.wait_status("nic-1", |s| s.is_some_and(|s| s.status == NicStatus::Down))
        .await;
    // A late ack from n1 cannot bring it back.
    a.send(AgentMessage::Ack {
        revision: moved,
        ready_nics: vec!["nic-1".into()],
    })
    .await;
    // (A negative: give the ack time to be processed.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.status("nic-1").await.unwrap().status, NicStatus::Down);
    // n2 acking a revision from after the move makes it Up on n2.
    let mut b = FakeAgent::hello(c.addr, "n2", None).await;
    let rb = snapshot(b.recv().await).revision;
    assert!(rb >= moved);
    b.send(AgentMessage::Ack {
        revision: rb,
        ready_nics: vec!["nic-1".into(), "nic-2".into()],
    })
    .await;
    let up = c
        .wait_status("nic-1", |s| s.is_some_and(|s| s.status == NicStatus::Up))
        .await
        .unwrap();
    assert_eq!(up.node, "n2");

    // Deleting the NIC deletes its status.
    c.store.delete(&keys::nic("nic-1")).await.unwrap();
    c.wait_status("nic-1", |s| s.is_none()).await;
}

#[tokio::test]
async fn stale_status_is_fixed_at_startup() {
    // A NIC moved while no flowctl ran: its record still says Up on n1.
    let c = Cluster::start(async |s| {
        two_nodes(s).await;
        let (k, v) = nic("nic-1", "vpc-a", "sub-a", Some("n2"), 11);
        put(s, k, &v).await;
        let rec = api::model::NicStatusRecord {
            status: NicStatus::Up,
            node: "n1".into(),
            revision: 3,
        };
        put(s, keys::nic_status("nic-1"), &rec).await;
        put(s, keys::nic_status("nic-gone"), &rec).await;
    })
    .await;
    let st = c
        .wait_status("nic-1", |s| s.is_some_and(|s| s.status == NicStatus::Down))
        .await
        .unwrap();
    assert_eq!(st.node, "n1");
    c.wait_status("nic-gone", |s| s.is_none()).await;
}
