//! What the etcd backend promises beyond the conformance suite: failover
//! between members (requests and watches), TLS with client certificates,
//! paged listings, and bounded waits when no member answers.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::store::etcd::{EtcdOptions, EtcdStore, EtcdTls};
use api::store::{Compare, Op, OpResult, Store, StoreError, Txn};
use futures::StreamExt;
use tests::etcd::EtcdCluster;

fn opts(cluster: &EtcdCluster) -> EtcdOptions {
    EtcdOptions {
        endpoints: cluster.endpoints(),
        ..EtcdOptions::default()
    }
}

fn member_of(cluster: &EtcdCluster, endpoint: &str) -> usize {
    cluster
        .endpoints()
        .iter()
        .position(|e| endpoint.ends_with(e.as_str()))
        .unwrap()
}

/// Requests keep working while members die one at a time (quorum kept),
/// the one the client prefers first, and after each comes back. The
/// victim is never the leader here: a write in flight when the leader dies
/// has an unknown outcome, which `etcd_replicas` covers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_over_between_members() {
    let mut cluster = EtcdCluster::start(3).unwrap();
    let mut expected = 0u64;
    let mut last = None;
    for round in 0..3 {
        let leader = cluster.leader().unwrap();
        let victim = (0..3).find(|i| *i != leader && Some(*i) != last).unwrap();
        // The client prefers the victim: it is first in its list.
        let mut eps = cluster.endpoints();
        eps.rotate_left(victim);
        let store = EtcdStore::connect_and_check(EtcdOptions {
            endpoints: eps,
            ..opts(&cluster)
        })
        .await
        .unwrap();
        assert_eq!(member_of(&cluster, store.preferred_endpoint()), victim);
        cluster.kill_member(victim).unwrap();
        // Reads and writes go on through the other two. A write in flight
        // on the dead member's connection has an unknown outcome and is
        // reported, not resent; a plain put is idempotent, so the caller
        // may resend it, and at most the first one can be caught that way.
        for i in 0..5 {
            let key = format!("/fo/{round}/{i}");
            let mut unknown = 0;
            let r = loop {
                match store.put(&key, vec![round as u8]).await {
                    Ok(r) => break r,
                    Err(e) if e.to_string().contains("outcome unknown") && unknown == 0 => {
                        unknown += 1;
                    }
                    Err(e) => panic!("put {key} failed: {e}"),
                }
            };
            expected += 1;
            assert_eq!(store.get(&key).await.unwrap().unwrap().mod_revision, r);
        }
        assert_ne!(
            member_of(&cluster, store.preferred_endpoint()),
            victim,
            "the client moved off the dead member"
        );
        cluster.restart_member(victim).unwrap();
        last = Some(victim);
    }
    // Every member, including the restarted ones, answers on its own.
    for ep in cluster.endpoints() {
        let one = EtcdStore::connect_and_check(EtcdOptions {
            endpoints: vec![ep.clone()],
            ..opts(&cluster)
        })
        .await
        .unwrap();
        assert_eq!(one.range("/fo/").await.unwrap().0.len() as u64, expected);
    }
}

/// Writes `key` once even when an attempt's outcome is unknown (the
/// leader died under it): create-if-absent, and on a retry that finds the
/// key, the earlier attempt is the one that worked. Returns its revision.
async fn create_once(store: &EtcdStore, key: &str, value: Vec<u8>) -> u64 {
    for _ in 0..50 {
        let r = store
            .txn(Txn {
                compare: vec![Compare::absent(key)],
                success: vec![Op::put(key, value.clone())],
                failure: vec![Op::Get { key: key.into() }],
            })
            .await;
        match r {
            Ok(r) if r.succeeded => return r.revision,
            Ok(r) => match &r.results[0] {
                OpResult::Get(Some(kv)) if kv.value == value => return kv.mod_revision,
                other => panic!("{key} holds something else: {other:?}"),
            },
            Err(StoreError::Unavailable(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("{key} could not be written");
}

/// A watch whose member is killed (the leader, the worst case) resumes on
/// another one: every revision arrives once, in order, with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_the_loss_of_its_member() {
    let mut cluster = EtcdCluster::start(3).unwrap();
    let leader = cluster.leader().unwrap();
    let mut eps = cluster.endpoints();
    eps.rotate_left(leader);
    let watcher = EtcdStore::connect_and_check(EtcdOptions {
        endpoints: eps.clone(),
        ..opts(&cluster)
    })
    .await
    .unwrap();
    assert_eq!(member_of(&cluster, watcher.preferred_endpoint()), leader);
    let from = watcher.revision().await.unwrap() + 1;
    let mut w = watcher.watch("/w/", from).await.unwrap();

    // The writer prefers another member.
    eps.rotate_left(1);
    let writer = Arc::new(
        EtcdStore::connect_and_check(EtcdOptions {
            endpoints: eps,
            ..opts(&cluster)
        })
        .await
        .unwrap(),
    );
    let total = 300u64;
    let w2 = writer.clone();
    let writes = tokio::spawn(async move {
        let mut revs = Vec::new();
        for i in 0..total {
            revs.push(create_once(&w2, &format!("/w/{i:04}"), i.to_string().into_bytes()).await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        revs
    });

    let mut seen = Vec::new();
    let mut killed = false;
    while (seen.len() as u64) < total {
        let batch = tokio::time::timeout(Duration::from_secs(30), w.next())
            .await
            .expect("watch stalled")
            .expect("watch ended")
            .unwrap();
        assert_eq!(batch.len(), 1);
        seen.push((batch[0].revision(), batch[0].kv.value.clone()));
        if seen.len() == 50 && !killed {
            cluster.kill_member(leader).unwrap();
            killed = true;
        }
    }
    let revs = writes.await.unwrap();
    let got: Vec<u64> = seen.iter().map(|(r, _)| *r).collect();
    assert_eq!(got, revs, "every write seen once, in order");
    for (i, (_, v)) in seen.iter().enumerate() {
        assert_eq!(v, &i.to_string().into_bytes());
    }
    assert_ne!(member_of(&cluster, watcher.preferred_endpoint()), leader);
    conformance_quiet(&mut w).await;
}

async fn conformance_quiet(w: &mut api::store::WatchStream) {
    api::store::conformance::assert_quiet(w).await;
}

/// A member that freezes (SIGSTOP: sockets open, no answer, no reset) is
/// left by requests after their timeout and by a watch after the HTTP/2
/// keepalive gives up; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_member_is_left_by_requests_and_watches() {
    let mut cluster = EtcdCluster::start(3).unwrap();
    let leader = cluster.leader().unwrap();
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let mut eps = cluster.endpoints();
    eps.rotate_left(victim);
    let store = EtcdStore::connect_and_check(EtcdOptions {
        endpoints: eps,
        request_timeout: Duration::from_secs(2),
        // etcd's minimum ping interval; faster pings get a GOAWAY.
        keepalive_interval: Duration::from_secs(5),
        keepalive_timeout: Duration::from_secs(1),
        ..opts(&cluster)
    })
    .await
    .unwrap();
    assert_eq!(member_of(&cluster, store.preferred_endpoint()), victim);
    let from = store.revision().await.unwrap() + 1;
    let mut w = store.watch("/frozen/", from).await.unwrap();
    cluster.pause_member(victim).unwrap();

    let started = Instant::now();
    // The first write goes to the frozen member: its outcome is unknown (it
    // never reached the quorum, but the client cannot know that), and the
    // client moves on. A loaded machine can make any attempt time out, so
    // both writes are made idempotent.
    let r1 = match store.put("/frozen/a", b"1".to_vec()).await {
        Ok(r) => r,
        Err(StoreError::Unavailable(m)) => {
            assert!(m.contains("outcome unknown"), "{m}");
            create_once(&store, "/frozen/a", b"1".to_vec()).await
        }
        Err(e) => panic!("{e}"),
    };
    let r2 = create_once(&store, "/frozen/b", b"2".to_vec()).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_ne!(member_of(&cluster, store.preferred_endpoint()), victim);

    let mut revs = Vec::new();
    while revs.len() < 2 {
        let batch = tokio::time::timeout(Duration::from_secs(30), w.next())
            .await
            .expect("the watch left the frozen member")
            .unwrap()
            .unwrap();
        revs.extend(batch.iter().map(|e| e.revision()));
    }
    assert_eq!(revs, vec![r1, r2]);
    cluster.resume_member(victim).unwrap();
}

/// TLS with client certificates: the right CA and certificate work, a
/// missing client certificate or a foreign CA do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let cluster = EtcdCluster::start_tls(3).unwrap();
    let files = cluster.tls().unwrap().clone();
    let tls =
        EtcdTls::from_files(&files.ca, Some(&files.client_cert), Some(&files.client_key)).unwrap();
    let store = EtcdStore::connect_and_check(EtcdOptions {
        tls: Some(tls.clone()),
        ..opts(&cluster)
    })
    .await
    .unwrap();
    assert!(store.preferred_endpoint().starts_with("https://"));
    let from = store.revision().await.unwrap() + 1;
    let mut w = store.watch("/tls/", from).await.unwrap();
    let r = store.put("/tls/a", b"secret".to_vec()).await.unwrap();
    let batch = w.next().await.unwrap().unwrap();
    assert_eq!(
        (batch[0].kv.key.as_str(), batch[0].revision()),
        ("/tls/a", r)
    );

    let short = |tls: Option<EtcdTls>| EtcdOptions {
        tls,
        retry_window: Duration::from_secs(2),
        ..opts(&cluster)
    };
    // No client certificate: the members refuse the handshake.
    let anonymous = EtcdTls::from_files(&files.ca, None, None).unwrap();
    let err = EtcdStore::connect_and_check(short(Some(anonymous)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    // A server certificate from another CA is not trusted.
    let other = tests::etcd::make_tls(&cluster.dir().join("other"), "other").unwrap();
    let foreign =
        EtcdTls::from_files(&other.ca, Some(&other.client_cert), Some(&other.client_key)).unwrap();
    let err = EtcdStore::connect_and_check(short(Some(foreign)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    // Plain HTTP to a TLS port does not work either.
    let err = EtcdStore::connect_and_check(short(None)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
}

/// A listing larger than a page is complete, sorted, and at one revision
/// even while writes continue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_listing_is_paged_at_one_revision() {
    let cluster = EtcdCluster::start(3).unwrap();
    let store = Arc::new(EtcdStore::connect_and_check(opts(&cluster)).await.unwrap());
    let n = 2500usize;
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let ops = chunk
            .iter()
            .map(|i| Op::put(format!("/big/{i:05}"), vec![1u8; 100]))
            .collect();
        store
            .txn(Txn {
                success: ops,
                ..Txn::default()
            })
            .await
            .unwrap();
    }
    let s2 = store.clone();
    let noise = tokio::spawn(async move {
        for i in 0..200 {
            s2.put(&format!("/big/{:05}", n + i), vec![2])
                .await
                .unwrap();
        }
    });
    let (kvs, rev) = store.range("/big/").await.unwrap();
    noise.await.unwrap();
    assert!(kvs.len() >= n);
    assert!(
        kvs.windows(2).all(|w| w[0].key < w[1].key),
        "sorted, no repeats"
    );
    assert!(
        kvs.iter().all(|kv| kv.mod_revision <= rev),
        "nothing after the listing's revision"
    );
    // Exactly what existed at `rev` (keys are only added here).
    let (after, _) = store.range("/big/").await.unwrap();
    assert_eq!(after.len(), n + 200);
    let at_rev = after.iter().filter(|kv| kv.mod_revision <= rev).count();
    assert_eq!(
        at_rev,
        kvs.len(),
        "the listing is the state at its revision"
    );
}

/// With no member reachable, requests fail with Unavailable once the retry
/// window closes, and watches cannot be started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_member_reachable_is_unavailable_in_bounded_time() {
    let mut cluster = EtcdCluster::start(1).unwrap();
    let store = EtcdStore::connect_and_check(EtcdOptions {
        retry_window: Duration::from_secs(2),
        ..opts(&cluster)
    })
    .await
    .unwrap();
    cluster.kill_member(0).unwrap();
    let started = Instant::now();
    assert!(matches!(
        store.get("/x").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.put("/x", vec![]).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.watch("/x", 0).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // And back.
    cluster.restart_member(0).unwrap();
    store.put("/x", b"back".to_vec()).await.unwrap();
}
