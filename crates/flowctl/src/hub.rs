//! Distribution state: every node's compiled state plus a bounded history of
//! the deltas that led to it, so an agent can be brought from whatever
//! revision it holds to the current one with one message.
//!
//! Pure: the server asks [`Hub::catch_up`] what to send and sends it. A slow
//! agent simply asks less often and gets the coalesced difference, so nothing
//! is buffered per agent.

use std::collections::{BTreeMap, HashMap, VecDeque};

use api::store::{KeyValue, WatchEvent};
use proto::{Change, NodeState, ObjectKey, Revision, ServerMessage};

use crate::compile::{Applied, Compiler};

/// How much history each node keeps.
#[derive(Clone, Copy, Debug)]
pub struct HistoryLimits {
    /// Deltas kept per node.
    pub entries: usize,
    /// Changes kept per node, over all its deltas.
    pub changes: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            entries: 512,
            changes: 16_384,
        }
    }
}

#[derive(Debug)]
struct Entry {
    revision: Revision,
    changes: Vec<Change>,
}

/// The deltas of one node, oldest first.
#[derive(Debug)]
struct NodeLog {
    /// The state at any revision >= `start` can be rebuilt from `entries`.
    start: Revision,
    entries: VecDeque<Entry>,
    changes: usize,
}

/// The compiled states of every node and their recent history.
#[derive(Debug)]
pub struct Hub {
    compiler: Compiler,
    logs: HashMap<String, NodeLog>,
    /// History starts here for nodes without a log of their own.
    start: Revision,
    limits: HistoryLimits,
}

impl Hub {
    pub fn new(compiler: Compiler, limits: HistoryLimits) -> Self {
        let start = compiler.revision();
        Hub {
            compiler,
            logs: HashMap::new(),
            start,
            limits,
        }
    }

    pub fn compiler(&self) -> &Compiler {
        &self.compiler
    }

    /// The store revision the states reflect.
    pub fn revision(&self) -> Revision {
        self.compiler.revision()
    }

    /// Applies a batch of watch events and records each node's delta.
    pub fn apply(&mut self, events: &[WatchEvent]) -> Applied {
        let out = self.compiler.apply(events);
        self.record(&out);
        out
    }

    /// Replaces the model with a fresh listing (after a compaction).
    pub fn relist(&mut self, kvs: &[KeyValue], revision: Revision) -> Applied {
        let out = self.compiler.relist(kvs, revision);
        self.record(&out);
        out
    }

    fn record(&mut self, out: &Applied) {
        let revision = self.compiler.revision();
        for (node, changes) in &out.changes {
            let log = self.logs.entry(node.clone()).or_insert_with(|| NodeLog {
                start: self.start,
                entries: VecDeque::new(),
                changes: 0,
            });
            log.changes += changes.len();
            log.entries.push_back(Entry {
                revision,
                changes: changes.clone(),
            });
            while log.entries.len() > self.limits.entries || log.changes > self.limits.changes {
                let Some(old) = log.entries.pop_front() else {
                    break;
                };
                log.changes -= old.changes.len();
                // The state right after `old` is the state before the next
                // entry, so agents at or after it can still be served.
                log.start = old.revision;
            }
        }
    }

    /// What an agent of `node` holding the state at `have` (`None`: nothing
    /// usable) needs to be current: a snapshot, one (coalesced) delta, or
    /// nothing. The caller must not pass a `have` newer than
    /// [`Hub::revision`]; such an agent gets a snapshot.
    pub fn catch_up(&self, node: &str, have: Option<Revision>) -> Option<ServerMessage> {
        let revision = self.revision();
        let Some(have) = have.filter(|h| *h <= revision) else {
            return Some(self.snapshot(node));
        };
        let (start, entries) = match self.logs.get(node) {
            Some(log) => (log.start, Some(&log.entries)),
            None => (self.start, None),
        };
        if have < start {
            return Some(self.snapshot(node));
        }
        let newer = entries
            .into_iter()
            .flatten()
            .skip_while(|e| e.revision <= have);
        let mut last = have;
        // The latest change per object wins: each change is a whole upsert
        // or a removal, so this is the composition of the deltas.
        let mut merged: BTreeMap<Option<ObjectKey>, Change> = BTreeMap::new();
        for e in newer {
            last = e.revision;
            for c in &e.changes {
                merged.insert(slot(c), c.clone());
            }
        }
        if last == have {
            return None;
        }
        Some(ServerMessage::Delta {
            base: have,
            revision: last,
            changes: merged.into_values().collect(),
        })
    }

    /// The full state of `node` stamped with the current revision.
    pub fn snapshot(&self, node: &str) -> ServerMessage {
        let mut state: NodeState = self.compiler.state(node);
        state.revision = self.revision();
        ServerMessage::Snapshot { state }
    }
}

/// The object a change is about (`None`: the node's own info).
fn slot(c: &Change) -> Option<ObjectKey> {
    match c {
        Change::Remove { key } => Some(key.clone()),
        Change::Upsert { object } => object.key(),
    }
}

#[cfg(test)]
mod tests;
