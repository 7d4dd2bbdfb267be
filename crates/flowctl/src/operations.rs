//! Advancing asynchronous operations from acks and nacks: pure planning
//! against the cached model, like [`crate::status`], and fenced the same
//! way (each write compares the operation record's `mod_revision`), so any
//! flowctl replica may advance any operation and a stale one only loses a
//! race and plans again.
//!
//! The rules (see [`api::operation`] for the states):
//! - a `pending` operation at revision R becomes `running`, waiting on the
//!   nodes whose desired state changed at R (found by compiling R on its
//!   own); with no such node it is `succeeded` at once;
//! - a waited-for node that acked a revision >= R leaves `waiting_on`; none
//!   left: `succeeded`;
//! - a waited-for node whose last nack is of a revision >= R makes it
//!   `failed`, with the agent's error;
//! - a node that never acks (offline) keeps it `running`.
//!
//! What a replica knows of acks is what its own agents told it
//! ([`AckBook`]); an agent's ack reaches only the replica it is connected
//! to, so every replica re-plans the operations it caches whenever one of
//! them changes, with what it knows.

use std::collections::{BTreeSet, HashMap};

use api::operation::{
    keys, CallbackState, CallbackStatus, Delivery, Operation, OperationError, OperationState,
    Target,
};
use api::store::{Compare, LeaseId, Op, Txn};
use proto::Revision;

use crate::compile::{Model, OpEntry};

/// What the agents connected to this replica last said, per node.
#[derive(Debug, Default)]
pub struct AckBook {
    nodes: HashMap<String, Word>,
}

#[derive(Debug, Default)]
struct Word {
    acked: Revision,
    nack: Option<(Revision, String)>,
}

impl AckBook {
    /// `node` has applied `revision` (an ack, or the revision it
    /// announced on connecting).
    pub fn ack(&mut self, node: &str, revision: Revision) {
        let w = self.nodes.entry(node.to_string()).or_default();
        w.acked = w.acked.max(revision);
    }

    /// `node` could not apply `revision`.
    pub fn nack(&mut self, node: &str, revision: Revision, error: &str) {
        let w = self.nodes.entry(node.to_string()).or_default();
        if w.nack.as_ref().is_none_or(|(r, _)| *r <= revision) {
            w.nack = Some((revision, error.to_string()));
        }
    }

    fn acked(&self, node: &str) -> Revision {
        self.nodes.get(node).map_or(0, |w| w.acked)
    }

    /// The nack of `node` at or after `from`, if any.
    fn nacked_since(&self, node: &str, from: Revision) -> Option<(Revision, &str)> {
        let (r, e) = self.nodes.get(node)?.nack.as_ref()?;
        (*r >= from).then_some((*r, e.as_str()))
    }
}

/// One fenced transition of an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpWrite {
    /// The record as planned against (its `mod_revision`).
    pub mod_revision: Revision,
    /// The new record.
    pub op: Operation,
    /// The callback to deliver, when the operation ends with one.
    pub callback: Option<Delivery>,
}

/// Plans the transitions of the operations `ids` (those not cached, i.e.
/// ended or unknown, are skipped).
///
/// `affected`: the nodes whose state changed at a pending operation's
/// revision, as found when it was compiled. A pending operation without an
/// entry (found by a listing at start or after a compaction, when its
/// revision can no longer be compiled on its own) waits on the nodes whose
/// state holds its target now, `holders`; a deleted target is held by
/// none. `now` is RFC 3339, `now_ms` unix milliseconds.
pub fn plan<'a>(
    model: &Model,
    ids: impl IntoIterator<Item = &'a String>,
    affected: &HashMap<String, BTreeSet<String>>,
    holders: impl Fn(&Target) -> BTreeSet<String>,
    book: &AckBook,
    now: &str,
    now_ms: u64,
) -> Vec<OpWrite> {
    let mut out = Vec::new();
    for id in ids {
        let Some(entry) = model.operation(id) else {
            continue;
        };
        if let Some(w) = advance(entry, affected.get(id), &holders, book, now, now_ms) {
            out.push(w);
        }
    }
    out
}

fn advance(
    entry: &OpEntry,
    affected: Option<&BTreeSet<String>>,
    holders: &impl Fn(&Target) -> BTreeSet<String>,
    book: &AckBook,
    now: &str,
    now_ms: u64,
) -> Option<OpWrite> {
    let op = &entry.op;
    let rev = entry.create_revision;
    let (nodes, waiting): (Vec<String>, Vec<String>) = match op.state {
        OperationState::Pending => {
            let nodes: BTreeSet<String> = match affected {
                Some(a) => a.clone(),
                None => holders(&op.target),
            };
            let nodes: Vec<String> = nodes.into_iter().collect();
            (nodes.clone(), nodes)
        }
        OperationState::Running => (op.nodes.clone(), op.waiting_on.clone()),
        OperationState::Succeeded | OperationState::Failed => return None,
    };
    let mut next = op.clone();
    next.nodes = nodes;
    next.updated_at = now.to_string();
    for node in &waiting {
        if let Some((r, error)) = book.nacked_since(node, rev) {
            next.state = OperationState::Failed;
            next.error = Some(OperationError {
                code: "node_rejected".into(),
                message: format!("node {node:?} could not apply revision {r}: {error}"),
            });
            // It ended here; the other nodes are no longer waited for.
            next.waiting_on = waiting.clone();
            return Some(finish(entry, next, now_ms));
        }
    }
    next.waiting_on = waiting
        .into_iter()
        .filter(|n| book.acked(n) < rev)
        .collect();
    next.state = if next.waiting_on.is_empty() {
        OperationState::Succeeded
    } else {
        OperationState::Running
    };
    if next.state == op.state && next.waiting_on == op.waiting_on && next.nodes == op.nodes {
        return None;
    }
    Some(finish(entry, next, now_ms))
}

fn finish(entry: &OpEntry, op: Operation, now_ms: u64) -> OpWrite {
    let callback = match (&op.callback_url, op.state.is_terminal()) {
        (Some(url), true) => Some(Delivery {
            op_id: op.id.clone(),
            tenant_id: op.tenant_id.clone(),
            status: CallbackStatus {
                url: url.clone(),
                state: CallbackState::Pending,
                attempts: 0,
                next_attempt_at_ms: Some(now_ms),
                last_error: None,
                ended_at_ms: None,
                first_attempt_at_ms: now_ms,
            },
        }),
        _ => None,
    };
    OpWrite {
        mod_revision: entry.mod_revision,
        op: op.stored(),
        callback,
    }
}

/// One transaction for one transition: it happens only if the record is
/// still as planned. An ended record goes on `retention` (a lease), so it
/// is removed after a while; its callback joins the outbox.
pub fn to_txn(w: &OpWrite, retention: LeaseId) -> Txn {
    let key = keys::operation(&w.op.id);
    let lease = if w.op.state.is_terminal() {
        retention
    } else {
        0
    };
    let mut txn = Txn::default();
    txn.compare
        .push(Compare::mod_revision_is(key.clone(), w.mod_revision));
    txn.success.push(Op::Put {
        key,
        // Serializing these plain fields cannot fail.
        value: serde_json::to_vec(&w.op).unwrap_or_default(),
        lease,
    });
    if let Some(d) = &w.callback {
        let key = keys::callback_pending(&d.op_id);
        txn.compare.push(Compare::absent(key.clone()));
        txn.success
            .push(Op::put(key, serde_json::to_vec(d).unwrap_or_default()));
    }
    txn
}

/// The operations an ack or nack of `node` may advance: those waiting on
/// it, and the pending ones whose nodes are known (`affected`). A pending
/// operation whose compilation has not been reported yet is left to that
/// report: planned now, it would fall back to its target's holders (none
/// for a delete) and could end before its nodes acked.
pub fn concerning(
    model: &Model,
    node: &str,
    affected: &HashMap<String, BTreeSet<String>>,
) -> BTreeSet<String> {
    model
        .operations()
        .filter(|(id, e)| match e.op.state {
            OperationState::Pending => affected.contains_key(*id),
            _ => e.op.waiting_on.iter().any(|n| n == node),
        })
        .map(|(id, _)| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::Compiler;
    use api::operation::{Action, Target};
    use api::store::{EventKind, KeyValue, WatchEvent};

    fn op(id: &str, callback: Option<&str>) -> Operation {
        Operation::new(
            id,
            "t1",
            Action::Update,
            Target::nic("nic-1"),
            callback.map(str::to_string),
            "2026-01-01T00:00:00Z",
        )
    }

    /// A compiler whose model caches `op` written at `create`, last
    /// changed at `modified`.
    fn with(op: &Operation, create: Revision, modified: Revision) -> Compiler {
        let mut c = Compiler::default();
        c.apply(&[WatchEvent {
            kind: EventKind::Put,
            kv: KeyValue {
                key: keys::operation(&op.id),
                value: serde_json::to_vec(op).unwrap(),
                create_revision: create,
                mod_revision: modified,
                version: 1,
                lease: 0,
            },
        }]);
        c
    }

    fn set(nodes: &[&str]) -> BTreeSet<String> {
        nodes.iter().map(|s| s.to_string()).collect()
    }

    fn plan_one(
        c: &Compiler,
        id: &str,
        affected: Option<&[&str]>,
        book: &AckBook,
    ) -> Option<OpWrite> {
        let mut a = HashMap::new();
        if let Some(n) = affected {
            a.insert(id.to_string(), set(n));
        }
        let mut w = plan(
            c.model(),
            [&id.to_string()],
            &a,
            |_| set(&["holder"]),
            book,
            "now",
            1000,
        );
        assert!(w.len() <= 1);
        w.pop()
    }

    #[test]
    fn pending_runs_then_succeeds_when_every_affected_node_acked() {
        let o = op("op-1", None);
        let c = with(&o, 10, 10);
        let mut book = AckBook::default();
        // n2 acked an older revision: it does not count.
        book.ack("n2", 9);
        let w = plan_one(&c, "op-1", Some(&["n1", "n2"]), &book).unwrap();
        assert_eq!(w.op.state, OperationState::Running);
        assert_eq!(w.op.nodes, vec!["n1", "n2"]);
        assert_eq!(w.op.waiting_on, vec!["n1", "n2"]);
        assert_eq!(w.mod_revision, 10);
        assert!(w.callback.is_none());

        let c = with(&w.op, 10, 11);
        book.ack("n1", 12);
        let w = plan_one(&c, "op-1", None, &book).unwrap();
        assert_eq!(w.op.state, OperationState::Running);
        assert_eq!(w.op.waiting_on, vec!["n2"]);
        // Nothing new: nothing to write.
        let c = with(&w.op, 10, 12);
        assert!(plan_one(&c, "op-1", None, &book).is_none());
        book.ack("n2", 10);
        let w = plan_one(&c, "op-1", None, &book).unwrap();
        assert_eq!(w.op.state, OperationState::Succeeded);
        assert!(w.op.waiting_on.is_empty());
        // Ended on the retention lease; not cached any more.
        let txn = to_txn(&w, 77);
        assert!(matches!(txn.success[0], Op::Put { lease: 77, .. }));
        assert!(with(&w.op, 10, 13).model().operation("op-1").is_none());
    }

    #[test]
    fn no_affected_node_succeeds_at_once_and_queues_the_callback() {
        let o = op("op-2", Some("http://127.0.0.1:1/cb"));
        let c = with(&o, 20, 20);
        let w = plan_one(&c, "op-2", Some(&[]), &AckBook::default()).unwrap();
        assert_eq!(w.op.state, OperationState::Succeeded);
        let d = w.callback.as_ref().unwrap();
        assert_eq!(d.status.url, "http://127.0.0.1:1/cb");
        assert_eq!(d.status.next_attempt_at_ms, Some(1000));
        let txn = to_txn(&w, 5);
        assert_eq!(txn.compare.len(), 2);
        assert_eq!(
            txn.compare[1],
            Compare::absent(keys::callback_pending("op-2"))
        );
    }

    #[test]
    fn a_nack_at_or_after_the_revision_fails_it_an_older_one_does_not() {
        let o = op("op-3", Some("https://x.example/cb"));
        let c = with(&o, 30, 30);
        let mut book = AckBook::default();
        book.nack("n1", 29, "older trouble");
        let w = plan_one(&c, "op-3", Some(&["n1"]), &book).unwrap();
        assert_eq!(w.op.state, OperationState::Running);
        let c = with(&w.op, 30, 31);
        book.nack("n1", 30, "bundle failed: OFPBFC_MSG_FAILED");
        let w = plan_one(&c, "op-3", None, &book).unwrap();
        assert_eq!(w.op.state, OperationState::Failed);
        let e = w.op.error.as_ref().unwrap();
        assert_eq!(e.code, "node_rejected");
        assert!(e.message.contains("n1") && e.message.contains("OFPBFC_MSG_FAILED"));
        assert!(w.callback.is_some());
    }

    #[test]
    fn a_pending_operation_from_a_listing_waits_on_the_holders_of_its_target() {
        let o = op("op-4", None);
        let c = with(&o, 40, 40);
        let w = plan_one(&c, "op-4", None, &AckBook::default()).unwrap();
        assert_eq!(w.op.waiting_on, vec!["holder"]);
        // An offline node never acks: it stays running.
        let c = with(&w.op, 40, 41);
        assert!(plan_one(&c, "op-4", None, &AckBook::default()).is_none());
        let none = HashMap::new();
        assert_eq!(concerning(c.model(), "holder", &none), set(&["op-4"]));
        assert!(concerning(c.model(), "other", &none).is_empty());
        // A pending one only once its nodes are known.
        let p = with(&op("op-5", None), 50, 50);
        assert!(concerning(p.model(), "holder", &none).is_empty());
        let known = HashMap::from([("op-5".to_string(), set(&["n1"]))]);
        assert_eq!(concerning(p.model(), "n9", &known), set(&["op-5"]));
    }
}
