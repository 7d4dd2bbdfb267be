//! The ofport map: which OpenFlow port number each interface on the bridge
//! got, derived from the replica.

use std::collections::BTreeMap;

use crate::data::Datum;
use crate::monitor::Replica;
use crate::vswitch::plan::find_bridge;

/// OpenFlow port numbers of the interfaces on one bridge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OfportMap {
    /// `external_ids:iface-id` (the NIC id) → ofport, for interfaces that
    /// have one.
    pub by_iface_id: BTreeMap<String, u32>,
    /// Interface name → ofport (tunnel ports, the bridge's own port, ...).
    pub by_name: BTreeMap<String, u32>,
    /// Interfaces ovs-vswitchd failed to add (ofport -1) → its `error`.
    pub failed: BTreeMap<String, String>,
    /// Interfaces on the bridge still waiting for an ofport.
    pub pending: Vec<String>,
    /// Interfaces running BFD → whether BFD says the path forwards
    /// (`bfd_status:forwarding`); absent until ovs-vswitchd reports it.
    pub bfd_forwarding: BTreeMap<String, bool>,
}

impl OfportMap {
    /// Computes the map for `bridge` from the replica.
    pub fn from_replica(replica: &Replica, bridge: &str) -> OfportMap {
        let mut m = OfportMap::default();
        let Some((_, br)) = find_bridge(replica, bridge) else {
            return m;
        };
        let ifaces = br
            .get("ports")
            .into_iter()
            .flat_map(|d| d.uuids())
            .filter_map(|p| replica.row("Port", &p))
            .flat_map(|p| p.get("interfaces").into_iter().flat_map(|d| d.uuids()))
            .filter_map(|i| replica.row("Interface", &i));
        for iface in ifaces {
            let Some(name) = iface.get("name").and_then(Datum::as_str) else {
                continue;
            };
            if let Some(fwd) = iface
                .get("bfd_status")
                .and_then(|d| d.map_get("forwarding"))
            {
                m.bfd_forwarding.insert(name.to_string(), fwd == "true");
            }
            match iface.get("ofport").and_then(Datum::as_integer) {
                Some(n) if n > 0 => {
                    let Ok(n) = u32::try_from(n) else { continue };
                    m.by_name.insert(name.to_string(), n);
                    if let Some(id) = iface
                        .get("external_ids")
                        .and_then(|d| d.map_get("iface-id"))
                    {
                        m.by_iface_id.insert(id.to_string(), n);
                    }
                }
                Some(-1) => {
                    let err = iface
                        .get("error")
                        .and_then(Datum::as_str)
                        .unwrap_or("ofport -1")
                        .to_string();
                    m.failed.insert(name.to_string(), err);
                }
                _ => m.pending.push(name.to_string()),
            }
        }
        m.pending.sort();
        m
    }

    pub fn iface(&self, iface_id: &str) -> Option<u32> {
        self.by_iface_id.get(iface_id).copied()
    }

    pub fn port(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Uuid;
    use crate::monitor::TableUpdates;
    use serde_json::json;

    #[test]
    fn map_follows_the_bridge_only() {
        let u = |n: u128| Uuid(n).to_string();
        let mut rep = Replica::new();
        rep.apply(
            &TableUpdates::from_json(&json!({
                "Bridge": {
                    u(1): {"new": {"name": "br-int", "ports": ["set", [["uuid", u(10)], ["uuid", u(11)], ["uuid", u(12)], ["uuid", u(13)]]]}},
                    u(2): {"new": {"name": "br-phy", "ports": ["uuid", u(20)]}}
                },
                "Port": {
                    u(10): {"new": {"name": "p1", "interfaces": ["uuid", u(100)]}},
                    u(11): {"new": {"name": "vx-b", "interfaces": ["uuid", u(101)]}},
                    u(12): {"new": {"name": "bad", "interfaces": ["uuid", u(102)]}},
                    u(13): {"new": {"name": "new", "interfaces": ["uuid", u(103)]}},
                    u(20): {"new": {"name": "eth0", "interfaces": ["uuid", u(200)]}}
                },
                "Interface": {
                    u(100): {"new": {"name": "p1", "ofport": 1, "external_ids": ["map", [["iface-id", "nic-1"]]]}},
                    u(101): {"new": {"name": "vx-b", "ofport": 2, "external_ids": ["map", []]}},
                    u(102): {"new": {"name": "bad", "ofport": -1, "error": "could not open network device bad (No such device)"}},
                    u(103): {"new": {"name": "new", "ofport": ["set", []]}},
                    u(200): {"new": {"name": "eth0", "ofport": 1, "external_ids": ["map", [["iface-id", "elsewhere"]]]}}
                }
            }))
            .unwrap(),
        );
        let m = OfportMap::from_replica(&rep, "br-int");
        assert_eq!(m.iface("nic-1"), Some(1));
        assert_eq!(m.iface("elsewhere"), None, "br-phy's ports are not ours");
        assert_eq!(m.port("vx-b"), Some(2));
        assert!(m.failed["bad"].contains("No such device"));
        assert_eq!(m.pending, ["new"]);
        assert_eq!(OfportMap::from_replica(&rep, "nope"), OfportMap::default());
    }
}
