//! The conformance suite every [`Store`] backend must pass.
//!
//! Each property is a `pub async fn` taking the store and a key prefix that
//! the check owns; [`run_all`] runs them all. The checks assume that nobody
//! else writes to the store while they run (revision arithmetic is checked
//! exactly) and use only the trait, so the etcd backend can reuse them.
//! Failures panic with a message saying which property broke, like any
//! test assertion; store errors are returned.

use std::time::Duration;

use futures::StreamExt;

use super::{
    Compare, CompareOp, CompareTarget, EventKind, KeyValue, Op, OpResult, Result, Revision, Store,
    StoreError, Txn, WatchEvent, WatchStream,
};

/// How long a check waits for an event it expects.
const EVENT_WAIT: Duration = Duration::from_secs(10);
/// How long a check waits to be sure an event does NOT come.
const QUIET_WAIT: Duration = Duration::from_millis(200);

/// Settings for [`run_all`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Every key the suite writes starts with this.
    pub prefix: String,
    /// TTL of the leases the lease checks grant. Backends with a minimum
    /// TTL (etcd) need a few seconds; with paused tokio time any value is
    /// instant.
    pub lease_ttl: Duration,
    /// Concurrent tasks and increments each in [`concurrent_cas`].
    pub cas_tasks: usize,
    pub cas_increments: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            prefix: "/conformance/".into(),
            lease_ttl: Duration::from_secs(5),
            cas_tasks: 8,
            cas_increments: 25,
        }
    }
}

/// Runs every check, each under its own sub-prefix of `config.prefix`.
pub async fn run_all(store: &dyn Store, config: &Config) -> Result<()> {
    let p = |name: &str| format!("{}{name}/", config.prefix);
    put_get_range(store, &p("put_get_range")).await?;
    byte_wise_prefix(store, &p("byte_wise_prefix")).await?;
    revision_arithmetic(store, &p("revision_arithmetic")).await?;
    compare_matrix(store, &p("compare_matrix")).await?;
    failure_branch(store, &p("failure_branch")).await?;
    get_inside_txn(store, &p("get_inside_txn")).await?;
    delete_prefix_counts(store, &p("delete_prefix")).await?;
    watch_from_past(store, &p("watch_from_past")).await?;
    watch_from_now(store, &p("watch_from_now")).await?;
    watch_prefix_filter(store, &p("watch_prefix_filter")).await?;
    watch_txn_is_one_batch(store, &p("watch_txn_batch")).await?;
    lease_revoke(store, &p("lease_revoke")).await?;
    lease_expiry(store, &p("lease_expiry"), config.lease_ttl).await?;
    concurrent_cas(
        store,
        &p("concurrent_cas"),
        config.cas_tasks,
        config.cas_increments,
    )
    .await?;
    // Last: it makes older history unreachable for everything above.
    compaction(store, &p("compaction")).await?;
    Ok(())
}

/// Waits for the next batch of a watch; panics on timeout or end.
pub async fn next_batch(stream: &mut WatchStream) -> Result<Vec<WatchEvent>> {
    match tokio::time::timeout(EVENT_WAIT, stream.next()).await {
        Ok(Some(batch)) => batch,
        Ok(None) => panic!("watch ended while an event was expected"),
        Err(_) => panic!("no watch event within {EVENT_WAIT:?}"),
    }
}

/// Asserts that the watch delivers nothing for a short while.
pub async fn assert_quiet(stream: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(QUIET_WAIT, stream.next()).await {
        panic!("expected no watch event, got {item:?}");
    }
}

fn put_with_lease(key: &str, value: &[u8], lease: i64) -> Op {
    Op::Put {
        key: key.into(),
        value: value.to_vec(),
        lease,
    }
}

fn assert_put(ev: &WatchEvent, key: &str, value: &[u8], rev: Revision) {
    assert_eq!(ev.kind, EventKind::Put, "event kind for {key}");
    assert_eq!(ev.kv.key, key);
    assert_eq!(ev.kv.value, value, "event value for {key}");
    assert_eq!(ev.revision(), rev, "event revision for {key}");
}

fn assert_delete(ev: &WatchEvent, key: &str, rev: Revision) {
    assert_eq!(ev.kind, EventKind::Delete, "event kind for {key}");
    assert_eq!(ev.kv.key, key);
    assert_eq!(ev.revision(), rev, "delete revision for {key}");
}

/// Put, get, overwrite, range; create/mod revision and version as etcd.
pub async fn put_get_range(store: &dyn Store, p: &str) -> Result<()> {
    let a = format!("{p}a");
    let b = format!("{p}b");
    assert_eq!(store.get(&a).await?, None, "fresh key must be absent");

    let r1 = store.put(&a, b"1".to_vec()).await?;
    let kv = store.get(&a).await?;
    assert_eq!(
        kv,
        Some(KeyValue {
            key: a.clone(),
            value: b"1".to_vec(),
            create_revision: r1,
            mod_revision: r1,
            version: 1,
            lease: 0,
        })
    );

    let r2 = store.put(&a, b"2".to_vec()).await?;
    assert_eq!(r2, r1 + 1);
    let kv = store.get(&a).await?;
    assert_eq!(
        kv,
        Some(KeyValue {
            key: a.clone(),
            value: b"2".to_vec(),
            create_revision: r1,
            mod_revision: r2,
            version: 2,
            lease: 0,
        }),
        "overwrite keeps create_revision and bumps version"
    );

    let r3 = store.put(&b, Vec::new()).await?;
    let (kvs, rev) = store.range(p).await?;
    assert_eq!(rev, r3, "range reports the current revision");
    let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, vec![a.as_str(), b.as_str()]);
    assert_eq!(kvs[1].value, b"", "empty values are kept");

    // Delete, then re-create: a new life starts at version 1.
    let r4 = store.delete(&a).await?;
    assert_eq!(r4, r3 + 1);
    assert_eq!(store.get(&a).await?, None);
    let r5 = store.put(&a, b"3".to_vec()).await?;
    let kv = store.get(&a).await?;
    assert_eq!(
        kv.map(|kv| (kv.create_revision, kv.mod_revision, kv.version)),
        Some((r5, r5, 1)),
        "re-created key starts over"
    );
    Ok(())
}

/// Prefixes are byte-wise, keys sort byte-wise, arbitrary bytes survive.
pub async fn byte_wise_prefix(store: &dyn Store, p: &str) -> Result<()> {
    let keys = [
        format!("{p}a"),
        format!("{p}a/b"),
        format!("{p}ab"),
        format!("{p}b"),
        format!("{p}é"),
        format!("{p}a\u{0}z"),
    ];
    for k in &keys {
        store.put(k, k.as_bytes().to_vec()).await?;
    }
    let (kvs, _) = store.range(&format!("{p}a")).await?;
    let got: Vec<String> = kvs.iter().map(|kv| kv.key.clone()).collect();
    let mut want: Vec<String> = keys
        .iter()
        .filter(|k| k.starts_with(&format!("{p}a")))
        .cloned()
        .collect();
    want.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    assert_eq!(got, want, "prefix range is byte-wise and sorted");

    let (all, _) = store.range(p).await?;
    assert_eq!(all.len(), keys.len());
    assert!(
        all.windows(2)
            .all(|w| w[0].key.as_bytes() < w[1].key.as_bytes()),
        "range is sorted by key bytes"
    );

    let value: Vec<u8> = (0..=255u8).collect();
    store.put(&format!("{p}bin"), value.clone()).await?;
    assert_eq!(
        store.get(&format!("{p}bin")).await?.map(|kv| kv.value),
        Some(value),
        "every byte value round-trips"
    );
    Ok(())
}

/// One revision per write transaction, none for reads, failed compares or
/// deletes of nothing.
pub async fn revision_arithmetic(store: &dyn Store, p: &str) -> Result<()> {
    let k = |n: u32| format!("{p}{n}");
    let r0 = store.revision().await?;

    let r = store
        .txn(Txn {
            success: vec![Op::put(k(1), "x"), Op::put(k(2), "y"), Op::put(k(3), "z")],
            ..Txn::default()
        })
        .await?;
    assert!(r.succeeded);
    assert_eq!(r.revision, r0 + 1, "a multi-put txn is one revision");
    assert_eq!(store.revision().await?, r0 + 1);
    for n in 1..=3 {
        let kv = store.get(&k(n)).await?;
        assert_eq!(kv.map(|kv| kv.mod_revision), Some(r0 + 1));
    }

    let r = store
        .txn(Txn {
            success: vec![Op::Get { key: k(1) }],
            ..Txn::default()
        })
        .await?;
    assert_eq!(r.revision, r0 + 1, "a read-only txn writes no revision");

    let r = store
        .txn(Txn {
            compare: vec![Compare::absent(k(1))],
            success: vec![Op::put(k(9), "no")],
            failure: vec![],
        })
        .await?;
    assert!(!r.succeeded);
    assert_eq!(r.revision, r0 + 1, "a failed compare writes no revision");
    assert_eq!(store.get(&k(9)).await?, None);

    let rev = store.delete(&k(42)).await?;
    assert_eq!(rev, r0 + 1, "deleting an absent key writes no revision");

    let rev = store.put(&k(1), b"again".to_vec()).await?;
    assert_eq!(rev, r0 + 2);
    assert_eq!(store.revision().await?, r0 + 2);
    Ok(())
}

/// Every CompareTarget × CompareOp, on a present and on an absent key.
pub async fn compare_matrix(store: &dyn Store, p: &str) -> Result<()> {
    let key = format!("{p}k");
    let absent = format!("{p}absent");
    let create = store.put(&key, b"m".to_vec()).await?;
    // Something else in between, so create and mod revisions differ.
    store.put(&format!("{p}other"), b"o".to_vec()).await?;
    let modr = store.put(&key, b"m".to_vec()).await?;
    assert!(modr > create + 1);
    // The key: create_revision = create, mod_revision = modr, version = 2,
    // value = "m".

    let ops = [
        CompareOp::Equal,
        CompareOp::NotEqual,
        CompareOp::Less,
        CompareOp::Greater,
    ];
    let holds = |actual: i64, op: CompareOp, target: i64| match op {
        CompareOp::Equal => actual == target,
        CompareOp::NotEqual => actual != target,
        CompareOp::Less => actual < target,
        CompareOp::Greater => actual > target,
    };
    let mut cases: Vec<(String, CompareTarget, CompareOp, bool)> = Vec::new();
    for op in ops {
        for delta in [-1i64, 0, 1] {
            let c = create as i64 + delta;
            cases.push((
                key.clone(),
                CompareTarget::CreateRevision(c as Revision),
                op,
                holds(create as i64, op, c),
            ));
            let m = modr as i64 + delta;
            cases.push((
                key.clone(),
                CompareTarget::ModRevision(m as Revision),
                op,
                holds(modr as i64, op, m),
            ));
            let v = 2 + delta;
            cases.push((
                key.clone(),
                CompareTarget::Version(v as u64),
                op,
                holds(2, op, v),
            ));
        }
        // Values compare as bytes: "l" < "m" < "ma" < "n".
        for (target, ord) in [
            (&b"l"[..], std::cmp::Ordering::Greater),
            (b"m", std::cmp::Ordering::Equal),
            (b"ma", std::cmp::Ordering::Less),
            (b"n", std::cmp::Ordering::Less),
        ] {
            let want = match op {
                CompareOp::Equal => ord.is_eq(),
                CompareOp::NotEqual => ord.is_ne(),
                CompareOp::Less => ord.is_lt(),
                CompareOp::Greater => ord.is_gt(),
            };
            cases.push((key.clone(), CompareTarget::Value(target.to_vec()), op, want));
        }
        // An absent key has revisions and version 0.
        for target in [
            CompareTarget::CreateRevision(0),
            CompareTarget::ModRevision(0),
            CompareTarget::Version(0),
        ] {
            cases.push((absent.clone(), target.clone(), op, holds(0, op, 0)));
        }
        cases.push((
            absent.clone(),
            CompareTarget::CreateRevision(1),
            op,
            holds(0, op, 1),
        ));
        // etcd: a value compare on an absent key never holds.
        cases.push((absent.clone(), CompareTarget::Value(Vec::new()), op, false));
        cases.push((
            absent.clone(),
            CompareTarget::Value(b"x".to_vec()),
            op,
            false,
        ));
    }

    let before = store.revision().await?;
    for (k, target, op, want) in cases {
        let compare = Compare {
            key: k.clone(),
            op,
            target: target.clone(),
        };
        let r = store
            .txn(Txn {
                compare: vec![compare],
                success: vec![Op::Get { key: k.clone() }],
                failure: vec![],
            })
            .await?;
        assert_eq!(
            r.succeeded, want,
            "compare {k} {op:?} {target:?} should be {want}"
        );
    }
    assert_eq!(store.revision().await?, before, "compares write nothing");

    // Several compares: all must hold.
    let r = store
        .txn(Txn {
            compare: vec![
                Compare::mod_revision_is(&key, modr),
                Compare::absent(&absent),
                Compare {
                    key: key.clone(),
                    op: CompareOp::Equal,
                    target: CompareTarget::Version(3),
                },
            ],
            ..Txn::default()
        })
        .await?;
    assert!(!r.succeeded, "one false compare fails the txn");
    Ok(())
}

/// A failed compare runs the failure ops, atomically and in one revision.
pub async fn failure_branch(store: &dyn Store, p: &str) -> Result<()> {
    let lock = format!("{p}lock");
    let r0 = store.put(&lock, b"held".to_vec()).await?;
    let r = store
        .txn(Txn {
            compare: vec![Compare::absent(&lock)],
            success: vec![Op::put(format!("{p}won"), "yes")],
            failure: vec![
                Op::put(format!("{p}lost"), "yes"),
                Op::put(format!("{p}lost2"), "yes"),
                Op::Get { key: lock.clone() },
            ],
        })
        .await?;
    assert!(!r.succeeded);
    assert_eq!(r.revision, r0 + 1, "the failure branch wrote one revision");
    assert_eq!(r.results.len(), 3);
    assert_eq!(r.results[0], OpResult::Put);
    assert_eq!(r.results[1], OpResult::Put);
    match &r.results[2] {
        OpResult::Get(Some(kv)) => assert_eq!(kv.value, b"held"),
        other => panic!("failure-branch Get returned {other:?}"),
    }
    assert_eq!(store.get(&format!("{p}won")).await?, None);
    for k in ["lost", "lost2"] {
        let kv = store.get(&format!("{p}{k}")).await?;
        assert_eq!(kv.map(|kv| kv.mod_revision), Some(r0 + 1));
    }

    // And the success branch when the compare holds.
    let r = store
        .txn(Txn {
            compare: vec![Compare::mod_revision_is(&lock, r0)],
            success: vec![Op::delete(&lock)],
            failure: vec![Op::put(format!("{p}wrong"), "x")],
        })
        .await?;
    assert!(r.succeeded);
    assert_eq!(r.results, vec![OpResult::Delete(1)]);
    assert_eq!(store.get(&lock).await?, None);
    assert_eq!(store.get(&format!("{p}wrong")).await?, None);
    Ok(())
}

/// Get inside a transaction returns the key as the transaction sees it.
pub async fn get_inside_txn(store: &dyn Store, p: &str) -> Result<()> {
    let a = format!("{p}a");
    let ra = store.put(&a, b"va".to_vec()).await?;
    let r = store
        .txn(Txn {
            compare: vec![],
            success: vec![
                Op::Get { key: a.clone() },
                Op::Get {
                    key: format!("{p}missing"),
                },
                Op::put(format!("{p}b"), "vb"),
            ],
            failure: vec![],
        })
        .await?;
    assert!(r.succeeded);
    assert_eq!(r.revision, ra + 1);
    assert_eq!(
        r.results,
        vec![
            OpResult::Get(Some(KeyValue {
                key: a.clone(),
                value: b"va".to_vec(),
                create_revision: ra,
                mod_revision: ra,
                version: 1,
                lease: 0,
            })),
            OpResult::Get(None),
            OpResult::Put,
        ]
    );
    Ok(())
}

/// DeletePrefix deletes exactly the keys under the prefix, reports how
/// many, in one revision; deleting nothing writes nothing.
pub async fn delete_prefix_counts(store: &dyn Store, p: &str) -> Result<()> {
    for k in ["a/1", "a/2", "a/3", "ab", "b"] {
        store.put(&format!("{p}{k}"), b"x".to_vec()).await?;
    }
    let r0 = store.revision().await?;
    let mut w = store.watch(p, r0 + 1).await?;
    let r = store
        .txn(Txn {
            success: vec![Op::DeletePrefix {
                prefix: format!("{p}a/"),
            }],
            ..Txn::default()
        })
        .await?;
    assert_eq!(r.results, vec![OpResult::Delete(3)]);
    assert_eq!(r.revision, r0 + 1);
    let (left, _) = store.range(p).await?;
    let left: Vec<String> = left.into_iter().map(|kv| kv.key).collect();
    assert_eq!(left, vec![format!("{p}ab"), format!("{p}b")]);

    let batch = next_batch(&mut w).await?;
    assert_eq!(batch.len(), 3, "one batch for the whole DeletePrefix");
    for (ev, k) in batch.iter().zip(["a/1", "a/2", "a/3"]) {
        assert_delete(ev, &format!("{p}{k}"), r0 + 1);
    }

    let r = store
        .txn(Txn {
            success: vec![Op::DeletePrefix {
                prefix: format!("{p}a/"),
            }],
            ..Txn::default()
        })
        .await?;
    assert_eq!(r.results, vec![OpResult::Delete(0)]);
    assert_eq!(r.revision, r0 + 1, "deleting nothing writes nothing");
    assert_quiet(&mut w).await;
    Ok(())
}

/// A watch from an old revision replays history, then continues live,
/// without gap or duplicate.
pub async fn watch_from_past(store: &dyn Store, p: &str) -> Result<()> {
    let a = format!("{p}a");
    let b = format!("{p}b");
    let r1 = store.put(&a, b"1".to_vec()).await?;
    let r2 = store.put(&b, b"2".to_vec()).await?;
    let r3 = store.delete(&a).await?;

    let mut w = store.watch(p, r1).await?;
    let r4 = store.put(&b, b"3".to_vec()).await?;

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let batch = next_batch(&mut w).await?;
        assert_eq!(batch.len(), 1, "one event per single-op txn");
        seen.extend(batch);
    }
    assert_put(&seen[0], &a, b"1", r1);
    assert_eq!(seen[0].kv.create_revision, r1);
    assert_eq!(seen[0].kv.version, 1);
    assert_put(&seen[1], &b, b"2", r2);
    assert_delete(&seen[2], &a, r3);
    assert_put(&seen[3], &b, b"3", r4);
    assert_eq!(seen[3].kv.version, 2);
    assert_eq!(seen[3].kv.create_revision, r2);
    assert_quiet(&mut w).await;

    // Starting in the middle skips what came before.
    let mut w = store.watch(p, r3).await?;
    let batch = next_batch(&mut w).await?;
    assert_delete(&batch[0], &a, r3);
    let batch = next_batch(&mut w).await?;
    assert_put(&batch[0], &b, b"3", r4);
    Ok(())
}

/// A watch from the revision after a listing sees exactly the later writes.
pub async fn watch_from_now(store: &dyn Store, p: &str) -> Result<()> {
    let a = format!("{p}a");
    store.put(&a, b"old".to_vec()).await?;
    let (_, rev) = store.range(p).await?;
    let mut w = store.watch(p, rev + 1).await?;
    assert_quiet(&mut w).await;
    let mut expected = Vec::new();
    for i in 0..20u32 {
        let v = format!("v{i}").into_bytes();
        let r = store.put(&a, v.clone()).await?;
        expected.push((v, r));
    }
    for (v, r) in expected {
        let batch = next_batch(&mut w).await?;
        assert_eq!(batch.len(), 1);
        assert_put(&batch[0], &a, &v, r);
    }
    assert_quiet(&mut w).await;
    Ok(())
}

/// A watch sees only its prefix, also inside a mixed transaction.
pub async fn watch_prefix_filter(store: &dyn Store, p: &str) -> Result<()> {
    let inside = format!("{p}in/");
    let mut w = store.watch(&inside, store.revision().await? + 1).await?;
    store.put(&format!("{p}out/x"), b"no".to_vec()).await?;
    // "in" without the slash does not match "in/".
    store.put(&format!("{p}in"), b"no".to_vec()).await?;
    let r = store
        .txn(Txn {
            success: vec![
                Op::put(format!("{p}out/y"), "no"),
                Op::put(format!("{inside}a"), "yes"),
                Op::put(format!("{p}inn"), "no"),
                Op::put(format!("{inside}b"), "yes"),
            ],
            ..Txn::default()
        })
        .await?;
    let batch = next_batch(&mut w).await?;
    assert_eq!(batch.len(), 2, "only matching events: {batch:?}");
    assert_put(&batch[0], &format!("{inside}a"), b"yes", r.revision);
    assert_put(&batch[1], &format!("{inside}b"), b"yes", r.revision);
    assert_quiet(&mut w).await;
    Ok(())
}

/// All events of one transaction arrive in one batch, in op order.
pub async fn watch_txn_is_one_batch(store: &dyn Store, p: &str) -> Result<()> {
    store.put(&format!("{p}gone"), b"x".to_vec()).await?;
    let from = store.revision().await? + 1;
    let mut w = store.watch(p, from).await?;
    let r = store
        .txn(Txn {
            success: vec![
                Op::put(format!("{p}z"), "1"),
                Op::delete(format!("{p}gone")),
                Op::put(format!("{p}a"), "2"),
            ],
            ..Txn::default()
        })
        .await?;
    assert_eq!(r.revision, from);
    let batch = next_batch(&mut w).await?;
    assert_eq!(batch.len(), 3);
    assert_put(&batch[0], &format!("{p}z"), b"1", from);
    assert_delete(&batch[1], &format!("{p}gone"), from);
    assert_put(&batch[2], &format!("{p}a"), b"2", from);

    // The same from history.
    let mut w = store.watch(p, from).await?;
    let replayed = next_batch(&mut w).await?;
    assert_eq!(replayed, batch, "history replays the same batch");
    Ok(())
}

/// Whether a watch fails with `Compacted`, at creation or as first item.
async fn watch_is_compacted(store: &dyn Store, p: &str, from: Revision) -> Result<bool> {
    match store.watch(p, from).await {
        Err(StoreError::Compacted { .. }) => Ok(true),
        Err(e) => Err(e),
        Ok(mut w) => match tokio::time::timeout(QUIET_WAIT, w.next()).await {
            Ok(Some(Err(StoreError::Compacted { .. }))) => Ok(true),
            Ok(Some(Err(e))) => Err(e),
            Ok(Some(Ok(_))) | Ok(None) | Err(_) => Ok(false),
        },
    }
}

/// After compact(R), a watch from before R fails with `Compacted` and one
/// from R still works.
pub async fn compaction(store: &dyn Store, p: &str) -> Result<()> {
    let k = format!("{p}k");
    let mut revs = Vec::new();
    for i in 0..5u8 {
        revs.push(store.put(&k, vec![i]).await?);
    }
    store.compact(revs[2]).await?;
    assert!(
        watch_is_compacted(store, p, revs[1]).await?,
        "a watch from before the compaction must fail with Compacted"
    );
    let mut w = store.watch(p, revs[2]).await?;
    for (i, rev) in revs.iter().enumerate().skip(2) {
        let batch = next_batch(&mut w).await?;
        assert_put(&batch[0], &k, &[i as u8], *rev);
    }
    // Data is untouched by compaction.
    assert_eq!(store.get(&k).await?.map(|kv| kv.version), Some(5));
    Ok(())
}

/// Revoking a lease deletes its keys in one revision; the lease is gone.
pub async fn lease_revoke(store: &dyn Store, p: &str) -> Result<()> {
    let lease = store.grant_lease(Duration::from_secs(60)).await?;
    let a = format!("{p}a");
    let b = format!("{p}b");
    let keep = format!("{p}keep");
    let r = store
        .txn(Txn {
            success: vec![
                put_with_lease(&a, b"1", lease),
                put_with_lease(&b, b"2", lease),
                Op::put(&keep, "3"),
            ],
            ..Txn::default()
        })
        .await?;
    assert_eq!(store.get(&a).await?.map(|kv| kv.lease), Some(lease));
    // Re-putting without the lease detaches the key.
    store.put(&b, b"detached".to_vec()).await?;

    let from = store.revision().await? + 1;
    let mut w = store.watch(p, from).await?;
    store.revoke_lease(lease).await?;
    let batch = next_batch(&mut w).await?;
    assert_eq!(
        batch.len(),
        1,
        "only the still-attached key goes: {batch:?}"
    );
    assert_delete(&batch[0], &a, from);
    assert_eq!(store.revision().await?, from);
    assert_eq!(store.get(&a).await?, None);
    assert!(store.get(&b).await?.is_some());
    assert!(store.get(&keep).await?.is_some());
    assert!(r.succeeded);

    assert!(matches!(
        store.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(id)) if id == lease
    ));
    assert!(matches!(
        store.revoke_lease(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    let before = store.revision().await?;
    let r = store
        .txn(Txn {
            success: vec![put_with_lease(&a, b"x", lease), Op::put(&keep, "4")],
            ..Txn::default()
        })
        .await;
    assert!(
        matches!(r, Err(StoreError::LeaseNotFound(_))),
        "a put with a dead lease fails: {r:?}"
    );
    assert_eq!(
        store.revision().await?,
        before,
        "the failed txn wrote nothing"
    );
    assert_eq!(
        store.get(&keep).await?.map(|kv| kv.value),
        Some(b"3".to_vec())
    );
    Ok(())
}

/// Keep-alive holds a lease; without it the lease expires and its keys are
/// deleted in one revision that watchers see.
pub async fn lease_expiry(store: &dyn Store, p: &str, ttl: Duration) -> Result<()> {
    let lease = store.grant_lease(ttl).await?;
    let other = store.grant_lease(ttl * 100).await?;
    let a = format!("{p}a");
    let b = format!("{p}b");
    let c = format!("{p}c");
    store
        .txn(Txn {
            success: vec![
                put_with_lease(&a, b"1", lease),
                put_with_lease(&b, b"2", lease),
                put_with_lease(&c, b"3", other),
            ],
            ..Txn::default()
        })
        .await?;
    let from = store.revision().await? + 1;
    let mut w = store.watch(p, from).await?;

    // Kept alive past its original TTL, the lease survives.
    for _ in 0..3 {
        tokio::time::sleep(ttl / 2).await;
        store.keep_alive(lease).await?;
    }
    assert!(store.get(&a).await?.is_some(), "a kept-alive lease lives");
    assert_eq!(store.revision().await?, from - 1);

    // Then left alone, it expires.
    let batch = match tokio::time::timeout(ttl * 4 + EVENT_WAIT, w.next()).await {
        Ok(Some(batch)) => batch?,
        other => panic!("lease did not expire: {other:?}"),
    };
    assert_eq!(batch.len(), 2, "both keys go in one batch: {batch:?}");
    let mut keys: Vec<&str> = batch.iter().map(|e| e.kv.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, vec![a.as_str(), b.as_str()]);
    let rev = batch[0].revision();
    assert!(batch
        .iter()
        .all(|e| e.kind == EventKind::Delete && e.revision() == rev));
    assert_eq!(store.get(&a).await?, None);
    assert_eq!(store.get(&b).await?, None);
    assert!(store.get(&c).await?.is_some(), "another lease's key stays");
    assert!(matches!(
        store.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    store.revoke_lease(other).await?;
    Ok(())
}

/// N tasks each add 1 to a counter M times with compare-and-swap on
/// ModRevision and retry: the result is exactly N × M.
pub async fn concurrent_cas(
    store: &dyn Store,
    p: &str,
    tasks: usize,
    increments: usize,
) -> Result<()> {
    let key = format!("{p}counter");
    store.put(&key, b"0".to_vec()).await?;
    let worker = |_: usize| {
        let key = key.clone();
        async move {
            let mut retries = 0u64;
            for _ in 0..increments {
                loop {
                    let kv = store.get(&key).await?;
                    let (value, rev) = match kv {
                        Some(kv) => (parse_counter(&kv.value), kv.mod_revision),
                        None => panic!("counter vanished"),
                    };
                    let r = store
                        .txn(Txn {
                            compare: vec![Compare::mod_revision_is(&key, rev)],
                            success: vec![Op::put(&key, (value + 1).to_string())],
                            failure: vec![],
                        })
                        .await?;
                    if r.succeeded {
                        break;
                    }
                    retries += 1;
                }
            }
            Ok::<u64, StoreError>(retries)
        }
    };
    let results = futures::future::join_all((0..tasks).map(worker)).await;
    let mut retries = 0;
    for r in results {
        retries += r?;
    }
    let kv = store.get(&key).await?;
    let final_value = kv.as_ref().map(|kv| parse_counter(&kv.value));
    assert_eq!(
        final_value,
        Some((tasks * increments) as u64),
        "lost updates ({retries} retries)"
    );
    assert_eq!(
        kv.map(|kv| kv.version),
        Some((tasks * increments) as u64 + 1),
        "one version per successful increment"
    );
    Ok(())
}

fn parse_counter(v: &[u8]) -> u64 {
    match std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()) {
        Some(n) => n,
        None => panic!("counter holds {v:?}"),
    }
}
