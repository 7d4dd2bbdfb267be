use api::model::keys;
use proto::{Change, NodeState, ObjectKey, ServerMessage};

use super::*;
use crate::testutil::*;

fn hub(kv: &Kv, limits: HistoryLimits) -> Hub {
    Hub::new(Compiler::from_listing(&kv.listing(), kv.rev), limits)
}

fn snapshot_of(msg: Option<ServerMessage>) -> NodeState {
    match msg {
        Some(ServerMessage::Snapshot { state }) => state,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

fn delta_of(msg: Option<ServerMessage>) -> (u64, u64, Vec<Change>) {
    match msg {
        Some(ServerMessage::Delta {
            base,
            revision,
            changes,
        }) => (base, revision, changes),
        other => panic!("expected a delta, got {other:?}"),
    }
}

#[test]
fn deltas_skip_revisions_that_do_not_concern_the_node() {
    let mut kv = small_world();
    let r0 = kv.rev;
    let mut h = hub(&kv, HistoryLimits::default());

    // r0+1: a NIC in vpc-a (n1, n2). r0+2: one in vpc-b (n3 only).
    h.apply(&kv.txn(vec![nic("nic-a4", "vpc-a", "sub-a", Some("n2"), 14)]));
    h.apply(&kv.txn(vec![nic("nic-b2", "vpc-b", "sub-b", Some("n3"), 22)]));
    assert_eq!(h.revision(), r0 + 2);

    let (base, rev, changes) = delta_of(h.catch_up("n1", Some(r0)));
    assert_eq!((base, rev), (r0, r0 + 1));
    assert_eq!(changes.len(), 1);
    assert_eq!(h.catch_up("n1", Some(r0 + 1)), None);
    assert_eq!(h.catch_up("n1", Some(r0 + 2)), None);

    let (base, rev, _) = delta_of(h.catch_up("n3", Some(r0 + 1)));
    assert_eq!((base, rev), (r0 + 1, r0 + 2));

    // A snapshot carries the current revision, whatever changed the node last.
    let st = snapshot_of(h.catch_up("n1", None));
    assert_eq!(st.revision, r0 + 2);
    assert!(st.nics.contains_key("nic-a4"));

    // An agent claiming a revision this hub has not seen gets a snapshot.
    snapshot_of(h.catch_up("n1", Some(r0 + 7)));
    // A node nothing refers to is current from the start.
    assert_eq!(h.catch_up("n9", Some(r0)), None);
}

#[test]
fn a_slow_agent_gets_one_coalesced_delta() {
    let mut kv = small_world();
    let r0 = kv.rev;
    let mut h = hub(&kv, HistoryLimits::default());
    let before = snapshot_of(h.catch_up("n1", None));

    h.apply(&kv.txn(vec![nic("nic-a4", "vpc-a", "sub-a", Some("n2"), 14)]));
    h.apply(&kv.txn(vec![nic("nic-a4", "vpc-a", "sub-a", Some("n1"), 15)]));
    h.apply(&kv.txn(vec![subnet("sub-a", "vpc-a", 1, 1300)]));
    h.apply(&kv.txn(vec![nic("nic-a5", "vpc-a", "sub-a", Some("n2"), 16)]));
    h.apply(&kv.txn(vec![Op::Del(keys::nic("nic-a5"))]));

    let (base, rev, changes) = delta_of(h.catch_up("n1", Some(r0)));
    assert_eq!((base, rev), (r0, kv.rev));
    // nic-a4 (upserted twice), sub-a, nic-a5 (upserted then removed).
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert!(changes.contains(&Change::Remove {
        key: ObjectKey::Nic("nic-a5".into())
    }));
    let mut agent = before;
    for c in &changes {
        agent.apply(c);
    }
    agent.revision = rev;
    assert_eq!(agent, snapshot_of(h.catch_up("n1", None)));
}

#[test]
fn history_is_bounded_and_then_snapshots() {
    let mut kv = small_world();
    let r0 = kv.rev;
    let mut h = hub(
        &kv,
        HistoryLimits {
            entries: 2,
            changes: 100,
        },
    );
    for i in 0..3u8 {
        h.apply(&kv.txn(vec![nic(
            &format!("nic-x{i}"),
            "vpc-a",
            "sub-a",
            Some("n1"),
            30 + i,
        )]));
    }
    // Entries r0+2 and r0+3 are kept: r0+1 is still reachable (the state
    // right after the evicted entry), r0 is not.
    snapshot_of(h.catch_up("n1", Some(r0)));
    let (base, rev, changes) = delta_of(h.catch_up("n1", Some(r0 + 1)));
    assert_eq!((base, rev, changes.len()), (r0 + 1, r0 + 3, 2));

    // The change budget bounds history too.
    let mut h = hub(
        &kv,
        HistoryLimits {
            entries: 100,
            changes: 1,
        },
    );
    let r = kv.rev;
    h.apply(&kv.txn(vec![nic("nic-y", "vpc-b", "sub-b", Some("n1"), 40)]));
    // n1 joined vpc-b: several changes in one entry, over budget.
    snapshot_of(h.catch_up("n1", Some(r)));
    assert_eq!(h.catch_up("n1", Some(kv.rev)), None);
}
