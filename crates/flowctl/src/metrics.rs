//! Counters exported as Prometheus text on `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Process-wide counters; cheap to bump from any task.
#[derive(Default, Debug)]
pub struct Metrics {
    pub agents_connected: AtomicI64,
    pub sessions_total: AtomicU64,
    pub refused_total: AtomicU64,
    pub snapshots_sent: AtomicU64,
    pub deltas_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub acks_total: AtomicU64,
    pub nacks_total: AtomicU64,
    pub store_revision: AtomicU64,
    pub compile_batches: AtomicU64,
    pub compile_seconds_micros: AtomicU64,
    pub relists_total: AtomicU64,
    pub status_writes: AtomicU64,
    pub status_conflicts: AtomicU64,
    /// Operation records advanced (pending → running → ended).
    pub operation_transitions: AtomicU64,
    /// Callback POSTs made, and those answered 2xx.
    pub callback_attempts: AtomicU64,
    pub callbacks_delivered: AtomicU64,
    /// 1 while this replica holds the compaction duty.
    pub duty_leader: AtomicU64,
    pub duty_terms_total: AtomicU64,
    pub compactions_total: AtomicU64,
    pub compacted_revision: AtomicU64,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let g = |c: &AtomicU64| c.load(Relaxed).to_string();
        metric(
            "flowctl_agents_connected",
            "gauge",
            "Agent streams open now.",
            self.agents_connected.load(Relaxed).to_string(),
        );
        metric(
            "flowctl_sessions_total",
            "counter",
            "Agent streams accepted.",
            g(&self.sessions_total),
        );
        metric(
            "flowctl_refused_total",
            "counter",
            "Agent streams refused.",
            g(&self.refused_total),
        );
        metric(
            "flowctl_snapshots_sent_total",
            "counter",
            "Snapshots sent.",
            g(&self.snapshots_sent),
        );
        metric(
            "flowctl_deltas_sent_total",
            "counter",
            "Deltas sent.",
            g(&self.deltas_sent),
        );
        metric(
            "flowctl_sent_bytes_total",
            "counter",
            "Frame bytes sent to agents.",
            g(&self.bytes_sent),
        );
        metric(
            "flowctl_acks_total",
            "counter",
            "Acks received.",
            g(&self.acks_total),
        );
        metric(
            "flowctl_nacks_total",
            "counter",
            "Nacks received.",
            g(&self.nacks_total),
        );
        metric(
            "flowctl_store_revision",
            "gauge",
            "Store revision compiled.",
            g(&self.store_revision),
        );
        metric(
            "flowctl_compile_batches_total",
            "counter",
            "Store event batches compiled.",
            g(&self.compile_batches),
        );
        metric(
            "flowctl_compile_seconds_total",
            "counter",
            "Time spent compiling event batches.",
            format!(
                "{:.6}",
                self.compile_seconds_micros.load(Relaxed) as f64 / 1e6
            ),
        );
        metric(
            "flowctl_relists_total",
            "counter",
            "Full relists of the store.",
            g(&self.relists_total),
        );
        metric(
            "flowctl_status_writes_total",
            "counter",
            "NIC status records written.",
            g(&self.status_writes),
        );
        metric(
            "flowctl_status_conflicts_total",
            "counter",
            "Status transactions that lost a race and were planned again.",
            g(&self.status_conflicts),
        );
        metric(
            "flowctl_operation_transitions_total",
            "counter",
            "Operation records advanced from acks, nacks and compilation.",
            g(&self.operation_transitions),
        );
        metric(
            "flowctl_callback_attempts_total",
            "counter",
            "Operation callbacks POSTed (each retry counts).",
            g(&self.callback_attempts),
        );
        metric(
            "flowctl_callbacks_delivered_total",
            "counter",
            "Operation callbacks acknowledged with a 2xx.",
            g(&self.callbacks_delivered),
        );
        metric(
            "flowctl_duty_compaction_leader",
            "gauge",
            "1 while this replica holds the store compaction duty.",
            g(&self.duty_leader),
        );
        metric(
            "flowctl_duty_compaction_terms_total",
            "counter",
            "Times this replica was elected for the compaction duty.",
            g(&self.duty_terms_total),
        );
        metric(
            "flowctl_compactions_total",
            "counter",
            "Store compactions this replica made.",
            g(&self.compactions_total),
        );
        metric(
            "flowctl_compacted_revision",
            "gauge",
            "The revision this replica last compacted the store to.",
            g(&self.compacted_revision),
        );
        out
    }
}
