// TEMPORARY exploration; to be deleted.
use std::time::Duration;
use ovsdb::Client;
use ovsdb::session::SessionConfig;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn explore() {
    let sb = tests::OvsSandbox::start("ovx").unwrap();
    sb.add_bridge("br-int").unwrap();
    let (c, mut notes) = Client::connect(&sb.db_remote(), SessionConfig::default()).await.unwrap();
    let r = c.request("lock", json!(["ovs_vswitchd"])).await.unwrap();
    println!("LOCK {r}");
    let mut sb2 = sb;
    let sb = tokio::task::spawn_blocking(move || { sb2.kill_vswitchd().unwrap(); sb2 }).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), notes.recv()).await;
    println!("AFTER KILL {n:?}");
    let r = c.request("unlock", json!(["ovs_vswitchd"])).await.unwrap();
    println!("UNLOCK {r}");
    let r = c.request("lock", json!(["ovs_vswitchd"])).await.unwrap();
    println!("LOCK again while down {r}");
    let r = c.request("unlock", json!(["ovs_vswitchd"])).await.unwrap();
    println!("UNLOCK {r}");
    let mut sb2 = sb;
    let sb = tokio::task::spawn_blocking(move || { sb2.restart_vswitchd().unwrap(); sb2 }).await.unwrap();
    let r = c.request("lock", json!(["ovs_vswitchd"])).await.unwrap();
    println!("LOCK after restart {r}");
    drop(sb);
}
