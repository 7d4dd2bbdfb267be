//! The lease-based election helper (`api::store::election`) against the
//! etcd backend on a real 3-member cluster: the same checks the embedded
//! store passes under paused time, in real time here, plus a holder whose
//! etcd member dies (the keep-alives fail over; the term survives).
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::sync::Arc;
use std::time::Duration;

use api::store::election::{checks, Election};
use api::store::etcd::{EtcdOptions, EtcdStore};
use api::store::{Op, Store, Txn};
use tests::etcd::EtcdCluster;

/// etcd's minimum TTL with the default election timeout is 2 s.
const TTL: Duration = Duration::from_secs(3);

async fn store(cluster: &EtcdCluster, first: usize) -> Arc<dyn Store> {
    let mut endpoints = cluster.endpoints();
    endpoints.rotate_left(first);
    Arc::new(
        EtcdStore::connect_and_check(EtcdOptions {
            endpoints,
            ..EtcdOptions::default()
        })
        .await
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_checks_on_etcd() {
    let cluster = EtcdCluster::start(3).unwrap();
    let s = store(&cluster, 0).await;
    checks::run_all(s, "/election", TTL).await.unwrap();
}

/// The holder's preferred member is killed: keep-alives go on through
/// another member within the TTL, so the term (and its fenced writes)
/// survive, and a rival on another member is not elected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_survives_the_loss_of_its_member() {
    let mut cluster = EtcdCluster::start(3).unwrap();
    let leader = cluster.leader().unwrap();
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let other = (0..3).find(|i| *i != leader && *i != victim).unwrap();
    let holder_store = store(&cluster, victim).await;
    let rival_store = store(&cluster, other).await;
    let holder = Election::new(holder_store.clone(), "/e/leader", "holder", TTL);
    let rival = Election::new(rival_store, "/e/leader", "rival", TTL);
    let lead = holder.campaign().await.unwrap();
    let rival_task = tokio::spawn(async move { rival.campaign().await });
    cluster.kill_member(victim).unwrap();
    tokio::time::sleep(TTL * 3).await;
    assert!(!lead.is_lost(), "leadership lost with one member down");
    assert!(
        !rival_task.is_finished(),
        "rival elected while holder lives"
    );
    let r = lead
        .txn(Txn {
            success: vec![Op::put("/e/work", "1")],
            ..Txn::default()
        })
        .await
        .unwrap();
    assert!(r.succeeded);
    lead.resign().await.unwrap();
    let rival_lead = tokio::time::timeout(TTL * 2, rival_task)
        .await
        .expect("rival elected after the holder resigned")
        .unwrap()
        .unwrap();
    rival_lead.resign().await.unwrap();
}
