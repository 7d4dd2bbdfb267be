//! OXM: the type-length-value encoding of match fields (`ofp_match` with
//! `OFPMT_OXM`), of set-field values and of field references in reg_move.
//!
//! Fields OpenFlow 1.4 defines use class 0x8000 (OpenFlow basic); the ones
//! only Open vSwitch has use Nicira's NXM_1 class 0x0001 (registers, tunnel
//! addresses, TTL, conntrack). Field numbers follow OVS's
//! `include/openvswitch/meta-flow.h`.

use crate::error::{Error, Result};
use crate::flow::{Field, FieldMatch, Match};
use crate::wire::{pad8, Put, Reader};

pub const OFPXMC_NXM_0: u16 = 0x0000;
pub const OFPXMC_NXM_1: u16 = 0x0001;
pub const OFPXMC_OPENFLOW_BASIC: u16 = 0x8000;
pub const OFPXMC_EXPERIMENTER: u16 = 0xffff;

/// ONF's experimenter id, for the OXM fields OpenFlow 1.3/1.4 lack.
pub const ONF_EXPERIMENTER_ID: u32 = 0x4f4e_4600;

/// `ofp_match.type` for OXM matches.
const OFPMT_OXM: u16 = 1;

/// Where a field lives in OXM: class, field number, value size in bytes and
/// (for class 0xffff only) the experimenter id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OxmId {
    pub class: u16,
    pub field: u8,
    pub len: u8,
    pub experimenter: u32,
}

impl OxmId {
    const fn basic(field: u8, len: u8) -> Self {
        Self {
            class: OFPXMC_OPENFLOW_BASIC,
            field,
            len,
            experimenter: 0,
        }
    }
    const fn onf(field: u8, len: u8) -> Self {
        Self {
            class: OFPXMC_EXPERIMENTER,
            field,
            len,
            experimenter: ONF_EXPERIMENTER_ID,
        }
    }
    const fn nx(field: u8, len: u8) -> Self {
        Self {
            class: OFPXMC_NXM_1,
            field,
            len,
            experimenter: 0,
        }
    }

    /// The 32-bit OXM header (without the experimenter word).
    pub fn header(self, masked: bool) -> u32 {
        let mut payload = u32::from(self.len) * if masked { 2 } else { 1 };
        if self.class == OFPXMC_EXPERIMENTER {
            payload += 4;
        }
        (u32::from(self.class) << 16)
            | (u32::from(self.field) << 9)
            | (u32::from(masked) << 8)
            | payload
    }
}

/// The OXM identity of `field`.
pub fn oxm_id(field: Field) -> Result<OxmId> {
    use Field::*;
    Ok(match field {
        InPort => OxmId::basic(0, 4),
        Metadata => OxmId::basic(2, 8),
        EthDst => OxmId::basic(3, 6),
        EthSrc => OxmId::basic(4, 6),
        EthType => OxmId::basic(5, 2),
        // OXM_OF_IP_DSCP carries the DSCP right-aligned (not the TOS byte).
        IpDscp => OxmId::basic(8, 1),
        IpProto => OxmId::basic(10, 1),
        Ipv4Src => OxmId::basic(11, 4),
        Ipv4Dst => OxmId::basic(12, 4),
        TcpSrc => OxmId::basic(13, 2),
        TcpDst => OxmId::basic(14, 2),
        UdpSrc => OxmId::basic(15, 2),
        UdpDst => OxmId::basic(16, 2),
        IcmpType => OxmId::basic(19, 1),
        IcmpCode => OxmId::basic(20, 1),
        ArpOp => OxmId::basic(21, 2),
        ArpSpa => OxmId::basic(22, 4),
        ArpTpa => OxmId::basic(23, 4),
        ArpSha => OxmId::basic(24, 6),
        ArpTha => OxmId::basic(25, 6),
        TunnelId => OxmId::basic(38, 8),
        NwTtl => OxmId::nx(29, 1),
        TunIpv4Src => OxmId::nx(31, 4),
        TunIpv4Dst => OxmId::nx(32, 4),
        Reg(n) if n < 16 => OxmId::nx(n, 4),
        Reg(n) => {
            return Err(Error::Unsupported {
                what: "register",
                value: n.into(),
            })
        }
        CtState => OxmId::nx(105, 4),
        CtZone => OxmId::nx(106, 2),
        CtMark => OxmId::nx(107, 4),
        CtLabel => OxmId::nx(108, 16),
        CtNwProto => OxmId::nx(119, 1),
        CtNwSrc => OxmId::nx(120, 4),
        CtNwDst => OxmId::nx(121, 4),
        CtTpSrc => OxmId::nx(124, 2),
        CtTpDst => OxmId::nx(125, 2),
        ConjId => OxmId::nx(37, 4),
        // OpenFlow 1.4 has no tcp_flags; OVS uses ONF's (OF1.5 made it
        // OXM_OF_TCP_FLAGS).
        TcpFlags => OxmId::onf(42, 2),
        Unknown {
            class,
            field,
            experimenter,
            len,
        } => OxmId {
            class,
            field,
            len,
            experimenter,
        },
    })
}

/// Legacy NXM headers (OVS's "version 0" preference) for fields that have
/// one: OVS writes these in reg_move and accepts them everywhere.
const NXM_ALIASES: &[(u16, u8, u8, Field)] = &[
    // NXM_OF_IN_PORT is the 16-bit OpenFlow 1.0 port number.
    (OFPXMC_NXM_0, 0, 2, Field::InPort),
    (OFPXMC_NXM_0, 1, 6, Field::EthDst),
    (OFPXMC_NXM_0, 2, 6, Field::EthSrc),
    (OFPXMC_NXM_0, 3, 2, Field::EthType),
    (OFPXMC_NXM_0, 6, 1, Field::IpProto),
    (OFPXMC_NXM_0, 7, 4, Field::Ipv4Src),
    (OFPXMC_NXM_0, 8, 4, Field::Ipv4Dst),
    (OFPXMC_NXM_0, 9, 2, Field::TcpSrc),
    (OFPXMC_NXM_0, 10, 2, Field::TcpDst),
    (OFPXMC_NXM_0, 11, 2, Field::UdpSrc),
    (OFPXMC_NXM_0, 12, 2, Field::UdpDst),
    (OFPXMC_NXM_0, 13, 1, Field::IcmpType),
    (OFPXMC_NXM_0, 14, 1, Field::IcmpCode),
    (OFPXMC_NXM_0, 15, 2, Field::ArpOp),
    (OFPXMC_NXM_0, 16, 4, Field::ArpSpa),
    (OFPXMC_NXM_0, 17, 4, Field::ArpTpa),
    (OFPXMC_NXM_1, 16, 8, Field::TunnelId),
    (OFPXMC_NXM_1, 17, 6, Field::ArpSha),
    (OFPXMC_NXM_1, 18, 6, Field::ArpTha),
    (OFPXMC_NXM_1, 34, 2, Field::TcpFlags),
];

/// The header OVS uses for `field` in a reg_move touching bits
/// `..end_bit`: the legacy NXM one when there is one wide enough, else OXM.
pub fn legacy_id(field: Field, end_bit: u32) -> Result<OxmId> {
    for &(class, f, len, named) in NXM_ALIASES {
        if named == field && end_bit <= u32::from(len) * 8 {
            return Ok(OxmId {
                class,
                field: f,
                len,
                experimenter: 0,
            });
        }
    }
    oxm_id(field)
}

/// The field an OXM (or legacy NXM) identity names; anything not modelled
/// (or with an unexpected size) comes back as [`Field::Unknown`].
pub fn field_from_oxm(id: OxmId) -> Field {
    use Field::*;
    for &(class, f, len, named) in NXM_ALIASES {
        if (class, f, len) == (id.class, id.field, id.len) && id.experimenter == 0 {
            return named;
        }
    }
    let known = match (id.class, id.field) {
        (OFPXMC_OPENFLOW_BASIC, f) => match f {
            0 => Some(InPort),
            2 => Some(Metadata),
            3 => Some(EthDst),
            4 => Some(EthSrc),
            5 => Some(EthType),
            8 => Some(IpDscp),
            10 => Some(IpProto),
            11 => Some(Ipv4Src),
            12 => Some(Ipv4Dst),
            13 => Some(TcpSrc),
            14 => Some(TcpDst),
            15 => Some(UdpSrc),
            16 => Some(UdpDst),
            19 => Some(IcmpType),
            20 => Some(IcmpCode),
            21 => Some(ArpOp),
            22 => Some(ArpSpa),
            23 => Some(ArpTpa),
            24 => Some(ArpSha),
            25 => Some(ArpTha),
            38 => Some(TunnelId),
            _ => None,
        },
        (OFPXMC_NXM_1, f) => match f {
            0..=15 => Some(Reg(f)),
            29 => Some(NwTtl),
            31 => Some(TunIpv4Src),
            32 => Some(TunIpv4Dst),
            105 => Some(CtState),
            106 => Some(CtZone),
            107 => Some(CtMark),
            108 => Some(CtLabel),
            119 => Some(CtNwProto),
            120 => Some(CtNwSrc),
            121 => Some(CtNwDst),
            124 => Some(CtTpSrc),
            125 => Some(CtTpDst),
            37 => Some(ConjId),
            _ => None,
        },
        (OFPXMC_EXPERIMENTER, 42) if id.experimenter == ONF_EXPERIMENTER_ID => Some(TcpFlags),
        _ => None,
    };
    // A known number with a surprising size is not the field we think it is.
    match known {
        Some(f) if oxm_id(f).map(|k| k == id).unwrap_or(false) => f,
        _ => Unknown {
            class: id.class,
            field: id.field,
            experimenter: id.experimenter,
            len: id.len,
        },
    }
}

/// The order Open vSwitch writes match fields in (`nx_put_raw`): it puts
/// every prerequisite (eth_type, ip_proto) before the fields that need it,
/// and using the same order makes our bytes identical to ovs-ofctl's.
fn emit_rank(field: Field) -> (u8, u32) {
    use Field::*;
    let r = match field {
        ConjId => 0,
        InPort => 1,
        EthSrc => 2,
        EthDst => 3,
        EthType => 4,
        Ipv4Src => 10,
        Ipv4Dst => 11,
        IpDscp => 12,
        NwTtl => 13,
        IpProto => 14,
        TcpSrc => 15,
        TcpDst => 16,
        TcpFlags => 17,
        UdpSrc => 18,
        UdpDst => 19,
        IcmpType => 20,
        IcmpCode => 21,
        ArpOp => 30,
        ArpSpa => 31,
        ArpTpa => 32,
        ArpSha => 33,
        ArpTha => 34,
        TunnelId => 40,
        TunIpv4Src => 41,
        TunIpv4Dst => 42,
        Reg(n) => return (50, n.into()),
        CtState => 70,
        CtZone => 71,
        CtMark => 72,
        CtLabel => 73,
        CtNwSrc => 74,
        CtNwDst => 75,
        CtNwProto => 76,
        CtTpSrc => 77,
        CtTpDst => 78,
        Metadata => 80,
        Unknown {
            class,
            field,
            experimenter,
            ..
        } => {
            return (
                90,
                (u32::from(class) << 8 | u32::from(field)) ^ experimenter,
            )
        }
    };
    (r, 0)
}

fn all_ones(len: u8) -> u128 {
    if len >= 16 {
        u128::MAX
    } else {
        (1u128 << (u32::from(len) * 8)) - 1
    }
}

fn put_value(out: &mut Vec<u8>, v: u128, len: u8) {
    let b = v.to_be_bytes();
    out.extend_from_slice(&b[16 - usize::from(len)..]);
}

fn value_from(bytes: &[u8]) -> u128 {
    bytes
        .iter()
        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
}

/// Writes the OXM header for `id` (4 or 8 bytes).
pub(crate) fn put_header(out: &mut Vec<u8>, id: OxmId, masked: bool) {
    out.put_u32(id.header(masked));
    if id.class == OFPXMC_EXPERIMENTER {
        out.put_u32(id.experimenter);
    }
}

/// Writes one OXM entry. An all-ones mask is left out (exact match).
pub(crate) fn put_entry(
    out: &mut Vec<u8>,
    field: Field,
    value: u128,
    mask: Option<u128>,
) -> Result<()> {
    let id = oxm_id(field)?;
    let ones = all_ones(id.len);
    if value & !ones != 0 || mask.is_some_and(|m| m & !ones != 0) {
        return Err(Error::TooLarge("OXM field value"));
    }
    match mask {
        Some(m) if m != ones => {
            put_header(out, id, true);
            put_value(out, value & m, id.len);
            put_value(out, m, id.len);
        }
        _ => {
            put_header(out, id, false);
            put_value(out, value, id.len);
        }
    }
    Ok(())
}

/// The identity in a bare 32-bit header naming an unmasked field (as
/// NXAST_CT's zone source does); `None` for experimenter or masked headers.
pub(crate) fn id_from_header32(h: u32) -> Option<OxmId> {
    let class = (h >> 16) as u16;
    let len = (h & 0xff) as u8;
    if class == OFPXMC_EXPERIMENTER || h & 0x100 != 0 || len > 16 {
        return None;
    }
    Some(OxmId {
        class,
        field: ((h >> 9) & 0x7f) as u8,
        len,
        experimenter: 0,
    })
}

/// Reads an OXM header: identity and whether a mask follows.
pub(crate) fn parse_header(r: &mut Reader<'_>) -> Result<(OxmId, bool)> {
    let h = r.u32()?;
    let class = (h >> 16) as u16;
    let field = ((h >> 9) & 0x7f) as u8;
    let masked = h & 0x100 != 0;
    let mut payload = (h & 0xff) as usize;
    let mut experimenter = 0;
    if class == OFPXMC_EXPERIMENTER {
        experimenter = r.u32()?;
        payload = payload.checked_sub(4).ok_or(Error::BadLength {
            what: "experimenter OXM",
            len: payload,
        })?;
    }
    if masked && payload & 1 != 0 {
        return Err(Error::BadLength {
            what: "masked OXM",
            len: payload,
        });
    }
    let len = if masked { payload / 2 } else { payload };
    if len > 16 {
        // Values are kept in a u128; wider fields (tun_metadata, NSH
        // contexts) are not something this codec models.
        return Err(Error::Unsupported {
            what: "OXM field wider than 16 bytes",
            value: h.into(),
        });
    }
    Ok((
        OxmId {
            class,
            field,
            // Bounded by the check above.
            len: len as u8,
            experimenter,
        },
        masked,
    ))
}

/// Reads one OXM entry (header, value and optional mask).
pub(crate) fn parse_entry(r: &mut Reader<'_>) -> Result<FieldMatch> {
    let (id, masked) = parse_header(r)?;
    let len = usize::from(id.len);
    let value = value_from(r.bytes(len)?);
    let mask = if masked {
        let m = value_from(r.bytes(len)?);
        (m != all_ones(id.len)).then_some(m)
    } else {
        None
    };
    Ok(FieldMatch {
        field: field_from_oxm(id),
        value,
        mask,
    })
}

/// Appends the OXM entries of `m` in OVS order, without the `ofp_match`
/// wrapper (packet-in metadata uses them bare). Zero-masked fields match
/// everything and are left out.
pub(crate) fn put_oxm_fields(out: &mut Vec<u8>, m: &Match) -> Result<()> {
    let mut fields: Vec<&FieldMatch> = m.fields().iter().filter(|f| f.mask != Some(0)).collect();
    fields.sort_by_key(|f| emit_rank(f.field));
    for f in fields {
        put_entry(out, f.field, f.value, f.mask)?;
    }
    Ok(())
}

/// Appends an `ofp_match` (OXM type) with its padding to 8 bytes.
pub(crate) fn emit_match(out: &mut Vec<u8>, m: &Match) -> Result<()> {
    let start = out.len();
    out.put_u16(OFPMT_OXM);
    out.put_u16(0);
    put_oxm_fields(out, m)?;
    let len = crate::wire::len16(out, start, "ofp_match")?;
    out.set_u16(start + 2, len);
    out.pad8_from(start);
    Ok(())
}

/// Parses bare OXM entries filling `bytes` exactly.
pub(crate) fn parse_oxm_fields(bytes: &[u8]) -> Result<Match> {
    let mut r = Reader::new(bytes, "OXM field");
    let mut m = Match::new();
    while !r.is_empty() {
        let fm = parse_entry(&mut r)?;
        if m.get(fm.field).is_some() {
            return Err(Error::Unsupported {
                what: "duplicate OXM field",
                value: u64::from(oxm_id(fm.field)?.header(false)),
            });
        }
        m = m.set_masked(fm.field, fm.value, fm.mask);
    }
    Ok(m)
}

/// Parses an `ofp_match` and consumes its padding.
pub(crate) fn parse_match(r: &mut Reader<'_>) -> Result<Match> {
    let kind = r.peek_u16(0)?;
    let len = usize::from(r.peek_u16(2)?);
    if kind != OFPMT_OXM {
        return Err(Error::Unsupported {
            what: "match type",
            value: kind.into(),
        });
    }
    if len < 4 {
        return Err(Error::BadLength {
            what: "ofp_match",
            len,
        });
    }
    let all = r.bytes(len)?;
    // Padding is absent only if the match is the last thing; tolerate that.
    let pad = (pad8(len) - len).min(r.remaining());
    r.skip(pad)?;
    parse_oxm_fields(&all[4..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn headers_match_ovs_constants() {
        // From OVS meta-flow.h / openflow-1.2 OXM_OF_* values.
        assert_eq!(oxm_id(Field::InPort).unwrap().header(false), 0x8000_0004);
        assert_eq!(oxm_id(Field::EthDst).unwrap().header(true), 0x8000_070c);
        assert_eq!(oxm_id(Field::Metadata).unwrap().header(false), 0x8000_0408);
        assert_eq!(oxm_id(Field::Reg(0)).unwrap().header(false), 0x0001_0004);
        assert_eq!(oxm_id(Field::Reg(3)).unwrap().header(false), 0x0001_0604);
        assert_eq!(oxm_id(Field::CtState).unwrap().header(true), 0x0001_d308);
        assert_eq!(oxm_id(Field::TunnelId).unwrap().header(false), 0x8000_4c08);
        assert!(oxm_id(Field::Reg(16)).is_err());
    }

    #[test]
    fn every_field_round_trips() {
        let m = Match::new()
            .in_port(7)
            .metadata(0x1234)
            .eth_type(0x0800)
            .set_masked(Field::EthDst, 0x0100_0000_0000, Some(0x0100_0000_0000))
            .ipv4_dst_prefix(Ipv4Addr::new(10, 1, 0, 0), 16)
            .ip_proto(17)
            .udp_dst(67)
            .set(Field::NwTtl, 64)
            .set(Field::TunIpv4Src, 0x0a00_0001)
            .set(Field::TunnelId, 99)
            .reg(5, 0xdead)
            .set_masked(Field::CtState, 0x21, Some(0x21))
            .set(Field::CtZone, 9)
            .set(Field::CtLabel, 1 << 100);
        let mut out = Vec::new();
        emit_match(&mut out, &m).unwrap();
        assert_eq!(out.len() % 8, 0);
        let mut r = Reader::new(&out, "t");
        assert_eq!(parse_match(&mut r).unwrap(), m);
        assert!(r.is_empty());
    }

    #[test]
    fn conntrack_conjunction_and_l4_fields() {
        use crate::flow::{ct_state, tcp_flags};
        // NXM_NX_* numbers from OVS meta-flow.h.
        assert_eq!(oxm_id(Field::ConjId).unwrap().header(false), 0x0001_4a04);
        assert_eq!(oxm_id(Field::CtNwProto).unwrap().header(false), 0x0001_ee01);
        assert_eq!(oxm_id(Field::CtNwSrc).unwrap().header(true), 0x0001_f108);
        assert_eq!(oxm_id(Field::CtTpDst).unwrap().header(false), 0x0001_fa02);
        assert_eq!(oxm_id(Field::CtLabel).unwrap().header(true), 0x0001_d920);
        // ONFOXM_ET_TCP_FLAGS: experimenter class, 4 more payload bytes.
        assert_eq!(oxm_id(Field::TcpFlags).unwrap().header(true), 0xffff_5508);
        let m = Match::new()
            .conj_id(77)
            .eth_type(0x0800)
            .ip_proto(6)
            .tcp_dst_masked(0x1000, 0xf000)
            .tcp_flags(tcp_flags::SYN, tcp_flags::ACK)
            .ct_state(ct_state::TRK | ct_state::EST, ct_state::INV | ct_state::NEW)
            .ct_zone(3)
            .ct_mark(1, 1)
            .ct_label(1 << 100, (1 << 100) | 1)
            .ct_nw_proto(6)
            .ct_nw_src(Ipv4Addr::new(10, 0, 0, 1))
            .ct_nw_dst(Ipv4Addr::new(10, 0, 0, 2))
            .ct_tp_src(1234)
            .ct_tp_dst(80);
        let mut out = Vec::new();
        emit_match(&mut out, &m).unwrap();
        // conj_id first, as OVS writes it.
        assert_eq!(&out[4..8], &[0x00, 0x01, 0x4a, 0x04]);
        let mut r = Reader::new(&out, "t");
        assert_eq!(parse_match(&mut r).unwrap(), m);
        let st = m.get(Field::CtState).unwrap();
        assert_eq!((st.value, st.mask), (0x22, Some(0x33)));
        // The legacy NXM_NX_TCP_FLAGS header reads as the same field.
        let nxm = [0x00, 0x01, 0x45, 0x04, 0x00, 0x02, 0x00, 0x12];
        let f = parse_oxm_fields(&nxm).unwrap().fields()[0];
        assert_eq!((f.field, f.value, f.mask), (Field::TcpFlags, 2, Some(0x12)));
        let m = Match::new().set(Field::CtLabel, u128::MAX);
        let mut out = Vec::new();
        emit_match(&mut out, &m).unwrap();
        assert_eq!(parse_match(&mut Reader::new(&out, "t")).unwrap(), m);
    }

    #[test]
    fn all_ones_mask_is_omitted_and_values_are_checked() {
        let m = Match::new().set_masked(Field::Ipv4Src, 1, Some(0xffff_ffff));
        let mut out = Vec::new();
        emit_match(&mut out, &m).unwrap();
        // type, len=12, exact ipv4_src header, value, 4 pad
        assert_eq!(out, [0, 1, 0, 12, 0x80, 0, 0x16, 4, 0, 0, 0, 1, 0, 0, 0, 0]);
        let mut r = Reader::new(&out, "t");
        assert_eq!(
            parse_match(&mut r).unwrap(),
            Match::new().set(Field::Ipv4Src, 1)
        );
        let bad = Match::new().set(Field::EthType, 0x1_0000);
        assert!(emit_match(&mut Vec::new(), &bad).is_err());
    }

    #[test]
    fn unknown_fields_are_kept() {
        // OXM_OF_VLAN_VID (6), 2 bytes: not modelled.
        let bytes = [0x80, 0x00, 0x0c, 0x02, 0x10, 0x05];
        let m = parse_oxm_fields(&bytes).unwrap();
        let f = m.fields()[0];
        assert_eq!(
            f.field,
            Field::Unknown {
                class: 0x8000,
                field: 6,
                experimenter: 0,
                len: 2
            }
        );
        assert_eq!(f.value, 0x1005);
        let mut out = Vec::new();
        put_oxm_fields(&mut out, &m).unwrap();
        assert_eq!(out, bytes);
    }
}
