//! OpenFlow 1.4 messages: a [`Message`] representation with `parse` (from
//! untrusted bytes, never panicking) and `emit`. Layouts follow OVS's
//! `include/openflow/openflow-1.{1,3,4}.h` and `nicira-ext.h`.

use std::fmt;

use crate::action::{self, OFPCML_NO_BUFFER};
use crate::error::{Error, Result};
use crate::flow::{port, Action, Flow, Match};
use crate::meter::{self, MeterConfig, MeterMod, MeterStats};
use crate::oxm;
use crate::wire::{
    finish_msg, len16, pad8, start_msg, Packet, Put, Reader, HEADER_LEN, NX_VENDOR_ID, VERSION,
};

/// `ofp_type` values (OpenFlow 1.4).
pub mod msg_type {
    pub const HELLO: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const ECHO_REQUEST: u8 = 2;
    pub const ECHO_REPLY: u8 = 3;
    pub const EXPERIMENTER: u8 = 4;
    pub const FEATURES_REQUEST: u8 = 5;
    pub const FEATURES_REPLY: u8 = 6;
    pub const GET_CONFIG_REQUEST: u8 = 7;
    pub const GET_CONFIG_REPLY: u8 = 8;
    pub const SET_CONFIG: u8 = 9;
    pub const PACKET_IN: u8 = 10;
    pub const FLOW_REMOVED: u8 = 11;
    pub const PORT_STATUS: u8 = 12;
    pub const PACKET_OUT: u8 = 13;
    pub const FLOW_MOD: u8 = 14;
    pub const GROUP_MOD: u8 = 15;
    pub const MULTIPART_REQUEST: u8 = 18;
    pub const MULTIPART_REPLY: u8 = 19;
    pub const BARRIER_REQUEST: u8 = 20;
    pub const BARRIER_REPLY: u8 = 21;
    pub const METER_MOD: u8 = 29;
    pub const BUNDLE_CONTROL: u8 = 33;
    pub const BUNDLE_ADD_MESSAGE: u8 = 34;
}

/// "No buffer": the packet travels in the message itself.
pub const NO_BUFFER: u32 = 0xffff_ffff;
/// `OFPG_ANY`: no restriction on output group.
pub const OFPG_ANY: u32 = 0xffff_ffff;
/// `OFPTT_ALL`: every table.
pub const OFPTT_ALL: u8 = 0xff;

/// Bundle flags.
pub const OFPBF_ATOMIC: u16 = 1;
pub const OFPBF_ORDERED: u16 = 2;

/// `OFPBFC_MSG_FAILED`: a bundle commit failed on one of its messages.
pub const OFPT_ERR_BUNDLE_MSG_FAILED: u16 = 13;

/// Multipart flag: more parts follow.
pub const OFPMPF_MORE: u16 = 1;

const OFPHET_VERSIONBITMAP: u16 = 1;
const OFPMP_FLOW: u16 = 1;
const OFPMP_METER: u16 = 9;
const OFPMP_METER_CONFIG: u16 = 10;
const NXT_SET_PACKET_IN_FORMAT: u32 = 16;
const NXT_PACKET_IN2: u32 = 30;

/// `NXT_SET_PACKET_IN_FORMAT` value asking for NXT_PACKET_IN2, the only
/// packet-in that carries NXAST_CONTROLLER2's userdata.
pub const NXPIF_NXT_PACKET_IN2: u32 = 2;

/// One OpenFlow message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    Error(OfpError),
    EchoRequest(Vec<u8>),
    EchoReply(Vec<u8>),
    FeaturesRequest,
    FeaturesReply(FeaturesReply),
    GetConfigRequest,
    GetConfigReply(SwitchConfig),
    SetConfig(SwitchConfig),
    /// `OFPT_PACKET_IN` (OpenFlow 1.4 layout).
    PacketIn(PacketIn),
    /// Nicira `NXT_PACKET_IN2`: the same information plus userdata.
    NxPacketIn2(PacketIn),
    /// Nicira `NXT_SET_PACKET_IN_FORMAT`.
    NxSetPacketInFormat(u32),
    PacketOut(PacketOut),
    FlowMod(FlowMod),
    GroupMod(GroupMod),
    /// `OFPT_METER_MOD`.
    MeterMod(MeterMod),
    MultipartRequest(MultipartRequest),
    MultipartReply(MultipartReply),
    BarrierRequest,
    BarrierReply,
    BundleControl(BundleControl),
    BundleAdd(BundleAdd),
    /// An experimenter message this codec does not model.
    Experimenter {
        experimenter: u32,
        exp_type: u32,
        data: Vec<u8>,
    },
    /// A message type this codec does not model (port status, flow
    /// removed, ...), body kept verbatim.
    Unknown {
        msg_type: u8,
        body: Vec<u8>,
    },
}

/// Hello, with the version bitmap element if present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Header version (the sender's highest).
    pub version: u8,
    /// Bit `n` set: version `n` supported (first bitmap word only).
    pub bitmap: Option<u32>,
}

impl Hello {
    /// Our hello: OpenFlow 1.4 only.
    pub fn ours() -> Self {
        Self {
            version: VERSION,
            bitmap: Some(1 << VERSION),
        }
    }

    /// Whether the peer can speak OpenFlow 1.4 with us (OpenFlow 1.3.1
    /// negotiation: the bitmap if present, else the header version).
    pub fn accepts_ours(&self) -> bool {
        match self.bitmap {
            Some(b) => b & (1 << VERSION) != 0,
            None => self.version >= VERSION,
        }
    }
}

/// An `OFPT_ERROR`: type, code and (part of) the offending request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfpError {
    pub err_type: u16,
    pub code: u16,
    /// Set for experimenter errors (`err_type` 0xffff).
    pub experimenter: Option<u32>,
    /// At least the first 64 bytes of the offending message (OVS).
    pub data: Vec<u8>,
}

impl OfpError {
    /// Type and xid of the offending message, if `data` starts with its
    /// header.
    pub fn offending(&self) -> Option<(u8, u32)> {
        let mut r = Reader::new(&self.data, "offending message");
        let _version = r.u8().ok()?;
        let t = r.u8().ok()?;
        let _len = r.u16().ok()?;
        Some((t, r.u32().ok()?))
    }

    /// The symbolic name OpenFlow gives this error, e.g.
    /// `OFPBAC_BAD_OUT_PORT`.
    pub fn name(&self) -> Option<&'static str> {
        if self.experimenter.is_some() {
            return None;
        }
        error_name(self.err_type, self.code)
    }
}

impl fmt::Display for OfpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.name(), self.experimenter) {
            (Some(n), _) => write!(f, "{n} (type {}, code {})", self.err_type, self.code)?,
            (None, Some(e)) => write!(f, "experimenter {e:#x} error code {}", self.code)?,
            (None, None) => write!(f, "type {}, code {}", self.err_type, self.code)?,
        }
        if let Some((t, xid)) = self.offending() {
            write!(f, " for message type {t} xid {xid:#x}")?;
        }
        Ok(())
    }
}

fn error_name(err_type: u16, code: u16) -> Option<&'static str> {
    const HELLO: &[&str] = &["OFPHFC_INCOMPATIBLE", "OFPHFC_EPERM"];
    const REQ: &[&str] = &[
        "OFPBRC_BAD_VERSION",
        "OFPBRC_BAD_TYPE",
        "OFPBRC_BAD_MULTIPART",
        "OFPBRC_BAD_EXPERIMENTER",
        "OFPBRC_BAD_EXP_TYPE",
        "OFPBRC_EPERM",
        "OFPBRC_BAD_LEN",
        "OFPBRC_BUFFER_EMPTY",
        "OFPBRC_BUFFER_UNKNOWN",
        "OFPBRC_BAD_TABLE_ID",
        "OFPBRC_IS_SLAVE",
        "OFPBRC_BAD_PORT",
        "OFPBRC_BAD_PACKET",
        "OFPBRC_MULTIPART_BUFFER_OVERFLOW",
        "OFPBRC_MULTIPART_REQUEST_TIMEOUT",
        "OFPBRC_MULTIPART_REPLY_TIMEOUT",
    ];
    const ACT: &[&str] = &[
        "OFPBAC_BAD_TYPE",
        "OFPBAC_BAD_LEN",
        "OFPBAC_BAD_EXPERIMENTER",
        "OFPBAC_BAD_EXP_TYPE",
        "OFPBAC_BAD_OUT_PORT",
        "OFPBAC_BAD_ARGUMENT",
        "OFPBAC_EPERM",
        "OFPBAC_TOO_MANY",
        "OFPBAC_BAD_QUEUE",
        "OFPBAC_BAD_OUT_GROUP",
        "OFPBAC_MATCH_INCONSISTENT",
        "OFPBAC_UNSUPPORTED_ORDER",
        "OFPBAC_BAD_TAG",
        "OFPBAC_BAD_SET_TYPE",
        "OFPBAC_BAD_SET_LEN",
        "OFPBAC_BAD_SET_ARGUMENT",
    ];
    const INST: &[&str] = &[
        "OFPBIC_UNKNOWN_INST",
        "OFPBIC_UNSUP_INST",
        "OFPBIC_BAD_TABLE_ID",
        "OFPBIC_UNSUP_METADATA",
        "OFPBIC_UNSUP_METADATA_MASK",
        "OFPBIC_BAD_EXPERIMENTER",
        "OFPBIC_BAD_EXP_TYPE",
        "OFPBIC_BAD_LEN",
        "OFPBIC_EPERM",
    ];
    const MATCH: &[&str] = &[
        "OFPBMC_BAD_TYPE",
        "OFPBMC_BAD_LEN",
        "OFPBMC_BAD_TAG",
        "OFPBMC_BAD_DL_ADDR_MASK",
        "OFPBMC_BAD_NW_ADDR_MASK",
        "OFPBMC_BAD_WILDCARDS",
        "OFPBMC_BAD_FIELD",
        "OFPBMC_BAD_VALUE",
        "OFPBMC_BAD_MASK",
        "OFPBMC_BAD_PREREQ",
        "OFPBMC_DUP_FIELD",
        "OFPBMC_EPERM",
    ];
    const FLOW: &[&str] = &[
        "OFPFMFC_UNKNOWN",
        "OFPFMFC_TABLE_FULL",
        "OFPFMFC_BAD_TABLE_ID",
        "OFPFMFC_OVERLAP",
        "OFPFMFC_EPERM",
        "OFPFMFC_BAD_TIMEOUT",
        "OFPFMFC_BAD_COMMAND",
        "OFPFMFC_BAD_FLAGS",
        "OFPFMFC_CANT_SYNC",
        "OFPFMFC_BAD_PRIORITY",
        "OFPFMFC_IS_SYNC",
    ];
    const GROUP: &[&str] = &[
        "OFPGMFC_GROUP_EXISTS",
        "OFPGMFC_INVALID_GROUP",
        "OFPGMFC_WEIGHT_UNSUPPORTED",
        "OFPGMFC_OUT_OF_GROUPS",
        "OFPGMFC_OUT_OF_BUCKETS",
        "OFPGMFC_CHAINING_UNSUPPORTED",
        "OFPGMFC_WATCH_UNSUPPORTED",
        "OFPGMFC_LOOP",
        "OFPGMFC_UNKNOWN_GROUP",
        "OFPGMFC_CHAINED_GROUP",
        "OFPGMFC_BAD_TYPE",
        "OFPGMFC_BAD_COMMAND",
        "OFPGMFC_BAD_BUCKET",
        "OFPGMFC_BAD_WATCH",
        "OFPGMFC_EPERM",
    ];
    const CONFIG: &[&str] = &["OFPSCFC_BAD_FLAGS", "OFPSCFC_BAD_LEN", "OFPSCFC_EPERM"];
    const METER: &[&str] = &[
        "OFPMMFC_UNKNOWN",
        "OFPMMFC_METER_EXISTS",
        "OFPMMFC_INVALID_METER",
        "OFPMMFC_UNKNOWN_METER",
        "OFPMMFC_BAD_COMMAND",
        "OFPMMFC_BAD_FLAGS",
        "OFPMMFC_BAD_RATE",
        "OFPMMFC_BAD_BURST",
        "OFPMMFC_BAD_BAND",
        "OFPMMFC_BAD_BAND_VALUE",
        "OFPMMFC_OUT_OF_METERS",
        "OFPMMFC_OUT_OF_BANDS",
    ];
    const BUNDLE: &[&str] = &[
        "OFPBFC_UNKNOWN",
        "OFPBFC_EPERM",
        "OFPBFC_BAD_ID",
        "OFPBFC_BUNDLE_EXIST",
        "OFPBFC_BUNDLE_CLOSED",
        "OFPBFC_OUT_OF_BUNDLES",
        "OFPBFC_BAD_TYPE",
        "OFPBFC_BAD_FLAGS",
        "OFPBFC_MSG_BAD_LEN",
        "OFPBFC_MSG_BAD_XID",
        "OFPBFC_MSG_UNSUP",
        "OFPBFC_MSG_CONFLICT",
        "OFPBFC_MSG_TOO_MANY",
        "OFPBFC_MSG_FAILED",
        "OFPBFC_TIMEOUT",
        "OFPBFC_BUNDLE_IN_PROGRESS",
    ];
    let table = match err_type {
        0 => HELLO,
        1 => REQ,
        2 => ACT,
        3 => INST,
        4 => MATCH,
        5 => FLOW,
        6 => GROUP,
        10 => CONFIG,
        12 => METER,
        17 => BUNDLE,
        _ => return None,
    };
    table.get(usize::from(code)).copied()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeaturesReply {
    pub datapath_id: u64,
    pub n_buffers: u32,
    pub n_tables: u8,
    pub auxiliary_id: u8,
    pub capabilities: u32,
    pub reserved: u32,
}

/// Switch configuration (`ofp_switch_config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchConfig {
    pub flags: u16,
    /// Bytes of a table-miss packet sent to the controller. OVS sends a
    /// service connection (like `<bridge>.mgmt`) no packet-ins at all while
    /// this is 0.
    pub miss_send_len: u16,
}

/// A packet sent to the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketIn {
    pub buffer_id: u32,
    /// Length of the whole frame (`data` may be truncated to max_len).
    pub total_len: u32,
    /// `OFPR_*` (0 no match, 1 action, ...).
    pub reason: u8,
    pub table_id: u8,
    pub cookie: u64,
    /// Pipeline fields: in_port, metadata, tunnel, registers, ...
    pub matches: Match,
    /// NXAST_CONTROLLER2 userdata (NXT_PACKET_IN2 only).
    pub userdata: Vec<u8>,
    pub data: Vec<u8>,
}

/// A packet injected by the controller (OpenFlow 1.4 layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketOut {
    pub buffer_id: u32,
    /// The packet's input port for the actions (`port::CONTROLLER` if none).
    pub in_port: u32,
    pub actions: Vec<Action>,
    pub data: Vec<u8>,
}

impl PacketOut {
    pub fn new(in_port: u32, actions: Vec<Action>, data: Vec<u8>) -> Self {
        Self {
            buffer_id: NO_BUFFER,
            in_port,
            actions,
            data,
        }
    }
}

/// `ofp_flow_mod_command`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowModCommand {
    Add,
    Modify,
    ModifyStrict,
    Delete,
    DeleteStrict,
    Unknown(u8),
}

impl FlowModCommand {
    fn to_u8(self) -> u8 {
        match self {
            Self::Add => 0,
            Self::Modify => 1,
            Self::ModifyStrict => 2,
            Self::Delete => 3,
            Self::DeleteStrict => 4,
            Self::Unknown(v) => v,
        }
    }
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Add,
            1 => Self::Modify,
            2 => Self::ModifyStrict,
            3 => Self::Delete,
            4 => Self::DeleteStrict,
            v => Self::Unknown(v),
        }
    }
}

/// The parts of a flow mod that are not the flow itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowModParams {
    pub cookie_mask: u64,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub buffer_id: u32,
    pub out_port: u32,
    pub out_group: u32,
    /// `OFPFF_*`.
    pub flags: u16,
    pub importance: u16,
}

impl Default for FlowModParams {
    fn default() -> Self {
        Self {
            cookie_mask: 0,
            idle_timeout: 0,
            hard_timeout: 0,
            buffer_id: NO_BUFFER,
            out_port: port::ANY,
            out_group: OFPG_ANY,
            flags: 0,
            importance: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowMod {
    pub command: FlowModCommand,
    /// Table, priority, cookie, match and instructions. Delete commands
    /// send no instructions whatever `flow.actions` holds.
    pub flow: Flow,
    pub params: FlowModParams,
}

impl FlowMod {
    pub fn new(command: FlowModCommand, flow: Flow) -> Self {
        Self {
            command,
            flow,
            params: FlowModParams::default(),
        }
    }
}

/// `ofp_group_mod_command`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupModCommand {
    Add,
    Modify,
    Delete,
    /// Create or replace (`OFPGC11_ADD_OR_MOD`, an Open vSwitch extension
    /// since 2.6): the one command that is right whether or not the group
    /// exists, as after a restart.
    AddOrModify,
    Unknown(u16),
}

/// `ofp_group_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupType {
    All,
    Select,
    Indirect,
    FastFailover,
    Unknown(u8),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Relative weight (select groups).
    pub weight: u16,
    /// Liveness port (fast-failover groups), `port::ANY` if unused.
    pub watch_port: u32,
    /// Liveness group (fast-failover groups), [`OFPG_ANY`] if unused.
    pub watch_group: u32,
    pub actions: Vec<Action>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMod {
    pub command: GroupModCommand,
    pub group_type: GroupType,
    pub group_id: u32,
    pub buckets: Vec<Bucket>,
}

/// Flow statistics request (`OFPMP_FLOW`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowStatsRequest {
    pub table_id: u8,
    pub out_port: u32,
    pub out_group: u32,
    pub cookie: u64,
    pub cookie_mask: u64,
    pub matches: Match,
}

impl Default for FlowStatsRequest {
    /// Every flow in every table.
    fn default() -> Self {
        Self {
            table_id: OFPTT_ALL,
            out_port: port::ANY,
            out_group: OFPG_ANY,
            cookie: 0,
            cookie_mask: 0,
            matches: Match::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MultipartRequestBody {
    Flow(FlowStatsRequest),
    /// `OFPMP_METER` for one meter id or [`meter::OFPM_ALL`].
    MeterStats(u32),
    /// `OFPMP_METER_CONFIG` for one meter id or [`meter::OFPM_ALL`].
    MeterConfig(u32),
    Unknown {
        mp_type: u16,
        body: Vec<u8>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultipartRequest {
    pub flags: u16,
    pub body: MultipartRequestBody,
}

/// One entry of a flow statistics reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowStats {
    pub flow: Flow,
    pub duration_sec: u32,
    pub duration_nsec: u32,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub flags: u16,
    pub importance: u16,
    pub packet_count: u64,
    pub byte_count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MultipartReplyBody {
    Flow(Vec<FlowStats>),
    MeterStats(Vec<MeterStats>),
    MeterConfig(Vec<MeterConfig>),
    Unknown { mp_type: u16, body: Vec<u8> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultipartReply {
    /// [`OFPMPF_MORE`] when another part follows.
    pub flags: u16,
    pub body: MultipartReplyBody,
}

/// `ofp14_bundle_ctrl_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BundleCtrlType {
    OpenRequest,
    OpenReply,
    CloseRequest,
    CloseReply,
    CommitRequest,
    CommitReply,
    DiscardRequest,
    DiscardReply,
    Unknown(u16),
}

impl BundleCtrlType {
    fn to_u16(self) -> u16 {
        match self {
            Self::OpenRequest => 0,
            Self::OpenReply => 1,
            Self::CloseRequest => 2,
            Self::CloseReply => 3,
            Self::CommitRequest => 4,
            Self::CommitReply => 5,
            Self::DiscardRequest => 6,
            Self::DiscardReply => 7,
            Self::Unknown(v) => v,
        }
    }
    fn from_u16(v: u16) -> Self {
        match v {
            0 => Self::OpenRequest,
            1 => Self::OpenReply,
            2 => Self::CloseRequest,
            3 => Self::CloseReply,
            4 => Self::CommitRequest,
            5 => Self::CommitReply,
            6 => Self::DiscardRequest,
            7 => Self::DiscardReply,
            v => Self::Unknown(v),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleControl {
    pub bundle_id: u32,
    pub ctrl_type: BundleCtrlType,
    /// [`OFPBF_ATOMIC`] | [`OFPBF_ORDERED`].
    pub flags: u16,
    /// Raw `ofp14_bundle_prop_*` properties.
    pub properties: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleAdd {
    pub bundle_id: u32,
    pub flags: u16,
    /// The embedded message; it is sent with the outer message's xid.
    pub message: Box<Message>,
    pub properties: Vec<u8>,
}

impl Message {
    /// The message's `ofp_type`.
    pub fn msg_type(&self) -> u8 {
        use msg_type::*;
        match self {
            Message::Hello(_) => HELLO,
            Message::Error(_) => ERROR,
            Message::EchoRequest(_) => ECHO_REQUEST,
            Message::EchoReply(_) => ECHO_REPLY,
            Message::FeaturesRequest => FEATURES_REQUEST,
            Message::FeaturesReply(_) => FEATURES_REPLY,
            Message::GetConfigRequest => GET_CONFIG_REQUEST,
            Message::GetConfigReply(_) => GET_CONFIG_REPLY,
            Message::SetConfig(_) => SET_CONFIG,
            Message::PacketIn(_) => PACKET_IN,
            Message::NxPacketIn2(_)
            | Message::NxSetPacketInFormat(_)
            | Message::Experimenter { .. } => EXPERIMENTER,
            Message::PacketOut(_) => PACKET_OUT,
            Message::FlowMod(_) => FLOW_MOD,
            Message::GroupMod(_) => GROUP_MOD,
            Message::MeterMod(_) => METER_MOD,
            Message::MultipartRequest(_) => MULTIPART_REQUEST,
            Message::MultipartReply(_) => MULTIPART_REPLY,
            Message::BarrierRequest => BARRIER_REQUEST,
            Message::BarrierReply => BARRIER_REPLY,
            Message::BundleControl(_) => BUNDLE_CONTROL,
            Message::BundleAdd(_) => BUNDLE_ADD_MESSAGE,
            Message::Unknown { msg_type, .. } => *msg_type,
        }
    }

    /// Encodes the message with `xid` into a new buffer.
    pub fn to_bytes(&self, xid: u32) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.emit(xid, &mut out)?;
        Ok(out)
    }

    /// Appends the encoded message with `xid` to `out`. On error `out` may
    /// hold a partial message; truncate it to its old length to retry.
    pub fn emit(&self, xid: u32, out: &mut Vec<u8>) -> Result<()> {
        let start = start_msg(out, self.msg_type(), xid);
        if let Message::Hello(h) = self {
            out[start] = h.version;
        }
        self.emit_body(xid, out)?;
        finish_msg(out, start)
    }

    fn emit_body(&self, xid: u32, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Message::Hello(h) => {
                if let Some(b) = h.bitmap {
                    out.put_u16(OFPHET_VERSIONBITMAP);
                    out.put_u16(8);
                    out.put_u32(b);
                }
            }
            Message::Error(e) => {
                match e.experimenter {
                    Some(exp) => {
                        out.put_u16(0xffff);
                        out.put_u16(e.code);
                        out.put_u32(exp);
                    }
                    None => {
                        out.put_u16(e.err_type);
                        out.put_u16(e.code);
                    }
                }
                out.extend_from_slice(&e.data);
            }
            Message::EchoRequest(d) | Message::EchoReply(d) => out.extend_from_slice(d),
            Message::FeaturesRequest
            | Message::GetConfigRequest
            | Message::BarrierRequest
            | Message::BarrierReply => {}
            Message::FeaturesReply(f) => {
                out.put_u64(f.datapath_id);
                out.put_u32(f.n_buffers);
                out.put_u8(f.n_tables);
                out.put_u8(f.auxiliary_id);
                out.put_zeros(2);
                out.put_u32(f.capabilities);
                out.put_u32(f.reserved);
            }
            Message::GetConfigReply(c) | Message::SetConfig(c) => {
                out.put_u16(c.flags);
                out.put_u16(c.miss_send_len);
            }
            Message::PacketIn(p) => emit_packet_in(out, p)?,
            Message::NxPacketIn2(p) => {
                out.put_u32(NX_VENDOR_ID);
                out.put_u32(NXT_PACKET_IN2);
                emit_packet_in2(out, p)?;
            }
            Message::NxSetPacketInFormat(f) => {
                out.put_u32(NX_VENDOR_ID);
                out.put_u32(NXT_SET_PACKET_IN_FORMAT);
                out.put_u32(*f);
            }
            Message::PacketOut(p) => {
                out.put_u32(p.buffer_id);
                out.put_u32(p.in_port);
                let at = out.len();
                out.put_u16(0);
                out.put_zeros(6);
                let acts = out.len();
                action::emit_actions(out, &p.actions)?;
                let n = len16(out, acts, "packet-out actions")?;
                out.set_u16(at, n);
                out.extend_from_slice(&p.data);
            }
            Message::FlowMod(fm) => put_flow_mod_body(out, fm.command, &fm.flow, &fm.params)?,
            Message::GroupMod(g) => emit_group_mod(out, g)?,
            Message::MeterMod(m) => meter::emit_meter_mod(out, m)?,
            Message::MultipartRequest(m) => match &m.body {
                MultipartRequestBody::Flow(r) => {
                    out.put_u16(OFPMP_FLOW);
                    out.put_u16(m.flags);
                    out.put_zeros(4);
                    out.put_u8(r.table_id);
                    out.put_zeros(3);
                    out.put_u32(r.out_port);
                    out.put_u32(r.out_group);
                    out.put_zeros(4);
                    out.put_u64(r.cookie);
                    out.put_u64(r.cookie_mask);
                    oxm::emit_match(out, &r.matches)?;
                }
                MultipartRequestBody::MeterStats(id) | MultipartRequestBody::MeterConfig(id) => {
                    out.put_u16(if matches!(m.body, MultipartRequestBody::MeterStats(_)) {
                        OFPMP_METER
                    } else {
                        OFPMP_METER_CONFIG
                    });
                    out.put_u16(m.flags);
                    out.put_zeros(4);
                    out.put_u32(*id);
                    out.put_zeros(4);
                }
                MultipartRequestBody::Unknown { mp_type, body } => {
                    out.put_u16(*mp_type);
                    out.put_u16(m.flags);
                    out.put_zeros(4);
                    out.extend_from_slice(body);
                }
            },
            Message::MultipartReply(m) => match &m.body {
                MultipartReplyBody::Flow(stats) => {
                    out.put_u16(OFPMP_FLOW);
                    out.put_u16(m.flags);
                    out.put_zeros(4);
                    for s in stats {
                        emit_flow_stats(out, s)?;
                    }
                }
                MultipartReplyBody::MeterStats(stats) => {
                    out.put_u16(OFPMP_METER);
                    out.put_u16(m.flags);
                    out.put_zeros(4);
                    meter::emit_meter_stats(out, stats)?;
                }
                MultipartReplyBody::MeterConfig(configs) => {
                    out.put_u16(OFPMP_METER_CONFIG);
                    out.put_u16(m.flags);
                    out.put_zeros(4);
                    meter::emit_meter_configs(out, configs)?;
                }
                MultipartReplyBody::Unknown { mp_type, body } => {
                    out.put_u16(*mp_type);
                    out.put_u16(m.flags);
                    out.put_zeros(4);
                    out.extend_from_slice(body);
                }
            },
            Message::BundleControl(b) => {
                out.put_u32(b.bundle_id);
                out.put_u16(b.ctrl_type.to_u16());
                out.put_u16(b.flags);
                out.extend_from_slice(&b.properties);
            }
            Message::BundleAdd(b) => {
                if matches!(*b.message, Message::BundleAdd(_)) {
                    return Err(Error::Unsupported {
                        what: "nested bundle add",
                        value: 0,
                    });
                }
                let start = out.len() - HEADER_LEN;
                out.put_u32(b.bundle_id);
                out.put_u16(0);
                out.put_u16(b.flags);
                b.message.emit(xid, out)?;
                if !b.properties.is_empty() {
                    out.pad8_from(start);
                    out.extend_from_slice(&b.properties);
                }
            }
            Message::Experimenter {
                experimenter,
                exp_type,
                data,
            } => {
                out.put_u32(*experimenter);
                out.put_u32(*exp_type);
                out.extend_from_slice(data);
            }
            Message::Unknown { body, .. } => out.extend_from_slice(body),
        }
        Ok(())
    }

    /// Parses one whole message (exactly `bytes`), returning its xid.
    /// Hello and Error are accepted in any version (they are how versions
    /// are negotiated); everything else must be OpenFlow 1.4.
    pub fn parse(bytes: &[u8]) -> Result<(u32, Message)> {
        let p = Packet::new_checked(bytes)?;
        Self::parse_packet(&p).map(|m| (p.xid(), m))
    }

    /// Parses the message in a checked packet.
    pub fn parse_packet<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Message> {
        use msg_type::*;
        let t = p.msg_type();
        if p.version() != VERSION && t != HELLO && t != ERROR {
            return Err(Error::BadVersion(p.version()));
        }
        let body = p.payload();
        let mut r = Reader::new(body, "message body");
        Ok(match t {
            HELLO => Message::Hello(parse_hello(p.version(), r)?),
            ERROR => {
                let err_type = r.u16()?;
                let code = r.u16()?;
                let experimenter = if err_type == 0xffff {
                    Some(r.u32()?)
                } else {
                    None
                };
                Message::Error(OfpError {
                    err_type,
                    code,
                    experimenter,
                    data: r.rest().to_vec(),
                })
            }
            ECHO_REQUEST => Message::EchoRequest(body.to_vec()),
            ECHO_REPLY => Message::EchoReply(body.to_vec()),
            FEATURES_REQUEST => Message::FeaturesRequest,
            FEATURES_REPLY => {
                let datapath_id = r.u64()?;
                let n_buffers = r.u32()?;
                let n_tables = r.u8()?;
                let auxiliary_id = r.u8()?;
                r.skip(2)?;
                Message::FeaturesReply(FeaturesReply {
                    datapath_id,
                    n_buffers,
                    n_tables,
                    auxiliary_id,
                    capabilities: r.u32()?,
                    reserved: r.u32()?,
                })
            }
            GET_CONFIG_REQUEST => Message::GetConfigRequest,
            GET_CONFIG_REPLY | SET_CONFIG => {
                let c = SwitchConfig {
                    flags: r.u16()?,
                    miss_send_len: r.u16()?,
                };
                if t == SET_CONFIG {
                    Message::SetConfig(c)
                } else {
                    Message::GetConfigReply(c)
                }
            }
            PACKET_IN => Message::PacketIn(parse_packet_in(r)?),
            EXPERIMENTER => {
                let experimenter = r.u32()?;
                let exp_type = r.u32()?;
                match (experimenter, exp_type) {
                    (NX_VENDOR_ID, NXT_PACKET_IN2) => Message::NxPacketIn2(parse_packet_in2(r)?),
                    (NX_VENDOR_ID, NXT_SET_PACKET_IN_FORMAT) => {
                        Message::NxSetPacketInFormat(r.u32()?)
                    }
                    _ => Message::Experimenter {
                        experimenter,
                        exp_type,
                        data: r.rest().to_vec(),
                    },
                }
            }
            PACKET_OUT => {
                let buffer_id = r.u32()?;
                let in_port = r.u32()?;
                let n = usize::from(r.u16()?);
                r.skip(6)?;
                let actions = action::parse_actions(r.bytes(n)?)?;
                Message::PacketOut(PacketOut {
                    buffer_id,
                    in_port,
                    actions,
                    data: r.rest().to_vec(),
                })
            }
            FLOW_MOD => Message::FlowMod(parse_flow_mod(r)?),
            GROUP_MOD => Message::GroupMod(parse_group_mod(r)?),
            METER_MOD => Message::MeterMod(meter::parse_meter_mod(r)?),
            MULTIPART_REQUEST => {
                let mp_type = r.u16()?;
                let flags = r.u16()?;
                r.skip(4)?;
                let body = match mp_type {
                    OFPMP_FLOW => {
                        let table_id = r.u8()?;
                        r.skip(3)?;
                        let out_port = r.u32()?;
                        let out_group = r.u32()?;
                        r.skip(4)?;
                        let cookie = r.u64()?;
                        let cookie_mask = r.u64()?;
                        let matches = oxm::parse_match(&mut r)?;
                        MultipartRequestBody::Flow(FlowStatsRequest {
                            table_id,
                            out_port,
                            out_group,
                            cookie,
                            cookie_mask,
                            matches,
                        })
                    }
                    OFPMP_METER | OFPMP_METER_CONFIG => {
                        let id = r.u32()?;
                        r.skip(4)?;
                        if mp_type == OFPMP_METER {
                            MultipartRequestBody::MeterStats(id)
                        } else {
                            MultipartRequestBody::MeterConfig(id)
                        }
                    }
                    _ => MultipartRequestBody::Unknown {
                        mp_type,
                        body: r.rest().to_vec(),
                    },
                };
                Message::MultipartRequest(MultipartRequest { flags, body })
            }
            MULTIPART_REPLY => {
                let mp_type = r.u16()?;
                let flags = r.u16()?;
                r.skip(4)?;
                let body = match mp_type {
                    OFPMP_FLOW => {
                        let mut stats = Vec::new();
                        while !r.is_empty() {
                            stats.push(parse_flow_stats(&mut r)?);
                        }
                        MultipartReplyBody::Flow(stats)
                    }
                    OFPMP_METER => {
                        MultipartReplyBody::MeterStats(meter::parse_meter_stats(r.rest())?)
                    }
                    OFPMP_METER_CONFIG => {
                        MultipartReplyBody::MeterConfig(meter::parse_meter_configs(r.rest())?)
                    }
                    _ => MultipartReplyBody::Unknown {
                        mp_type,
                        body: r.rest().to_vec(),
                    },
                };
                Message::MultipartReply(MultipartReply { flags, body })
            }
            BARRIER_REQUEST => Message::BarrierRequest,
            BARRIER_REPLY => Message::BarrierReply,
            BUNDLE_CONTROL => {
                let bundle_id = r.u32()?;
                let ctrl_type = BundleCtrlType::from_u16(r.u16()?);
                let flags = r.u16()?;
                Message::BundleControl(BundleControl {
                    bundle_id,
                    ctrl_type,
                    flags,
                    properties: r.rest().to_vec(),
                })
            }
            BUNDLE_ADD_MESSAGE => {
                let bundle_id = r.u32()?;
                r.skip(2)?;
                let flags = r.u16()?;
                let inner_len = usize::from(r.peek_u16(2)?);
                let inner = Packet::new_checked(r.bytes(inner_len)?)?;
                if inner.msg_type() == BUNDLE_ADD_MESSAGE {
                    // Refuse rather than recurse without bound.
                    return Err(Error::Unsupported {
                        what: "nested bundle add",
                        value: 0,
                    });
                }
                let message = Box::new(Self::parse_packet(&inner)?);
                let consumed = HEADER_LEN + 8 + inner_len;
                let pad = (pad8(consumed) - consumed).min(r.remaining());
                if !r.is_empty() {
                    r.skip(pad)?;
                }
                Message::BundleAdd(BundleAdd {
                    bundle_id,
                    flags,
                    message,
                    properties: r.rest().to_vec(),
                })
            }
            t => Message::Unknown {
                msg_type: t,
                body: body.to_vec(),
            },
        })
    }
}

fn parse_hello(version: u8, mut r: Reader<'_>) -> Result<Hello> {
    let mut bitmap = None;
    while r.remaining() >= 4 {
        let kind = r.u16()?;
        let len = usize::from(r.u16()?);
        if len < 4 {
            return Err(Error::BadLength {
                what: "hello element",
                len,
            });
        }
        let mut e = Reader::new(r.bytes(len - 4)?, "hello element");
        if kind == OFPHET_VERSIONBITMAP && bitmap.is_none() {
            bitmap = Some(e.u32()?);
        }
        r.skip((pad8(len) - len).min(r.remaining()))?;
    }
    Ok(Hello { version, bitmap })
}

/// Appends a flow mod body for `flow` (the shared path of
/// [`Message::FlowMod`] and bundles, which borrow the flow).
pub(crate) fn put_flow_mod_body(
    out: &mut Vec<u8>,
    command: FlowModCommand,
    flow: &Flow,
    p: &FlowModParams,
) -> Result<()> {
    let key = FlowParts {
        table: flow.table,
        priority: flow.priority,
        cookie: flow.cookie,
        matches: &flow.matches,
        actions: &flow.actions,
        goto_table: flow.goto_table,
    };
    put_flow_mod_parts(out, command, &key, p)
}

/// A borrowed flow (or flow key, with no actions).
pub(crate) struct FlowParts<'a> {
    pub table: u8,
    pub priority: u16,
    pub cookie: u64,
    pub matches: &'a Match,
    pub actions: &'a [Action],
    pub goto_table: Option<u8>,
}

pub(crate) fn put_flow_mod_parts(
    out: &mut Vec<u8>,
    command: FlowModCommand,
    flow: &FlowParts<'_>,
    p: &FlowModParams,
) -> Result<()> {
    out.put_u64(flow.cookie);
    out.put_u64(p.cookie_mask);
    out.put_u8(flow.table);
    out.put_u8(command.to_u8());
    out.put_u16(p.idle_timeout);
    out.put_u16(p.hard_timeout);
    out.put_u16(flow.priority);
    out.put_u32(p.buffer_id);
    out.put_u32(p.out_port);
    out.put_u32(p.out_group);
    out.put_u16(p.flags);
    out.put_u16(p.importance);
    oxm::emit_match(out, flow.matches)?;
    if !matches!(
        command,
        FlowModCommand::Delete | FlowModCommand::DeleteStrict
    ) {
        action::emit_instructions(out, flow.actions, flow.goto_table)?;
    }
    Ok(())
}

/// Encodes a flow mod for a borrowed flow without building a [`Message`].
pub fn emit_flow_mod(
    out: &mut Vec<u8>,
    xid: u32,
    command: FlowModCommand,
    flow: &Flow,
    params: &FlowModParams,
) -> Result<()> {
    let start = start_msg(out, msg_type::FLOW_MOD, xid);
    put_flow_mod_body(out, command, flow, params)?;
    finish_msg(out, start)
}

/// Encodes a bundle add message wrapping a flow mod for a borrowed flow.
pub fn emit_bundle_flow_mod(
    out: &mut Vec<u8>,
    xid: u32,
    bundle_id: u32,
    flags: u16,
    command: FlowModCommand,
    flow: &Flow,
) -> Result<()> {
    let parts = FlowParts {
        table: flow.table,
        priority: flow.priority,
        cookie: flow.cookie,
        matches: &flow.matches,
        actions: &flow.actions,
        goto_table: flow.goto_table,
    };
    emit_bundle_flow_mod_parts(out, xid, bundle_id, flags, command, &parts)
}

pub(crate) fn emit_bundle_flow_mod_parts(
    out: &mut Vec<u8>,
    xid: u32,
    bundle_id: u32,
    flags: u16,
    command: FlowModCommand,
    flow: &FlowParts<'_>,
) -> Result<()> {
    let outer = start_msg(out, msg_type::BUNDLE_ADD_MESSAGE, xid);
    out.put_u32(bundle_id);
    out.put_u16(0);
    out.put_u16(flags);
    let inner = start_msg(out, msg_type::FLOW_MOD, xid);
    put_flow_mod_parts(out, command, flow, &FlowModParams::default())?;
    finish_msg(out, inner)?;
    finish_msg(out, outer)
}

/// Encodes a bundle add message wrapping a group mod.
pub(crate) fn emit_bundle_group_mod(
    out: &mut Vec<u8>,
    xid: u32,
    bundle_id: u32,
    flags: u16,
    g: &GroupMod,
) -> Result<()> {
    let outer = start_msg(out, msg_type::BUNDLE_ADD_MESSAGE, xid);
    out.put_u32(bundle_id);
    out.put_u16(0);
    out.put_u16(flags);
    let inner = start_msg(out, msg_type::GROUP_MOD, xid);
    emit_group_mod(out, g)?;
    finish_msg(out, inner)?;
    finish_msg(out, outer)
}

fn parse_flow_mod(mut r: Reader<'_>) -> Result<FlowMod> {
    let cookie = r.u64()?;
    let cookie_mask = r.u64()?;
    let table = r.u8()?;
    let command = FlowModCommand::from_u8(r.u8()?);
    let idle_timeout = r.u16()?;
    let hard_timeout = r.u16()?;
    let priority = r.u16()?;
    let buffer_id = r.u32()?;
    let out_port = r.u32()?;
    let out_group = r.u32()?;
    let flags = r.u16()?;
    let importance = r.u16()?;
    let matches = oxm::parse_match(&mut r)?;
    let (actions, goto_table) = action::parse_instructions(r.rest())?;
    Ok(FlowMod {
        command,
        flow: Flow {
            table,
            priority,
            cookie,
            matches,
            actions,
            goto_table,
        },
        params: FlowModParams {
            cookie_mask,
            idle_timeout,
            hard_timeout,
            buffer_id,
            out_port,
            out_group,
            flags,
            importance,
        },
    })
}

fn emit_flow_stats(out: &mut Vec<u8>, s: &FlowStats) -> Result<()> {
    let start = out.len();
    out.put_u16(0);
    out.put_u8(s.flow.table);
    out.put_u8(0);
    out.put_u32(s.duration_sec);
    out.put_u32(s.duration_nsec);
    out.put_u16(s.flow.priority);
    out.put_u16(s.idle_timeout);
    out.put_u16(s.hard_timeout);
    out.put_u16(s.flags);
    out.put_u16(s.importance);
    out.put_zeros(2);
    out.put_u64(s.flow.cookie);
    out.put_u64(s.packet_count);
    out.put_u64(s.byte_count);
    oxm::emit_match(out, &s.flow.matches)?;
    action::emit_instructions(out, &s.flow.actions, s.flow.goto_table)?;
    let len = len16(out, start, "flow stats")?;
    out.set_u16(start, len);
    Ok(())
}

fn parse_flow_stats(r: &mut Reader<'_>) -> Result<FlowStats> {
    let len = usize::from(r.peek_u16(0)?);
    if len < 48 {
        return Err(Error::BadLength {
            what: "flow stats",
            len,
        });
    }
    let mut e = Reader::new(r.bytes(len)?, "flow stats");
    e.skip(2)?;
    let table = e.u8()?;
    e.skip(1)?;
    let duration_sec = e.u32()?;
    let duration_nsec = e.u32()?;
    let priority = e.u16()?;
    let idle_timeout = e.u16()?;
    let hard_timeout = e.u16()?;
    let flags = e.u16()?;
    let importance = e.u16()?;
    e.skip(2)?;
    let cookie = e.u64()?;
    let packet_count = e.u64()?;
    let byte_count = e.u64()?;
    let matches = oxm::parse_match(&mut e)?;
    let (actions, goto_table) = action::parse_instructions(e.rest())?;
    Ok(FlowStats {
        flow: Flow {
            table,
            priority,
            cookie,
            matches,
            actions,
            goto_table,
        },
        duration_sec,
        duration_nsec,
        idle_timeout,
        hard_timeout,
        flags,
        importance,
        packet_count,
        byte_count,
    })
}

fn emit_packet_in(out: &mut Vec<u8>, p: &PacketIn) -> Result<()> {
    if !p.userdata.is_empty() {
        return Err(Error::Unsupported {
            what: "userdata in OFPT_PACKET_IN",
            value: p.userdata.len() as u64,
        });
    }
    out.put_u32(p.buffer_id);
    out.put_u16(u16::try_from(p.total_len).map_err(|_| Error::TooLarge("packet-in total_len"))?);
    out.put_u8(p.reason);
    out.put_u8(p.table_id);
    out.put_u64(p.cookie);
    oxm::emit_match(out, &p.matches)?;
    out.put_zeros(2);
    out.extend_from_slice(&p.data);
    Ok(())
}

fn parse_packet_in(mut r: Reader<'_>) -> Result<PacketIn> {
    let buffer_id = r.u32()?;
    let total_len = r.u16()?.into();
    let reason = r.u8()?;
    let table_id = r.u8()?;
    let cookie = r.u64()?;
    let matches = oxm::parse_match(&mut r)?;
    r.skip(2)?;
    Ok(PacketIn {
        buffer_id,
        total_len,
        reason,
        table_id,
        cookie,
        matches,
        userdata: Vec::new(),
        data: r.rest().to_vec(),
    })
}

const NXPINT_PACKET: u16 = 0;
const NXPINT_FULL_LEN: u16 = 1;
const NXPINT_BUFFER_ID: u16 = 2;
const NXPINT_TABLE_ID: u16 = 3;
const NXPINT_COOKIE: u16 = 4;
const NXPINT_REASON: u16 = 5;
const NXPINT_METADATA: u16 = 6;
const NXPINT_USERDATA: u16 = 7;

/// Starts an `ofpprop`; returns the offset for [`end_prop`].
fn start_prop(out: &mut Vec<u8>, kind: u16) -> usize {
    let start = out.len();
    out.put_u16(kind);
    out.put_u16(0);
    start
}

fn end_prop(out: &mut Vec<u8>, start: usize) -> Result<()> {
    let len = len16(out, start, "property")?;
    out.set_u16(start + 2, len);
    out.pad8_from(start);
    Ok(())
}

fn put_prop(out: &mut Vec<u8>, kind: u16, value: &[u8]) -> Result<()> {
    let s = start_prop(out, kind);
    out.extend_from_slice(value);
    end_prop(out, s)
}

/// NXT_PACKET_IN2 properties in the order OVS writes them.
fn emit_packet_in2(out: &mut Vec<u8>, p: &PacketIn) -> Result<()> {
    put_prop(out, NXPINT_PACKET, &p.data)?;
    if usize::try_from(p.total_len).ok() != Some(p.data.len()) {
        put_prop(out, NXPINT_FULL_LEN, &p.total_len.to_be_bytes())?;
    }
    if p.buffer_id != NO_BUFFER {
        put_prop(out, NXPINT_BUFFER_ID, &p.buffer_id.to_be_bytes())?;
    }
    put_prop(out, NXPINT_TABLE_ID, &[p.table_id])?;
    if p.cookie != u64::MAX {
        // 64-bit properties put the value on an 8-byte boundary.
        let s = start_prop(out, NXPINT_COOKIE);
        out.put_zeros(4);
        out.put_u64(p.cookie);
        end_prop(out, s)?;
    }
    put_prop(out, NXPINT_REASON, &[p.reason])?;
    let s = start_prop(out, NXPINT_METADATA);
    oxm::put_oxm_fields(out, &p.matches)?;
    end_prop(out, s)?;
    if !p.userdata.is_empty() {
        put_prop(out, NXPINT_USERDATA, &p.userdata)?;
    }
    Ok(())
}

fn parse_packet_in2(mut r: Reader<'_>) -> Result<PacketIn> {
    let mut p = PacketIn {
        buffer_id: NO_BUFFER,
        total_len: 0,
        reason: 0,
        table_id: 0,
        cookie: u64::MAX,
        matches: Match::new(),
        userdata: Vec::new(),
        data: Vec::new(),
    };
    let mut full_len = None;
    while !r.is_empty() {
        let kind = r.u16()?;
        let len = usize::from(r.u16()?);
        if len < 4 {
            return Err(Error::BadLength {
                what: "packet-in2 property",
                len,
            });
        }
        let v = r.bytes(len - 4)?;
        r.skip((pad8(len) - len).min(r.remaining()))?;
        let mut vr = Reader::new(v, "packet-in2 property");
        match kind {
            NXPINT_PACKET => p.data = v.to_vec(),
            NXPINT_FULL_LEN => full_len = Some(vr.u32()?),
            NXPINT_BUFFER_ID => p.buffer_id = vr.u32()?,
            NXPINT_TABLE_ID => p.table_id = vr.u8()?,
            NXPINT_COOKIE => {
                if v.len() == 12 {
                    vr.skip(4)?;
                }
                p.cookie = vr.u64()?;
            }
            NXPINT_REASON => p.reason = vr.u8()?,
            NXPINT_METADATA => p.matches = oxm::parse_oxm_fields(v)?,
            NXPINT_USERDATA => p.userdata = v.to_vec(),
            // Continuations (pause) and future properties are not used.
            _ => {}
        }
    }
    p.total_len = match full_len {
        Some(l) => l,
        None => u32::try_from(p.data.len()).map_err(|_| Error::TooLarge("packet-in"))?,
    };
    Ok(p)
}

/// Open vSwitch's "add or modify" group command.
const OFPGC11_ADD_OR_MOD: u16 = 0x8000;

fn emit_group_mod(out: &mut Vec<u8>, g: &GroupMod) -> Result<()> {
    out.put_u16(match g.command {
        GroupModCommand::Add => 0,
        GroupModCommand::Modify => 1,
        GroupModCommand::Delete => 2,
        GroupModCommand::AddOrModify => OFPGC11_ADD_OR_MOD,
        GroupModCommand::Unknown(v) => v,
    });
    out.put_u8(match g.group_type {
        GroupType::All => 0,
        GroupType::Select => 1,
        GroupType::Indirect => 2,
        GroupType::FastFailover => 3,
        GroupType::Unknown(v) => v,
    });
    out.put_u8(0);
    out.put_u32(g.group_id);
    for b in &g.buckets {
        let start = out.len();
        out.put_u16(0);
        out.put_u16(b.weight);
        out.put_u32(b.watch_port);
        out.put_u32(b.watch_group);
        out.put_zeros(4);
        action::emit_actions(out, &b.actions)?;
        let len = len16(out, start, "bucket")?;
        out.set_u16(start, len);
    }
    Ok(())
}

fn parse_group_mod(mut r: Reader<'_>) -> Result<GroupMod> {
    let command = match r.u16()? {
        0 => GroupModCommand::Add,
        1 => GroupModCommand::Modify,
        2 => GroupModCommand::Delete,
        OFPGC11_ADD_OR_MOD => GroupModCommand::AddOrModify,
        v => GroupModCommand::Unknown(v),
    };
    let group_type = match r.u8()? {
        0 => GroupType::All,
        1 => GroupType::Select,
        2 => GroupType::Indirect,
        3 => GroupType::FastFailover,
        v => GroupType::Unknown(v),
    };
    r.skip(1)?;
    let group_id = r.u32()?;
    let mut buckets = Vec::new();
    while !r.is_empty() {
        let len = usize::from(r.peek_u16(0)?);
        if len < 16 {
            return Err(Error::BadLength {
                what: "bucket",
                len,
            });
        }
        let mut b = Reader::new(r.bytes(len)?, "bucket");
        b.skip(2)?;
        let weight = b.u16()?;
        let watch_port = b.u32()?;
        let watch_group = b.u32()?;
        b.skip(4)?;
        buckets.push(Bucket {
            weight,
            watch_port,
            watch_group,
            actions: action::parse_actions(b.rest())?,
        });
    }
    Ok(GroupMod {
        command,
        group_type,
        group_id,
        buckets,
    })
}

/// What the switch will report back for `flow` when it is dumped: an
/// all-ones mask becomes no mask, masked-out value bits are cleared,
/// zero-masked fields vanish, and output to `CONTROLLER` reads back as
/// [`Action::Controller`] with the whole packet. Diff desired flows in this
/// form against [`FlowStats::flow`].
pub fn canonical(flow: &Flow) -> Flow {
    let mut m = Match::new();
    for f in flow.matches.fields() {
        let bytes = oxm::oxm_id(f.field).map(|id| id.len).unwrap_or(16);
        let ones = if bytes >= 16 {
            u128::MAX
        } else {
            (1u128 << (u32::from(bytes) * 8)) - 1
        };
        match f.mask {
            Some(0) => {}
            Some(mask) if mask & ones != ones => {
                m = m.set_masked(f.field, f.value & mask, Some(mask));
            }
            _ => m = m.set(f.field, f.value),
        }
    }
    let actions = flow
        .actions
        .iter()
        .map(|a| match a {
            Action::Output(p) if *p == port::CONTROLLER => Action::Controller {
                max_len: OFPCML_NO_BUFFER,
                userdata: Vec::new(),
            },
            a => a.clone(),
        })
        .collect();
    Flow {
        table: flow.table,
        priority: flow.priority,
        cookie: flow.cookie,
        matches: m,
        actions,
        goto_table: flow.goto_table,
    }
}
