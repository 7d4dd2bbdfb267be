//! Measures the write-unavailability window when the etcd leader dies under
//! a load of API creates: a real 3-member etcd cluster on 127.0.0.1, two API
//! replicas on it, 16 clients creating VPCs with retries, the leader
//! SIGKILLed after 2 s. Prints one line per round and checks that no
//! acknowledged write was lost and none duplicated.
//!
//! `cargo run -p api --example etcd_leader_loss [ROUNDS]`
#![allow(clippy::unwrap_used)] // a test harness: a failure should stop it loudly

#[path = "../tests/etcd_common/mod.rs"]
mod etcd_common;

use std::time::Duration;

use etcd_common::{check_no_loss_no_duplicate, leader_loss, Replica};
use tests::etcd::EtcdCluster;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let mut windows = Vec::new();
    for round in 1..=rounds {
        let mut cluster = EtcdCluster::start(3).expect("etcd cluster");
        let replicas = [
            Replica::start(&cluster, 0).await,
            Replica::start(&cluster, 1).await,
        ];
        let r = leader_loss(
            &mut cluster,
            &replicas,
            16,
            Duration::from_secs(2),
            Duration::from_secs(8),
        )
        .await;
        check_no_loss_no_duplicate(&replicas[0], &r).await;
        println!(
            "round {round}: killed member {} (leader); {} creates acked, {} committed \
             without an ack, {} retries; no ack for {:.0} ms; first ack of a request \
             sent after the kill {:.0} ms; slowest ack {:.0} ms; lost 0, duplicated 0",
            r.killed,
            r.acked.len(),
            r.committed_unacked.len(),
            r.retries,
            r.window.as_secs_f64() * 1e3,
            r.first_new_ack.as_secs_f64() * 1e3,
            r.slowest.as_secs_f64() * 1e3,
        );
        windows.push(r.window);
    }
    windows.sort();
    if let (Some(min), Some(max)) = (windows.first(), windows.last()) {
        println!(
            "write-unavailability window over {rounds} rounds: min {:.0} ms, median {:.0} ms, max {:.0} ms",
            min.as_secs_f64() * 1e3,
            windows[windows.len() / 2].as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    }
}
