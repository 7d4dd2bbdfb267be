//! Flows as the pipeline renders them and the codec encodes them.
//!
//! A [`Flow`] is identified by `(table, priority, match)`: two flows with the
//! same key are the same OpenFlow entry, which is what reconciliation diffs
//! on. [`Match`] keeps its fields sorted so equal matches compare equal.

use std::net::Ipv4Addr;

use proto::Mac;

/// Reserved port numbers (OpenFlow 1.3+ `ofp_port_no`).
pub mod port {
    pub const IN_PORT: u32 = 0xffff_fff8;
    pub const TABLE: u32 = 0xffff_fff9;
    pub const NORMAL: u32 = 0xffff_fffa;
    pub const FLOOD: u32 = 0xffff_fffb;
    pub const ALL: u32 = 0xffff_fffc;
    pub const CONTROLLER: u32 = 0xffff_fffd;
    pub const LOCAL: u32 = 0xffff_fffe;
    pub const ANY: u32 = 0xffff_ffff;
}

/// `ct_state` bits (NXM_NX_CT_STATE). Match with [`Match::ct_state`],
/// e.g. `ct_state(TRK | EST, REL)` for `ct_state=+trk+est-rel`.
pub mod ct_state {
    pub const NEW: u32 = 0x01;
    pub const EST: u32 = 0x02;
    pub const REL: u32 = 0x04;
    pub const RPL: u32 = 0x08;
    pub const INV: u32 = 0x10;
    pub const TRK: u32 = 0x20;
    pub const SNAT: u32 = 0x40;
    pub const DNAT: u32 = 0x80;
}

/// TCP header flag bits for [`Field::TcpFlags`] (`tcp_flags=+syn-ack`).
pub mod tcp_flags {
    pub const FIN: u16 = 0x001;
    pub const SYN: u16 = 0x002;
    pub const RST: u16 = 0x004;
    pub const PSH: u16 = 0x008;
    pub const ACK: u16 = 0x010;
    pub const URG: u16 = 0x020;
    pub const ECE: u16 = 0x040;
    pub const CWR: u16 = 0x080;
    pub const NS: u16 = 0x100;
}

/// A field that can be matched, set or moved. Registers are the Nicira
/// `reg0`..`reg15` (32 bits each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    InPort,
    Metadata,
    EthDst,
    EthSrc,
    EthType,
    IpProto,
    IpDscp,
    NwTtl,
    Ipv4Src,
    Ipv4Dst,
    TcpSrc,
    TcpDst,
    UdpSrc,
    UdpDst,
    IcmpType,
    IcmpCode,
    ArpOp,
    ArpSpa,
    ArpTpa,
    ArpSha,
    ArpTha,
    TunnelId,
    TunIpv4Src,
    TunIpv4Dst,
    Reg(u8),
    CtState,
    CtZone,
    CtMark,
    CtLabel,
    /// Conntrack original-direction tuple (NXM_NX_CT_NW_PROTO and friends).
    /// OVS accepts them only next to a ct_state match that implies a valid
    /// connection (one of +new/+est/+rel/+rpl/+snat/+dnat, or +trk-inv);
    /// ct_tp_src/dst also need ct_nw_proto.
    CtNwProto,
    CtNwSrc,
    CtNwDst,
    CtTpSrc,
    CtTpDst,
    /// The id of the conjunctive match that matched (NXM_NX_CONJ_ID).
    ConjId,
    /// TCP flags, low 12 bits (ONFOXM_ET_TCP_FLAGS in OpenFlow 1.4).
    TcpFlags,
    /// A field this crate has no name for, kept by its OXM identity so a
    /// dumped flow still compares and re-encodes. `experimenter` is 0 unless
    /// `class` is 0xffff; `len` is the value's size in bytes (at most 16).
    Unknown {
        class: u16,
        field: u8,
        experimenter: u32,
        len: u8,
    },
}

impl Field {
    /// Width of the field in bits.
    pub fn bits(self) -> u16 {
        match self {
            Field::InPort => 32,
            Field::Metadata | Field::TunnelId => 64,
            Field::EthDst | Field::EthSrc | Field::ArpSha | Field::ArpTha => 48,
            Field::EthType | Field::ArpOp | Field::TcpSrc | Field::TcpDst => 16,
            Field::UdpSrc | Field::UdpDst | Field::CtZone => 16,
            Field::IpProto | Field::NwTtl | Field::IcmpType | Field::IcmpCode => 8,
            Field::IpDscp => 6,
            Field::Ipv4Src | Field::Ipv4Dst | Field::ArpSpa | Field::ArpTpa => 32,
            Field::TunIpv4Src | Field::TunIpv4Dst | Field::Reg(_) | Field::CtState => 32,
            Field::CtMark => 32,
            Field::CtLabel => 128,
            Field::CtNwProto => 8,
            Field::CtNwSrc | Field::CtNwDst | Field::ConjId => 32,
            Field::CtTpSrc | Field::CtTpDst | Field::TcpFlags => 16,
            Field::Unknown { len, .. } => u16::from(len) * 8,
        }
    }
}

/// A field's value with an optional mask (all-ones mask = exact match; the
/// codec omits an all-ones mask). Values are right-aligned in a u128.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldMatch {
    pub field: Field,
    pub value: u128,
    pub mask: Option<u128>,
}

/// A set of field matches, sorted by field: prerequisites (eth_type before
/// ip_proto before ports) are the pipeline's job, ordering is the codec's.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Match {
    fields: Vec<FieldMatch>,
}

impl Match {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an exact match on `field`.
    pub fn set(self, field: Field, value: u128) -> Self {
        self.set_masked(field, value, None)
    }

    /// Adds or replaces a masked match on `field`.
    pub fn set_masked(mut self, field: Field, value: u128, mask: Option<u128>) -> Self {
        let fm = FieldMatch { field, value, mask };
        match self.fields.binary_search_by_key(&field, |f| f.field) {
            Ok(i) => self.fields[i] = fm,
            Err(i) => self.fields.insert(i, fm),
        }
        self
    }

    pub fn in_port(self, port: u32) -> Self {
        self.set(Field::InPort, port.into())
    }
    pub fn metadata(self, v: u64) -> Self {
        self.set(Field::Metadata, v.into())
    }
    pub fn tunnel_id(self, v: u64) -> Self {
        self.set(Field::TunnelId, v.into())
    }
    pub fn eth_type(self, t: u16) -> Self {
        self.set(Field::EthType, t.into())
    }
    pub fn eth_src(self, m: Mac) -> Self {
        self.set(Field::EthSrc, mac_bits(m))
    }
    pub fn eth_dst(self, m: Mac) -> Self {
        self.set(Field::EthDst, mac_bits(m))
    }
    pub fn ip_proto(self, p: u8) -> Self {
        self.set(Field::IpProto, p.into())
    }
    pub fn ipv4_src(self, ip: Ipv4Addr) -> Self {
        self.set(Field::Ipv4Src, u32::from(ip).into())
    }
    pub fn ipv4_dst(self, ip: Ipv4Addr) -> Self {
        self.set(Field::Ipv4Dst, u32::from(ip).into())
    }
    /// `ip/len` as a masked match (exact for /32).
    pub fn ipv4_dst_prefix(self, ip: Ipv4Addr, len: u8) -> Self {
        let (v, m) = prefix_bits(ip, len);
        self.set_masked(Field::Ipv4Dst, v, m)
    }
    pub fn ipv4_src_prefix(self, ip: Ipv4Addr, len: u8) -> Self {
        let (v, m) = prefix_bits(ip, len);
        self.set_masked(Field::Ipv4Src, v, m)
    }
    pub fn udp_dst(self, p: u16) -> Self {
        self.set(Field::UdpDst, p.into())
    }
    pub fn udp_src(self, p: u16) -> Self {
        self.set(Field::UdpSrc, p.into())
    }
    pub fn arp_op(self, op: u16) -> Self {
        self.set(Field::ArpOp, op.into())
    }
    pub fn arp_spa(self, ip: Ipv4Addr) -> Self {
        self.set(Field::ArpSpa, u32::from(ip).into())
    }
    pub fn arp_tpa(self, ip: Ipv4Addr) -> Self {
        self.set(Field::ArpTpa, u32::from(ip).into())
    }
    pub fn arp_sha(self, m: Mac) -> Self {
        self.set(Field::ArpSha, mac_bits(m))
    }
    pub fn reg(self, n: u8, v: u32) -> Self {
        self.set(Field::Reg(n), v.into())
    }
    pub fn tcp_src(self, p: u16) -> Self {
        self.set(Field::TcpSrc, p.into())
    }
    pub fn tcp_dst(self, p: u16) -> Self {
        self.set(Field::TcpDst, p.into())
    }
    /// Port range as a value/mask (one of the matches a range decomposes
    /// into); `mask` 0xffff is an exact match.
    pub fn tcp_dst_masked(self, p: u16, mask: u16) -> Self {
        self.set_with_mask(Field::TcpDst, p.into(), mask.into(), u16::MAX.into())
    }
    pub fn udp_dst_masked(self, p: u16, mask: u16) -> Self {
        self.set_with_mask(Field::UdpDst, p.into(), mask.into(), u16::MAX.into())
    }

    /// A masked match stored exact when `mask` is `all` (as a switch
    /// reports it back).
    fn set_with_mask(self, field: Field, value: u128, mask: u128, all: u128) -> Self {
        if mask == all {
            self.set(field, value)
        } else {
            self.set_masked(field, value, Some(mask))
        }
    }
    pub fn icmp_type(self, t: u8) -> Self {
        self.set(Field::IcmpType, t.into())
    }
    pub fn icmp_code(self, c: u8) -> Self {
        self.set(Field::IcmpCode, c.into())
    }
    /// `tcp_flags`: bits in `on` set, bits in `off` clear, others ignored
    /// (see [`tcp_flags`]).
    pub fn tcp_flags(self, on: u16, off: u16) -> Self {
        self.set_masked(Field::TcpFlags, on.into(), Some((on | off).into()))
    }
    /// `ct_state`: bits in `on` set, bits in `off` clear, others ignored
    /// (see [`ct_state`]).
    pub fn ct_state(self, on: u32, off: u32) -> Self {
        self.set_masked(Field::CtState, on.into(), Some((on | off).into()))
    }
    pub fn ct_zone(self, zone: u16) -> Self {
        self.set(Field::CtZone, zone.into())
    }
    /// `ct_mark=mark/mask` (exact when `mask` is all ones).
    pub fn ct_mark(self, mark: u32, mask: u32) -> Self {
        self.set_with_mask(Field::CtMark, mark.into(), mask.into(), u32::MAX.into())
    }
    /// `ct_label=label/mask` (exact when `mask` is all ones).
    pub fn ct_label(self, label: u128, mask: u128) -> Self {
        self.set_with_mask(Field::CtLabel, label, mask, u128::MAX)
    }
    pub fn ct_nw_proto(self, p: u8) -> Self {
        self.set(Field::CtNwProto, p.into())
    }
    pub fn ct_nw_src(self, ip: Ipv4Addr) -> Self {
        self.set(Field::CtNwSrc, u32::from(ip).into())
    }
    pub fn ct_nw_dst(self, ip: Ipv4Addr) -> Self {
        self.set(Field::CtNwDst, u32::from(ip).into())
    }
    pub fn ct_tp_src(self, p: u16) -> Self {
        self.set(Field::CtTpSrc, p.into())
    }
    pub fn ct_tp_dst(self, p: u16) -> Self {
        self.set(Field::CtTpDst, p.into())
    }
    /// Matches packets whose conjunctive match `id` matched every clause.
    pub fn conj_id(self, id: u32) -> Self {
        self.set(Field::ConjId, id.into())
    }

    pub fn fields(&self) -> &[FieldMatch] {
        &self.fields
    }

    pub fn get(&self, field: Field) -> Option<&FieldMatch> {
        self.fields
            .binary_search_by_key(&field, |f| f.field)
            .ok()
            .map(|i| &self.fields[i])
    }
}

/// A MAC as a right-aligned integer.
pub fn mac_bits(m: Mac) -> u128 {
    m.0.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
}

/// `ip/len` as value and mask; no mask for /32.
pub fn prefix_bits(ip: Ipv4Addr, len: u8) -> (u128, Option<u128>) {
    let len = len.min(32);
    let mask: u32 = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    let value = u128::from(u32::from(ip) & mask);
    if len == 32 {
        (value, None)
    } else {
        (value, Some(u128::from(mask)))
    }
}

/// An action. Nicira extensions are used where OpenFlow has no equivalent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Output to a port (or a reserved port from [`port`]).
    Output(u32),
    /// Packet-in to the controller with up to `max_len` bytes and an opaque
    /// `userdata` that comes back in the packet-in (NXAST_CONTROLLER2).
    Controller { max_len: u16, userdata: Vec<u8> },
    /// Writes a whole field (OFPAT_SET_FIELD).
    SetField { field: Field, value: u128 },
    /// Copies `n_bits` from `src[src_ofs..]` to `dst[dst_ofs..]` (NXAST_REG_MOVE).
    Move {
        src: Field,
        src_ofs: u16,
        dst: Field,
        dst_ofs: u16,
        n_bits: u16,
    },
    /// OFPAT_DEC_NW_TTL: drops the packet when the TTL runs out.
    DecTtl,
    /// Continue in `table`, then come back (NXAST_RESUBMIT_TABLE, in_port unchanged).
    Resubmit { table: u8 },
    /// Apply a group.
    Group(u32),
    /// Send the packet through the connection tracker (NXAST_CT). With
    /// `table`, the pipeline forks: a tracked copy resumes in `table` with
    /// ct_state and the other ct fields set, while the actions after `Ct`
    /// go on with the untracked packet. `actions` (OVS allows set_field of
    /// ct_mark / ct_label) and a `nat` other than [`CtNat::Existing`] need
    /// `commit`. OVS requires the flow to match an IP eth_type.
    Ct {
        commit: bool,
        zone: CtZone,
        table: Option<u8>,
        nat: Option<CtNat>,
        actions: Vec<Action>,
    },
    /// Forget the packet's conntrack state (NXAST_CT_CLEAR): ct_state etc.
    /// read 0 afterwards, so another zone can track it afresh.
    CtClear,
    /// One clause of conjunctive match `id` (NXAST_CONJUNCTION). `clause`
    /// is 0-based, `clause < n_clauses`, `2 <= n_clauses <= 64`; ovs-ofctl
    /// prints it 1-based: `conjunction(id,clause+1/n_clauses)`. A flow with
    /// this action may have no other action than other conjunctions.
    Conjunction { id: u32, clause: u8, n_clauses: u8 },
    /// Send the packet through meter `id` first (OFPIT_METER: an
    /// instruction in OpenFlow 1.4, so it may only be the FIRST action of
    /// a [`Flow`]; not allowed in packet-outs, group buckets or `Ct`).
    Meter(u32),
    /// An action this crate does not model, kept as its raw bytes (type,
    /// length and body, already padded) so it re-encodes unchanged.
    Unknown(Vec<u8>),
}

/// The conntrack zone of an [`Action::Ct`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CtZone {
    /// A fixed zone (0 is the default zone).
    Imm(u16),
    /// Bits `ofs..ofs + 16` of `field` (e.g. a register holding the NIC's
    /// zone); OVS accepts exactly 16 bits.
    Field { field: Field, ofs: u16 },
}

/// The NAT part of an [`Action::Ct`] (NXAST_NAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CtNat {
    /// Plain `nat`: apply whatever translation the connection was committed
    /// with (for established and reply traffic).
    Existing,
    /// Source NAT of a new connection.
    Src(NatRange),
    /// Destination NAT of a new connection.
    Dst(NatRange),
}

/// Where [`CtNat::Src`]/[`CtNat::Dst`] may translate to. Ranges are
/// inclusive `(min, max)`; `min == max` is one value. Ports need addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatRange {
    pub addrs: Option<(Ipv4Addr, Ipv4Addr)>,
    pub ports: Option<(u16, u16)>,
    /// Keep the same mapping for a client across connections.
    pub persistent: bool,
    /// Pick the port by hash (`hash`) ...
    pub hash: bool,
    /// ... or at random (`random`); not both.
    pub random: bool,
}

impl NatRange {
    /// To exactly `ip`.
    pub fn addr(ip: Ipv4Addr) -> Self {
        Self {
            addrs: Some((ip, ip)),
            ..Self::default()
        }
    }
    /// To exactly `ip:port`.
    pub fn addr_port(ip: Ipv4Addr, port: u16) -> Self {
        Self {
            addrs: Some((ip, ip)),
            ports: Some((port, port)),
            ..Self::default()
        }
    }
}

/// One OpenFlow entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub table: u8,
    pub priority: u16,
    pub cookie: u64,
    pub matches: Match,
    /// Applied in order (OFPIT_APPLY_ACTIONS). Empty with no `goto_table`
    /// means drop.
    pub actions: Vec<Action>,
    /// Continue in this table afterwards (OFPIT_GOTO_TABLE).
    pub goto_table: Option<u8>,
}

/// What identifies a flow entry in a switch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub table: u8,
    pub priority: u16,
    pub matches: Match,
}

impl Flow {
    pub fn key(&self) -> FlowKey {
        FlowKey {
            table: self.table,
            priority: self.priority,
            matches: self.matches.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_is_canonical_whatever_the_order() {
        let a = Match::new().eth_type(0x0800).in_port(3).metadata(7);
        let b = Match::new().metadata(7).in_port(3).eth_type(0x0800);
        assert_eq!(a, b);
        assert_eq!(a.fields().len(), 3);
        assert_eq!(a.get(Field::InPort).map(|f| f.value), Some(3));
    }

    #[test]
    fn flag_and_mask_helpers() {
        let m = Match::new()
            .ct_state(ct_state::TRK | ct_state::EST, ct_state::INV)
            .tcp_flags(tcp_flags::SYN, tcp_flags::ACK | tcp_flags::RST)
            .ct_mark(7, u32::MAX)
            .ct_label(1, 1)
            .tcp_dst_masked(80, u16::MAX);
        let get = |f| m.get(f).map(|f| (f.value, f.mask));
        assert_eq!(get(Field::CtState), Some((0x22, Some(0x32))));
        assert_eq!(get(Field::TcpFlags), Some((0x2, Some(0x16))));
        assert_eq!(get(Field::CtMark), Some((7, None)));
        assert_eq!(get(Field::CtLabel), Some((1, Some(1))));
        assert_eq!(get(Field::TcpDst), Some((80, None)));
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            prefix_bits(Ipv4Addr::new(10, 0, 1, 7), 24),
            (0x0a00_0100, Some(0xffff_ff00))
        );
        assert_eq!(
            prefix_bits(Ipv4Addr::new(10, 0, 1, 7), 32),
            (0x0a00_0107, None)
        );
        assert_eq!(prefix_bits(Ipv4Addr::new(10, 0, 1, 7), 0), (0, Some(0)));
    }
}
