//! Pure planning: from the replica and what we want, the operations that
//! make the database match, or nothing when it already does.
//!
//! Every plan that creates a row carries a `wait` guard asserting the row is
//! still absent, so two writers (two agents, or an agent and its restarted
//! self) planning from the same stale view cannot both insert: the second
//! transaction fails as a whole, and its writer re-plans from the new state.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::data::{row, Datum, Row, Uuid};
use crate::error::{Error, Result};
use crate::monitor::Replica;
use crate::ops::{Condition, Mutation, Mutator, Operation, Until};

/// external_ids key marking rows stacknet manages; the value is the owner.
pub const OWNER_KEY: &str = "stacknet-owner";
/// external_ids key naming the peer node of a tunnel port.
pub const PEER_KEY: &str = "stacknet-peer";
/// The OpenFlow versions br-int speaks.
pub const PROTOCOLS: [&str; 4] = ["OpenFlow10", "OpenFlow13", "OpenFlow14", "OpenFlow15"];
/// Linux interface names are at most 15 bytes.
pub const MAX_PORT_NAME: usize = 15;

/// The bridge we manage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    /// Usually `br-int`.
    pub name: String,
    /// `netdev` in the lab (userspace datapath), `system` in production.
    pub datapath_type: String,
    /// Value of the `stacknet-owner` external id on what we create.
    pub owner: String,
}

impl BridgeConfig {
    pub fn new(name: impl Into<String>, datapath_type: impl Into<String>) -> Self {
        BridgeConfig {
            name: name.into(),
            datapath_type: datapath_type.into(),
            owner: "stacknet".into(),
        }
    }
}

/// A VXLAN tunnel to a peer node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelSpec {
    /// The peer node's name; the port name is derived from it.
    pub peer: String,
    pub remote_ip: IpAddr,
    /// Our underlay address; `None` lets OVS pick by route.
    pub local_ip: Option<IpAddr>,
    /// Run BFD on the tunnel, so the port's liveness follows the peer's
    /// and a fast-failover group watching it switches by itself.
    pub bfd: bool,
    /// With BFD: tell the peer not to forward to us although the path is
    /// up (BFD's "concatenated path down"): the peer's side of the tunnel
    /// then counts as down. A gateway node that is not ready, or defers to
    /// another, says so this way.
    pub cpath_down: bool,
}

/// BFD intervals on tunnels, ms: detection after 3 missed packets, so a
/// dead peer is seen within about 3 × 100 ms.
pub const BFD_INTERVAL_MS: u32 = 100;

/// A tunnel port we own, as found in the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelPort {
    pub peer: String,
    pub port: String,
    pub remote_ip: Option<String>,
    pub local_ip: Option<String>,
    /// `None` until ovs-vswitchd has added it; `Some(-1)` if that failed.
    pub ofport: Option<i64>,
    /// BFD is configured on it.
    pub bfd: bool,
    /// ... telling the peer not to forward to us.
    pub cpath_down: bool,
}

/// The external id naming the physical network an external port carries.
pub const PHYSNET_KEY: &str = "stacknet-physnet";

/// An interface of the node plugged into the bridge as the uplink to an
/// external network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalPortSpec {
    /// The physical network label (`--external-port PHYSNET=IFACE`).
    pub physnet: String,
    /// The node's interface; also the port's name.
    pub iface: String,
}

/// The tunnel port name for `peer`: `vx-<peer>` when that is short and
/// plain, otherwise `vx` and 13 hex digits of a stable hash of the name.
/// The two forms cannot collide (the hashed one has no `-` after `vx`).
pub fn tunnel_port_name(peer: &str) -> String {
    let plain = !peer.is_empty()
        && peer.len() <= MAX_PORT_NAME - 3
        && peer
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if plain {
        return format!("vx-{peer}");
    }
    // FNV-1a: fixed by definition, unlike std's hasher, so names stay the
    // same across builds and restarts.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in peer.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("vx{:013x}", h >> 12)
}

fn name_is(name: &str) -> Vec<Condition> {
    vec![Condition::eq("name", Datum::string(name))]
}

/// `wait` until no row of `table` is named `name`, failing at once if one is.
fn absent_guard(table: &str, name: &str) -> Operation {
    Operation::Wait {
        table: table.into(),
        conditions: name_is(name),
        columns: vec!["name".into()],
        until: Until::Eq,
        rows: vec![],
        timeout_ms: Some(0),
    }
}

/// Mutations that set `key=value` in a string map column, leaving other keys
/// alone (an `update` would replace the whole map, including others' keys).
fn set_key(column: &str, key: &str, value: &str) -> [Mutation; 2] {
    [
        Mutation::new(column, Mutator::Delete, Datum::set([key])),
        Mutation::new(column, Mutator::Insert, Datum::map([(key, value)])),
    ]
}

fn string_col<'a>(r: &'a Row, col: &str) -> Option<&'a str> {
    r.get(col).and_then(Datum::as_str)
}

fn map_get<'a>(r: &'a Row, col: &str, key: &str) -> Option<&'a str> {
    r.get(col).and_then(|d| d.map_get(key))
}

/// The root `Open_vSwitch` row.
pub fn root_row(replica: &Replica) -> Option<(Uuid, &Row)> {
    replica.table("Open_vSwitch").next().map(|(u, r)| (*u, r))
}

pub fn find_bridge<'a>(replica: &'a Replica, name: &str) -> Option<(Uuid, &'a Row)> {
    replica.find_by("Bridge", "name", name)
}

/// Operations that bring the bridge to its configuration, `None` when it is
/// already there. An existing bridge is only ever updated in place.
pub fn plan_bridge(replica: &Replica, cfg: &BridgeConfig) -> Result<Option<Vec<Operation>>> {
    let Some((uuid, br)) = find_bridge(replica, &cfg.name) else {
        return Ok(Some(create_bridge(replica, cfg)));
    };
    // "" is how OVS spells its default, the kernel datapath.
    let found = match string_col(br, "datapath_type").unwrap_or("") {
        "" => "system",
        other => other,
    };
    if found != cfg.datapath_type {
        // Changing it would tear the datapath down and cut traffic.
        return Err(Error::DatapathMismatch {
            bridge: cfg.name.clone(),
            found: found.to_string(),
            wanted: cfg.datapath_type.clone(),
        });
    }
    match map_get(br, "external_ids", OWNER_KEY) {
        Some(o) if o != cfg.owner => {
            return Err(Error::NotOwned {
                table: "Bridge",
                name: cfg.name.clone(),
                owner: cfg.owner.clone(),
            })
        }
        _ => {}
    }

    let mut update = Row::new();
    if string_col(br, "fail_mode") != Some("secure") {
        update.insert("fail_mode".into(), Datum::string("secure"));
    }
    let protocols = Datum::set(PROTOCOLS);
    if br.get("protocols") != Some(&protocols) {
        update.insert("protocols".into(), protocols);
    }
    let mut mutations = Vec::new();
    if map_get(br, "other_config", "disable-in-band") != Some("true") {
        mutations.extend(set_key("other_config", "disable-in-band", "true"));
    }
    if map_get(br, "external_ids", OWNER_KEY) != Some(cfg.owner.as_str()) {
        mutations.extend(set_key("external_ids", OWNER_KEY, &cfg.owner));
    }

    let mut ops = Vec::new();
    if !update.is_empty() {
        ops.push(Operation::Update {
            table: "Bridge".into(),
            conditions: vec![Condition::uuid(uuid)],
            row: update,
        });
    }
    if !mutations.is_empty() {
        ops.push(Operation::Mutate {
            table: "Bridge".into(),
            conditions: vec![Condition::uuid(uuid)],
            mutations,
        });
    }
    Ok((!ops.is_empty()).then_some(ops))
}

fn create_bridge(replica: &Replica, cfg: &BridgeConfig) -> Vec<Operation> {
    let mut ops = vec![
        absent_guard("Bridge", &cfg.name),
        // The bridge's own internal port, as `ovs-vsctl add-br` makes it.
        Operation::Insert {
            table: "Interface".into(),
            row: row([
                ("name", Datum::string(&cfg.name)),
                ("type", Datum::string("internal")),
            ]),
            uuid_name: Some("iface".into()),
        },
        Operation::Insert {
            table: "Port".into(),
            row: row([
                ("name", Datum::string(&cfg.name)),
                ("interfaces", Datum::named_uuid("iface")),
            ]),
            uuid_name: Some("port".into()),
        },
        Operation::Insert {
            table: "Bridge".into(),
            row: row([
                ("name", Datum::string(&cfg.name)),
                ("datapath_type", Datum::string(&cfg.datapath_type)),
                ("fail_mode", Datum::string("secure")),
                ("protocols", Datum::set(PROTOCOLS)),
                ("other_config", Datum::map([("disable-in-band", "true")])),
                (
                    "external_ids",
                    Datum::map([(OWNER_KEY, cfg.owner.as_str())]),
                ),
                ("ports", Datum::named_uuid("port")),
            ]),
            uuid_name: Some("bridge".into()),
        },
    ];
    let add = Mutation::new("bridges", Mutator::Insert, Datum::named_uuid("bridge"));
    match root_row(replica) {
        Some((root, _)) => ops.push(Operation::Mutate {
            table: "Open_vSwitch".into(),
            conditions: vec![Condition::uuid(root)],
            mutations: vec![add],
        }),
        // A fresh database (never `ovs-vsctl init`-ed): create the root
        // row too, guarded like the bridge.
        None => {
            ops.push(Operation::Wait {
                table: "Open_vSwitch".into(),
                conditions: vec![],
                columns: vec!["_uuid".into()],
                until: Until::Eq,
                rows: vec![],
                timeout_ms: Some(0),
            });
            ops.push(Operation::Insert {
                table: "Open_vSwitch".into(),
                row: row([("bridges", Datum::named_uuid("bridge"))]),
                uuid_name: None,
            });
        }
    }
    ops
}

fn tunnel_options(spec: &TunnelSpec) -> Datum {
    let mut m = BTreeMap::from([
        ("remote_ip".to_string(), spec.remote_ip.to_string()),
        ("key".to_string(), "flow".to_string()),
    ]);
    if let Some(l) = spec.local_ip {
        m.insert("local_ip".into(), l.to_string());
    }
    Datum::map(m)
}

/// The Interface `bfd` column: ours whole on our own tunnel ports.
fn bfd_config(on: bool, cpath_down: bool) -> Datum {
    if !on {
        return Datum::map::<&str, &str>([]);
    }
    let interval = BFD_INTERVAL_MS.to_string();
    let cpath = if cpath_down { "true" } else { "false" };
    Datum::map([
        ("enable", "true"),
        ("min_rx", interval.as_str()),
        ("min_tx", interval.as_str()),
        ("cpath_down", cpath),
    ])
}

/// Operations that put `spec.iface` on the bridge as the uplink of
/// `spec.physnet`. An existing port of that name that is not ours is an
/// error: the operator's ports are never taken over.
pub fn plan_external_port(
    replica: &Replica,
    cfg: &BridgeConfig,
    spec: &ExternalPortSpec,
) -> Result<Option<Vec<Operation>>> {
    let (br_uuid, _) = bridge_or_err(replica, cfg)?;
    let name = spec.iface.as_str();
    let ids = [
        (OWNER_KEY, cfg.owner.as_str()),
        (PHYSNET_KEY, spec.physnet.as_str()),
    ];
    let Some((port_uuid, port)) = replica.find_by("Port", "name", name) else {
        let iface = row([
            ("name", Datum::string(name)),
            ("external_ids", Datum::map(ids)),
        ]);
        return Ok(Some(new_port(br_uuid, name, iface, &ids)));
    };
    if map_get(port, "external_ids", OWNER_KEY) != Some(cfg.owner.as_str()) {
        return Err(Error::NotOwned {
            table: "Port",
            name: name.to_string(),
            owner: cfg.owner.clone(),
        });
    }
    let muts: Vec<Mutation> = ids
        .iter()
        .filter(|(k, v)| map_get(port, "external_ids", k) != Some(*v))
        .flat_map(|(k, v)| set_key("external_ids", k, v))
        .collect();
    Ok((!muts.is_empty()).then(|| {
        vec![Operation::Mutate {
            table: "Port".into(),
            conditions: vec![Condition::uuid(port_uuid)],
            mutations: muts,
        }]
    }))
}

fn bridge_or_err<'a>(replica: &'a Replica, cfg: &BridgeConfig) -> Result<(Uuid, &'a Row)> {
    find_bridge(replica, &cfg.name)
        .ok_or_else(|| Error::Invalid(format!("bridge {} does not exist yet", cfg.name)))
}

/// Operations adding port `name` with one interface (`iface`, its row) to
/// the bridge, guarded so that they fail if either name appeared since.
fn new_port(br_uuid: Uuid, name: &str, iface: Row, ids: &[(&str, &str)]) -> Vec<Operation> {
    vec![
        absent_guard("Port", name),
        absent_guard("Interface", name),
        Operation::Insert {
            table: "Interface".into(),
            row: iface,
            uuid_name: Some("iface".into()),
        },
        Operation::Insert {
            table: "Port".into(),
            row: row([
                ("name", Datum::string(name)),
                ("interfaces", Datum::named_uuid("iface")),
                ("external_ids", Datum::map(ids.iter().copied())),
            ]),
            uuid_name: Some("port".into()),
        },
        Operation::Mutate {
            table: "Bridge".into(),
            conditions: vec![Condition::uuid(br_uuid)],
            mutations: vec![Mutation::new(
                "ports",
                Mutator::Insert,
                Datum::named_uuid("port"),
            )],
        },
    ]
}

/// Operations that make the tunnel port to `spec.peer` exist as specified.
pub fn plan_tunnel(
    replica: &Replica,
    cfg: &BridgeConfig,
    spec: &TunnelSpec,
) -> Result<Option<Vec<Operation>>> {
    let (br_uuid, br) = bridge_or_err(replica, cfg)?;
    let name = tunnel_port_name(&spec.peer);
    let options = tunnel_options(spec);
    let bfd = bfd_config(spec.bfd, spec.cpath_down);
    let ids = [
        (OWNER_KEY, cfg.owner.as_str()),
        (PEER_KEY, spec.peer.as_str()),
    ];

    let Some((port_uuid, port)) = replica.find_by("Port", "name", &name) else {
        let iface = row([
            ("name", Datum::string(&name)),
            ("type", Datum::string("vxlan")),
            ("options", options),
            ("bfd", bfd),
            ("external_ids", Datum::map(ids)),
        ]);
        return Ok(Some(new_port(br_uuid, &name, iface, &ids)));
    };

    if map_get(port, "external_ids", OWNER_KEY) != Some(cfg.owner.as_str()) {
        return Err(Error::NotOwned {
            table: "Port",
            name,
            owner: cfg.owner.clone(),
        });
    }
    let on_bridge = br
        .get("ports")
        .is_some_and(|p| p.uuids().any(|u| u == port_uuid));
    if !on_bridge {
        return Err(Error::Invalid(format!(
            "port {name} exists but is not on bridge {}",
            cfg.name
        )));
    }

    let mut ops = Vec::new();
    let port_muts: Vec<Mutation> = ids
        .iter()
        .filter(|(k, v)| map_get(port, "external_ids", k) != Some(*v))
        .flat_map(|(k, v)| set_key("external_ids", k, v))
        .collect();
    if !port_muts.is_empty() {
        ops.push(Operation::Mutate {
            table: "Port".into(),
            conditions: vec![Condition::uuid(port_uuid)],
            mutations: port_muts,
        });
    }

    let ifaces: Vec<Uuid> = port
        .get("interfaces")
        .map(|d| d.uuids().collect())
        .unwrap_or_default();
    for iface_uuid in ifaces {
        let Some(iface) = replica.row("Interface", &iface_uuid) else {
            continue;
        };
        let mut update = Row::new();
        if string_col(iface, "type") != Some("vxlan") {
            update.insert("type".into(), Datum::string("vxlan"));
        }
        // The options map is all ours on our own port: replace it whole so
        // a dropped local_ip goes away too.
        if iface.get("options") != Some(&options) {
            update.insert("options".into(), options.clone());
        }
        if iface.get("bfd").unwrap_or(&Datum::map::<&str, &str>([])) != &bfd {
            update.insert("bfd".into(), bfd.clone());
        }
        if !update.is_empty() {
            ops.push(Operation::Update {
                table: "Interface".into(),
                conditions: vec![Condition::uuid(iface_uuid)],
                row: update,
            });
        }
        let muts: Vec<Mutation> = ids
            .iter()
            .filter(|(k, v)| map_get(iface, "external_ids", k) != Some(*v))
            .flat_map(|(k, v)| set_key("external_ids", k, v))
            .collect();
        if !muts.is_empty() {
            ops.push(Operation::Mutate {
                table: "Interface".into(),
                conditions: vec![Condition::uuid(iface_uuid)],
                mutations: muts,
            });
        }
    }
    Ok((!ops.is_empty()).then_some(ops))
}

/// Our tunnel ports on the bridge.
pub fn tunnels(replica: &Replica, cfg: &BridgeConfig) -> Vec<TunnelPort> {
    let Some((_, br)) = find_bridge(replica, &cfg.name) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for pu in br.get("ports").into_iter().flat_map(|d| d.uuids()) {
        let Some(port) = replica.row("Port", &pu) else {
            continue;
        };
        if map_get(port, "external_ids", OWNER_KEY) != Some(cfg.owner.as_str()) {
            continue;
        }
        let Some(peer) = map_get(port, "external_ids", PEER_KEY) else {
            continue;
        };
        let iface = port
            .get("interfaces")
            .and_then(|d| d.uuids().next())
            .and_then(|u| replica.row("Interface", &u));
        out.push(TunnelPort {
            peer: peer.to_string(),
            port: string_col(port, "name").unwrap_or_default().to_string(),
            remote_ip: iface
                .and_then(|i| map_get(i, "options", "remote_ip"))
                .map(str::to_string),
            local_ip: iface
                .and_then(|i| map_get(i, "options", "local_ip"))
                .map(str::to_string),
            ofport: iface
                .and_then(|i| i.get("ofport"))
                .and_then(Datum::as_integer),
            bfd: iface.and_then(|i| map_get(i, "bfd", "enable")) == Some("true"),
            cpath_down: iface.and_then(|i| map_get(i, "bfd", "cpath_down")) == Some("true"),
        });
    }
    out.sort_by(|a, b| a.peer.cmp(&b.peer));
    out
}

/// Operations removing our tunnel ports whose peer `keep` rejects. Removing
/// a port from the bridge is enough: OVSDB deletes the Port and Interface
/// rows nothing references any more.
pub fn plan_remove_tunnels(
    replica: &Replica,
    cfg: &BridgeConfig,
    keep: impl Fn(&str) -> bool,
) -> Option<(Vec<Operation>, Vec<String>)> {
    let (br_uuid, br) = find_bridge(replica, &cfg.name)?;
    let mut gone = Vec::new();
    let mut names = Vec::new();
    for pu in br.get("ports").into_iter().flat_map(|d| d.uuids()) {
        let Some(port) = replica.row("Port", &pu) else {
            continue;
        };
        if map_get(port, "external_ids", OWNER_KEY) != Some(cfg.owner.as_str()) {
            continue;
        }
        let Some(peer) = map_get(port, "external_ids", PEER_KEY) else {
            continue;
        };
        if !keep(peer) {
            gone.push(pu);
            names.push(string_col(port, "name").unwrap_or_default().to_string());
        }
    }
    if gone.is_empty() {
        return None;
    }
    Some((
        vec![Operation::Mutate {
            table: "Bridge".into(),
            conditions: vec![Condition::uuid(br_uuid)],
            mutations: vec![Mutation::new("ports", Mutator::Delete, Datum::set(gone))],
        }],
        names,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::{RowUpdate, TableUpdates};

    fn u(n: u128) -> Uuid {
        Uuid(n)
    }

    fn replica_with(rows: Vec<(&str, Uuid, Row)>) -> Replica {
        let mut t: BTreeMap<String, BTreeMap<Uuid, RowUpdate>> = BTreeMap::new();
        for (table, uuid, r) in rows {
            t.entry(table.into()).or_default().insert(
                uuid,
                RowUpdate {
                    old: None,
                    new: Some(r),
                },
            );
        }
        let mut rep = Replica::new();
        rep.apply(&TableUpdates(t));
        rep
    }

    fn cfg() -> BridgeConfig {
        BridgeConfig::new("br-int", "netdev")
    }

    fn good_bridge() -> Row {
        row([
            ("name", Datum::string("br-int")),
            ("datapath_type", Datum::string("netdev")),
            ("fail_mode", Datum::string("secure")),
            ("protocols", Datum::set(PROTOCOLS)),
            (
                "other_config",
                Datum::map([("disable-in-band", "true"), ("hwaddr", "x")]),
            ),
            ("external_ids", Datum::map([(OWNER_KEY, "stacknet")])),
            ("ports", Datum::set([u(10)])),
        ])
    }

    #[test]
    fn port_names() {
        assert_eq!(tunnel_port_name("node-2"), "vx-node-2");
        assert_eq!(tunnel_port_name("abcdefghijkl"), "vx-abcdefghijkl");
        let long = tunnel_port_name("compute-rack12-node-0042");
        assert_eq!(long.len(), 15);
        assert!(long.starts_with("vx") && long[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        // Deterministic, and different peers get different names.
        assert_eq!(long, tunnel_port_name("compute-rack12-node-0042"));
        assert_ne!(long, tunnel_port_name("compute-rack12-node-0043"));
        for odd in ["Node_1", "a b", "", "n/1", "abcdefghijklm"] {
            let n = tunnel_port_name(odd);
            assert_eq!(n.len(), 15, "{odd}");
            assert!(!n.contains('-'));
        }
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..2000 {
            assert!(seen.insert(tunnel_port_name(&format!("host-{i:05}.example"))));
        }
    }

    #[test]
    fn creates_bridge_with_guard() {
        let rep = replica_with(vec![(
            "Open_vSwitch",
            u(1),
            row([("bridges", Datum::empty())]),
        )]);
        let ops = plan_bridge(&rep, &cfg()).unwrap().unwrap();
        assert!(matches!(&ops[0], Operation::Wait { table, .. } if table == "Bridge"));
        let Operation::Insert { row: br, .. } = &ops[3] else {
            panic!()
        };
        assert_eq!(br["fail_mode"], Datum::string("secure"));
        assert_eq!(br["datapath_type"], Datum::string("netdev"));
        assert_eq!(br["other_config"].map_get("disable-in-band"), Some("true"));
        assert_eq!(br["external_ids"].map_get(OWNER_KEY), Some("stacknet"));
        assert_eq!(br["protocols"].strings().count(), 4);
        assert!(
            matches!(&ops[4], Operation::Mutate { table, conditions, .. }
            if table == "Open_vSwitch" && conditions == &vec![Condition::uuid(u(1))])
        );
    }

    #[test]
    fn creates_root_row_in_a_fresh_database() {
        let ops = plan_bridge(&Replica::new(), &cfg()).unwrap().unwrap();
        assert!(
            matches!(ops.last(), Some(Operation::Insert { table, .. }) if table == "Open_vSwitch")
        );
    }

    #[test]
    fn existing_bridge_in_shape_is_a_noop() {
        let rep = replica_with(vec![("Bridge", u(2), good_bridge())]);
        assert_eq!(plan_bridge(&rep, &cfg()).unwrap(), None);
    }

    #[test]
    fn existing_bridge_is_updated_in_place_only_where_it_differs() {
        let mut br = good_bridge();
        br.insert("fail_mode".into(), Datum::string("standalone"));
        br.insert("other_config".into(), Datum::map([("hwaddr", "x")]));
        br.insert("external_ids".into(), Datum::map([("installer", "yes")]));
        let rep = replica_with(vec![("Bridge", u(2), br)]);
        let ops = plan_bridge(&rep, &cfg()).unwrap().unwrap();
        assert_eq!(ops.len(), 2);
        let Operation::Update {
            row, conditions, ..
        } = &ops[0]
        else {
            panic!()
        };
        assert_eq!(conditions, &vec![Condition::uuid(u(2))]);
        assert_eq!(row.keys().collect::<Vec<_>>(), ["fail_mode"]);
        let Operation::Mutate { mutations, .. } = &ops[1] else {
            panic!()
        };
        // Only our keys, set by delete+insert so others' keys survive.
        assert_eq!(mutations.len(), 4);
        assert!(mutations
            .iter()
            .all(|m| matches!(m.mutator, Mutator::Delete | Mutator::Insert)));
        // Nothing deletes or re-creates the bridge.
        assert!(!ops
            .iter()
            .any(|o| matches!(o, Operation::Delete { .. } | Operation::Insert { .. })));
    }

    #[test]
    fn refuses_to_change_datapath_or_take_foreign_bridges() {
        let mut br = good_bridge();
        br.insert("datapath_type".into(), Datum::string(""));
        let rep = replica_with(vec![("Bridge", u(2), br)]);
        assert!(matches!(
            plan_bridge(&rep, &cfg()),
            Err(Error::DatapathMismatch { found, .. }) if found == "system"
        ));
        assert_eq!(
            plan_bridge(&rep, &BridgeConfig::new("br-int", "system")).unwrap(),
            None
        );

        let mut br = good_bridge();
        br.insert("external_ids".into(), Datum::map([(OWNER_KEY, "other")]));
        let rep = replica_with(vec![("Bridge", u(2), br)]);
        assert!(matches!(
            plan_bridge(&rep, &cfg()),
            Err(Error::NotOwned { .. })
        ));
    }

    fn spec() -> TunnelSpec {
        TunnelSpec {
            peer: "node-2".into(),
            remote_ip: "192.0.2.2".parse().unwrap(),
            local_ip: Some("192.0.2.1".parse().unwrap()),
            bfd: false,
            cpath_down: false,
        }
    }

    fn with_tunnel(options: Datum, owner: &str) -> Replica {
        let ids = Datum::map([(OWNER_KEY, owner), (PEER_KEY, "node-2")]);
        replica_with(vec![
            ("Bridge", u(2), good_bridge()),
            (
                "Port",
                u(10),
                row([
                    ("name", Datum::string("vx-node-2")),
                    ("interfaces", Datum::uuid(u(11))),
                    ("external_ids", ids.clone()),
                ]),
            ),
            (
                "Interface",
                u(11),
                row([
                    ("name", Datum::string("vx-node-2")),
                    ("type", Datum::string("vxlan")),
                    ("options", options),
                    ("external_ids", ids),
                    ("ofport", Datum::integer(3)),
                ]),
            ),
        ])
    }

    #[test]
    fn tunnel_create_update_noop() {
        let rep = replica_with(vec![("Bridge", u(2), good_bridge())]);
        let ops = plan_tunnel(&rep, &cfg(), &spec()).unwrap().unwrap();
        assert_eq!(ops.len(), 5);
        let Operation::Insert { row: iface, .. } = &ops[2] else {
            panic!()
        };
        assert_eq!(iface["options"].map_get("remote_ip"), Some("192.0.2.2"));
        assert_eq!(iface["options"].map_get("local_ip"), Some("192.0.2.1"));
        assert_eq!(iface["options"].map_get("key"), Some("flow"));

        let exact = Datum::map([
            ("remote_ip", "192.0.2.2"),
            ("key", "flow"),
            ("local_ip", "192.0.2.1"),
        ]);
        assert_eq!(
            plan_tunnel(&with_tunnel(exact, "stacknet"), &cfg(), &spec()).unwrap(),
            None
        );

        // The peer moved: only the interface's options change.
        let old = Datum::map([("remote_ip", "192.0.2.99"), ("key", "flow")]);
        let ops = plan_tunnel(&with_tunnel(old, "stacknet"), &cfg(), &spec())
            .unwrap()
            .unwrap();
        assert_eq!(ops.len(), 1);
        assert!(matches!(&ops[0], Operation::Update { table, .. } if table == "Interface"));

        let foreign = with_tunnel(Datum::map([("remote_ip", "192.0.2.2")]), "someone");
        assert!(matches!(
            plan_tunnel(&foreign, &cfg(), &spec()),
            Err(Error::NotOwned { .. })
        ));
        assert!(plan_tunnel(&Replica::new(), &cfg(), &spec()).is_err());
    }

    #[test]
    fn list_and_remove_tunnels() {
        let rep = with_tunnel(Datum::map([("remote_ip", "192.0.2.2")]), "stacknet");
        let t = tunnels(&rep, &cfg());
        assert_eq!(
            t,
            vec![TunnelPort {
                peer: "node-2".into(),
                port: "vx-node-2".into(),
                remote_ip: Some("192.0.2.2".into()),
                local_ip: None,
                ofport: Some(3),
                bfd: false,
                cpath_down: false,
            }]
        );
        assert!(plan_remove_tunnels(&rep, &cfg(), |p| p == "node-2").is_none());
        let (ops, names) = plan_remove_tunnels(&rep, &cfg(), |_| false).unwrap();
        assert_eq!(names, ["vx-node-2"]);
        let Operation::Mutate { mutations, .. } = &ops[0] else {
            panic!()
        };
        assert_eq!(mutations[0].value, Datum::set([u(10)]));

        // Ports someone else owns are neither listed nor removed.
        let foreign = with_tunnel(Datum::map([("remote_ip", "192.0.2.2")]), "other");
        assert!(tunnels(&foreign, &cfg()).is_empty());
        assert!(plan_remove_tunnels(&foreign, &cfg(), |_| false).is_none());
    }
}
