//! Pure mapping between the [`Store`](super::super::Store) types and etcd's:
//! keys under a namespace, compares, ops, results, events, and what an
//! error from etcd means for a retry. No I/O here, so all of it is tested
//! without a server.

use etcd_client as ec;

use super::super::{
    Compare, CompareOp, CompareTarget, EventKind, KeyValue, LeaseId, Op, OpResult, Revision,
    StoreError, Txn, WatchEvent,
};

/// Keys as etcd sees them: every key of the store starts with `prefix`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespace {
    prefix: Vec<u8>,
}

impl Namespace {
    pub fn new(prefix: &str) -> Self {
        Namespace {
            prefix: prefix.as_bytes().to_vec(),
        }
    }

    /// The etcd key of a store key.
    pub fn key(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// `[start, end)` of every etcd key whose store key starts with `prefix`.
    pub fn prefix_range(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        let start = self.key(prefix);
        if start.is_empty() {
            // etcd spells "every key" as key "\0", range_end "\0".
            return (vec![0], vec![0]);
        }
        let end = prefix_end(&start);
        (start, end)
    }

    /// The store key of an etcd key.
    pub fn strip(&self, key: &[u8]) -> Result<String, StoreError> {
        let Some(rest) = key.strip_prefix(self.prefix.as_slice()) else {
            return Err(StoreError::Corrupt(format!(
                "etcd key {} is outside the namespace {}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(&self.prefix)
            )));
        };
        String::from_utf8(rest.to_vec()).map_err(|_| {
            StoreError::Corrupt(format!(
                "etcd key {} is not UTF-8",
                String::from_utf8_lossy(key)
            ))
        })
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's
/// `range_end` for a prefix); `[0]` (no end) when there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// etcd counts in i64, the store in u64; neither side produces negatives.
pub fn rev_out(r: Revision) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

pub fn rev_in(r: i64) -> Revision {
    u64::try_from(r).unwrap_or(0)
}

pub fn kv_in(ns: &Namespace, kv: &ec::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: ns.strip(kv.key())?,
        value: kv.value().to_vec(),
        create_revision: rev_in(kv.create_revision()),
        mod_revision: rev_in(kv.mod_revision()),
        version: rev_in(kv.version()),
        lease: kv.lease(),
    })
}

fn op_out(op: CompareOp) -> ec::CompareOp {
    match op {
        CompareOp::Equal => ec::CompareOp::Equal,
        CompareOp::NotEqual => ec::CompareOp::NotEqual,
        CompareOp::Less => ec::CompareOp::Less,
        CompareOp::Greater => ec::CompareOp::Greater,
    }
}

pub fn compare_out(ns: &Namespace, c: &Compare) -> ec::Compare {
    let key = ns.key(&c.key);
    let op = op_out(c.op);
    match &c.target {
        CompareTarget::ModRevision(r) => ec::Compare::mod_revision(key, op, rev_out(*r)),
        CompareTarget::CreateRevision(r) => ec::Compare::create_revision(key, op, rev_out(*r)),
        CompareTarget::Version(v) => ec::Compare::version(key, op, rev_out(*v)),
        CompareTarget::Value(v) => ec::Compare::value(key, op, v.clone()),
    }
}

pub fn txn_op_out(ns: &Namespace, op: &Op) -> ec::TxnOp {
    match op {
        Op::Put { key, value, lease } => {
            let opts = (*lease != 0).then(|| ec::PutOptions::new().with_lease(*lease));
            ec::TxnOp::put(ns.key(key), value.clone(), opts)
        }
        Op::Delete { key } => ec::TxnOp::delete(ns.key(key), None),
        Op::DeletePrefix { prefix } => {
            let (start, end) = ns.prefix_range(prefix);
            ec::TxnOp::delete(start, Some(ec::DeleteOptions::new().with_range(end)))
        }
        Op::Get { key } => ec::TxnOp::get(ns.key(key), None),
    }
}

pub fn txn_out(ns: &Namespace, txn: &Txn) -> ec::Txn {
    let compares: Vec<ec::Compare> = txn.compare.iter().map(|c| compare_out(ns, c)).collect();
    let success: Vec<ec::TxnOp> = txn.success.iter().map(|o| txn_op_out(ns, o)).collect();
    let failure: Vec<ec::TxnOp> = txn.failure.iter().map(|o| txn_op_out(ns, o)).collect();
    ec::Txn::new()
        .when(compares)
        .and_then(success)
        .or_else(failure)
}

pub fn op_result_in(ns: &Namespace, r: &ec::TxnOpResponse) -> Result<OpResult, StoreError> {
    Ok(match r {
        ec::TxnOpResponse::Put(_) => OpResult::Put,
        ec::TxnOpResponse::Delete(d) => OpResult::Delete(rev_in(d.deleted())),
        ec::TxnOpResponse::Get(g) => OpResult::Get(match g.kvs().first() {
            Some(kv) => Some(kv_in(ns, kv)?),
            None => None,
        }),
        // The store never sends nested transactions.
        ec::TxnOpResponse::Txn(_) => {
            return Err(StoreError::Corrupt(
                "etcd answered a nested transaction nobody sent".into(),
            ))
        }
    })
}

/// Whether running `txn` twice is the same as running it once: it writes
/// nothing in either branch.
pub fn is_read_only(txn: &Txn) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .all(|op| matches!(op, Op::Get { .. }))
}

/// The first lease a transaction puts with (what "lease not found" is about).
pub fn txn_lease(txn: &Txn) -> LeaseId {
    txn.success
        .iter()
        .chain(&txn.failure)
        .find_map(|op| match op {
            Op::Put { lease, .. } if *lease != 0 => Some(*lease),
            _ => None,
        })
        .unwrap_or(0)
}

pub fn event_in(ns: &Namespace, ev: &ec::Event) -> Result<WatchEvent, StoreError> {
    let Some(kv) = ev.kv() else {
        return Err(StoreError::Corrupt("etcd watch event without a key".into()));
    };
    let kind = match ev.event_type() {
        ec::EventType::Put => EventKind::Put,
        ec::EventType::Delete => EventKind::Delete,
    };
    let mut kv = kv_in(ns, kv)?;
    if kind == EventKind::Delete {
        // etcd already sends these empty; the contract says so, keep it true.
        kv.value.clear();
    }
    Ok(WatchEvent { kind, kv })
}

/// Splits the events of one watch response into one batch per revision
/// (etcd never splits a revision across responses unless asked to
/// fragment, which we do not).
pub fn batches(events: Vec<WatchEvent>) -> Vec<Vec<WatchEvent>> {
    let mut out: Vec<Vec<WatchEvent>> = Vec::new();
    for ev in events {
        match out.last_mut() {
            Some(batch) if batch[0].revision() == ev.revision() => batch.push(ev),
            _ => out.push(vec![ev]),
        }
    }
    out
}

/// What an error from a call to etcd says about the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The request was refused before it did anything (no connection, the
    /// member has no leader, overloaded): try another member.
    NotApplied(String),
    /// The request may or may not have been applied (timeout, connection
    /// lost mid-request): reads can be retried, writes cannot.
    Unknown(String),
    /// A definite answer the caller must see.
    LeaseNotFound,
    Compacted,
    FutureRevision,
    /// etcd refused the request itself (too large, too many ops, ...).
    Rejected(String),
}

/// Messages of etcd's `rpctypes` errors, matched by content: the gRPC code
/// alone does not tell "no leader" (safe to retry) from "request timed out"
/// (maybe applied).
const NOT_APPLIED: &[&str] = &[
    "etcdserver: no leader",
    "etcdserver: not capable",
    "etcdserver: too many requests",
    "etcdserver: unhealthy cluster",
    // tonic/hyper: the TCP or TLS connection could not be set up, so nothing
    // was sent.
    "error trying to connect",
    "tcp connect error",
    "Connection refused",
    "connection refused",
];

pub fn classify(e: &ec::Error) -> Failure {
    let text = e.to_string();
    match e {
        ec::Error::GRpcStatus(status) => {
            let msg = status.message();
            if msg.contains("requested lease not found") {
                return Failure::LeaseNotFound;
            }
            if msg.contains("required revision has been compacted") {
                return Failure::Compacted;
            }
            if msg.contains("required revision is a future revision") {
                return Failure::FutureRevision;
            }
            if NOT_APPLIED.iter().any(|m| text.contains(m)) || connect_error(status) {
                return Failure::NotApplied(text);
            }
            match status.code() {
                tonic::Code::InvalidArgument
                | tonic::Code::FailedPrecondition
                | tonic::Code::PermissionDenied
                | tonic::Code::Unauthenticated
                | tonic::Code::OutOfRange
                | tonic::Code::AlreadyExists
                | tonic::Code::NotFound
                | tonic::Code::Unimplemented => Failure::Rejected(text),
                _ => Failure::Unknown(text),
            }
        }
        ec::Error::LeaseKeepAliveError(m) if m.contains("lease not found") => {
            Failure::LeaseNotFound
        }
        ec::Error::InvalidArgs(_) | ec::Error::InvalidUri(_) => Failure::Rejected(text),
        ec::Error::TransportError(_) if NOT_APPLIED.iter().any(|m| text.contains(m)) => {
            Failure::NotApplied(text)
        }
        _ => Failure::Unknown(text),
    }
}

/// Whether a tonic status was made from a request that never left: a
/// failed connection attempt (the cause chain names the connect error even
/// when the message does not), or hyper's "canceled", which it reports
/// only for a request still queued when its connection closed.
fn connect_error(status: &tonic::Status) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = src {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        let s = e.to_string();
        if NOT_APPLIED.iter().any(|m| s.contains(m)) {
            return true;
        }
        src = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn namespace_adds_and_strips_its_prefix() {
        let ns = Namespace::new("/t1");
        assert_eq!(ns.key("/stacknet/x"), b"/t1/stacknet/x".to_vec());
        assert_eq!(ns.strip(b"/t1/stacknet/x").unwrap(), "/stacknet/x");
        assert!(matches!(
            ns.strip(b"/t2/stacknet/x"),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(
            ns.prefix_range("/a/"),
            (b"/t1/a/".to_vec(), b"/t1/a0".to_vec())
        );
        // The whole namespace, and the whole key space without one.
        assert_eq!(ns.prefix_range(""), (b"/t1".to_vec(), b"/t2".to_vec()));
        assert_eq!(Namespace::new("").prefix_range(""), (vec![0], vec![0]));
        assert!(matches!(
            Namespace::new("").strip(b"\xff"),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn read_only_and_lease_of_a_txn() {
        let mut t = Txn {
            compare: vec![Compare::absent("/k")],
            success: vec![Op::Get { key: "/k".into() }],
            failure: vec![Op::Get { key: "/j".into() }],
        };
        assert!(is_read_only(&t));
        assert_eq!(txn_lease(&t), 0);
        t.failure.push(Op::Put {
            key: "/k".into(),
            value: vec![],
            lease: 7,
        });
        assert!(!is_read_only(&t));
        assert_eq!(txn_lease(&t), 7);
        assert!(!is_read_only(&Txn {
            success: vec![Op::DeletePrefix { prefix: "/".into() }],
            ..Txn::default()
        }));
    }

    fn ev(rev: Revision, key: &str) -> WatchEvent {
        WatchEvent {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.into(),
                value: vec![],
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                lease: 0,
            },
        }
    }

    #[test]
    fn batches_split_at_revision_boundaries_and_keep_order() {
        let got = batches(vec![
            ev(5, "a"),
            ev(5, "b"),
            ev(6, "c"),
            ev(8, "d"),
            ev(8, "e"),
        ]);
        let shape: Vec<Vec<(u64, &str)>> = got
            .iter()
            .map(|b| {
                b.iter()
                    .map(|e| (e.revision(), e.kv.key.as_str()))
                    .collect()
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                vec![(5, "a"), (5, "b")],
                vec![(6, "c")],
                vec![(8, "d"), (8, "e")]
            ]
        );
        assert!(batches(vec![]).is_empty());
    }

    fn status(code: tonic::Code, msg: &str) -> ec::Error {
        ec::Error::GRpcStatus(tonic::Status::new(code, msg))
    }

    #[test]
    fn etcd_errors_are_classified_by_what_they_say_about_the_request() {
        use tonic::Code;
        // Messages as etcd 3.4's rpctypes spells them.
        assert_eq!(
            classify(&status(
                Code::NotFound,
                "etcdserver: requested lease not found"
            )),
            Failure::LeaseNotFound
        );
        assert_eq!(
            classify(&status(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted"
            )),
            Failure::Compacted
        );
        assert_eq!(
            classify(&status(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision"
            )),
            Failure::FutureRevision
        );
        for m in ["etcdserver: no leader", "etcdserver: too many requests"] {
            assert!(matches!(
                classify(&status(Code::Unavailable, m)),
                Failure::NotApplied(_)
            ));
        }
        for m in [
            "etcdserver: request timed out",
            "etcdserver: request timed out, possibly due to previous leader failure",
            "etcdserver: leader changed",
            "transport is closing",
        ] {
            assert!(
                matches!(classify(&status(Code::Unavailable, m)), Failure::Unknown(_)),
                "{m}"
            );
        }
        assert!(matches!(
            classify(&status(
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request"
            )),
            Failure::Rejected(_)
        ));
        assert_eq!(
            classify(&ec::Error::LeaseKeepAliveError("lease not found".into())),
            Failure::LeaseNotFound
        );
    }
}
