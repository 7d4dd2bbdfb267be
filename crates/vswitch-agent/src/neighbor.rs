//! The external side's neighbours: resolving each external network's
//! gateway by ARP, and announcing the addresses this node answers for
//! (gratuitous ARP) when it starts answering. Sans-IO: frames in, frames
//! and decisions out; the agent sends and receives them on the external
//! ports.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use proto::Mac;
use serde::{Deserialize, Serialize};

const ETH_TYPE_ARP: u16 = 0x0806;
const ETH_TYPE_IPV4: u16 = 0x0800;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const BROADCAST: Mac = Mac([0xff; 6]);
/// Ethernet + ARP for IPv4, unpadded.
const ARP_FRAME_LEN: usize = 14 + 28;

/// An ARP packet for IPv4 over Ethernet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sha: Mac,
    pub spa: Ipv4Addr,
    pub tha: Mac,
    pub tpa: Ipv4Addr,
}

fn mac_at(b: &[u8], at: usize) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    Mac(m)
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

impl Arp {
    /// The ARP packet in an Ethernet frame; `None` for anything else.
    pub fn parse(frame: &[u8]) -> Option<Arp> {
        if frame.len() < ARP_FRAME_LEN {
            return None;
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let a = &frame[14..];
        let htype = u16::from_be_bytes([a[0], a[1]]);
        let ptype = u16::from_be_bytes([a[2], a[3]]);
        if ethertype != ETH_TYPE_ARP
            || htype != 1
            || ptype != ETH_TYPE_IPV4
            || a[4] != 6
            || a[5] != 4
        {
            return None;
        }
        Some(Arp {
            op: u16::from_be_bytes([a[6], a[7]]),
            sha: mac_at(a, 8),
            spa: ip_at(a, 14),
            tha: mac_at(a, 18),
            tpa: ip_at(a, 24),
        })
    }

    /// "Who has `target`? Tell `ip` at `mac`", broadcast.
    pub fn request(mac: Mac, ip: Ipv4Addr, target: Ipv4Addr) -> Arp {
        Arp {
            op: ARP_REQUEST,
            sha: mac,
            spa: ip,
            tha: Mac([0; 6]),
            tpa: target,
        }
    }

    /// A gratuitous ARP: "`ip` is at `mac`", to everyone, so neighbours
    /// update their caches (a request with sender = target, which every
    /// stack accepts).
    pub fn announce(mac: Mac, ip: Ipv4Addr) -> Arp {
        Arp::request(mac, ip, ip)
    }

    pub fn is_reply(&self) -> bool {
        self.op == ARP_REPLY
    }

    /// The Ethernet frame: to the target's MAC for replies, else broadcast.
    pub fn to_frame(&self) -> Vec<u8> {
        let dst = if self.op == ARP_REPLY {
            self.tha
        } else {
            BROADCAST
        };
        let mut f = Vec::with_capacity(ARP_FRAME_LEN);
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&self.sha.0);
        f.extend_from_slice(&ETH_TYPE_ARP.to_be_bytes());
        f.extend_from_slice(&1u16.to_be_bytes());
        f.extend_from_slice(&ETH_TYPE_IPV4.to_be_bytes());
        f.extend_from_slice(&[6, 4]);
        f.extend_from_slice(&self.op.to_be_bytes());
        f.extend_from_slice(&self.sha.0);
        f.extend_from_slice(&self.spa.octets());
        f.extend_from_slice(&self.tha.0);
        f.extend_from_slice(&self.tpa.octets());
        f
    }
}

/// Ask again this often while a gateway is unresolved ...
pub const RETRY: Duration = Duration::from_secs(1);
/// ... and this often once it is (a replaced router gets a new MAC).
pub const REFRESH: Duration = Duration::from_secs(30);
/// Active addresses are announced again this often, so a neighbour that
/// missed the first announcement (or learnt a stale one) recovers.
pub const REANNOUNCE: Duration = Duration::from_secs(10);

/// An external network's gateway as the node needs it resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub network_id: String,
    pub gateway_ip: Ipv4Addr,
    /// The address the request is sent from (one this node answers for).
    pub from: (Ipv4Addr, Mac),
}

/// A frame to send out of the external port of `network_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub network_id: String,
    pub frame: Vec<u8>,
}

/// What the node knows of the external networks' gateways, and what it has
/// announced.
#[derive(Debug, Default)]
pub struct Neighbors {
    /// Network id → resolved gateway MAC.
    resolved: BTreeMap<String, Mac>,
    /// Network id → when we last asked.
    asked: BTreeMap<String, Instant>,
    /// (network id, ip) → (mac, when last announced).
    announced: BTreeMap<(String, Ipv4Addr), (Mac, Instant)>,
}

/// The part worth keeping across agent restarts: without it a restarted
/// agent could not render the way out until the gateway answered again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub resolved: BTreeMap<String, Mac>,
}

impl Neighbors {
    pub fn restore(saved: Saved) -> Self {
        Neighbors {
            resolved: saved.resolved,
            ..Neighbors::default()
        }
    }

    pub fn saved(&self) -> Saved {
        Saved {
            resolved: self.resolved.clone(),
        }
    }

    pub fn resolved(&self) -> &BTreeMap<String, Mac> {
        &self.resolved
    }

    /// Takes an ARP reply seen on `network_id`'s port: `true` if it changed
    /// what the network's gateway resolves to.
    pub fn on_reply(&mut self, network_id: &str, gateway_ip: Ipv4Addr, arp: &Arp) -> bool {
        if !arp.is_reply() || arp.spa != gateway_ip {
            return false;
        }
        self.resolved.insert(network_id.to_string(), arp.sha) != Some(arp.sha)
    }

    /// The requests and announcements due at `now`, given what the node
    /// wants resolved and the addresses it answers for now.
    pub fn poll(
        &mut self,
        now: Instant,
        wanted: &[Wanted],
        answering: &[(String, Ipv4Addr, Mac)],
    ) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for w in wanted {
            let every = if self.resolved.contains_key(&w.network_id) {
                REFRESH
            } else {
                RETRY
            };
            let due = self
                .asked
                .get(&w.network_id)
                .is_none_or(|at| now.duration_since(*at) >= every);
            if due {
                self.asked.insert(w.network_id.clone(), now);
                let (ip, mac) = w.from;
                out.push(Outgoing {
                    network_id: w.network_id.clone(),
                    frame: Arp::request(mac, ip, w.gateway_ip).to_frame(),
                });
            }
        }
        let keep: std::collections::BTreeSet<(String, Ipv4Addr)> = answering
            .iter()
            .map(|(n, ip, _)| (n.clone(), *ip))
            .collect();
        self.announced.retain(|k, _| keep.contains(k));
        for (network_id, ip, mac) in answering {
            let key = (network_id.clone(), *ip);
            let due = match self.announced.get(&key) {
                Some((old, at)) => old != mac || now.duration_since(*at) >= REANNOUNCE,
                None => true,
            };
            if due {
                self.announced.insert(key, (*mac, now));
                out.push(Outgoing {
                    network_id: network_id.clone(),
                    frame: Arp::announce(*mac, *ip).to_frame(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    const EIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    const EIP_MAC: Mac = Mac([2, 0xe1, 0, 0, 0, 1]);
    const GW_MAC: Mac = Mac([2, 0x99, 0, 0, 0, 1]);

    #[test]
    fn frames_round_trip_with_the_wire_layout() {
        let req = Arp::request(EIP_MAC, EIP, GW);
        let f = req.to_frame();
        assert_eq!(f.len(), 42);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[38..42], &GW.octets());
        assert_eq!(Arp::parse(&f), Some(req));
        let reply = Arp {
            op: ARP_REPLY,
            sha: GW_MAC,
            spa: GW,
            tha: EIP_MAC,
            tpa: EIP,
        };
        let f = reply.to_frame();
        assert_eq!(&f[0..6], &EIP_MAC.0);
        assert_eq!(Arp::parse(&f), Some(reply));
        // Padded to 60 bytes on the wire: still parsed.
        let mut padded = f.clone();
        padded.resize(60, 0);
        assert_eq!(Arp::parse(&padded), Some(reply));
    }

    #[test]
    fn garbage_is_not_arp() {
        assert_eq!(Arp::parse(&[]), None);
        let mut f = Arp::request(EIP_MAC, EIP, GW).to_frame();
        f[12] = 0x08;
        f[13] = 0x00;
        assert_eq!(Arp::parse(&f), None);
        let mut f = Arp::request(EIP_MAC, EIP, GW).to_frame();
        f[18] = 16; // hardware length
        assert_eq!(Arp::parse(&f), None);
        assert_eq!(Arp::parse(&f[..41]), None);
    }

    #[test]
    fn resolves_from_the_gateways_reply_only() {
        let mut n = Neighbors::default();
        let other = Arp {
            op: ARP_REPLY,
            sha: Mac([2, 0, 0, 0, 0, 7]),
            spa: Ipv4Addr::new(203, 0, 113, 7),
            tha: EIP_MAC,
            tpa: EIP,
        };
        assert!(!n.on_reply("x", GW, &other));
        assert!(!n.on_reply("x", GW, &Arp::request(GW_MAC, GW, EIP)));
        let reply = Arp {
            sha: GW_MAC,
            spa: GW,
            ..other
        };
        assert!(n.on_reply("x", GW, &reply));
        assert!(!n.on_reply("x", GW, &reply), "same answer: no change");
        assert_eq!(n.resolved().get("x"), Some(&GW_MAC));
        let back = Neighbors::restore(n.saved());
        assert_eq!(back.resolved().get("x"), Some(&GW_MAC));
    }

    #[test]
    fn asks_and_announces_on_schedule() {
        let mut n = Neighbors::default();
        let t0 = Instant::now();
        let wanted = [Wanted {
            network_id: "x".into(),
            gateway_ip: GW,
            from: (EIP, EIP_MAC),
        }];
        let answering = [("x".to_string(), EIP, EIP_MAC)];
        let first = n.poll(t0, &wanted, &answering);
        assert_eq!(first.len(), 2, "a request and an announcement");
        assert_eq!(Arp::parse(&first[0].frame).map(|a| a.tpa), Some(GW));
        let garp = Arp::parse(&first[1].frame).unwrap();
        assert_eq!((garp.spa, garp.tpa, garp.sha), (EIP, EIP, EIP_MAC));
        assert!(n.poll(t0 + RETRY / 2, &wanted, &answering).is_empty());
        // Unresolved: asked again after RETRY.
        assert_eq!(n.poll(t0 + RETRY, &wanted, &answering).len(), 1);
        // Resolved: not again before REFRESH.
        let reply = Arp {
            op: ARP_REPLY,
            sha: GW_MAC,
            spa: GW,
            tha: EIP_MAC,
            tpa: EIP,
        };
        n.on_reply("x", GW, &reply);
        assert!(n.poll(t0 + RETRY * 2, &wanted, &answering).is_empty());
        // Re-announced after REANNOUNCE, and at once for a new address.
        let later = n.poll(t0 + REANNOUNCE, &wanted, &answering);
        assert_eq!(later.len(), 1);
        let more = [
            answering[0].clone(),
            ("x".to_string(), Ipv4Addr::new(203, 0, 113, 11), EIP_MAC),
        ];
        assert_eq!(n.poll(t0 + REANNOUNCE, &wanted, &more).len(), 1);
        // Dropped then re-added: announced again at once.
        assert!(n.poll(t0 + REANNOUNCE, &wanted, &[]).is_empty());
        assert_eq!(n.poll(t0 + REANNOUNCE, &wanted, &answering).len(), 1);
    }
}
