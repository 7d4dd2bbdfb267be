use std::collections::HashMap;
use std::time::Instant;

use openflow::flow::{Action, Flow, FlowKey, Match};
use proptest::prelude::*;

use super::*;
use crate::pipeline::cookie;

const FOREIGN: u64 = 0x0000_0000_0000_0001;

fn flow(table: u8, port: u32, cookie: u64, out: u32) -> Flow {
    Flow {
        table,
        priority: 100,
        cookie,
        matches: Match::new().in_port(port),
        actions: vec![Action::Output(out)],
        goto_table: None,
    }
}

/// Flows by key, cookies without our generation: a flow an earlier agent run
/// wrote counts as the desired one.
fn by_key(flows: &[Flow]) -> HashMap<FlowKey, Flow> {
    flows
        .iter()
        .map(|f| {
            let mut f = f.clone();
            f.cookie = stamp(f.cookie);
            (f.key(), f)
        })
        .collect()
}

#[test]
fn adds_modifies_and_deletes() {
    let ours = cookie(1, 7);
    let installed = vec![
        flow(0, 1, ours, 10), // unchanged
        flow(0, 2, ours, 10), // actions change
        flow(0, 3, ours, 10), // only the generation differs: kept
        flow(0, 4, ours, 10), // goto changes
        flow(0, 5, ours, 10), // gone
    ];
    let mut goto = flow(0, 4, ours, 10);
    goto.goto_table = Some(3);
    let desired = vec![
        flow(0, 6, ours, 10), // new
        flow(0, 1, ours, 10),
        flow(0, 2, ours, 11),
        flow(0, 3, cookie(2, 7), 10),
        goto.clone(),
    ];
    let changes = diff(&installed, &desired);
    assert_eq!(
        changes,
        vec![
            FlowChange::Add(flow(0, 6, ours, 10)),
            FlowChange::Modify(flow(0, 2, ours, 11)),
            FlowChange::Modify(goto),
            FlowChange::Delete(flow(0, 5, ours, 10).key()),
        ]
    );
    assert_eq!(by_key(&apply(&installed, &changes)), by_key(&desired));
}

#[test]
fn same_match_in_another_table_or_priority_is_another_flow() {
    let ours = cookie(1, 0);
    let installed = vec![flow(0, 1, ours, 10)];
    let mut other_prio = flow(0, 1, ours, 10);
    other_prio.priority = 50;
    let desired = vec![flow(1, 1, ours, 10), other_prio.clone()];
    let changes = diff(&installed, &desired);
    assert_eq!(
        changes,
        vec![
            FlowChange::Add(flow(1, 1, ours, 10)),
            FlowChange::Add(other_prio),
            FlowChange::Delete(flow(0, 1, ours, 10).key()),
        ]
    );
}

#[test]
fn foreign_flows_are_never_deleted_but_can_be_replaced() {
    let ours = cookie(1, 0);
    let installed = vec![
        flow(0, 1, FOREIGN, 10),
        flow(0, 2, 0, 10), // cookie 0: what ovs-ofctl add-flow writes
        flow(0, 3, FOREIGN, 10),
    ];
    let desired = vec![flow(0, 3, ours, 12)];
    let changes = diff(&installed, &desired);
    assert_eq!(changes, vec![FlowChange::Modify(flow(0, 3, ours, 12))]);
    assert!(diff(&installed, &[]).is_empty());
}

#[test]
fn identical_tables_give_no_changes() {
    let flows: Vec<Flow> = (0..50)
        .map(|i| flow(i % 3, i.into(), cookie(3, i.into()), 1))
        .collect();
    assert!(diff(&flows, &flows).is_empty());
    // The order of either side does not matter.
    let mut reversed = flows.clone();
    reversed.reverse();
    assert!(diff(&flows, &reversed).is_empty());
}

#[test]
fn duplicate_desired_keys_count_once_first_wins() {
    let ours = cookie(1, 0);
    let changes = diff(&[], &[flow(0, 1, ours, 10), flow(0, 1, ours, 11)]);
    assert_eq!(changes, vec![FlowChange::Add(flow(0, 1, ours, 10))]);
}

#[test]
fn change_key() {
    let f = flow(2, 9, cookie(1, 0), 1);
    assert_eq!(FlowChange::Add(f.clone()).key(), f.key());
    assert_eq!(FlowChange::Delete(f.key()).key(), f.key());
}

#[test]
fn a_hundred_thousand_flows_diff_fast() {
    let n = 100_000u32;
    let installed: Vec<Flow> = (0..n)
        .map(|i| flow((i % 7) as u8, i, cookie(1, i), i % 100))
        .collect();
    // 10% removed, 10% changed, 10% new, the rest identical.
    let desired: Vec<Flow> = (n / 10..n + n / 10)
        .map(|i| {
            let out = if i % 10 == 3 { 999 } else { i % 100 };
            flow((i % 7) as u8, i, cookie(1, i), out)
        })
        .collect();
    let start = Instant::now();
    let changes = diff(&installed, &desired);
    let took = start.elapsed();
    eprintln!(
        "diff of 2 x {n} flows: {} changes in {took:?} (debug build)",
        changes.len()
    );
    let count = |pred: fn(&FlowChange) -> bool| changes.iter().filter(|c| pred(c)).count();
    assert_eq!(count(|c| matches!(c, FlowChange::Add(_))), 10_000);
    assert_eq!(count(|c| matches!(c, FlowChange::Delete(_))), 10_000);
    assert_eq!(count(|c| matches!(c, FlowChange::Modify(_))), 9_000);
    assert!(took.as_secs_f64() < 5.0, "{took:?}");
    assert_eq!(by_key(&apply(&installed, &changes)), by_key(&desired));
}

// ---------------------------------------------------------------- property

/// Flows over a small key space so that the two sides overlap a lot, with
/// cookies from us (two generations) and from someone else.
fn arb_flow() -> impl Strategy<Value = Flow> {
    (
        0u8..3,
        prop_oneof![Just(0u16), Just(100u16)],
        0u32..6,
        prop_oneof![
            Just(cookie(1, 5)),
            Just(cookie(2, 5)),
            Just(FOREIGN),
            Just(0)
        ],
        prop::collection::vec(0u32..3, 0..3),
        prop::option::of(3u8..5),
    )
        .prop_map(|(table, priority, port, cookie, outs, goto_table)| Flow {
            table,
            priority,
            cookie,
            matches: Match::new().in_port(port),
            actions: outs.into_iter().map(Action::Output).collect(),
            goto_table,
        })
}

/// A flow table as a switch holds it: unique keys.
fn arb_table() -> impl Strategy<Value = Vec<Flow>> {
    prop::collection::vec(arb_flow(), 0..40).prop_map(|flows| {
        let mut seen = std::collections::HashSet::new();
        flows.into_iter().filter(|f| seen.insert(f.key())).collect()
    })
}

proptest! {
    /// With only our flows installed, applying the diff reaches `desired`.
    #[test]
    fn apply_diff_reaches_desired(a in arb_table(), b in arb_table()) {
        let a: Vec<Flow> = a.into_iter().filter(|f| is_ours(f.cookie)).collect();
        let changes = diff(&a, &b);
        prop_assert_eq!(by_key(&apply(&a, &changes)), by_key(&b));
    }

    /// With foreign flows around: the result is `desired` plus the foreign
    /// flows whose key `desired` does not claim; no foreign flow is deleted;
    /// every key changes at most once; a second diff is empty.
    #[test]
    fn foreign_flows_survive(a in arb_table(), b in arb_table()) {
        let changes = diff(&a, &b);
        let result = by_key(&apply(&a, &changes));
        let mut expected = by_key(&b);
        for f in &a {
            if !is_ours(f.cookie) {
                expected.entry(f.key()).or_insert_with(|| f.clone());
            }
        }
        prop_assert_eq!(&result, &expected);
        let foreign: HashMap<FlowKey, &Flow> =
            a.iter().filter(|f| !is_ours(f.cookie)).map(|f| (f.key(), f)).collect();
        let mut keys = std::collections::HashSet::new();
        for c in &changes {
            prop_assert!(keys.insert(c.key()), "key changed twice: {:?}", c);
            if let FlowChange::Delete(k) = c {
                prop_assert!(!foreign.contains_key(k));
            }
        }
        let result: Vec<Flow> = result.into_values().collect();
        prop_assert!(diff(&result, &b).is_empty());
    }
}
