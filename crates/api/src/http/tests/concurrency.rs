//! Conflicting writers racing each other: exactly the allowed number wins,
//! no one gets a 5xx, and the store stays consistent.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{Api, Reply};

const N: usize = 50;

/// Sends every request at once and returns the replies.
async fn race(api: &Arc<Api>, reqs: Vec<(&'static str, Value)>) -> Vec<Reply> {
    let barrier = Arc::new(tokio::sync::Barrier::new(reqs.len()));
    let tasks: Vec<_> = reqs
        .into_iter()
        .map(|(uri, body)| {
            let api = api.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                api.post(uri, body).await
            })
        })
        .collect();
    let mut out = vec![];
    for t in tasks {
        out.push(t.await.unwrap());
    }
    for r in &out {
        assert!(!r.status.is_server_error(), "{:?} {:#}", r.status, r.body);
    }
    out
}

fn count(replies: &[Reply], status: u16) -> usize {
    replies
        .iter()
        .filter(|r| r.status.as_u16() == status)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_nics_asking_for_the_same_ip() {
    let api = Arc::new(Api::new().await);
    let vpc = api.vpc("v", &["10.0.0.0/16"]).await;
    let sn = api.subnet(&vpc, "10.0.1.0/24").await;
    let reqs = (0..N)
        .map(|_| ("/v1/nics", json!({"subnet_id": sn, "ip": "10.0.1.77"})))
        .collect();
    let replies = race(&api, reqs).await;
    assert_eq!(count(&replies, 202), 1);
    assert_eq!(count(&replies, 409), N - 1);
    for r in replies.iter().filter(|r| r.status == 409) {
        r.problem(409, &["10.0.1.77", "already used"]).field("ip");
    }
    let nics = api.get("/v1/nics").await.ok(200).clone();
    assert_eq!(nics.as_array().unwrap().len(), 1);
    assert_eq!(nics[0]["ip"], "10.0.1.77");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_overlapping_subnets() {
    let api = Arc::new(Api::new().await);
    let vpc = api.vpc("v", &["10.0.0.0/8"]).await;
    // Every CIDR holds 10.0.0.0, so any two overlap.
    let reqs = (0..N)
        .map(|i| {
            let cidr = format!("10.0.0.0/{}", 16 + i % 14);
            ("/v1/subnets", json!({"vpc_id": vpc, "cidr": cidr}))
        })
        .collect();
    let replies = race(&api, reqs).await;
    assert_eq!(count(&replies, 202), 1, "{replies:#?}");
    assert_eq!(count(&replies, 409), N - 1);
    let subnets = api.get("/v1/subnets").await.ok(200).clone();
    assert_eq!(subnets.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_nics_allocating_addresses() {
    let api = Arc::new(Api::new().await);
    let vpc = api.vpc("v", &["10.0.0.0/16"]).await;
    let sn = api.subnet(&vpc, "10.0.1.0/24").await;
    let reqs = (0..N)
        .map(|_| ("/v1/nics", json!({"subnet_id": sn})))
        .collect();
    let replies = race(&api, reqs).await;
    assert_eq!(count(&replies, 202), N);
    let mut nics = vec![];
    for r in replies {
        nics.push(api.applied(r).await.ok(200).clone());
    }
    let ips: BTreeSet<String> = nics
        .iter()
        .map(|n| n["ip"].as_str().unwrap().to_string())
        .collect();
    let macs: BTreeSet<String> = nics
        .iter()
        .map(|n| n["mac"].as_str().unwrap().to_string())
        .collect();
    assert_eq!((ips.len(), macs.len()), (N, N));
    // Lowest-first: exactly .2 ..= .51.
    let want: BTreeSet<String> = (2..2 + N).map(|i| format!("10.0.1.{i}")).collect();
    assert_eq!(ips, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_nodes_racing_for_five_slots() {
    let api = Arc::new(Api::new().await);
    for i in 0..40 {
        api.node(&format!("n{i}"), "s1", &format!("10.8.0.{}", i + 1))
            .await;
    }
    let reqs = (0..N)
        .map(|i| {
            (
                "/v1/nodes",
                json!({"name": format!("new{i}"), "set": "s1",
                       "underlay_ip": format!("10.8.1.{}", i + 1)}),
            )
        })
        .collect();
    let replies = race(&api, reqs).await;
    assert_eq!(count(&replies, 201), 5);
    assert_eq!(count(&replies, 409), N - 5);
    let nodes = api.get("/v1/nodes?set=s1").await.ok(200).clone();
    assert_eq!(nodes.as_array().unwrap().len(), 45);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subnet_delete_racing_nic_creates() {
    for _round in 0..5 {
        let api = Arc::new(Api::new().await);
        let vpc = api.vpc("v", &["10.0.0.0/16"]).await;
        let sn = api.subnet(&vpc, "10.0.1.0/24").await;
        let barrier = Arc::new(tokio::sync::Barrier::new(11));
        let mut creates = vec![];
        for _ in 0..10 {
            let (api, sn, barrier) = (api.clone(), sn.clone(), barrier.clone());
            creates.push(tokio::spawn(async move {
                barrier.wait().await;
                api.post("/v1/nics", json!({"subnet_id": sn})).await
            }));
        }
        let del = {
            let (api, sn, barrier) = (api.clone(), sn.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                api.delete(&format!("/v1/subnets/{sn}")).await
            })
        };
        let mut created = 0;
        for c in creates {
            let r = c.await.unwrap();
            assert!(matches!(r.status.as_u16(), 202 | 422), "{:#}", r.body);
            created += usize::from(r.status == 202);
        }
        let del = del.await.unwrap();
        let nics = api.get("/v1/nics").await.ok(200).as_array().unwrap().len();
        assert_eq!(nics, created);
        let subnet_exists = api.get(&format!("/v1/subnets/{sn}")).await.status == 200;
        match del.status.as_u16() {
            // Deleted: no NIC may have slipped in.
            202 => assert!(!subnet_exists && created == 0),
            409 => assert!(subnet_exists && created > 0),
            s => panic!("delete answered {s}: {:#}", del.body),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_vpcs_with_one_name() {
    let api = Arc::new(Api::new().await);
    let reqs = (0..N)
        .map(|i| {
            (
                "/v1/vpcs",
                json!({"name": "same", "cidrs": [format!("10.{i}.0.0/16")]}),
            )
        })
        .collect();
    let replies = race(&api, reqs).await;
    assert_eq!(count(&replies, 201), 1);
    for r in replies.iter().filter(|r| r.status == 409) {
        r.problem(409, &["\"same\""]).field("name");
    }
    assert_eq!(count(&replies, 409), N - 1);
    let vpcs = api.get("/v1/vpcs").await.ok(200).clone();
    assert_eq!(vpcs.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_delete_racing_nic_binds() {
    for _round in 0..5 {
        let api = Arc::new(Api::new().await);
        api.node("n1", "default", "192.0.2.1").await;
        let vpc = api.vpc("v", &["10.0.0.0/16"]).await;
        let sn = api.subnet(&vpc, "10.0.1.0/24").await;
        let barrier = Arc::new(tokio::sync::Barrier::new(11));
        let mut binds = vec![];
        for _ in 0..10 {
            let (api, sn, barrier) = (api.clone(), sn.clone(), barrier.clone());
            binds.push(tokio::spawn(async move {
                barrier.wait().await;
                api.post("/v1/nics", json!({"subnet_id": sn, "node": "n1"}))
                    .await
            }));
        }
        let del = {
            let (api, barrier) = (api.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                api.delete("/v1/nodes/n1").await
            })
        };
        let mut bound = 0;
        for b in binds {
            let r = b.await.unwrap();
            assert!(matches!(r.status.as_u16(), 202 | 422), "{:#}", r.body);
            bound += usize::from(r.status == 202);
        }
        let del = del.await.unwrap();
        let node_exists = api.get("/v1/nodes/n1").await.status == 200;
        match del.status.as_u16() {
            204 => assert!(!node_exists && bound == 0),
            409 => assert!(node_exists && bound > 0),
            s => panic!("delete answered {s}: {:#}", del.body),
        }
    }
}
