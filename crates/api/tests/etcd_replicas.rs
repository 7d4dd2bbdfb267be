//! Several API replicas on one etcd cluster: conflicting writes spread
//! over both still let exactly one win, and an etcd leader killed under a
//! load of creates loses no acknowledged write and duplicates none.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod etcd_common;

use std::sync::Arc;
use std::time::Duration;

use etcd_common::{check_no_loss_no_duplicate, get, http, leader_loss, post, Replica};
use serde_json::{json, Value};
use tests::etcd::EtcdCluster;

const N: usize = 50;

/// Sends every request at once, request i to replica i % 2.
async fn race(replicas: &[Replica], path: &str, bodies: Vec<Value>) -> Vec<(u16, Value)> {
    let client = http();
    let barrier = Arc::new(tokio::sync::Barrier::new(bodies.len()));
    let tasks: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let url = format!("{}{path}", replicas[i % replicas.len()].base);
            let (client, barrier) = (client.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                post(&client, &url, &body).await.unwrap()
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn count(replies: &[(u16, Value)], status: u16) -> usize {
    replies.iter().filter(|(s, _)| *s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_conflicting_creates_over_two_replicas_one_wins() {
    let cluster = EtcdCluster::start(3).unwrap();
    let replicas = [
        Replica::start(&cluster, 0).await,
        Replica::start(&cluster, 1).await,
    ];
    let client = http();

    // The same VPC name, 25 times through each replica.
    let replies = race(
        &replicas,
        "/v1/vpcs",
        (0..N)
            .map(|_| json!({"name": "dup", "cidrs": ["10.0.0.0/16"]}))
            .collect(),
    )
    .await;
    assert_eq!(count(&replies, 201), 1, "{replies:#?}");
    assert_eq!(count(&replies, 409), N - 1, "{replies:#?}");
    for r in &replicas {
        let vpcs = get(&client, &format!("{}/v1/vpcs", r.base)).await;
        assert_eq!(
            vpcs.as_array().unwrap().len(),
            1,
            "each replica sees one VPC"
        );
    }

    // The same NIC address, 25 times through each replica.
    let vpc = replies.iter().find(|(s, _)| *s == 201).unwrap().1["id"].clone();
    let (status, subnet) = post(
        &client,
        &format!("{}/v1/subnets", replicas[1].base),
        &json!({"vpc_id": vpc, "cidr": "10.0.1.0/24"}),
    )
    .await
    .unwrap();
    // An operation (subnets reach nodes); its target is the subnet.
    assert_eq!(status, 202, "{subnet}");
    let subnet_id = subnet["target"]["id"].clone();
    let replies = race(
        &replicas,
        "/v1/nics",
        (0..N)
            .map(|_| json!({"subnet_id": subnet_id, "ip": "10.0.1.77"}))
            .collect(),
    )
    .await;
    // NICs are programmed on nodes: the winner gets 202 and an operation.
    assert_eq!(count(&replies, 202), 1, "{replies:#?}");
    assert_eq!(count(&replies, 409), N - 1, "{replies:#?}");
    let nics = get(&client, &format!("{}/v1/nics", replicas[0].base)).await;
    assert_eq!(nics.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_leader_killed_under_load_loses_and_duplicates_nothing() {
    let mut cluster = EtcdCluster::start(3).unwrap();
    let replicas = [
        Replica::start(&cluster, 0).await,
        Replica::start(&cluster, 1).await,
    ];
    let report = leader_loss(
        &mut cluster,
        &replicas,
        16,
        Duration::from_secs(2),
        Duration::from_secs(10),
    )
    .await;
    eprintln!(
        "leader loss: {} acked, {} committed without an ack, {} retries; \
         no write acknowledged for {:?}; first new ack {:?} after the kill; slowest ack {:?}",
        report.acked.len(),
        report.committed_unacked.len(),
        report.retries,
        report.window,
        report.first_new_ack,
        report.slowest
    );
    assert!(report.acked.len() > 50, "the load did run: {report:?}");
    check_no_loss_no_duplicate(&replicas[0], &report).await;
    check_no_loss_no_duplicate(&replicas[1], &report).await;
    // The cluster is whole again after the member returns, with the same data.
    cluster.restart_member(report.killed).unwrap();
    let again = Replica::start(&cluster, report.killed).await;
    check_no_loss_no_duplicate(&again, &report).await;
}
