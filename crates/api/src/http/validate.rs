//! Validation and allocation rules, pure functions of their inputs.
//!
//! Everything here is checked before any store write; a failure is a 422
//! [`Problem`] naming the field. Uniqueness is not checked here: it lives in
//! the store (index keys, compare-and-swap).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use proto::Mac;
use rand::Rng;

use super::problem::Problem;
use crate::model::{AllowedAddressPair, Direction, Protocol, SecurityGroupRule};

/// Longest name, the DNS label limit.
const MAX_NAME_LEN: usize = 63;
/// A VPC may have this many CIDRs.
pub const MAX_VPC_CIDRS: usize = 16;
/// Shortest and longest prefixes of VPC and subnet CIDRs. A /29 still leaves
/// five addresses for NICs next to the gateway.
pub const MIN_PREFIX_LEN: u8 = 8;
pub const MAX_PREFIX_LEN: u8 = 29;
pub const MIN_MTU: u16 = 576;
pub const MAX_MTU: u16 = 8950;
/// 1500 less the VXLAN headers.
pub const DEFAULT_MTU: u16 = 1500 - crate::model::VXLAN_OVERHEAD;
pub const MAX_DNS_SERVERS: usize = 8;
/// VNIs are 24 bits; 0 is not used.
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// Address blocks no tenant network may use: "this network", loopback,
/// link-local (metadata services live there), multicast and reserved.
const RESERVED: [(Ipv4Addr, u8); 5] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// A node or Set name: a lowercase DNS label (RFC 1123).
pub fn dns_label(field: &str, s: &str) -> Result<(), Problem> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid(
            field,
            format!(
                "`{field}` {s:?} is not a DNS label: use 1 to {MAX_NAME_LEN} lowercase letters, \
                 digits and '-', not starting or ending with '-'"
            ),
        ))
    }
}

/// A display name of a VPC, subnet or NIC.
pub fn name(field: &str, s: &str) -> Result<(), Problem> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid(
            field,
            format!(
                "`{field}` {s:?} is not a valid name: use 1 to {MAX_NAME_LEN} letters, digits, \
                 '-', '_' or '.', starting with a letter or digit"
            ),
        ))
    }
}

/// An IPv4 CIDR of a VPC or subnet: canonical, of a usable size, outside
/// the reserved blocks.
pub fn cidr(field: &str, s: &str) -> Result<Ipv4Net, Problem> {
    let net: Ipv4Net = s.trim().parse().map_err(|_| {
        Problem::invalid(
            field,
            format!("`{field}` {s:?} is not an IPv4 CIDR like 10.0.0.0/16"),
        )
    })?;
    if net.trunc() != net {
        return Err(Problem::invalid(
            field,
            format!(
                "`{field}` {s:?} has host bits set; the network is {}",
                net.trunc()
            ),
        ));
    }
    if !(MIN_PREFIX_LEN..=MAX_PREFIX_LEN).contains(&net.prefix_len()) {
        return Err(Problem::invalid(
            field,
            format!(
                "`{field}` {s:?}: the prefix length must be between /{MIN_PREFIX_LEN} and \
                 /{MAX_PREFIX_LEN}"
            ),
        ));
    }
    for (addr, len) in RESERVED {
        let reserved = Ipv4Net::new(addr, len).unwrap_or_default();
        if overlaps(net, reserved) {
            return Err(Problem::invalid(
                field,
                format!("`{field}` {s:?} overlaps the reserved block {reserved}"),
            ));
        }
    }
    Ok(net)
}

pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The CIDRs of a VPC: one or more, none overlapping another.
pub fn vpc_cidrs(raw: &[String]) -> Result<Vec<Ipv4Net>, Problem> {
    if raw.is_empty() {
        return Err(Problem::invalid("cidrs", "`cidrs` needs at least one CIDR"));
    }
    if raw.len() > MAX_VPC_CIDRS {
        return Err(Problem::invalid(
            "cidrs",
            format!(
                "`cidrs` has {} CIDRs; at most {MAX_VPC_CIDRS} are allowed",
                raw.len()
            ),
        ));
    }
    let mut nets: Vec<Ipv4Net> = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        let field = format!("cidrs[{i}]");
        let net = cidr(&field, s)?;
        if let Some((j, other)) = nets.iter().enumerate().find(|(_, o)| overlaps(net, **o)) {
            return Err(Problem::invalid(
                field.clone(),
                format!("`{field}` {net} overlaps `cidrs[{j}]` {other}"),
            ));
        }
        nets.push(net);
    }
    Ok(nets)
}

pub fn ipv4(field: &str, s: &str) -> Result<Ipv4Addr, Problem> {
    s.trim().parse().map_err(|_| {
        Problem::invalid(
            field,
            format!("`{field}` {s:?} is not an IPv4 address like 10.0.1.10"),
        )
    })
}

/// An address a host may have (underlay IP, DNS server).
pub fn unicast_ipv4(field: &str, s: &str) -> Result<Ipv4Addr, Problem> {
    let ip = ipv4(field, s)?;
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return Err(Problem::invalid(
            field,
            format!("`{field}` {ip} is not a unicast address"),
        ));
    }
    Ok(ip)
}

/// Whether `ip` may be given to a host in `net`: inside, and neither the
/// network nor the broadcast address.
pub fn host_in(net: Ipv4Net, ip: Ipv4Addr) -> Result<(), String> {
    if !net.contains(&ip) {
        return Err(format!("{ip} is outside the subnet {net}"));
    }
    if ip == net.network() {
        return Err(format!("{ip} is the network address of {net}"));
    }
    if ip == net.broadcast() {
        return Err(format!("{ip} is the broadcast address of {net}"));
    }
    Ok(())
}

/// The first host address of `net`, the default gateway.
pub fn first_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).saturating_add(1))
}

/// The lowest host address of `net` that is neither `gateway` nor `used`.
pub fn lowest_free(net: Ipv4Net, gateway: Ipv4Addr, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let first = u32::from(net.network()).checked_add(1)?;
    let last = u32::from(net.broadcast()).checked_sub(1)?;
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| *ip != gateway && !used.contains(ip))
}

pub fn dns_servers(raw: &[String]) -> Result<Vec<Ipv4Addr>, Problem> {
    if raw.len() > MAX_DNS_SERVERS {
        return Err(Problem::invalid(
            "dns_servers",
            format!(
                "`dns_servers` has {} entries; at most {MAX_DNS_SERVERS}",
                raw.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        let field = format!("dns_servers[{i}]");
        let ip = unicast_ipv4(&field, s)?;
        if out.contains(&ip) {
            return Err(Problem::invalid(
                field.clone(),
                format!("`{field}` {ip} is listed twice"),
            ));
        }
        out.push(ip);
    }
    Ok(out)
}

pub fn mtu(m: u16) -> Result<u16, Problem> {
    if (MIN_MTU..=MAX_MTU).contains(&m) {
        Ok(m)
    } else {
        Err(Problem::invalid(
            "mtu",
            format!("`mtu` {m} is out of range {MIN_MTU}..={MAX_MTU}"),
        ))
    }
}

/// A requested NIC MAC: unicast and not all zeros.
pub fn mac(field: &str, s: &str) -> Result<Mac, Problem> {
    let m: Mac = s
        .trim()
        .to_ascii_lowercase()
        .parse()
        .map_err(|e: proto::MacParseError| Problem::invalid(field, format!("`{field}`: {e}")))?;
    if m.0[0] & 1 == 1 {
        return Err(Problem::invalid(
            field,
            format!("`{field}` {m} is a multicast address; a NIC needs a unicast MAC"),
        ));
    }
    if m.0 == [0; 6] {
        return Err(Problem::invalid(
            field,
            format!("`{field}` {m} is all zeros"),
        ));
    }
    Ok(m)
}

/// A random locally administered unicast MAC, `02:xx:xx:xx:xx:xx`.
pub fn random_mac() -> Mac {
    let mut m = [0u8; 6];
    rand::thread_rng().fill(&mut m[1..]);
    m[0] = 0x02;
    Mac(m)
}

pub fn random_vni() -> u32 {
    rand::thread_rng().gen_range(1..=MAX_VNI)
}

/// A new resource id: `prefix` (`vpc`, `subnet`, `nic`), '-', 16 hex digits.
pub fn new_id(prefix: &str) -> String {
    let bytes: [u8; 8] = rand::thread_rng().gen();
    format!("{prefix}-{}", hex::encode(bytes))
}

/// Whether `id` has the shape [`new_id`] makes; anything else cannot exist,
/// and is never used to build a store key.
pub fn is_id(prefix: &str, id: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|hexpart| {
            hexpart.len() == 16
                && hexpart
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// At most this many rules in one security group.
pub const MAX_RULES_PER_GROUP: usize = 1000;
/// At most this many security groups on one NIC.
pub const MAX_GROUPS_PER_NIC: usize = 16;
/// At most this many allowed address pairs on one NIC.
pub const MAX_ADDRESS_PAIRS: usize = 10;
/// Longest free-text description.
pub const MAX_DESCRIPTION_LEN: usize = 255;

/// At most this many tags on one resource.
pub const MAX_TAGS: usize = 50;

/// A tag key: 1 to 128 of `A-Z a-z 0-9 . _ : / -`.
pub fn is_tag_key(k: &str) -> bool {
    (1..=128).contains(&k.len())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-'))
}

/// Tags: at most [`MAX_TAGS`], keys per [`is_tag_key`], values up to 256
/// characters without control characters or commas (list filters split on
/// commas).
pub fn tags(tags: &std::collections::BTreeMap<String, String>) -> Result<(), Problem> {
    if tags.len() > MAX_TAGS {
        return Err(Problem::invalid(
            "tags",
            format!("at most {MAX_TAGS} tags per resource"),
        ));
    }
    for (k, v) in tags {
        if !is_tag_key(k) {
            return Err(Problem::invalid(
                format!("tags.{k}"),
                format!("tag key {k:?}: use 1 to 128 of A-Z a-z 0-9 . _ : / -"),
            ));
        }
        if v.chars().count() > 256 || v.chars().any(|c| c.is_control() || c == ',') {
            return Err(Problem::invalid(
                format!("tags.{k}"),
                format!(
                    "tag {k:?}: a value is at most 256 characters, no control characters or commas"
                ),
            ));
        }
    }
    Ok(())
}

pub fn description(field: &str, s: &str) -> Result<(), Problem> {
    if s.len() > MAX_DESCRIPTION_LEN || s.chars().any(char::is_control) {
        return Err(Problem::invalid(
            field,
            format!(
                "`{field}` must be at most {MAX_DESCRIPTION_LEN} bytes without control characters"
            ),
        ));
    }
    Ok(())
}

/// An IPv4 address (taken as /32) or prefix given by a tenant for a rule or
/// an address pair: canonical, and IPv4 (an IPv6 one is named as such).
pub fn ipv4_prefix(field: &str, s: &str) -> Result<Ipv4Net, Problem> {
    let t = s.trim();
    if t.contains(':') {
        return Err(Problem::invalid(
            field,
            format!("`{field}` {s:?} is an IPv6 address or prefix; only IPv4 is supported"),
        ));
    }
    let net = match t.parse::<Ipv4Net>() {
        Ok(n) => n,
        Err(_) => match t.parse::<Ipv4Addr>() {
            Ok(ip) => Ipv4Net::new(ip, 32).unwrap_or_default(),
            Err(_) => {
                return Err(Problem::invalid(
                    field,
                    format!("`{field}` {s:?} is not an IPv4 address or CIDR like 10.0.0.0/24"),
                ))
            }
        },
    };
    if net.trunc() != net {
        return Err(Problem::invalid(
            field,
            format!(
                "`{field}` {s:?} has host bits set; the network is {}",
                net.trunc()
            ),
        ));
    }
    Ok(net)
}

/// A rule as requested, before the store-dependent checks (the remote
/// group must exist in the same VPC; no duplicate in the group).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSpec {
    pub direction: Option<Direction>,
    pub protocol: Option<Protocol>,
    pub port_range_min: Option<u16>,
    pub port_range_max: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub remote_cidr: Option<String>,
    pub remote_group_id: Option<String>,
    pub description: Option<String>,
}

/// Checks a rule on its own and gives it an id. `at` prefixes field names
/// (`rules[3].`) when the rule is part of a larger request.
pub fn rule(at: &str, r: &RuleSpec) -> Result<SecurityGroupRule, Problem> {
    let f = |name: &str| format!("{at}{name}");
    let direction = r.direction.ok_or_else(|| {
        Problem::invalid(
            f("direction"),
            format!("`{}` is required: ingress or egress", f("direction")),
        )
    })?;
    let protocol = r.protocol.unwrap_or_default();
    let ports = r.port_range_min.is_some() || r.port_range_max.is_some();
    match protocol {
        Protocol::Tcp | Protocol::Udp => {}
        _ if ports => {
            let field = if r.port_range_min.is_some() {
                f("port_range_min")
            } else {
                f("port_range_max")
            };
            return Err(Problem::invalid(
                field,
                format!(
                    "a port range needs protocol tcp or udp, not {}",
                    protocol_name(protocol)
                ),
            ));
        }
        _ => {}
    }
    let (port_range_min, port_range_max) = match (r.port_range_min, r.port_range_max) {
        (None, None) => (None, None),
        (None, Some(_)) => {
            return Err(Problem::invalid(
                f("port_range_min"),
                format!(
                    "`{}` is required with `{}`",
                    f("port_range_min"),
                    f("port_range_max")
                ),
            ))
        }
        (Some(min), max) => {
            let max = max.unwrap_or(min);
            if min == 0 {
                return Err(Problem::invalid(
                    f("port_range_min"),
                    format!("`{}` must be between 1 and 65535", f("port_range_min")),
                ));
            }
            if min > max {
                return Err(Problem::invalid(
                    f("port_range_min"),
                    format!(
                        "`{}` {min} is greater than `{}` {max}",
                        f("port_range_min"),
                        f("port_range_max")
                    ),
                ));
            }
            (Some(min), Some(max))
        }
    };
    if protocol != Protocol::Icmp && (r.icmp_type.is_some() || r.icmp_code.is_some()) {
        let field = if r.icmp_type.is_some() {
            f("icmp_type")
        } else {
            f("icmp_code")
        };
        return Err(Problem::invalid(
            field,
            format!(
                "an ICMP type or code needs protocol icmp, not {}",
                protocol_name(protocol)
            ),
        ));
    }
    if r.icmp_code.is_some() && r.icmp_type.is_none() {
        return Err(Problem::invalid(
            f("icmp_code"),
            format!("`{}` needs `{}`", f("icmp_code"), f("icmp_type")),
        ));
    }
    if r.remote_cidr.is_some() && r.remote_group_id.is_some() {
        return Err(Problem::invalid(
            f("remote_group_id"),
            format!(
                "give `{}` or `{}`, not both",
                f("remote_cidr"),
                f("remote_group_id")
            ),
        ));
    }
    let remote_cidr = r
        .remote_cidr
        .as_deref()
        .map(|c| ipv4_prefix(&f("remote_cidr"), c))
        .transpose()?;
    if let Some(g) = &r.remote_group_id {
        if !is_id("sg", g) {
            return Err(Problem::invalid(
                f("remote_group_id"),
                format!(
                    "`{}`: security group {g:?} does not exist",
                    f("remote_group_id")
                ),
            ));
        }
    }
    let description = r.description.clone().unwrap_or_default();
    self::description(&f("description"), &description)?;
    Ok(SecurityGroupRule {
        id: new_id("sgr"),
        direction,
        protocol,
        port_range_min,
        port_range_max,
        icmp_type: r.icmp_type,
        icmp_code: r.icmp_code,
        remote_cidr,
        remote_group_id: r.remote_group_id.clone(),
        description,
    })
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Any => "any",
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Icmp => "icmp",
    }
}

/// The security group ids of a NIC: well-formed, no repeats, not too many.
/// Whether they exist (in the NIC's VPC) is checked against the store.
pub fn security_group_ids(raw: &[String]) -> Result<Vec<String>, Problem> {
    if raw.len() > MAX_GROUPS_PER_NIC {
        return Err(Problem::invalid(
            "security_groups",
            format!(
                "`security_groups` has {} groups; at most {MAX_GROUPS_PER_NIC}",
                raw.len()
            ),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for (i, id) in raw.iter().enumerate() {
        let field = format!("security_groups[{i}]");
        if !is_id("sg", id) {
            return Err(Problem::invalid(
                field.clone(),
                format!("`{field}`: security group {id:?} does not exist"),
            ));
        }
        if out.contains(id) {
            return Err(Problem::invalid(
                field.clone(),
                format!("`{field}` {id:?} is listed twice"),
            ));
        }
        out.push(id.clone());
    }
    Ok(out)
}

/// An allowed address pair as requested.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PairSpec {
    pub ip_address: String,
    pub mac_address: Option<String>,
}

pub fn address_pairs(raw: &[PairSpec]) -> Result<Vec<AllowedAddressPair>, Problem> {
    if raw.len() > MAX_ADDRESS_PAIRS {
        return Err(Problem::invalid(
            "allowed_address_pairs",
            format!(
                "`allowed_address_pairs` has {} entries; at most {MAX_ADDRESS_PAIRS}",
                raw.len()
            ),
        ));
    }
    let mut out: Vec<AllowedAddressPair> = Vec::with_capacity(raw.len());
    for (i, p) in raw.iter().enumerate() {
        let at = format!("allowed_address_pairs[{i}]");
        let ip_address = ipv4_prefix(&format!("{at}.ip_address"), &p.ip_address)?;
        let mac_address = p
            .mac_address
            .as_deref()
            .map(|m| mac(&format!("{at}.mac_address"), m))
            .transpose()?;
        let pair = AllowedAddressPair {
            ip_address,
            mac_address,
        };
        if out.contains(&pair) {
            return Err(Problem::invalid(
                at.clone(),
                format!("`{at}` is listed twice"),
            ));
        }
        out.push(pair);
    }
    Ok(out)
}

/// Now, as RFC 3339 UTC with seconds (`2025-01-31T12:00:00Z`).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "node-1", "n0", &"a".repeat(63)] {
            assert!(dns_label("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Node", "a_b", "a.b", "a/b", &"a".repeat(64)] {
            let p = dns_label("name", bad).unwrap_err();
            assert_eq!(p.status, 422);
            assert_eq!(p.field.as_deref(), Some("name"));
        }
    }

    #[test]
    fn names() {
        assert!(name("name", "web.tier_1-a").is_ok());
        assert!(name("name", "_x").is_err());
        assert!(name("name", "a b").is_err());
        assert!(name("name", "a/b").is_err());
    }

    #[test]
    fn cidrs_are_canonical_usable_and_unreserved() {
        assert_eq!(cidr("cidr", "10.0.0.0/16").unwrap(), net("10.0.0.0/16"));
        let p = cidr("cidr", "10.0.0.5/16").unwrap_err();
        assert!(p.detail.contains("host bits"), "{}", p.detail);
        assert!(p.detail.contains("10.0.0.0/16"));
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0",
            "banana",
            "10.0.0.0/7",
            "10.0.0.0/30",
        ] {
            assert_eq!(
                cidr("cidr", bad).unwrap_err().field.as_deref(),
                Some("cidr")
            );
        }
        for reserved in ["127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/8", "0.0.0.0/8"] {
            let p = cidr("cidr", reserved).unwrap_err();
            assert!(p.detail.contains("reserved"), "{reserved}: {}", p.detail);
        }
    }

    #[test]
    fn vpc_cidrs_must_not_overlap_each_other() {
        let ok = vpc_cidrs(&["10.0.0.0/16".into(), "10.1.0.0/16".into()]).unwrap();
        assert_eq!(ok.len(), 2);
        let p = vpc_cidrs(&["10.0.0.0/16".into(), "10.0.128.0/17".into()]).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("cidrs[1]"));
        assert!(p.detail.contains("overlaps"));
        let p = vpc_cidrs(&["10.0.0.0/16".into(), "nope".into()]).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("cidrs[1]"));
        assert_eq!(vpc_cidrs(&[]).unwrap_err().field.as_deref(), Some("cidrs"));
    }

    #[test]
    fn overlap_is_symmetric() {
        let a = net("10.0.0.0/16");
        let b = net("10.0.5.0/24");
        let c = net("10.1.0.0/24");
        assert!(overlaps(a, b) && overlaps(b, a));
        assert!(!overlaps(a, c) && !overlaps(c, a));
        assert!(overlaps(a, a));
    }

    #[test]
    fn hosts_and_allocation() {
        let n = net("10.0.1.0/29");
        assert!(host_in(n, "10.0.1.1".parse().unwrap()).is_ok());
        assert!(host_in(n, "10.0.1.0".parse().unwrap())
            .unwrap_err()
            .contains("network"));
        assert!(host_in(n, "10.0.1.7".parse().unwrap())
            .unwrap_err()
            .contains("broadcast"));
        assert!(host_in(n, "10.0.2.1".parse().unwrap())
            .unwrap_err()
            .contains("outside"));
        let gw = first_host(n);
        assert_eq!(gw, "10.0.1.1".parse::<Ipv4Addr>().unwrap());
        let mut used = BTreeSet::new();
        let mut got = vec![];
        while let Some(ip) = lowest_free(n, gw, &used) {
            used.insert(ip);
            got.push(ip.to_string());
        }
        assert_eq!(
            got,
            ["10.0.1.2", "10.0.1.3", "10.0.1.4", "10.0.1.5", "10.0.1.6"]
        );
    }

    #[test]
    fn macs() {
        for _ in 0..100 {
            let m = random_mac();
            assert_eq!(m.0[0], 0x02);
        }
        assert!(mac("mac", "02:00:00:00:00:01").is_ok());
        assert!(mac("mac", "01:00:5e:00:00:01")
            .unwrap_err()
            .detail
            .contains("multicast"));
        assert!(mac("mac", "00:00:00:00:00:00").is_err());
        assert!(mac("mac", "02:00:00:00:00").is_err());
    }

    #[test]
    fn ids() {
        let id = new_id("vpc");
        assert!(is_id("vpc", &id), "{id}");
        assert!(!is_id("subnet", &id));
        assert!(!is_id("vpc", "vpc-0123"));
        assert!(!is_id("vpc", "vpc-0123456789ABCDEF"));
        assert!(!is_id("vpc", "vpc-0123456789abcde/"));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn mtu_range() {
        assert_eq!(DEFAULT_MTU, 1450);
        assert!(mtu(576).is_ok() && mtu(8950).is_ok());
        assert!(mtu(575).is_err() && mtu(8951).is_err());
    }

    fn spec(dir: Direction, proto: Protocol) -> RuleSpec {
        RuleSpec {
            direction: Some(dir),
            protocol: Some(proto),
            ..RuleSpec::default()
        }
    }

    #[test]
    fn rules_are_checked_field_by_field() {
        let ok = rule(
            "",
            &RuleSpec {
                port_range_min: Some(22),
                remote_cidr: Some("192.0.2.7".into()),
                ..spec(Direction::Ingress, Protocol::Tcp)
            },
        )
        .unwrap();
        assert_eq!((ok.port_range_min, ok.port_range_max), (Some(22), Some(22)));
        assert_eq!(ok.remote_cidr, Some(net("192.0.2.7/32")));
        assert!(is_id("sgr", &ok.id));

        let cases: Vec<(RuleSpec, &str, &str)> = vec![
            (RuleSpec::default(), "direction", "required"),
            (
                RuleSpec {
                    port_range_min: Some(1),
                    ..spec(Direction::Ingress, Protocol::Icmp)
                },
                "port_range_min",
                "tcp or udp",
            ),
            (
                RuleSpec {
                    port_range_max: Some(80),
                    ..spec(Direction::Ingress, Protocol::Any)
                },
                "port_range_max",
                "tcp or udp",
            ),
            (
                RuleSpec {
                    port_range_min: Some(90),
                    port_range_max: Some(80),
                    ..spec(Direction::Ingress, Protocol::Udp)
                },
                "port_range_min",
                "greater than",
            ),
            (
                RuleSpec {
                    port_range_max: Some(80),
                    ..spec(Direction::Ingress, Protocol::Udp)
                },
                "port_range_min",
                "required",
            ),
            (
                RuleSpec {
                    icmp_type: Some(8),
                    ..spec(Direction::Egress, Protocol::Tcp)
                },
                "icmp_type",
                "needs protocol icmp",
            ),
            (
                RuleSpec {
                    icmp_code: Some(0),
                    ..spec(Direction::Egress, Protocol::Icmp)
                },
                "icmp_code",
                "needs",
            ),
            (
                RuleSpec {
                    remote_cidr: Some("2001:db8::/32".into()),
                    ..spec(Direction::Egress, Protocol::Any)
                },
                "remote_cidr",
                "IPv6",
            ),
            (
                RuleSpec {
                    remote_cidr: Some("10.0.0.1/8".into()),
                    ..spec(Direction::Egress, Protocol::Any)
                },
                "remote_cidr",
                "host bits",
            ),
            (
                RuleSpec {
                    remote_cidr: Some("10.0.0.0/8".into()),
                    remote_group_id: Some("sg-0123456789abcdef".into()),
                    ..spec(Direction::Egress, Protocol::Any)
                },
                "remote_group_id",
                "not both",
            ),
            (
                RuleSpec {
                    remote_group_id: Some("default".into()),
                    ..spec(Direction::Egress, Protocol::Any)
                },
                "remote_group_id",
                "does not exist",
            ),
        ];
        for (spec, field, words) in cases {
            let p = rule("rules[2].", &spec).unwrap_err();
            assert_eq!(p.status, 422, "{spec:?}");
            assert_eq!(
                p.field.as_deref(),
                Some(format!("rules[2].{field}").as_str()),
                "{spec:?}: {}",
                p.detail
            );
            assert!(p.detail.contains(words), "{spec:?}: {}", p.detail);
        }
    }

    #[test]
    fn address_pairs_and_group_lists() {
        let pairs = address_pairs(&[
            PairSpec {
                ip_address: "10.0.1.100".into(),
                mac_address: None,
            },
            PairSpec {
                ip_address: "10.0.9.0/24".into(),
                mac_address: Some("02:00:00:00:00:99".into()),
            },
        ])
        .unwrap();
        assert_eq!(pairs[0].ip_address, net("10.0.1.100/32"));
        assert_eq!(pairs[1].mac_address, Some(Mac([2, 0, 0, 0, 0, 0x99])));
        let p = address_pairs(&[PairSpec {
            ip_address: "fe80::1".into(),
            mac_address: None,
        }])
        .unwrap_err();
        assert_eq!(
            p.field.as_deref(),
            Some("allowed_address_pairs[0].ip_address")
        );
        let dup = PairSpec {
            ip_address: "10.0.1.5".into(),
            mac_address: None,
        };
        assert!(address_pairs(&[dup.clone(), dup])
            .unwrap_err()
            .detail
            .contains("twice"));

        let g = "sg-0123456789abcdef".to_string();
        let one = security_group_ids(std::slice::from_ref(&g)).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0], g);
        assert!(security_group_ids(&[g.clone(), g]).is_err());
        assert!(security_group_ids(&["nope".into()]).is_err());
    }
}
