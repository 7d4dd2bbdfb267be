//! The Store conformance suite against the etcd backend on a real
//! 3-member etcd cluster (Debian's etcd-server on 127.0.0.1).
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use api::store::conformance::{self, Config};
use api::store::etcd::{EtcdOptions, EtcdStore};
use api::store::Store;
use tests::etcd::EtcdCluster;

fn config(prefix: &str) -> Config {
    Config {
        prefix: prefix.into(),
        // etcd's minimum TTL with the default election timeout is 2 s.
        lease_ttl: Duration::from_secs(2),
        cas_tasks: 8,
        cas_increments: 25,
    }
}

async fn store(cluster: &EtcdCluster, namespace: &str) -> EtcdStore {
    EtcdStore::connect_and_check(EtcdOptions {
        endpoints: cluster.endpoints(),
        namespace: namespace.into(),
        ..EtcdOptions::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_three_members() {
    let cluster = EtcdCluster::start(3).unwrap();
    let store = store(&cluster, "").await;
    assert_eq!(
        store.revision().await.unwrap(),
        1,
        "a fresh etcd is at revision 1"
    );
    conformance::run_all(&store, &config("/conformance/"))
        .await
        .unwrap();
}

/// Two runs under two namespaces on one cluster: each run sees only its
/// own keys (its ranges and watches would trip over the other's otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_under_namespaces() {
    let cluster = EtcdCluster::start(3).unwrap();
    let a = store(&cluster, "/tenant-a").await;
    conformance::run_all(&a, &config("/c/")).await.unwrap();
    let b = store(&cluster, "/tenant-b").await;
    assert!(
        b.range("/").await.unwrap().0.is_empty(),
        "b sees nothing of a"
    );
    conformance::run_all(&b, &config("/c/")).await.unwrap();
    let (a_keys, _) = a.range("/").await.unwrap();
    let (b_keys, _) = b.range("/").await.unwrap();
    assert_eq!(
        a_keys.iter().map(|kv| &kv.key).collect::<Vec<_>>(),
        b_keys.iter().map(|kv| &kv.key).collect::<Vec<_>>(),
        "same suite, same keys, each in its own namespace"
    );
    assert!(a_keys
        .iter()
        .zip(&b_keys)
        .all(|(x, y)| x.mod_revision < y.mod_revision));
}
