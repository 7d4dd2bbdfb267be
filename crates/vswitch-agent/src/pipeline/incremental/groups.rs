//! Security groups in the incremental renderer: each group's own flows, and
//! its flows per address of the groups it names, each kept with what it was
//! rendered from. A NIC joining or leaving a group of 10,000 members changes
//! the flows of its own addresses, not the group's.

use std::collections::{BTreeSet, HashMap, HashSet};

use openflow::{Flow, FlowKey};
use proto::{Ipv4Prefix, Nic, SecurityGroup};

use super::diff_owned;
use crate::pipeline::{security, Ctx};
use crate::reconcile::FlowChange;

/// Group id → member address → how many members bring it.
type Sets = HashMap<String, HashMap<Ipv4Prefix, usize>>;

/// The groups of the node and the address sets they read.
#[derive(Default)]
pub(super) struct Groups {
    /// Per VPC, the address sets of every group its NICs are in.
    sets: HashMap<String, Sets>,
    /// (VPC, group, address) whose presence in a set changed since the last
    /// render.
    touched: HashSet<(String, String, Ipv4Prefix)>,
    rendered: HashMap<String, RenderedGroup>,
}

/// A group's flows and what they were rendered from.
struct RenderedGroup {
    group: SecurityGroup,
    flows: Vec<Flow>,
    /// The flows for each address of the groups it names.
    members: HashMap<Ipv4Prefix, Vec<Flow>>,
}

impl Groups {
    /// Accounts for a NIC of a local VPC that changed: `old` is what was
    /// rendered before, `new` what is rendered now (`None`: absent).
    pub fn nic_changed(&mut self, old: Option<&Nic>, new: Option<&Nic>) {
        if let Some(nic) = old {
            for (group, p) in contributions(nic) {
                let Some(set) = self
                    .sets
                    .get_mut(&nic.vpc_id)
                    .and_then(|s| s.get_mut(group))
                else {
                    continue;
                };
                if let Some(n) = set.get_mut(&p) {
                    *n -= 1;
                    if *n == 0 {
                        set.remove(&p);
                        self.touched
                            .insert((nic.vpc_id.clone(), group.to_string(), p));
                    }
                }
            }
        }
        if let Some(nic) = new {
            for (group, p) in contributions(nic) {
                let n = self
                    .sets
                    .entry(nic.vpc_id.clone())
                    .or_default()
                    .entry(group.to_string())
                    .or_default()
                    .entry(p)
                    .or_default();
                *n += 1;
                if *n == 1 {
                    self.touched
                        .insert((nic.vpc_id.clone(), group.to_string(), p));
                }
            }
        }
    }

    /// Brings the groups' flows up to `ctx` and the NICs reported so far:
    /// a changed group is rendered again with all its addresses, any other
    /// only for the addresses whose membership changed.
    pub fn update(
        &mut self,
        ctx: &Ctx<'_>,
        deleted: &mut Vec<FlowKey>,
        added: &mut Vec<FlowChange>,
    ) {
        let wanted = security::local_groups(ctx);
        let gone: Vec<String> = self
            .rendered
            .keys()
            .filter(|id| !wanted.contains_key(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            if let Some(r) = self.rendered.remove(&id) {
                let flows = r.flows.iter().chain(r.members.values().flatten());
                deleted.extend(flows.map(Flow::key));
            }
        }
        let touched = std::mem::take(&mut self.touched);
        let no_sets = Sets::new();
        for (id, g) in wanted {
            let sets = self.sets.get(&g.vpc_id).unwrap_or(&no_sets);
            let remotes = security::remote_groups(g);
            let changed = self.rendered.get(id).is_none_or(|r| r.group != *g);
            let addresses: BTreeSet<Ipv4Prefix> = if changed {
                // Every address it renders now or rendered before.
                let before = self
                    .rendered
                    .get(id)
                    .into_iter()
                    .flat_map(|r| r.members.keys());
                let now = remotes
                    .iter()
                    .filter_map(|rg| sets.get(*rg))
                    .flat_map(|s| s.keys());
                before.chain(now).copied().collect()
            } else {
                touched
                    .iter()
                    .filter(|(vpc, rg, _)| *vpc == g.vpc_id && remotes.contains(rg.as_str()))
                    .map(|(_, _, p)| *p)
                    .collect()
            };
            if !changed && addresses.is_empty() {
                continue;
            }
            let rules = security::GroupRules::new(g);
            if changed {
                let mut flows = Vec::new();
                security::group_flows(ctx, &rules, &mut flows);
                let flows = canonical(flows);
                let old = self.rendered.remove(id);
                let (old_flows, members) = old.map(|r| (r.flows, r.members)).unwrap_or_default();
                diff_owned(&old_flows, &flows, deleted, added);
                self.rendered.insert(
                    id.to_string(),
                    RenderedGroup {
                        group: g.clone(),
                        flows,
                        members,
                    },
                );
            }
            let Some(r) = self.rendered.get_mut(id) else {
                continue;
            };
            for p in addresses {
                let holds = |rg: &str| sets.get(rg).is_some_and(|s| s.contains_key(&p));
                let mut flows = Vec::new();
                security::member_flows(ctx, &rules, p, holds, &mut flows);
                let flows = canonical(flows);
                let old = r.members.remove(&p).unwrap_or_default();
                diff_owned(&old, &flows, deleted, added);
                if !flows.is_empty() {
                    r.members.insert(p, flows);
                }
            }
        }
    }

    /// Every flow of every group.
    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        self.rendered
            .values()
            .flat_map(|r| r.flows.iter().chain(r.members.values().flatten()))
    }
}

/// The (group, address) pairs a NIC brings into its groups' address sets.
fn contributions(nic: &Nic) -> BTreeSet<(&str, Ipv4Prefix)> {
    let prefixes: BTreeSet<Ipv4Prefix> = security::member_prefixes(nic).collect();
    nic.security_groups
        .iter()
        .flat_map(|g| prefixes.iter().map(move |p| (g.as_str(), *p)))
        .collect()
}

fn canonical(flows: Vec<Flow>) -> Vec<Flow> {
    flows.iter().map(openflow::canonical).collect()
}
