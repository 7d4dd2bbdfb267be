//! Diffs desired flows against installed ones.
//!
//! Flows are identified by [`Flow::key`] (table, priority, match), as OpenFlow
//! does. [`diff`] says what to send so the switch holds exactly the desired
//! flows, without touching flows another owner installed (their cookie does
//! not carry our owner tag, see `pipeline::is_ours`). Both sides are indexed
//! by hash maps, so 100,000 flows diff in linear time.

use std::collections::{HashMap, HashSet};

use openflow::flow::{Flow, FlowKey, Match};

use crate::pipeline::{is_ours, COOKIE_GENERATION_MASK};

/// One change to the switch's flow table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowChange {
    /// A flow whose key is not installed.
    Add(Flow),
    /// A flow whose key is installed with other actions, goto or cookie
    /// owner/object (not merely another generation).
    /// Sent as an add (OFPFC_ADD replaces an entry with the same key and
    /// resets its counters), which also rewrites the cookie, unlike
    /// OFPFC_MODIFY.
    Modify(Flow),
    /// An installed flow of ours that is no longer desired (a strict delete).
    Delete(FlowKey),
}

impl FlowChange {
    pub fn key(&self) -> FlowKey {
        match self {
            FlowChange::Add(f) | FlowChange::Modify(f) => f.key(),
            FlowChange::Delete(k) => k.clone(),
        }
    }
}

/// A key borrowed from a flow, so indexing allocates nothing per flow.
type KeyRef<'a> = (u8, u16, &'a Match);

fn key_ref(f: &Flow) -> KeyRef<'_> {
    (f.table, f.priority, &f.matches)
}

/// Equal but for the generation in the cookie: a flow an earlier run of the
/// agent wrote is left as it is. Restamping it would reset its counters and,
/// at 100,000 flows, turn every restart into 100,000 modifications.
fn same_entry(a: &Flow, b: &Flow) -> bool {
    stamp(a.cookie) == stamp(b.cookie) && a.actions == b.actions && a.goto_table == b.goto_table
}

/// A cookie without the generation, if it is ours (another owner's cookie
/// is compared whole).
pub fn stamp(cookie: u64) -> u64 {
    if is_ours(cookie) {
        cookie & !COOKIE_GENERATION_MASK
    } else {
        cookie
    }
}

/// The changes that turn `installed` into `desired`: adds first, then
/// modifications, then deletes, each in the order of its input, so the
/// result is deterministic and, applied one by one outside a bundle, new
/// paths exist before old ones go.
///
/// A desired key listed twice counts once (the first wins, as in
/// `pipeline::render`). An installed flow that is not ours is never deleted;
/// if a desired flow has its key it is replaced, since the desired pipeline
/// must win on br-int.
pub fn diff(installed: &[Flow], desired: &[Flow]) -> Vec<FlowChange> {
    // Each installed key with whether a desired flow claimed it.
    let mut current: HashMap<KeyRef<'_>, (&Flow, bool)> = HashMap::with_capacity(installed.len());
    for f in installed {
        current.insert(key_ref(f), (f, false));
    }
    let mut added: HashSet<KeyRef<'_>> = HashSet::new();
    let mut adds = Vec::new();
    let mut modifies = Vec::new();
    for flow in desired {
        let key = key_ref(flow);
        let first = match current.get_mut(&key) {
            Some((have, claimed)) => {
                let first = !*claimed;
                *claimed = true;
                if first && !same_entry(have, flow) {
                    modifies.push(FlowChange::Modify(flow.clone()));
                }
                first
            }
            None => {
                let first = added.insert(key);
                if first {
                    adds.push(FlowChange::Add(flow.clone()));
                }
                first
            }
        };
        if !first {
            tracing::warn!(
                table = flow.table,
                priority = flow.priority,
                "desired flows list a key twice; keeping the first"
            );
        }
    }
    let mut out = adds;
    out.append(&mut modifies);
    for flow in installed {
        if let Some((_, claimed)) = current.get_mut(&key_ref(flow)) {
            // Marking it claimed also deletes a key listed twice only once.
            if !*claimed && is_ours(flow.cookie) {
                *claimed = true;
                out.push(FlowChange::Delete(flow.key()));
            }
        }
    }
    out
}

/// `installed` after the switch applied `changes`, for keeping a local copy
/// of what is installed without dumping the flows again. Unchanged and
/// modified flows keep their place; added flows come last, in order.
pub fn apply(installed: &[Flow], changes: &[FlowChange]) -> Vec<Flow> {
    let mut table: Vec<Option<Flow>> = installed.iter().cloned().map(Some).collect();
    let mut index: HashMap<FlowKey, usize> = installed
        .iter()
        .enumerate()
        .map(|(i, f)| (f.key(), i))
        .collect();
    for change in changes {
        match change {
            FlowChange::Add(f) | FlowChange::Modify(f) => match index.get(&f.key()) {
                // Add and modify both replace an entry with the same key.
                Some(&i) => table[i] = Some(f.clone()),
                None => {
                    index.insert(f.key(), table.len());
                    table.push(Some(f.clone()));
                }
            },
            FlowChange::Delete(k) => {
                if let Some(i) = index.remove(k) {
                    table[i] = None;
                }
            }
        }
    }
    table.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests;
