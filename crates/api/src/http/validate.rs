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
}
