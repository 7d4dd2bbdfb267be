//! Actions and instructions on the wire (OpenFlow 1.4 plus the Nicira
//! experimenter actions), following the layouts in OVS's
//! `lib/ofp-actions.c`.

use crate::error::{Error, Result};
use crate::flow::{port, Action, Field};
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
        actions.push(parse_action(raw)?);
    }
    Ok(actions)
}

/// Parses one action whose bytes (with padding) are exactly `raw`.
fn parse_action(raw: &[u8]) -> Result<Action> {
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

/// Appends the instructions of a flow: apply-actions (only if there are
/// actions), then goto-table, the order OVS writes them in.
pub(crate) fn emit_instructions(
    out: &mut Vec<u8>,
    actions: &[Action],
    goto_table: Option<u8>,
) -> Result<()> {
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

/// Parses an instruction set into (apply-actions, goto-table). Other
/// instructions (write-metadata, write/clear-actions, meter) are not part of
/// [`crate::Flow`] and are reported as unsupported.
pub(crate) fn parse_instructions(bytes: &[u8]) -> Result<(Vec<Action>, Option<u8>)> {
    let mut r = Reader::new(bytes, "instruction");
    let mut actions = Vec::new();
    let mut goto = None;
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
            _ => {
                return Err(Error::Unsupported {
                    what: "instruction",
                    value: kind.into(),
                })
            }
        }
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
