//! The conformance suite against [`EmbeddedStore`], plus what only the
//! embedded backend promises: persistence across reopen, group commit, and
//! bounded slow watchers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::conformance::{self, next_batch, Config};
use super::embedded::{EmbeddedOptions, EmbeddedStore};
use super::{Compare, EventKind, Op, Store, StoreError, Txn};

fn temp() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    (dir, path)
}

#[tokio::test(start_paused = true)]
async fn conformance_paused_time() {
    let (_dir, path) = temp();
    let store = EmbeddedStore::open(&path).unwrap();
    conformance::run_all(&store, &Config::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_real_time() {
    let (_dir, path) = temp();
    let store = EmbeddedStore::open(&path).unwrap();
    let config = Config {
        lease_ttl: Duration::from_secs(1),
        cas_tasks: 16,
        cas_increments: 20,
        ..Config::default()
    };
    conformance::run_all(&store, &config).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn conformance_in_memory() {
    let store = EmbeddedStore::open_in_memory().unwrap();
    conformance::run_all(&store, &Config::default())
        .await
        .unwrap();
}

#[test]
fn open_outside_a_runtime_is_an_error_not_a_panic() {
    let (_dir, path) = temp();
    assert!(matches!(
        EmbeddedStore::open(&path),
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn fresh_store_starts_at_revision_one() {
    let (_dir, path) = temp();
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(store.revision().await.unwrap(), 1);
    assert_eq!(store.put("k", b"v".to_vec()).await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn reopen_keeps_data_revision_history_and_leases() {
    let (_dir, path) = temp();
    let store = EmbeddedStore::open(&path).unwrap();
    let r1 = store.put("/a", b"1".to_vec()).await.unwrap();
    let r2 = store.put("/b", b"2".to_vec()).await.unwrap();
    let r3 = store.delete("/a").await.unwrap();
    let lease = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    let r4 = store
        .txn(Txn {
            success: vec![Op::Put {
                key: "/leased".into(),
                value: b"x".to_vec(),
                lease,
            }],
            ..Txn::default()
        })
        .await
        .unwrap()
        .revision;
    store.compact(r2).await.unwrap();
    store.close().await.unwrap();

    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(store.revision().await.unwrap(), r4);
    assert_eq!(store.get("/a").await.unwrap(), None);
    let b = store.get("/b").await.unwrap().unwrap();
    assert_eq!(
        (b.value.as_slice(), b.create_revision, b.version),
        (&b"2"[..], r2, 1)
    );
    assert_eq!(store.get("/leased").await.unwrap().unwrap().lease, lease);

    // History survives, and so does the compaction point.
    assert!(matches!(
        store.watch("/", r1).await,
        Err(StoreError::Compacted { compact_revision, .. }) if compact_revision == r2
    ));
    let mut w = store.watch("/", r2).await.unwrap();
    let kinds: Vec<(EventKind, String, u64)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            for e in next_batch(&mut w).await.unwrap() {
                v.push((e.kind, e.kv.key.clone(), e.revision()));
            }
        }
        v
    };
    assert_eq!(
        kinds,
        vec![
            (EventKind::Put, "/b".into(), r2),
            (EventKind::Delete, "/a".into(), r3),
            (EventKind::Put, "/leased".into(), r4),
        ]
    );

    // The lease is still there and still expires (its TTL restarts at open).
    store.keep_alive(lease).await.unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(60), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].kind, EventKind::Delete);
    assert_eq!(batch[0].kv.key, "/leased");
    assert_eq!(batch[0].revision(), r4 + 1);
    assert_eq!(store.get("/leased").await.unwrap(), None);

    // New lease ids do not reuse old ones.
    let next = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    assert!(next > lease);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_under_concurrency() {
    let (_dir, path) = temp();
    let store = Arc::new(EmbeddedStore::open(&path).unwrap());
    let start = store.revision().await.unwrap();
    let (clients, per_client) = (64, 40);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..per_client {
                let key = format!("/gc/{c}/{i}");
                if i % 8 == 3 {
                    // A txn failing on its own must not hurt its batch.
                    let r = store
                        .txn(Txn {
                            success: vec![
                                Op::put(format!("/bad/{c}/{i}"), "v"),
                                Op::Put {
                                    key: key.clone(),
                                    value: b"v".to_vec(),
                                    lease: 424242,
                                },
                            ],
                            ..Txn::default()
                        })
                        .await;
                    assert!(matches!(r, Err(StoreError::LeaseNotFound(424242))));
                }
                let r = store
                    .txn(Txn {
                        compare: vec![Compare::absent(&key)],
                        success: vec![Op::put(&key, "v")],
                        failure: vec![],
                    })
                    .await
                    .unwrap();
                assert!(r.succeeded);
                revs.push(r.revision);
            }
            revs
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        for r in t.await.unwrap() {
            assert!(all.insert(r), "revision {r} given twice");
        }
    }
    let n = (clients * per_client) as u64;
    // Each txn its own revision, no holes.
    assert_eq!(all.len() as u64, n);
    assert_eq!(all.first().copied(), Some(start + 1));
    assert_eq!(all.last().copied(), Some(start + n));
    let (kvs, _) = store.range("/gc/").await.unwrap();
    assert_eq!(kvs.len() as u64, n);
    assert!(store.range("/bad/").await.unwrap().0.is_empty());
    let failed = clients as u64 * (0..per_client).filter(|i| i % 8 == 3).count() as u64;
    let stats = store.stats();
    assert_eq!(stats.requests, n + failed);
    assert!(
        stats.commits * 4 < n,
        "group commit should batch: {stats:?} for {n} txns"
    );
}

#[tokio::test]
async fn slow_watcher_catches_up_from_the_file() {
    let (_dir, path) = temp();
    let options = EmbeddedOptions {
        watch_buffer: 4,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open_with(&path, options).unwrap();
    let from = store.revision().await.unwrap() + 1;
    let mut w = store.watch("/s/", from).await.unwrap();
    // The watcher does not read while far more than the buffer is written.
    for i in 0..300u32 {
        store
            .put(&format!("/s/{}", i % 7), i.to_string().into_bytes())
            .await
            .unwrap();
    }
    for i in 0..300u32 {
        let batch = next_batch(&mut w).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(
            batch[0].revision(),
            from + u64::from(i),
            "no gap, no duplicate"
        );
        assert_eq!(batch[0].kv.value, i.to_string().into_bytes());
    }
    conformance::assert_quiet(&mut w).await;
}

#[tokio::test]
async fn watcher_behind_retained_history_is_compacted() {
    let (_dir, path) = temp();
    let options = EmbeddedOptions {
        watch_buffer: 4,
        history_retention: 10,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open_with(&path, options).unwrap();
    let from = store.revision().await.unwrap() + 1;
    let mut w = store.watch("/", from).await.unwrap();
    for i in 0..50u32 {
        store.put("/k", i.to_string().into_bytes()).await.unwrap();
    }
    match w.next().await {
        Some(Err(StoreError::Compacted { requested, .. })) => assert_eq!(requested, from),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(w.next().await.is_none(), "the stream ends after Compacted");
}

#[tokio::test]
async fn history_is_retained_up_to_the_bound() {
    let (_dir, path) = temp();
    let options = EmbeddedOptions {
        history_retention: 10,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open_with(&path, options).unwrap();
    let mut last = 0;
    for i in 0..30u32 {
        last = store.put("/k", i.to_string().into_bytes()).await.unwrap();
    }
    assert!(matches!(
        store.watch("/", last - 10).await,
        Err(StoreError::Compacted { compact_revision, .. }) if compact_revision == last - 9
    ));
    let mut w = store.watch("/", last - 9).await.unwrap();
    for rev in last - 9..=last {
        assert_eq!(next_batch(&mut w).await.unwrap()[0].revision(), rev);
    }
}

#[tokio::test]
async fn closed_store_is_unavailable_and_watches_end() {
    let (_dir, path) = temp();
    let store = EmbeddedStore::open(&path).unwrap();
    let other = store.clone();
    let mut w = store.watch("/", 0).await.unwrap();
    store.close().await.unwrap();
    assert!(matches!(
        other.put("/k", vec![]).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        other.get("/k").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        w.next().await,
        Some(Err(StoreError::Unavailable(_)))
    ));
    assert!(w.next().await.is_none());
    // The file is free again.
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(store.revision().await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn watch_from_zero_means_from_now() {
    let (_dir, path) = temp();
    let store = EmbeddedStore::open(&path).unwrap();
    store.put("/old", vec![1]).await.unwrap();
    let mut w = store.watch("/", 0).await.unwrap();
    let r = store.put("/new", vec![2]).await.unwrap();
    let batch = next_batch(&mut w).await.unwrap();
    assert_eq!((batch[0].kv.key.as_str(), batch[0].revision()), ("/new", r));
}

#[tokio::test(start_paused = true)]
async fn lease_expiry_without_keys_writes_no_revision() {
    let (_dir, path) = temp();
    let store = EmbeddedStore::open(&path).unwrap();
    let rev = store.revision().await.unwrap();
    let lease = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(matches!(
        store.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    assert_eq!(store.revision().await.unwrap(), rev);
}

/// Watchers started while writers run, some from the past and some slow,
/// each see every revision from their start exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_under_concurrent_writes_see_no_gap_and_no_duplicate() {
    let (_dir, path) = temp();
    let options = EmbeddedOptions {
        watch_buffer: 16,
        ..EmbeddedOptions::default()
    };
    let store = Arc::new(EmbeddedStore::open_with(&path, options).unwrap());
    let (writers, per_writer) = (8u64, 150u64);
    let start = store.revision().await.unwrap();
    let last = start + writers * per_writer;
    let mut writer_tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        writer_tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                store
                    .put(&format!("/w/{w}/{}", i % 5), vec![0; 64])
                    .await
                    .unwrap();
            }
        }));
    }
    let mut watchers = Vec::new();
    for n in 0..6u64 {
        let store = store.clone();
        watchers.push(tokio::spawn(async move {
            // Start at different moments, half of them from the past.
            tokio::time::sleep(Duration::from_millis(n * 15)).await;
            let now = store.revision().await.unwrap();
            let from = if n % 2 == 0 { start + 1 + n } else { now + 1 };
            let mut w = store.watch("/w/", from).await.unwrap();
            let mut expect = from;
            while expect <= last {
                if n == 5 {
                    // A slow reader, to overflow the live buffer.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let batch = next_batch(&mut w).await.unwrap();
                assert_eq!(batch.len(), 1);
                assert_eq!(batch[0].revision(), expect, "watcher {n} from {from}");
                expect += 1;
            }
        }));
    }
    for t in writer_tasks {
        t.await.unwrap();
    }
    for t in watchers {
        t.await.unwrap();
    }
    assert_eq!(store.revision().await.unwrap(), last);
}

#[tokio::test]
async fn batches_that_write_nothing_do_not_commit() {
    let (_dir, path) = temp();
    let store = EmbeddedStore::open(&path).unwrap();
    store.put("/k", b"v".to_vec()).await.unwrap();
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let before = store.stats();
    store.keep_alive(lease).await.unwrap();
    let r = store
        .txn(Txn {
            compare: vec![Compare::absent("/k")],
            success: vec![Op::put("/k", "no")],
            failure: vec![Op::Get { key: "/k".into() }],
        })
        .await
        .unwrap();
    assert!(!r.succeeded);
    store.delete("/absent").await.unwrap();
    let after = store.stats();
    assert_eq!(after.requests, before.requests + 3);
    assert_eq!(after.commits, before.commits, "nothing was written");
    // And a revoke of a lease without keys is written.
    store.revoke_lease(lease).await.unwrap();
    assert_eq!(store.stats().commits, before.commits + 1);
}
