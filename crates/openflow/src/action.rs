//! Actions and instructions on the wire (OpenFlow 1.4 plus the Nicira
//! experimenter actions), following the layouts in OVS's
//! `lib/ofp-actions.c`.

use std::net::Ipv4Addr;

use crate::error::{Error, Result};
use crate::flow::{port, Action, CtNat, CtZone, Field, NatRange};
use crate::oxm;
use crate::wire::{len16, pad8, Put, Reader, NX_VENDOR_ID};

const OFPAT_OUTPUT: u16 = 0;
const OFPAT_GROUP: u16 = 22;
const OFPAT_DEC_NW_TTL: u16 = 24;
const OFPAT_SET_FIELD: u16 = 25;
const OFPAT_EXPERIMENTER: u16 = 0xffff;

const NXAST_REG_MOVE: u16 = 6;
const NXAST_RESUBMIT_TABLE: u16 = 14;
const NXAST_CONTROLLER: u16 = 20;
const NXAST_CONTROLLER2: u16 = 37;
const NXAST_CONJUNCTION: u16 = 34;
const NXAST_CT: u16 = 35;
const NXAST_NAT: u16 = 36;
const NXAST_CT_CLEAR: u16 = 43;

/// `nx_action_conntrack.flags`.
const NX_CT_F_COMMIT: u16 = 1 << 0;
/// `recirc_table` meaning "do not recirculate".
const NX_CT_RECIRC_NONE: u8 = 0xff;

/// `nx_action_nat.flags`.
const NX_NAT_F_SRC: u16 = 1 << 0;
const NX_NAT_F_DST: u16 = 1 << 1;
const NX_NAT_F_PERSISTENT: u16 = 1 << 2;
const NX_NAT_F_PROTO_HASH: u16 = 1 << 3;
const NX_NAT_F_PROTO_RANDOM: u16 = 1 << 4;
/// `nx_action_nat.range_present`: which optional values follow.
const NX_NAT_RANGE_IPV4_MIN: u16 = 1 << 0;
const NX_NAT_RANGE_IPV4_MAX: u16 = 1 << 1;
const NX_NAT_RANGE_IPV6_MIN: u16 = 1 << 2;
const NX_NAT_RANGE_IPV6_MAX: u16 = 1 << 3;
const NX_NAT_RANGE_PROTO_MIN: u16 = 1 << 4;
const NX_NAT_RANGE_PROTO_MAX: u16 = 1 << 5;

const NXAC2PT_MAX_LEN: u16 = 0;
const NXAC2PT_CONTROLLER_ID: u16 = 1;
const NXAC2PT_REASON: u16 = 2;
const NXAC2PT_USERDATA: u16 = 3;

/// `OFPR_ACTION`: the packet-in reason of an explicit controller action.
const OFPR_ACTION: u8 = 1;
/// OpenFlow 1.0-style 16-bit `OFPP_IN_PORT`, as NXAST_RESUBMIT_TABLE uses.
const OFPP10_IN_PORT: u16 = 0xfff8;
/// `max_len` meaning "send the whole packet, do not buffer".
pub const OFPCML_NO_BUFFER: u16 = 0xffff;

const OFPIT_GOTO_TABLE: u16 = 1;
const OFPIT_APPLY_ACTIONS: u16 = 4;
const OFPIT_METER: u16 = 6;

fn put_output(out: &mut Vec<u8>, port: u32, max_len: u16) {
    out.put_u16(OFPAT_OUTPUT);
    out.put_u16(16);
    out.put_u32(port);
    out.put_u16(max_len);
    out.put_zeros(6);
}

/// Starts a Nicira action; returns the offset for [`finish_action`].
fn start_nx(out: &mut Vec<u8>, subtype: u16) -> usize {
    let start = out.len();
    out.put_u16(OFPAT_EXPERIMENTER);
    out.put_u16(0);
    out.put_u32(NX_VENDOR_ID);
    out.put_u16(subtype);
    start
}

/// Pads the action begun at `start` to 8 bytes and writes its length.
fn finish_action(out: &mut Vec<u8>, start: usize) -> Result<()> {
    out.pad8_from(start);
    let len = len16(out, start, "action")?;
    out.set_u16(start + 2, len);
    Ok(())
}

/// Appends one `ofpprop` (type, length, value, padding to 8).
fn put_prop(out: &mut Vec<u8>, kind: u16, value: &[u8]) -> Result<()> {
    let start = out.len();
    out.put_u16(kind);
    let len = u16::try_from(4 + value.len()).map_err(|_| Error::TooLarge("property"))?;
    out.put_u16(len);
    out.extend_from_slice(value);
    out.pad8_from(start);
    Ok(())
}

/// Appends `action`.
pub(crate) fn emit_action(out: &mut Vec<u8>, action: &Action) -> Result<()> {
    match action {
        Action::Output(p) => {
            // OVS sends the whole packet to the controller by default and
            // ignores max_len for other ports (it writes 0).
            let max_len = if *p == port::CONTROLLER {
                OFPCML_NO_BUFFER
            } else {
                0
            };
            put_output(out, *p, max_len);
        }
        Action::Controller { max_len, userdata } if userdata.is_empty() => {
            put_output(out, port::CONTROLLER, *max_len);
        }
        Action::Controller { max_len, userdata } => {
            let start = start_nx(out, NXAST_CONTROLLER2);
            out.put_zeros(6);
            if *max_len != OFPCML_NO_BUFFER {
                // OpenFlow gives 16-bit properties 2 bytes of padding
                // inside the length (OVS ofpprop_put_be16).
                let [hi, lo] = max_len.to_be_bytes();
                put_prop(out, NXAC2PT_MAX_LEN, &[hi, lo, 0, 0])?;
            }
            put_prop(out, NXAC2PT_USERDATA, userdata)?;
            finish_action(out, start)?;
        }
        Action::SetField { field, value } => {
            let start = out.len();
            out.put_u16(OFPAT_SET_FIELD);
            out.put_u16(0);
            oxm::put_entry(out, *field, *value, None)?;
            finish_action(out, start)?;
        }
        Action::Move {
            src,
            src_ofs,
            dst,
            dst_ofs,
            n_bits,
        } => {
            check_subfield(*src, *src_ofs, *n_bits)?;
            check_subfield(*dst, *dst_ofs, *n_bits)?;
            let start = start_nx(out, NXAST_REG_MOVE);
            out.put_u16(*n_bits);
            out.put_u16(*src_ofs);
            out.put_u16(*dst_ofs);
            // OVS writes legacy NXM headers here (NXM_OF_ETH_SRC, not
            // OXM_OF_ETH_SRC); do the same so our bytes equal ovs-ofctl's.
            let end = |ofs: u16| u32::from(ofs) + u32::from(*n_bits);
            oxm::put_header(out, oxm::legacy_id(*src, end(*src_ofs))?, false);
            oxm::put_header(out, oxm::legacy_id(*dst, end(*dst_ofs))?, false);
            finish_action(out, start)?;
        }
        Action::DecTtl => {
            out.put_u16(OFPAT_DEC_NW_TTL);
            out.put_u16(8);
            out.put_zeros(4);
        }
        Action::Resubmit { table } => {
            let start = start_nx(out, NXAST_RESUBMIT_TABLE);
            out.put_u16(OFPP10_IN_PORT);
            out.put_u8(*table);
            out.put_zeros(3);
            finish_action(out, start)?;
        }
        Action::Group(g) => {
            out.put_u16(OFPAT_GROUP);
            out.put_u16(8);
            out.put_u32(*g);
        }
        Action::Ct {
            commit,
            zone,
            table,
            nat,
            actions,
        } => emit_ct(out, *commit, *zone, *table, nat.as_ref(), actions)?,
        Action::CtClear => {
            let start = start_nx(out, NXAST_CT_CLEAR);
            finish_action(out, start)?;
        }
        Action::Conjunction {
            id,
            clause,
            n_clauses,
        } => {
            // OVS refuses anything else (NXBAC_BAD_CONJUNCTION).
            if !(2..=64).contains(n_clauses) || clause >= n_clauses {
                return Err(Error::Invalid("conjunction clause"));
            }
            let start = start_nx(out, NXAST_CONJUNCTION);
            out.put_u8(*clause);
            out.put_u8(*n_clauses);
            out.put_u32(*id);
            finish_action(out, start)?;
        }
        Action::Meter(id) => {
            // OpenFlow 1.4 has no meter action, only the instruction
            // [`emit_instructions`] writes for a flow's first action.
            tracing::debug!(meter = id, "meter action not first in a flow");
            return Err(Error::Invalid("meter outside a flow's first action"));
        }
        Action::Unknown(raw) => {
            // Only a well-formed action may be re-sent verbatim.
            let mut r = Reader::new(raw, "action");
            let len = action_len(&r)?;
            if len != raw.len() {
                return Err(Error::BadLength {
                    what: "unknown action",
                    len: raw.len(),
                });
            }
            out.extend_from_slice(r.rest());
        }
    }
    Ok(())
}

fn emit_ct(
    out: &mut Vec<u8>,
    commit: bool,
    zone: CtZone,
    table: Option<u8>,
    nat: Option<&CtNat>,
    actions: &[Action],
) -> Result<()> {
    if table == Some(NX_CT_RECIRC_NONE) {
        return Err(Error::Invalid("ct recirculation table 255"));
    }
    let start = start_nx(out, NXAST_CT);
    out.put_u16(if commit { NX_CT_F_COMMIT } else { 0 });
    match zone {
        CtZone::Imm(z) => {
            out.put_u32(0);
            out.put_u16(z);
        }
        CtZone::Field { field, ofs } => {
            check_subfield(field, ofs, 16)?;
            // A 32-bit NXM/OXM header (OVS's nxm_header_from_mff): fields
            // that only have a 64-bit experimenter header cannot be used.
            let id = oxm::legacy_id(field, u32::from(ofs) + 16)?;
            if id.class == oxm::OFPXMC_EXPERIMENTER {
                return Err(Error::Unsupported {
                    what: "ct zone field",
                    value: u64::from(id.header(false)),
                });
            }
            out.put_u32(id.header(false));
            // nxm_encode_ofs_nbits: offset in the top 10 bits, n_bits - 1
            // in the low 6.
            out.put_u16(ofs << 6 | (16 - 1));
        }
    }
    out.put_u8(table.unwrap_or(NX_CT_RECIRC_NONE));
    out.put_zeros(3);
    // alg: no application-layer helper.
    out.put_u16(0);
    if let Some(nat) = nat {
        emit_nat(out, nat)?;
    }
    for a in actions {
        if matches!(a, Action::Ct { .. }) {
            // OVS refuses ct nested in ct, and refusing here keeps the
            // parser's recursion one level deep.
            return Err(Error::Invalid("ct inside ct"));
        }
        emit_action(out, a)?;
    }
    finish_action(out, start)
}

fn emit_nat(out: &mut Vec<u8>, nat: &CtNat) -> Result<()> {
    let start = start_nx(out, NXAST_NAT);
    out.put_zeros(2);
    let (kind, range) = match nat {
        CtNat::Existing => (0, NatRange::default()),
        CtNat::Src(r) => (NX_NAT_F_SRC, *r),
        CtNat::Dst(r) => (NX_NAT_F_DST, *r),
    };
    let mut flags = kind;
    if range.persistent {
        flags |= NX_NAT_F_PERSISTENT;
    }
    if range.hash {
        flags |= NX_NAT_F_PROTO_HASH;
    }
    if range.random {
        flags |= NX_NAT_F_PROTO_RANDOM;
    }
    // The checks OVS's decode_NXAST_RAW_NAT makes, so a bad range fails
    // here with a reason rather than as OFPBAC_BAD_ARGUMENT.
    let bad = |why| Err(Error::Invalid(why));
    if kind == 0 && flags != 0 {
        return bad("nat flags without src or dst");
    }
    if range.hash && range.random {
        return bad("nat with both hash and random");
    }
    if range.ports.is_some() && range.addrs.is_none() {
        return bad("nat port range without addresses");
    }
    let flags_at = out.len();
    out.put_u16(flags);
    out.put_u16(0);
    let mut present = 0;
    if let Some((min, max)) = range.addrs {
        if min.is_unspecified() || max < min {
            return bad("nat address range");
        }
        out.put_u32(min.into());
        present |= NX_NAT_RANGE_IPV4_MIN;
        // ovs-ofctl writes a single address as min alone; do the same so
        // it reads back as written.
        if max != min {
            out.put_u32(max.into());
            present |= NX_NAT_RANGE_IPV4_MAX;
        }
    }
    if let Some((min, max)) = range.ports {
        if min == 0 || max < min {
            return bad("nat port range");
        }
        out.put_u16(min);
        present |= NX_NAT_RANGE_PROTO_MIN;
        if max != min {
            out.put_u16(max);
            present |= NX_NAT_RANGE_PROTO_MAX;
        }
    }
    out.set_u16(flags_at + 2, present);
    finish_action(out, start)
}

fn check_subfield(field: Field, ofs: u16, n_bits: u16) -> Result<()> {
    if n_bits == 0 || u32::from(ofs) + u32::from(n_bits) > u32::from(field.bits()) {
        return Err(Error::TooLarge("reg_move bit range"));
    }
    Ok(())
}

pub(crate) fn emit_actions(out: &mut Vec<u8>, actions: &[Action]) -> Result<()> {
    for a in actions {
        emit_action(out, a)?;
    }
    Ok(())
}

/// Length of the action at the start of `r`, validated against what is
/// left.
fn action_len(r: &Reader<'_>) -> Result<usize> {
    let len = usize::from(r.peek_u16(2)?);
    if len < 8 || len & 7 != 0 || len > r.remaining() {
        return Err(Error::BadLength {
            what: "action",
            len,
        });
    }
    Ok(len)
}

/// Parses an action list filling `bytes` exactly.
pub(crate) fn parse_actions(bytes: &[u8]) -> Result<Vec<Action>> {
    let mut r = Reader::new(bytes, "action");
    let mut actions = Vec::new();
    while !r.is_empty() {
        let len = action_len(&r)?;
        let raw = r.bytes(len)?;
        actions.push(parse_action(raw, false)?);
    }
    Ok(actions)
}

/// Whether `raw` (one whole action) is NXAST_NAT.
fn is_nat(raw: &[u8]) -> bool {
    let mut r = Reader::new(raw, "action");
    matches!(
        (r.u16(), r.skip(2), r.u32(), r.u16()),
        (
            Ok(OFPAT_EXPERIMENTER),
            Ok(()),
            Ok(NX_VENDOR_ID),
            Ok(NXAST_NAT)
        )
    )
}

/// The body of NXAST_CT after its subtype; `None` when it uses what
/// [`Action::Ct`] cannot say (force, an ALG, IPv6 NAT, two NATs...).
fn parse_ct(mut r: Reader<'_>) -> Result<Option<Action>> {
    let flags = r.u16()?;
    let zone_src = r.u32()?;
    let zone_val = r.u16()?;
    let table = r.u8()?;
    r.skip(3)?;
    let alg = r.u16()?;
    if flags & !NX_CT_F_COMMIT != 0 || alg != 0 {
        return Ok(None);
    }
    let zone = if zone_src == 0 {
        CtZone::Imm(zone_val)
    } else {
        let Some(id) = oxm::id_from_header32(zone_src) else {
            return Ok(None);
        };
        let ofs = zone_val >> 6;
        let n_bits = (zone_val & 0x3f) + 1;
        let field = oxm::field_from_oxm(id);
        if n_bits != 16 || check_subfield(field, ofs, n_bits).is_err() {
            return Ok(None);
        }
        CtZone::Field { field, ofs }
    };
    let mut nat = None;
    let mut actions = Vec::new();
    while !r.is_empty() {
        let len = action_len(&r)?;
        let raw = r.bytes(len)?;
        if is_nat(raw) {
            match (nat, parse_nat(raw)?) {
                (None, Some(n)) => nat = Some(n),
                _ => return Ok(None),
            }
        } else {
            actions.push(parse_action(raw, true)?);
        }
    }
    Ok(Some(Action::Ct {
        commit: flags & NX_CT_F_COMMIT != 0,
        zone,
        table: (table != NX_CT_RECIRC_NONE).then_some(table),
        nat,
        actions,
    }))
}

/// NXAST_NAT (whole action); `None` for what [`CtNat`] cannot say or OVS
/// would refuse (IPv6, unknown flags, inconsistent ranges).
fn parse_nat(raw: &[u8]) -> Result<Option<CtNat>> {
    let mut r = Reader::new(raw, "nat action");
    r.skip(12)?;
    let flags = r.u16()?;
    let present = r.u16()?;
    let known_flags = NX_NAT_F_SRC
        | NX_NAT_F_DST
        | NX_NAT_F_PERSISTENT
        | NX_NAT_F_PROTO_HASH
        | NX_NAT_F_PROTO_RANDOM;
    let known_ranges = NX_NAT_RANGE_IPV4_MIN
        | NX_NAT_RANGE_IPV4_MAX
        | NX_NAT_RANGE_PROTO_MIN
        | NX_NAT_RANGE_PROTO_MAX;
    if flags & !known_flags != 0
        || present & !known_ranges != 0
        || present & (NX_NAT_RANGE_IPV6_MIN | NX_NAT_RANGE_IPV6_MAX) != 0
    {
        return Ok(None);
    }
    let has = |bit: u16| present & bit != 0;
    let mut range = NatRange {
        persistent: flags & NX_NAT_F_PERSISTENT != 0,
        hash: flags & NX_NAT_F_PROTO_HASH != 0,
        random: flags & NX_NAT_F_PROTO_RANDOM != 0,
        ..NatRange::default()
    };
    if has(NX_NAT_RANGE_IPV4_MIN) {
        let min = Ipv4Addr::from(r.u32()?);
        let max = if has(NX_NAT_RANGE_IPV4_MAX) {
            Ipv4Addr::from(r.u32()?)
        } else {
            min
        };
        if min.is_unspecified() || max < min {
            return Ok(None);
        }
        range.addrs = Some((min, max));
    } else if has(NX_NAT_RANGE_IPV4_MAX) {
        return Ok(None);
    }
    if has(NX_NAT_RANGE_PROTO_MIN) {
        let min = r.u16()?;
        let max = if has(NX_NAT_RANGE_PROTO_MAX) {
            r.u16()?
        } else {
            min
        };
        if min == 0 || max < min || range.addrs.is_none() {
            return Ok(None);
        }
        range.ports = Some((min, max));
    } else if has(NX_NAT_RANGE_PROTO_MAX) {
        return Ok(None);
    }
    let src = flags & NX_NAT_F_SRC != 0;
    let dst = flags & NX_NAT_F_DST != 0;
    Ok(match (src, dst) {
        (true, false) if !(range.hash && range.random) => Some(CtNat::Src(range)),
        (false, true) if !(range.hash && range.random) => Some(CtNat::Dst(range)),
        (false, false) if flags == 0 && present == 0 => Some(CtNat::Existing),
        _ => None,
    })
}

/// Parses one action whose bytes (with padding) are exactly `raw`;
/// `nested` inside a ct action, where another ct is kept raw (OVS refuses
/// it anyway, and it bounds the recursion).
fn parse_action(raw: &[u8], nested: bool) -> Result<Action> {
    let mut r = Reader::new(raw, "action");
    let kind = r.u16()?;
    r.skip(2)?;
    let unknown = || Action::Unknown(raw.to_vec());
    Ok(match kind {
        OFPAT_OUTPUT => {
            let p = r.u32()?;
            let max_len = r.u16()?;
            if p == port::CONTROLLER {
                Action::Controller {
                    max_len,
                    userdata: Vec::new(),
                }
            } else {
                Action::Output(p)
            }
        }
        OFPAT_GROUP => Action::Group(r.u32()?),
        OFPAT_DEC_NW_TTL => Action::DecTtl,
        OFPAT_SET_FIELD => {
            let fm = oxm::parse_entry(&mut r)?;
            if fm.mask.is_some() {
                // A masked set-field (OF1.5) is not a whole-field write.
                unknown()
            } else {
                Action::SetField {
                    field: fm.field,
                    value: fm.value,
                }
            }
        }
        OFPAT_EXPERIMENTER => {
            let vendor = r.u32()?;
            if vendor != NX_VENDOR_ID {
                return Ok(unknown());
            }
            match r.u16()? {
                NXAST_RESUBMIT_TABLE => {
                    let in_port = r.u16()?;
                    let table = r.u8()?;
                    if in_port == OFPP10_IN_PORT {
                        Action::Resubmit { table }
                    } else {
                        unknown()
                    }
                }
                NXAST_REG_MOVE => {
                    let n_bits = r.u16()?;
                    let src_ofs = r.u16()?;
                    let dst_ofs = r.u16()?;
                    let (src, _) = oxm::parse_header(&mut r)?;
                    let (dst, _) = oxm::parse_header(&mut r)?;
                    Action::Move {
                        src: oxm::field_from_oxm(src),
                        src_ofs,
                        dst: oxm::field_from_oxm(dst),
                        dst_ofs,
                        n_bits,
                    }
                }
                NXAST_CONTROLLER => {
                    let max_len = r.u16()?;
                    let id = r.u16()?;
                    let reason = r.u8()?;
                    if id == 0 && reason == OFPR_ACTION {
                        Action::Controller {
                            max_len,
                            userdata: Vec::new(),
                        }
                    } else {
                        unknown()
                    }
                }
                NXAST_CONTROLLER2 => {
                    r.skip(6)?;
                    parse_controller2(r)?.unwrap_or_else(unknown)
                }
                NXAST_CT if !nested => parse_ct(r)?.unwrap_or_else(unknown),
                NXAST_CT_CLEAR => Action::CtClear,
                NXAST_CONJUNCTION => {
                    let clause = r.u8()?;
                    let n_clauses = r.u8()?;
                    let id = r.u32()?;
                    if (2..=64).contains(&n_clauses) && clause < n_clauses {
                        Action::Conjunction {
                            id,
                            clause,
                            n_clauses,
                        }
                    } else {
                        unknown()
                    }
                }
                _ => unknown(),
            }
        }
        _ => unknown(),
    })
}

/// The properties of NXAST_CONTROLLER2; `None` when they ask for more than
/// [`Action::Controller`] can say (another controller id, reason, pause,
/// meter).
fn parse_controller2(mut r: Reader<'_>) -> Result<Option<Action>> {
    let mut max_len = OFPCML_NO_BUFFER;
    let mut userdata = Vec::new();
    while !r.is_empty() {
        let kind = r.u16()?;
        let len = usize::from(r.u16()?);
        if len < 4 {
            return Err(Error::BadLength {
                what: "controller2 property",
                len,
            });
        }
        let mut v = Reader::new(r.bytes(len - 4)?, "controller2 property");
        r.skip((pad8(len) - len).min(r.remaining()))?;
        match kind {
            NXAC2PT_MAX_LEN => max_len = v.u16()?,
            NXAC2PT_CONTROLLER_ID if v.u16()? == 0 => {}
            NXAC2PT_REASON if v.u8()? == OFPR_ACTION => {}
            NXAC2PT_USERDATA => userdata = v.rest().to_vec(),
            _ => return Ok(None),
        }
    }
    Ok(Some(Action::Controller { max_len, userdata }))
}

/// Appends the instructions of a flow: meter (a leading
/// [`Action::Meter`]), apply-actions (only if there are other actions),
/// then goto-table, the order OVS writes them in.
pub(crate) fn emit_instructions(
    out: &mut Vec<u8>,
    actions: &[Action],
    goto_table: Option<u8>,
) -> Result<()> {
    let actions = match actions.split_first() {
        Some((Action::Meter(id), rest)) => {
            out.put_u16(OFPIT_METER);
            out.put_u16(8);
            out.put_u32(*id);
            rest
        }
        _ => actions,
    };
    if !actions.is_empty() {
        let start = out.len();
        out.put_u16(OFPIT_APPLY_ACTIONS);
        out.put_u16(0);
        out.put_zeros(4);
        emit_actions(out, actions)?;
        let len = len16(out, start, "apply-actions instruction")?;
        out.set_u16(start + 2, len);
    }
    if let Some(t) = goto_table {
        out.put_u16(OFPIT_GOTO_TABLE);
        out.put_u16(8);
        out.put_u8(t);
        out.put_zeros(3);
    }
    Ok(())
}

/// Parses an instruction set into (apply-actions, goto-table), a meter
/// instruction becoming a leading [`Action::Meter`]. Other instructions
/// (write-metadata, write/clear-actions) are not part of [`crate::Flow`]
/// and are reported as unsupported.
pub(crate) fn parse_instructions(bytes: &[u8]) -> Result<(Vec<Action>, Option<u8>)> {
    let mut r = Reader::new(bytes, "instruction");
    let mut actions = Vec::new();
    let mut goto = None;
    let mut meter = None;
    let mut seen_apply = false;
    while !r.is_empty() {
        let kind = r.peek_u16(0)?;
        let len = usize::from(r.peek_u16(2)?);
        if len < 8 || len & 7 != 0 || len > r.remaining() {
            return Err(Error::BadLength {
                what: "instruction",
                len,
            });
        }
        let mut ir = Reader::new(r.bytes(len)?, "instruction");
        ir.skip(4)?;
        match kind {
            OFPIT_APPLY_ACTIONS if !seen_apply => {
                seen_apply = true;
                ir.skip(4)?;
                actions = parse_actions(ir.rest())?;
            }
            OFPIT_GOTO_TABLE if goto.is_none() => goto = Some(ir.u8()?),
            OFPIT_METER if meter.is_none() => meter = Some(ir.u32()?),
            _ => {
                return Err(Error::Unsupported {
                    what: "instruction",
                    value: kind.into(),
                })
            }
        }
    }
    if let Some(id) = meter {
        actions.insert(0, Action::Meter(id));
    }
    Ok((actions, goto))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(a: Action) -> Vec<u8> {
        let mut out = Vec::new();
        emit_action(&mut out, &a).unwrap();
        assert_eq!(out.len() % 8, 0, "{a:?}");
        assert_eq!(parse_actions(&out).unwrap(), vec![a]);
        out
    }

    #[test]
    fn actions_round_trip() {
        round_trip(Action::Output(3));
        round_trip(Action::Controller {
            max_len: 128,
            userdata: vec![],
        });
        round_trip(Action::Controller {
            max_len: 0xffff,
            userdata: vec![1, 2, 3],
        });
        round_trip(Action::Controller {
            max_len: 64,
            userdata: vec![9; 20],
        });
        round_trip(Action::SetField {
            field: Field::EthDst,
            value: 0x0200_0000_0001,
        });
        round_trip(Action::SetField {
            field: Field::Reg(7),
            value: 42,
        });
        round_trip(Action::SetField {
            field: Field::CtLabel,
            value: 1 << 127,
        });
        let mv = round_trip(Action::Move {
            src: Field::EthSrc,
            src_ofs: 0,
            dst: Field::EthDst,
            dst_ofs: 0,
            n_bits: 48,
        });
        assert_eq!(mv.len(), 24);
        round_trip(Action::DecTtl);
        round_trip(Action::Resubmit { table: 9 });
        round_trip(Action::Group(77));
        round_trip(Action::Unknown(vec![0, 11, 0, 8, 0, 0, 0, 0]));
    }

    fn ct(commit: bool, zone: CtZone, table: Option<u8>, nat: Option<CtNat>) -> Action {
        Action::Ct {
            commit,
            zone,
            table,
            nat,
            actions: vec![],
        }
    }

    #[test]
    fn conntrack_actions_round_trip() {
        let plain = round_trip(ct(false, CtZone::Imm(0), None, None));
        assert_eq!(plain.len(), 24);
        round_trip(ct(false, CtZone::Imm(7), Some(3), Some(CtNat::Existing)));
        round_trip(ct(
            true,
            CtZone::Field {
                field: Field::Reg(6),
                ofs: 16,
            },
            Some(40),
            None,
        ));
        round_trip(ct(
            true,
            CtZone::Field {
                field: Field::Metadata,
                ofs: 0,
            },
            None,
            None,
        ));
        let ip = |d| Ipv4Addr::new(203, 0, 113, d);
        round_trip(ct(
            true,
            CtZone::Imm(9),
            Some(12),
            Some(CtNat::Src(NatRange::addr(ip(5)))),
        ));
        round_trip(ct(
            true,
            CtZone::Imm(9),
            None,
            Some(CtNat::Dst(NatRange::addr_port(ip(6), 8080))),
        ));
        let wide = round_trip(ct(
            true,
            CtZone::Imm(9),
            None,
            Some(CtNat::Src(NatRange {
                addrs: Some((ip(1), ip(9))),
                ports: Some((1024, 65535)),
                persistent: true,
                hash: false,
                random: true,
            })),
        ));
        // ct 24 + nat (16 + 4 + 4 + 2 + 2 = 28, padded to 32)
        assert_eq!(wide.len(), 56);
        round_trip(Action::Ct {
            commit: true,
            zone: CtZone::Imm(1),
            table: None,
            nat: Some(CtNat::Src(NatRange {
                persistent: true,
                ..NatRange::default()
            })),
            actions: vec![
                Action::SetField {
                    field: Field::CtMark,
                    value: 0x10,
                },
                Action::SetField {
                    field: Field::CtLabel,
                    value: 1 << 64,
                },
            ],
        });
        round_trip(Action::CtClear);
        let c = round_trip(Action::Conjunction {
            id: 0xdead_beef,
            clause: 1,
            n_clauses: 3,
        });
        assert_eq!(c.len(), 16);
    }

    #[test]
    fn bad_conntrack_actions_are_refused() {
        let emit = |a: Action| emit_action(&mut Vec::new(), &a);
        assert!(emit(ct(false, CtZone::Imm(0), Some(0xff), None)).is_err());
        // OVS takes exactly 16 bits for the zone.
        assert!(emit(ct(
            false,
            CtZone::Field {
                field: Field::Reg(0),
                ofs: 17,
            },
            None,
            None
        ))
        .is_err());
        // A field with only a 64-bit experimenter header cannot be named.
        assert!(emit(ct(
            false,
            CtZone::Field {
                field: Field::Unknown {
                    class: 0xffff,
                    field: 1,
                    experimenter: 7,
                    len: 2
                },
                ofs: 0,
            },
            None,
            None
        ))
        .is_err());
        let nat = |n: NatRange| emit(ct(true, CtZone::Imm(0), None, Some(CtNat::Src(n))));
        assert!(nat(NatRange {
            hash: true,
            random: true,
            ..NatRange::default()
        })
        .is_err());
        assert!(nat(NatRange {
            ports: Some((1, 2)),
            ..NatRange::default()
        })
        .is_err());
        assert!(nat(NatRange::addr(Ipv4Addr::UNSPECIFIED)).is_err());
        assert!(nat(NatRange {
            addrs: Some((Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1))),
            ..NatRange::default()
        })
        .is_err());
        assert!(nat(NatRange::addr_port(Ipv4Addr::new(10, 0, 0, 1), 0)).is_err());
        assert!(emit(Action::Ct {
            commit: true,
            zone: CtZone::Imm(0),
            table: None,
            nat: None,
            actions: vec![ct(false, CtZone::Imm(0), None, None)],
        })
        .is_err());
        for (clause, n_clauses) in [(0, 1), (2, 2), (0, 65)] {
            assert!(emit(Action::Conjunction {
                id: 1,
                clause,
                n_clauses
            })
            .is_err());
        }
        assert!(emit(Action::Meter(1)).is_err());
    }

    #[test]
    fn ct_that_cannot_be_modelled_is_kept_raw() {
        let mut out = Vec::new();
        emit_action(&mut out, &ct(true, CtZone::Imm(3), None, None)).unwrap();
        // force flag
        let mut force = out.clone();
        force[11] |= 2;
        assert_eq!(
            parse_actions(&force).unwrap(),
            vec![Action::Unknown(force.clone())]
        );
        // alg=ftp
        let mut alg = out.clone();
        alg[23] = 21;
        assert_eq!(
            parse_actions(&alg).unwrap(),
            vec![Action::Unknown(alg.clone())]
        );
        // A conjunction OVS would refuse.
        let bad = [0xff, 0xff, 0, 16, 0, 0, 0x23, 0x20, 0, 34, 3, 3, 0, 0, 0, 1];
        assert_eq!(
            parse_actions(&bad).unwrap(),
            vec![Action::Unknown(bad.to_vec())]
        );
    }

    #[test]
    fn meter_is_an_instruction() {
        let acts = vec![Action::Meter(5), Action::Output(1)];
        let mut out = Vec::new();
        emit_instructions(&mut out, &acts, Some(3)).unwrap();
        // meter (8), apply-actions (8 + 16), goto (8)
        assert_eq!(&out[..8], &[0, 6, 0, 8, 0, 0, 0, 5]);
        assert_eq!(out.len(), 40);
        assert_eq!(parse_instructions(&out).unwrap(), (acts, Some(3)));
        let mut out = Vec::new();
        emit_instructions(&mut out, &[Action::Meter(9)], None).unwrap();
        assert_eq!(
            parse_instructions(&out).unwrap(),
            (vec![Action::Meter(9)], None)
        );
        // Anywhere but first it cannot be written.
        let late = [Action::Output(1), Action::Meter(5)];
        assert!(emit_instructions(&mut Vec::new(), &late, None).is_err());
    }

    #[test]
    fn output_controller_is_normalised() {
        let mut out = Vec::new();
        emit_action(&mut out, &Action::Output(port::CONTROLLER)).unwrap();
        assert_eq!(
            parse_actions(&out).unwrap(),
            vec![Action::Controller {
                max_len: 0xffff,
                userdata: vec![]
            }]
        );
    }

    #[test]
    fn bad_moves_and_lengths_are_rejected() {
        let bad = Action::Move {
            src: Field::Reg(0),
            src_ofs: 16,
            dst: Field::Reg(1),
            dst_ofs: 0,
            n_bits: 32,
        };
        assert!(emit_action(&mut Vec::new(), &bad).is_err());
        assert!(parse_actions(&[0, 0, 0, 12, 0, 0, 0, 1]).is_err());
        assert!(parse_actions(&[0, 0, 0, 0]).is_err());
        assert!(emit_action(&mut Vec::new(), &Action::Unknown(vec![0, 1, 0, 16])).is_err());
    }

    #[test]
    fn instructions_round_trip() {
        let acts = vec![Action::DecTtl, Action::Output(1)];
        let mut out = Vec::new();
        emit_instructions(&mut out, &acts, Some(4)).unwrap();
        assert_eq!(parse_instructions(&out).unwrap(), (acts, Some(4)));
        let mut out = Vec::new();
        emit_instructions(&mut out, &[], None).unwrap();
        assert!(out.is_empty());
    }
}
