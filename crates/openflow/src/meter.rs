//! Meters (OpenFlow 1.3+ `OFPT_METER_MOD`, meter config and meter stats
//! multiparts): rate limiters a flow enters with [`crate::Action::Meter`]
//! (the OFPIT_METER instruction). Layouts follow OVS's
//! `include/openflow/openflow-1.3.h`.

use crate::error::{Error, Result};
use crate::wire::{len16, Put, Reader};

/// `ofp13_meter_flags`.
pub mod flags {
    /// Band rates are in kilobits per second ...
    pub const KBPS: u16 = 1 << 0;
    /// ... or in packets per second.
    pub const PKTPS: u16 = 1 << 1;
    /// Use each band's `burst_size` (else the switch picks one).
    pub const BURST: u16 = 1 << 2;
    /// Keep statistics.
    pub const STATS: u16 = 1 << 3;
}

/// Meter ids above this are reserved.
pub const OFPM_MAX: u32 = 0xffff_0000;
/// `OFPM_ALL`: every meter (delete, config and stats requests).
pub const OFPM_ALL: u32 = 0xffff_ffff;

const OFPMBT_DROP: u16 = 1;
const OFPMBT_DSCP_REMARK: u16 = 2;
/// Every standard band is 16 bytes.
const BAND_LEN: u16 = 16;

/// `ofp13_meter_mod_command`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MeterModCommand {
    Add,
    Modify,
    Delete,
    Unknown(u16),
}

impl MeterModCommand {
    fn to_u16(self) -> u16 {
        match self {
            Self::Add => 0,
            Self::Modify => 1,
            Self::Delete => 2,
            Self::Unknown(v) => v,
        }
    }
    fn from_u16(v: u16) -> Self {
        match v {
            0 => Self::Add,
            1 => Self::Modify,
            2 => Self::Delete,
            v => Self::Unknown(v),
        }
    }
}

/// One band of a meter: what happens to traffic above `rate` (in the
/// meter's unit, see [`flags`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MeterBand {
    /// Drop what exceeds the rate.
    Drop { rate: u32, burst_size: u32 },
    /// Raise the drop precedence of the DSCP by `prec_level` (OVS does not
    /// implement this band; it is here so a config reads back whole).
    DscpRemark {
        rate: u32,
        burst_size: u32,
        prec_level: u8,
    },
    /// Another band type, kept whole (type, length, body).
    Unknown(Vec<u8>),
}

/// `OFPT_METER_MOD`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeterMod {
    pub command: MeterModCommand,
    /// [`flags`]: one of `KBPS`/`PKTPS`, optionally `BURST`, `STATS`.
    pub flags: u16,
    /// 1..=[`OFPM_MAX`]; [`OFPM_ALL`] with `Delete` removes every meter.
    pub meter_id: u32,
    /// Empty for `Delete`.
    pub bands: Vec<MeterBand>,
}

/// One entry of a meter config reply (`ofp13_meter_config`): what the
/// switch has installed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeterConfig {
    pub flags: u16,
    pub meter_id: u32,
    pub bands: Vec<MeterBand>,
}

/// Counters of one band.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BandStats {
    pub packet_count: u64,
    pub byte_count: u64,
}

/// One entry of a meter stats reply (`ofp13_meter_stats`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeterStats {
    pub meter_id: u32,
    /// Flows that use the meter.
    pub flow_count: u32,
    /// Packets and bytes that entered the meter.
    pub packet_in_count: u64,
    pub byte_in_count: u64,
    pub duration_sec: u32,
    pub duration_nsec: u32,
    /// Per band, in the meter's band order: what exceeded its rate.
    pub bands: Vec<BandStats>,
}

pub(crate) fn emit_bands(out: &mut Vec<u8>, bands: &[MeterBand]) -> Result<()> {
    for b in bands {
        match b {
            MeterBand::Drop { rate, burst_size } => {
                out.put_u16(OFPMBT_DROP);
                out.put_u16(BAND_LEN);
                out.put_u32(*rate);
                out.put_u32(*burst_size);
                out.put_zeros(4);
            }
            MeterBand::DscpRemark {
                rate,
                burst_size,
                prec_level,
            } => {
                out.put_u16(OFPMBT_DSCP_REMARK);
                out.put_u16(BAND_LEN);
                out.put_u32(*rate);
                out.put_u32(*burst_size);
                out.put_u8(*prec_level);
                out.put_zeros(3);
            }
            MeterBand::Unknown(raw) => {
                let mut r = Reader::new(raw, "meter band");
                let len = band_len(&r)?;
                if len != raw.len() {
                    return Err(Error::BadLength {
                        what: "unknown meter band",
                        len: raw.len(),
                    });
                }
                out.extend_from_slice(r.rest());
            }
        }
    }
    Ok(())
}

/// Length of the band at the start of `r`, checked against what is left.
fn band_len(r: &Reader<'_>) -> Result<usize> {
    let len = usize::from(r.peek_u16(2)?);
    if len < 16 || len & 7 != 0 || len > r.remaining() {
        return Err(Error::BadLength {
            what: "meter band",
            len,
        });
    }
    Ok(len)
}

/// Parses bands filling `bytes` exactly.
pub(crate) fn parse_bands(bytes: &[u8]) -> Result<Vec<MeterBand>> {
    let mut r = Reader::new(bytes, "meter band");
    let mut bands = Vec::new();
    while !r.is_empty() {
        let len = band_len(&r)?;
        let raw = r.bytes(len)?;
        let mut b = Reader::new(raw, "meter band");
        let kind = b.u16()?;
        b.skip(2)?;
        let rate = b.u32()?;
        let burst_size = b.u32()?;
        bands.push(match kind {
            OFPMBT_DROP if len == 16 => MeterBand::Drop { rate, burst_size },
            OFPMBT_DSCP_REMARK if len == 16 => MeterBand::DscpRemark {
                rate,
                burst_size,
                prec_level: b.u8()?,
            },
            _ => MeterBand::Unknown(raw.to_vec()),
        });
    }
    Ok(bands)
}

pub(crate) fn emit_meter_mod(out: &mut Vec<u8>, m: &MeterMod) -> Result<()> {
    out.put_u16(m.command.to_u16());
    out.put_u16(m.flags);
    out.put_u32(m.meter_id);
    emit_bands(out, &m.bands)
}

pub(crate) fn parse_meter_mod(mut r: Reader<'_>) -> Result<MeterMod> {
    let command = MeterModCommand::from_u16(r.u16()?);
    let flags = r.u16()?;
    let meter_id = r.u32()?;
    Ok(MeterMod {
        command,
        flags,
        meter_id,
        bands: parse_bands(r.rest())?,
    })
}

pub(crate) fn emit_meter_configs(out: &mut Vec<u8>, configs: &[MeterConfig]) -> Result<()> {
    for c in configs {
        let start = out.len();
        out.put_u16(0);
        out.put_u16(c.flags);
        out.put_u32(c.meter_id);
        emit_bands(out, &c.bands)?;
        let len = len16(out, start, "meter config")?;
        out.set_u16(start, len);
    }
    Ok(())
}

pub(crate) fn parse_meter_configs(bytes: &[u8]) -> Result<Vec<MeterConfig>> {
    let mut r = Reader::new(bytes, "meter config");
    let mut configs = Vec::new();
    while !r.is_empty() {
        let len = usize::from(r.peek_u16(0)?);
        if len < 8 {
            return Err(Error::BadLength {
                what: "meter config",
                len,
            });
        }
        let mut e = Reader::new(r.bytes(len)?, "meter config");
        e.skip(2)?;
        let flags = e.u16()?;
        let meter_id = e.u32()?;
        configs.push(MeterConfig {
            flags,
            meter_id,
            bands: parse_bands(e.rest())?,
        });
    }
    Ok(configs)
}

/// Fixed part of `ofp13_meter_stats`.
const METER_STATS_LEN: usize = 40;

pub(crate) fn emit_meter_stats(out: &mut Vec<u8>, stats: &[MeterStats]) -> Result<()> {
    for s in stats {
        let start = out.len();
        out.put_u32(s.meter_id);
        out.put_u16(0);
        out.put_zeros(6);
        out.put_u32(s.flow_count);
        out.put_u64(s.packet_in_count);
        out.put_u64(s.byte_in_count);
        out.put_u32(s.duration_sec);
        out.put_u32(s.duration_nsec);
        for b in &s.bands {
            out.put_u64(b.packet_count);
            out.put_u64(b.byte_count);
        }
        let len = len16(out, start, "meter stats")?;
        out.set_u16(start + 4, len);
    }
    Ok(())
}

pub(crate) fn parse_meter_stats(bytes: &[u8]) -> Result<Vec<MeterStats>> {
    let mut r = Reader::new(bytes, "meter stats");
    let mut stats = Vec::new();
    while !r.is_empty() {
        let len = usize::from(r.peek_u16(4)?);
        if len < METER_STATS_LEN || !(len - METER_STATS_LEN).is_multiple_of(16) {
            return Err(Error::BadLength {
                what: "meter stats",
                len,
            });
        }
        let mut e = Reader::new(r.bytes(len)?, "meter stats");
        let meter_id = e.u32()?;
        e.skip(8)?;
        let flow_count = e.u32()?;
        let packet_in_count = e.u64()?;
        let byte_in_count = e.u64()?;
        let duration_sec = e.u32()?;
        let duration_nsec = e.u32()?;
        let mut bands = Vec::new();
        while !e.is_empty() {
            bands.push(BandStats {
                packet_count: e.u64()?,
                byte_count: e.u64()?,
            });
        }
        stats.push(MeterStats {
            meter_id,
            flow_count,
            packet_in_count,
            byte_in_count,
            duration_sec,
            duration_nsec,
            bands,
        });
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_round_trip_and_unknown_kept() {
        let bands = vec![
            MeterBand::Drop {
                rate: 10_000,
                burst_size: 1_000,
            },
            MeterBand::DscpRemark {
                rate: 5,
                burst_size: 0,
                prec_level: 1,
            },
            MeterBand::Unknown(vec![
                0xff, 0xff, 0, 16, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0x23, 0x20,
            ]),
        ];
        let mut out = Vec::new();
        emit_bands(&mut out, &bands).unwrap();
        assert_eq!(out.len(), 48);
        assert_eq!(parse_bands(&out).unwrap(), bands);
        assert!(parse_bands(&out[..40]).is_err());
        assert!(emit_bands(&mut Vec::new(), &[MeterBand::Unknown(vec![0, 1, 0, 8])]).is_err());
    }

    #[test]
    fn stats_round_trip() {
        let stats = vec![MeterStats {
            meter_id: 3,
            flow_count: 2,
            packet_in_count: 100,
            byte_in_count: 150_000,
            duration_sec: 9,
            duration_nsec: 5,
            bands: vec![BandStats {
                packet_count: 40,
                byte_count: 60_000,
            }],
        }];
        let mut out = Vec::new();
        emit_meter_stats(&mut out, &stats).unwrap();
        assert_eq!(out.len(), 56);
        assert_eq!(parse_meter_stats(&out).unwrap(), stats);
        assert!(parse_meter_stats(&out[..50]).is_err());
    }
}
