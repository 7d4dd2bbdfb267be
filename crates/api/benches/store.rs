//! Group-commit throughput of the embedded store: N concurrent clients
//! (64 by default) each run create-if-absent transactions on fresh keys,
//! the pattern of the REST API's creates. Prints txn/s and latency
//! percentiles.
//!
//! `cargo bench -p api --bench store`; knobs: STORE_BENCH_CLIENTS,
//! STORE_BENCH_SECS, STORE_BENCH_VALUE_BYTES, STORE_BENCH_DIR (where the
//! database file goes; the default temp dir otherwise).

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::store::embedded::EmbeddedStore;
use api::store::{Compare, Op, Store, Txn};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clients = env_or("STORE_BENCH_CLIENTS", 64) as usize;
    let secs = env_or("STORE_BENCH_SECS", 5);
    let value_bytes = env_or("STORE_BENCH_VALUE_BYTES", 512) as usize;
    let dir = match std::env::var_os("STORE_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let path = dir.path().join("bench.redb");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let store = Arc::new(EmbeddedStore::open(&path)?);
        let value = vec![b'x'; value_bytes];
        let start = Instant::now();
        let deadline = start + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for c in 0..clients {
            let store = store.clone();
            let value = value.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let key = format!("/bench/nics/{c:04}-{i:08}");
                    let t0 = Instant::now();
                    let r = store
                        .txn(Txn {
                            compare: vec![Compare::absent(&key)],
                            success: vec![Op::put(&key, value.clone())],
                            failure: vec![Op::Get { key: key.clone() }],
                        })
                        .await?;
                    latencies.push(t0.elapsed());
                    if !r.succeeded {
                        return Err(format!("create of fresh key {key} failed").into());
                    }
                    i += 1;
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(latencies)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        let elapsed = start.elapsed();
        all.sort();
        let stats = store.stats();
        println!(
            "store/create-if-absent: {clients} clients, {value_bytes} B values, {:.1} s",
            elapsed.as_secs_f64()
        );
        println!(
            "  {} txns, {:.0} txn/s, {} commits ({:.1} txns/commit)",
            all.len(),
            all.len() as f64 / elapsed.as_secs_f64(),
            stats.commits,
            stats.requests as f64 / stats.commits.max(1) as f64
        );
        println!(
            "  latency p50 {:?}  p99 {:?}  max {:?}",
            percentile(&all, 0.50),
            percentile(&all, 0.99),
            all.last().copied().unwrap_or_default()
        );
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })
    .map_err(|e| -> Box<dyn std::error::Error> { e.to_string().into() })?;
    Ok(())
}
