//! NIC status from the data path: which status records to write after an
//! ack, a nack or a model change. Pure planning against the cached model;
//! the writes are fenced (compare-and-swap) so a stale cache or another
//! flowctl replica can never make them wrong, only make them fail and be
//! planned again.
//!
//! The rule: a record says `Up` only while the NIC is bound to the node the
//! record names, and that node's agent has acked a revision at which the NIC
//! was bound there and listed it ready. So:
//! - an ack writes `Up` for ready NICs bound to the node since at most the
//!   acked revision, and `Down` for the node's other NICs that it had
//!   reported `Up` (they are no longer ready);
//! - a nack writes `Down` for every NIC of the node that is `Up`: the agent
//!   did not reach the desired state, so nothing about its flows is known;
//! - a NIC that moved away or was unbound gets `Down`; a deleted NIC loses
//!   its record.

use std::collections::HashSet;

use api::model::{keys, NicStatus, NicStatusRecord};
use api::store::{Compare, Op, Txn};
use proto::Revision;

use crate::compile::Model;

/// One fenced status write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusWrite {
    pub nic: String,
    /// The status record's `mod_revision` as planned (0: absent).
    pub status_rev: Revision,
    /// The NIC record's `mod_revision` as planned (0: absent).
    pub nic_rev: Revision,
    /// The new record; `None` deletes it.
    pub record: Option<NicStatusRecord>,
}

fn is_up_on(model: &Model, nic: &str, node: &str) -> bool {
    model
        .status(nic)
        .is_some_and(|s| s.record.status == NicStatus::Up && s.record.node == node)
}

fn write(model: &Model, nic: &str, record: Option<NicStatusRecord>) -> StatusWrite {
    StatusWrite {
        nic: nic.to_string(),
        status_rev: model.status(nic).map_or(0, |s| s.mod_revision),
        nic_rev: model.nic(nic).map_or(0, |n| n.mod_revision),
        record,
    }
}

/// The agent of `node` acked `revision` with `ready` NICs in place.
pub fn plan_ack(
    model: &Model,
    node: &str,
    revision: Revision,
    ready: &[String],
) -> Vec<StatusWrite> {
    let ready: HashSet<&str> = ready.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    for id in model.nics_on(node) {
        let Some(entry) = model.nic(id) else {
            continue;
        };
        // Bound here after the acked revision: the agent could not know it.
        if entry.bound_since > revision {
            continue;
        }
        let up = is_up_on(model, id, node);
        let status = if ready.contains(id.as_str()) {
            if up {
                continue;
            }
            NicStatus::Up
        } else {
            if !up {
                continue;
            }
            NicStatus::Down
        };
        out.push(write(
            model,
            id,
            Some(NicStatusRecord {
                status,
                node: node.to_string(),
                revision,
            }),
        ));
    }
    out
}

/// The agent of `node` could not apply `revision`.
pub fn plan_nack(model: &Model, node: &str, revision: Revision) -> Vec<StatusWrite> {
    model
        .nics_on(node)
        .filter(|id| is_up_on(model, id, node))
        .map(|id| {
            write(
                model,
                id,
                Some(NicStatusRecord {
                    status: NicStatus::Down,
                    node: node.to_string(),
                    revision,
                }),
            )
        })
        .collect()
}

/// Records that the model no longer supports: `Up` on a node the NIC is not
/// bound to, or a record of a NIC that is gone.
pub fn plan_check<'a>(
    model: &Model,
    nics: impl IntoIterator<Item = &'a String>,
) -> Vec<StatusWrite> {
    let mut out = Vec::new();
    for id in nics {
        let Some(st) = model.status(id) else {
            continue;
        };
        match model.nic(id) {
            None => out.push(write(model, id, None)),
            Some(n) => {
                let r = &st.record;
                if r.status == NicStatus::Up && n.nic.node.as_deref() != Some(r.node.as_str()) {
                    out.push(write(
                        model,
                        id,
                        Some(NicStatusRecord {
                            status: NicStatus::Down,
                            node: r.node.clone(),
                            revision: model.revision(),
                        }),
                    ));
                }
            }
        }
    }
    out
}

/// One transaction for a batch of writes: all happen, or none if any record
/// changed since it was planned.
pub fn to_txn(writes: &[StatusWrite]) -> Txn {
    let mut txn = Txn::default();
    for w in writes {
        let skey = keys::nic_status(&w.nic);
        txn.compare
            .push(Compare::mod_revision_is(skey.clone(), w.status_rev));
        txn.compare
            .push(Compare::mod_revision_is(keys::nic(&w.nic), w.nic_rev));
        txn.success.push(match &w.record {
            // Serializing these plain fields cannot fail.
            Some(r) => Op::put(skey, serde_json::to_vec(r).unwrap_or_default()),
            None => Op::delete(skey),
        });
    }
    txn
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::Compiler;
    use crate::testutil::{nic, small_world, Kv, Op as KvOp};
    use api::store::CompareTarget;

    fn up(node: &str, revision: Revision) -> Option<NicStatusRecord> {
        Some(NicStatusRecord {
            status: NicStatus::Up,
            node: node.into(),
            revision,
        })
    }

    /// Applies planned writes to the test map, as the store would.
    fn commit(kv: &mut Kv, c: &mut Compiler, writes: &[StatusWrite]) {
        let ops = writes
            .iter()
            .map(|w| match &w.record {
                Some(r) => KvOp::Put(keys::nic_status(&w.nic), serde_json::to_vec(r).unwrap()),
                None => KvOp::Del(keys::nic_status(&w.nic)),
            })
            .collect();
        c.apply(&kv.txn(ops));
    }

    #[test]
    fn ack_then_move_then_nack() {
        let mut kv = small_world();
        let r0 = kv.rev;
        let mut c = Compiler::from_listing(&kv.listing(), kv.rev);

        // n1 acks r0 with its NIC ready; nic-a2 (on n2) is not n1's to report.
        let w = plan_ack(c.model(), "n1", r0, &["nic-a1".into(), "nic-a2".into()]);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].nic, "nic-a1");
        assert_eq!(w[0].record, up("n1", r0));
        assert_eq!(w[0].status_rev, 0);
        assert_eq!(w[0].nic_rev, kv.map[&keys::nic("nic-a1")].mod_revision);
        commit(&mut kv, &mut c, &w);
        // Already up: nothing more to write.
        assert!(plan_ack(c.model(), "n1", kv.rev, &["nic-a1".into()]).is_empty());

        // nic-a1 moves to n3: the record must not stay Up for n1.
        c.apply(&kv.txn(vec![nic("nic-a1", "vpc-a", "sub-a", Some("n3"), 11)]));
        let moved_at = kv.rev;
        let w = plan_check(c.model(), [&"nic-a1".to_string()]);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].record.as_ref().unwrap().status, NicStatus::Down);
        commit(&mut kv, &mut c, &w);
        assert!(plan_check(c.model(), [&"nic-a1".to_string()]).is_empty());

        // n3 acking a revision from before the move cannot claim it.
        assert!(plan_ack(c.model(), "n3", moved_at - 1, &["nic-a1".into()]).is_empty());
        let w = plan_ack(c.model(), "n3", moved_at, &["nic-a1".into()]);
        assert_eq!(w[0].record, up("n3", moved_at));
        commit(&mut kv, &mut c, &w);

        // An ack that leaves it out, or a nack, takes it down.
        let w = plan_ack(c.model(), "n3", kv.rev, &[]);
        assert_eq!(w[0].record.as_ref().unwrap().status, NicStatus::Down);
        commit(&mut kv, &mut c, &w);
        assert!(plan_nack(c.model(), "n3", kv.rev).is_empty());
        let w = plan_ack(c.model(), "n3", kv.rev, &["nic-a1".into()]);
        commit(&mut kv, &mut c, &w);
        let w = plan_nack(c.model(), "n3", kv.rev);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].record.as_ref().unwrap().status, NicStatus::Down);
        assert_eq!(w[0].record.as_ref().unwrap().node, "n3");
    }

    #[test]
    fn deleted_nics_lose_their_record_and_writes_are_fenced() {
        let mut kv = small_world();
        let mut c = Compiler::from_listing(&kv.listing(), kv.rev);
        let w = plan_ack(c.model(), "n2", kv.rev, &["nic-a2".into()]);
        commit(&mut kv, &mut c, &w);
        let status_rev = kv.rev;
        c.apply(&kv.txn(vec![KvOp::Del(keys::nic("nic-a2"))]));
        let w = plan_check(c.model(), [&"nic-a2".to_string()]);
        assert_eq!(
            w,
            vec![StatusWrite {
                nic: "nic-a2".into(),
                status_rev,
                nic_rev: 0,
                record: None
            }]
        );
        let txn = to_txn(&w);
        assert_eq!(txn.compare.len(), 2);
        assert_eq!(txn.compare[0].key, keys::nic_status("nic-a2"));
        assert_eq!(
            txn.compare[0].target,
            CompareTarget::ModRevision(status_rev)
        );
        assert_eq!(txn.compare[1].target, CompareTarget::ModRevision(0));
        assert_eq!(txn.success, vec![Op::delete(keys::nic_status("nic-a2"))]);
    }
}
