//! DHCP answered by the agent from packet-ins.
//!
//! The pipeline punts every DHCP client packet (udp 68→67) from a local NIC
//! to the agent (`pipeline::userdata::DHCP`). This module is the sans-IO
//! server: [`DhcpFrame::parse`] checks an Ethernet/IPv4/UDP/DHCP frame (never
//! panics on garbage), [`respond`] decides the answer for the NIC and subnet
//! the frame came from and builds the reply frame, which the agent sends back
//! out of the NIC's port with a packet-out. Addresses are fixed per NIC, so
//! there is no lease database: a lease is simply "the NIC's IP".
//!
//! Packet-ins are triggered by tenants, so the driver must throttle them per
//! NIC with [`RateLimiter`] before doing any work.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use proto::{Mac, Nic, NodeState, Subnet};

use crate::pipeline::PortMap;

/// Everything that can be wrong with a frame handed to the DHCP server.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DhcpError {
    #[error("{layer} truncated: needs {need} bytes, has {have}")]
    Truncated {
        layer: &'static str,
        need: usize,
        have: usize,
    },
    #[error("not IPv4 (ethertype {0:#06x})")]
    NotIpv4(u16),
    #[error("malformed IPv4 header")]
    BadIpv4Header,
    #[error("IPv4 header checksum mismatch")]
    BadIpv4Checksum,
    #[error("IPv4 fragment")]
    Fragment,
    #[error("not UDP (IP protocol {0})")]
    NotUdp(u8),
    #[error("UDP length {0} does not fit the IPv4 packet")]
    BadUdpLength(u16),
    #[error("not sent to the DHCP server port (udp {src}->{dst})")]
    NotToServerPort { src: u16, dst: u16 },
    #[error("not a BOOTP request (op {0})")]
    NotRequest(u8),
    #[error("hardware type {htype} with address length {hlen} is not Ethernet")]
    NotEthernet { htype: u8, hlen: u8 },
    #[error("no DHCP magic cookie")]
    NoMagicCookie,
    #[error("option {0} runs past the end of the message")]
    BadOption(u8),
    #[error("plain BOOTP (no DHCP message type) is not served")]
    NoMessageType,
    #[error("no local NIC with a subnet on port {0}")]
    UnknownPort(u32),
}

/// Frame layout constants.
mod field {
    pub const ETH_HEADER: usize = 14;
    pub const ETH_TYPE_IPV4: u16 = 0x0800;
    pub const IPV4_MIN_HEADER: usize = 20;
    pub const IP_PROTO_UDP: u8 = 17;
    pub const UDP_HEADER: usize = 8;
    /// The fixed BOOTP header before the options.
    pub const BOOTP_FIXED: usize = 236;
    pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
    /// RFC 1542: relays and old clients expect at least a 300-byte message.
    pub const BOOTP_MIN: usize = 300;
    pub const CHADDR: std::ops::Range<usize> = 28..44;
    pub const SNAME: std::ops::Range<usize> = 44..108;
    pub const FILE: std::ops::Range<usize> = 108..236;
}

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const HTYPE_ETHERNET: u8 = 1;
/// The broadcast bit of the BOOTP `flags` field.
pub const FLAG_BROADCAST: u16 = 0x8000;
/// Offered when the subnet sets no lease time.
pub const DEFAULT_LEASE_SECS: u32 = 86_400;
/// RFC 2132 option 26: the smallest MTU a host may be told.
const MIN_MTU: u16 = 68;
const REPLY_TTL: u8 = 64;

/// DHCP option codes this server reads or writes (RFC 2132).
pub mod option {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS_SERVERS: u8 = 6;
    pub const HOST_NAME: u8 = 12;
    pub const INTERFACE_MTU: u8 = 26;
    pub const BROADCAST_ADDRESS: u8 = 28;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const END: u8 = 255;
}

/// DHCP message types (option 53). Unknown codes are kept, not rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
    Unknown(u8),
}

impl From<u8> for MessageType {
    fn from(v: u8) -> Self {
        match v {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            other => MessageType::Unknown(other),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(t: MessageType) -> u8 {
        match t {
            MessageType::Discover => 1,
            MessageType::Offer => 2,
            MessageType::Request => 3,
            MessageType::Decline => 4,
            MessageType::Ack => 5,
            MessageType::Nak => 6,
            MessageType::Release => 7,
            MessageType::Inform => 8,
            MessageType::Unknown(v) => v,
        }
    }
}

/// One option as it appears on the wire (pad and end are not kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpOption {
    pub code: u8,
    pub data: Vec<u8>,
}

/// A BOOTP/DHCP message (RFC 2131 section 2), the UDP payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpMessage {
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub sname: [u8; 64],
    pub file: [u8; 128],
    /// In wire order; an option split over several entries (RFC 3396) is
    /// joined by [`DhcpMessage::option`].
    pub options: Vec<DhcpOption>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn ipv4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    be32(b, at).map(Ipv4Addr::from)
}

fn truncated(layer: &'static str, need: usize, have: usize) -> DhcpError {
    DhcpError::Truncated { layer, need, have }
}

impl DhcpMessage {
    /// Parses a UDP payload. Anything malformed is an error, never a panic.
    pub fn parse(b: &[u8]) -> Result<Self, DhcpError> {
        let need = field::BOOTP_FIXED + field::MAGIC_COOKIE.len();
        if b.len() < need {
            return Err(truncated("DHCP message", need, b.len()));
        }
        // Lengths are checked above: the fixed-offset reads below succeed.
        let short = || truncated("DHCP message", need, b.len());
        let copy = |r: std::ops::Range<usize>, out: &mut [u8]| -> Result<(), DhcpError> {
            out.copy_from_slice(b.get(r).ok_or_else(short)?);
            Ok(())
        };
        let mut chaddr = [0u8; 16];
        let mut sname = [0u8; 64];
        let mut file = [0u8; 128];
        copy(field::CHADDR, &mut chaddr)?;
        copy(field::SNAME, &mut sname)?;
        copy(field::FILE, &mut file)?;
        if b.get(field::BOOTP_FIXED..need) != Some(&field::MAGIC_COOKIE[..]) {
            return Err(DhcpError::NoMagicCookie);
        }
        let msg = DhcpMessage {
            op: b[0],
            htype: b[1],
            hlen: b[2],
            hops: b[3],
            xid: be32(b, 4).ok_or_else(short)?,
            secs: be16(b, 8).ok_or_else(short)?,
            flags: be16(b, 10).ok_or_else(short)?,
            ciaddr: ipv4_at(b, 12).ok_or_else(short)?,
            yiaddr: ipv4_at(b, 16).ok_or_else(short)?,
            siaddr: ipv4_at(b, 20).ok_or_else(short)?,
            giaddr: ipv4_at(b, 24).ok_or_else(short)?,
            chaddr,
            sname,
            file,
            options: parse_options(&b[need..])?,
        };
        Ok(msg)
    }

    /// The message as a UDP payload, padded to the BOOTP minimum of 300
    /// bytes. Options longer than 255 bytes are split (RFC 3396).
    pub fn emit(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(field::BOOTP_MIN);
        b.extend_from_slice(&[self.op, self.htype, self.hlen, self.hops]);
        b.extend_from_slice(&self.xid.to_be_bytes());
        b.extend_from_slice(&self.secs.to_be_bytes());
        b.extend_from_slice(&self.flags.to_be_bytes());
        for a in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            b.extend_from_slice(&a.octets());
        }
        b.extend_from_slice(&self.chaddr);
        b.extend_from_slice(&self.sname);
        b.extend_from_slice(&self.file);
        b.extend_from_slice(&field::MAGIC_COOKIE);
        for opt in &self.options {
            if opt.data.is_empty() {
                b.extend_from_slice(&[opt.code, 0]);
            }
            for chunk in opt.data.chunks(255) {
                b.push(opt.code);
                // chunks(255) bounds the length.
                b.push(chunk.len() as u8);
                b.extend_from_slice(chunk);
            }
        }
        b.push(option::END);
        if b.len() < field::BOOTP_MIN {
            b.resize(field::BOOTP_MIN, option::PAD);
        }
        b
    }

    /// The data of option `code`, all its instances joined (RFC 3396).
    pub fn option(&self, code: u8) -> Option<Vec<u8>> {
        let mut parts = self.options.iter().filter(|o| o.code == code).peekable();
        parts.peek()?;
        Some(parts.flat_map(|o| o.data.iter().copied()).collect())
    }

    fn option_ipv4(&self, code: u8) -> Option<Ipv4Addr> {
        let data = self.option(code)?;
        let octets: [u8; 4] = data.as_slice().try_into().ok()?;
        Some(Ipv4Addr::from(octets))
    }

    /// Option 53, `None` for plain BOOTP.
    pub fn message_type(&self) -> Option<MessageType> {
        match self.option(option::MESSAGE_TYPE)?.as_slice() {
            [t] => Some(MessageType::from(*t)),
            _ => None,
        }
    }

    /// Option 50 (a malformed value counts as absent).
    pub fn requested_ip(&self) -> Option<Ipv4Addr> {
        self.option_ipv4(option::REQUESTED_IP)
    }

    /// Option 54 (a malformed value counts as absent).
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.option_ipv4(option::SERVER_ID)
    }

    /// The client's hardware address, if it is an Ethernet one.
    pub fn client_mac(&self) -> Option<Mac> {
        if self.htype != HTYPE_ETHERNET || self.hlen != 6 {
            return None;
        }
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.chaddr[..6]);
        Some(Mac(m))
    }

    pub fn broadcast(&self) -> bool {
        self.flags & FLAG_BROADCAST != 0
    }
}

fn parse_options(mut b: &[u8]) -> Result<Vec<DhcpOption>, DhcpError> {
    let mut out = Vec::new();
    // A missing END is tolerated: some clients stop at the last option.
    while let Some((&code, rest)) = b.split_first() {
        match code {
            option::PAD => b = rest,
            option::END => break,
            _ => {
                let (&len, rest) = rest.split_first().ok_or(DhcpError::BadOption(code))?;
                let len = usize::from(len);
                let data = rest.get(..len).ok_or(DhcpError::BadOption(code))?;
                out.push(DhcpOption {
                    code,
                    data: data.to_vec(),
                });
                b = &rest[len..];
            }
        }
    }
    Ok(out)
}

/// A DHCP message with the Ethernet, IPv4 and UDP headers around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpFrame {
    pub eth_src: Mac,
    pub eth_dst: Mac,
    pub ip_src: Ipv4Addr,
    pub ip_dst: Ipv4Addr,
    pub udp_src: u16,
    pub udp_dst: u16,
    pub message: DhcpMessage,
}

impl DhcpFrame {
    /// Parses a frame sent to the DHCP server port. Checked at every layer;
    /// garbage gives an error, never a panic.
    ///
    /// The IPv4 header checksum is verified. The UDP checksum is not: the
    /// frame comes from a local port, not a wire, and a VM's checksum
    /// offload can leave a partial UDP checksum in it; rejecting those would
    /// break DHCP exactly where it is hardest to debug.
    pub fn parse(frame: &[u8]) -> Result<Self, DhcpError> {
        if frame.len() < field::ETH_HEADER {
            return Err(truncated("Ethernet header", field::ETH_HEADER, frame.len()));
        }
        let (eth, ip) = frame.split_at(field::ETH_HEADER);
        let mac_at = |at: usize| {
            let mut m = [0u8; 6];
            m.copy_from_slice(&eth[at..at + 6]);
            Mac(m)
        };
        let ethertype = u16::from_be_bytes([eth[12], eth[13]]);
        if ethertype != field::ETH_TYPE_IPV4 {
            return Err(DhcpError::NotIpv4(ethertype));
        }
        if ip.len() < field::IPV4_MIN_HEADER {
            return Err(truncated("IPv4 header", field::IPV4_MIN_HEADER, ip.len()));
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[0] >> 4 != 4 || ihl < field::IPV4_MIN_HEADER {
            return Err(DhcpError::BadIpv4Header);
        }
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if total < ihl {
            return Err(DhcpError::BadIpv4Header);
        }
        // Ethernet may pad a short frame: the IP total length rules.
        let ip = ip
            .get(..total)
            .ok_or(truncated("IPv4 packet", total, ip.len()))?;
        let header = ip
            .get(..ihl)
            .ok_or(truncated("IPv4 header", ihl, ip.len()))?;
        if checksum(&[header]) != 0 {
            return Err(DhcpError::BadIpv4Checksum);
        }
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        if frag & 0x3fff != 0 {
            // More-fragments set or a non-zero offset.
            return Err(DhcpError::Fragment);
        }
        if ip[9] != field::IP_PROTO_UDP {
            return Err(DhcpError::NotUdp(ip[9]));
        }
        let ip_src = ipv4_at(ip, 12).ok_or(DhcpError::BadIpv4Header)?;
        let ip_dst = ipv4_at(ip, 16).ok_or(DhcpError::BadIpv4Header)?;
        let udp = &ip[ihl..];
        if udp.len() < field::UDP_HEADER {
            return Err(truncated("UDP header", field::UDP_HEADER, udp.len()));
        }
        let udp_src = u16::from_be_bytes([udp[0], udp[1]]);
        let udp_dst = u16::from_be_bytes([udp[2], udp[3]]);
        let udp_len = u16::from_be_bytes([udp[4], udp[5]]);
        if usize::from(udp_len) < field::UDP_HEADER || usize::from(udp_len) > udp.len() {
            return Err(DhcpError::BadUdpLength(udp_len));
        }
        if udp_dst != SERVER_PORT {
            return Err(DhcpError::NotToServerPort {
                src: udp_src,
                dst: udp_dst,
            });
        }
        let message = DhcpMessage::parse(&udp[field::UDP_HEADER..usize::from(udp_len)])?;
        if message.op != BOOTREQUEST {
            return Err(DhcpError::NotRequest(message.op));
        }
        if message.client_mac().is_none() {
            return Err(DhcpError::NotEthernet {
                htype: message.htype,
                hlen: message.hlen,
            });
        }
        Ok(DhcpFrame {
            eth_src: mac_at(6),
            eth_dst: mac_at(0),
            ip_src,
            ip_dst,
            udp_src,
            udp_dst,
            message,
        })
    }

    /// The whole frame with correct IPv4 and UDP checksums (TTL 64, DF).
    pub fn emit(&self) -> Vec<u8> {
        let payload = self.message.emit();
        let udp_len = field::UDP_HEADER + payload.len();
        let ip_len = field::IPV4_MIN_HEADER + udp_len;
        // A DHCP message this server builds is a few hundred bytes; the
        // conversions below cannot overflow for anything `emit` produces.
        let udp_len16 = u16::try_from(udp_len).unwrap_or(u16::MAX);
        let ip_len16 = u16::try_from(ip_len).unwrap_or(u16::MAX);
        let mut f = Vec::with_capacity(field::ETH_HEADER + ip_len);
        f.extend_from_slice(&self.eth_dst.0);
        f.extend_from_slice(&self.eth_src.0);
        f.extend_from_slice(&field::ETH_TYPE_IPV4.to_be_bytes());
        let ip_start = f.len();
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&ip_len16.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, REPLY_TTL, field::IP_PROTO_UDP, 0, 0]);
        f.extend_from_slice(&self.ip_src.octets());
        f.extend_from_slice(&self.ip_dst.octets());
        let ip_sum = checksum(&[&f[ip_start..]]);
        f[ip_start + 10..ip_start + 12].copy_from_slice(&ip_sum.to_be_bytes());
        let udp_start = f.len();
        f.extend_from_slice(&self.udp_src.to_be_bytes());
        f.extend_from_slice(&self.udp_dst.to_be_bytes());
        f.extend_from_slice(&udp_len16.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&payload);
        let udp_sum = udp_checksum(self.ip_src, self.ip_dst, &f[udp_start..]);
        f[udp_start + 6..udp_start + 8].copy_from_slice(&udp_sum.to_be_bytes());
        f
    }
}

/// The Internet checksum (RFC 1071) of the concatenated parts, each of even
/// length except possibly the last. 0 means the data (checksum included)
/// verifies.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
        // Fold as we go so long inputs cannot overflow.
        sum = (sum & 0xffff) + (sum >> 16);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 bits.
    !(sum as u16)
}

/// The UDP checksum of `segment` (header with a zero checksum field, and
/// payload) over the IPv4 pseudo-header. A computed 0 is sent as 0xffff
/// (0 means "no checksum").
fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
    let len = u16::try_from(segment.len()).unwrap_or(u16::MAX);
    let pseudo = [
        src.octets().as_slice(),
        dst.octets().as_slice(),
        &[0, field::IP_PROTO_UDP],
        &len.to_be_bytes(),
    ]
    .concat();
    match checksum(&[&pseudo, segment]) {
        0 => 0xffff,
        sum => sum,
    }
}

/// Why a well-formed request got no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// The client hardware address is not the NIC's MAC: a VM asking for
    /// somebody else's address.
    ForeignClient,
    /// Relayed (`giaddr` set): relays have no place on a VPC.
    Relayed,
    /// A REQUEST selecting another server's offer.
    OtherServer,
    /// RELEASE: nothing to free, the address stays the NIC's.
    Released,
    /// DECLINE: the client found its address in use on the link.
    Declined,
    /// INFORM from an address that is not the NIC's.
    InformFromWrongAddress,
    /// A server-side message type (OFFER, ACK, NAK) or an unknown one.
    NotForServer(MessageType),
    /// The NIC's IP is not inside its subnet: nothing correct can be offered.
    NicOutsideSubnet,
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Ignored::ForeignClient => "client hardware address is not the NIC's",
            Ignored::Relayed => "relayed request",
            Ignored::OtherServer => "client selected another server",
            Ignored::Released => "release",
            Ignored::Declined => "client declined its address (in use on the link?)",
            Ignored::InformFromWrongAddress => "inform from an address not the NIC's",
            Ignored::NotForServer(_) => "message type not handled by a server",
            Ignored::NicOutsideSubnet => "NIC address outside its subnet",
        };
        f.write_str(s)
    }
}

/// What to do with a DHCP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send `frame` out of the NIC's port.
    Reply {
        message_type: MessageType,
        reply: Box<DhcpFrame>,
        frame: Vec<u8>,
    },
    /// Send nothing.
    Ignored(Ignored),
}

/// Parses a packet-in frame from `nic` (in `subnet`) and answers it.
pub fn respond(frame: &[u8], nic: &Nic, subnet: &Subnet) -> Result<Outcome, DhcpError> {
    let request = DhcpFrame::parse(frame)?;
    let outcome = respond_to(&request, nic, subnet)?;
    match &outcome {
        Outcome::Reply { message_type, .. } => tracing::debug!(
            nic = %nic.id,
            xid = format_args!("{:#010x}", request.message.xid),
            request = ?request.message.message_type(),
            reply = ?message_type,
            "DHCP reply"
        ),
        Outcome::Ignored(why) => tracing::info!(
            nic = %nic.id,
            xid = format_args!("{:#010x}", request.message.xid),
            request = ?request.message.message_type(),
            "DHCP request ignored: {why}"
        ),
    }
    Ok(outcome)
}

/// Like [`respond`], finding the NIC and subnet from the packet-in's
/// `in_port`.
pub fn respond_on_port(
    state: &NodeState,
    ports: &PortMap,
    in_port: u32,
    frame: &[u8],
) -> Result<Outcome, DhcpError> {
    let (nic, subnet) = ports
        .nic_at(in_port)
        .and_then(|id| state.nics.get(id))
        .filter(|nic| nic.node == state.node.name)
        .and_then(|nic| Some((nic, state.subnets.get(&nic.subnet_id)?)))
        .ok_or(DhcpError::UnknownPort(in_port))?;
    respond(frame, nic, subnet)
}

/// The server's decision for a parsed request (RFC 2131 section 4.3).
pub fn respond_to(request: &DhcpFrame, nic: &Nic, subnet: &Subnet) -> Result<Outcome, DhcpError> {
    let msg = &request.message;
    let kind = msg.message_type().ok_or(DhcpError::NoMessageType)?;
    if msg.client_mac() != Some(nic.mac) {
        return Ok(Outcome::Ignored(Ignored::ForeignClient));
    }
    if !msg.giaddr.is_unspecified() {
        return Ok(Outcome::Ignored(Ignored::Relayed));
    }
    if !subnet.cidr.contains(nic.ip) {
        return Ok(Outcome::Ignored(Ignored::NicOutsideSubnet));
    }
    let ours = nic.ip;
    let reply_type = match kind {
        MessageType::Discover => MessageType::Offer,
        MessageType::Request => {
            let right = match (msg.server_id(), msg.requested_ip()) {
                // SELECTING: answering an offer, ours or not.
                (Some(server), _) if server != subnet.gateway_ip => {
                    return Ok(Outcome::Ignored(Ignored::OtherServer))
                }
                (Some(_), Some(requested)) => requested == ours,
                (Some(_), None) => msg.ciaddr == ours,
                // INIT-REBOOT: verifying a remembered address.
                (None, Some(requested)) => requested == ours,
                // RENEWING / REBINDING: the address is in ciaddr.
                (None, None) => msg.ciaddr == ours,
            };
            if right {
                MessageType::Ack
            } else {
                MessageType::Nak
            }
        }
        MessageType::Inform => {
            if msg.ciaddr != ours {
                return Ok(Outcome::Ignored(Ignored::InformFromWrongAddress));
            }
            MessageType::Ack
        }
        MessageType::Release => return Ok(Outcome::Ignored(Ignored::Released)),
        MessageType::Decline => {
            tracing::warn!(nic = %nic.id, ip = %ours, "DHCP decline: address in use on the link?");
            return Ok(Outcome::Ignored(Ignored::Declined));
        }
        other => return Ok(Outcome::Ignored(Ignored::NotForServer(other))),
    };
    let reply = build_reply(
        request,
        nic,
        subnet,
        reply_type,
        kind == MessageType::Inform,
    );
    let frame = reply.emit();
    Ok(Outcome::Reply {
        message_type: reply_type,
        reply: Box::new(reply),
        frame,
    })
}

fn lease_secs(subnet: &Subnet) -> u32 {
    if subnet.lease_secs == 0 {
        DEFAULT_LEASE_SECS
    } else {
        subnet.lease_secs
    }
}

fn opt(code: u8, data: impl Into<Vec<u8>>) -> DhcpOption {
    DhcpOption {
        code,
        data: data.into(),
    }
}

/// Builds an OFFER, ACK or NAK for `request`. `inform` makes an ACK without
/// an address or lease (RFC 2131 section 3.4).
fn build_reply(
    request: &DhcpFrame,
    nic: &Nic,
    subnet: &Subnet,
    kind: MessageType,
    inform: bool,
) -> DhcpFrame {
    let req = &request.message;
    let server = subnet.gateway_ip;
    let mut options = vec![
        opt(option::MESSAGE_TYPE, [u8::from(kind)]),
        opt(option::SERVER_ID, server.octets()),
    ];
    let nak = kind == MessageType::Nak;
    if nak {
        options.push(opt(
            option::MESSAGE,
            "requested address is not this client's",
        ));
    } else {
        if !inform {
            let lease = lease_secs(subnet);
            options.push(opt(option::LEASE_TIME, lease.to_be_bytes()));
            // An infinite lease has no renewal.
            if lease != u32::MAX {
                let t1 = lease / 2;
                // 7/8 of the lease, computed without overflow.
                let t2 = u32::try_from(u64::from(lease) * 7 / 8).unwrap_or(u32::MAX);
                options.push(opt(option::RENEWAL_TIME, t1.to_be_bytes()));
                options.push(opt(option::REBINDING_TIME, t2.to_be_bytes()));
            }
        }
        let mask = subnet.cidr.netmask();
        let bcast = Ipv4Addr::from(u32::from(nic.ip) | !u32::from(mask));
        options.push(opt(option::SUBNET_MASK, mask.octets()));
        options.push(opt(option::BROADCAST_ADDRESS, bcast.octets()));
        options.push(opt(option::ROUTER, server.octets()));
        if !subnet.dns_servers.is_empty() {
            // 63 addresses fill one option; more would never be used.
            let dns: Vec<u8> = subnet
                .dns_servers
                .iter()
                .take(63)
                .flat_map(|d| d.octets())
                .collect();
            options.push(opt(option::DNS_SERVERS, dns));
        }
        if subnet.mtu >= MIN_MTU {
            options.push(opt(option::INTERFACE_MTU, subnet.mtu.to_be_bytes()));
        }
    }
    let yiaddr = if nak || inform {
        Ipv4Addr::UNSPECIFIED
    } else {
        nic.ip
    };
    let ciaddr = if nak {
        Ipv4Addr::UNSPECIFIED
    } else {
        req.ciaddr
    };
    // RFC 2131 section 4.1: NAKs are broadcast; a client with an address
    // gets unicast; otherwise broadcast if it asked, else unicast to the new
    // address at its MAC (we write the frame, so no ARP is needed).
    let client = nic.mac;
    let (eth_dst, ip_dst) = if nak {
        (Mac([0xff; 6]), Ipv4Addr::BROADCAST)
    } else if !req.ciaddr.is_unspecified() {
        (client, req.ciaddr)
    } else if req.broadcast() {
        (Mac([0xff; 6]), Ipv4Addr::BROADCAST)
    } else {
        (client, yiaddr)
    };
    DhcpFrame {
        eth_src: subnet.gateway_mac,
        eth_dst,
        ip_src: server,
        ip_dst,
        udp_src: SERVER_PORT,
        udp_dst: CLIENT_PORT,
        message: DhcpMessage {
            op: BOOTREPLY,
            htype: HTYPE_ETHERNET,
            hlen: 6,
            hops: 0,
            xid: req.xid,
            secs: 0,
            flags: req.flags,
            ciaddr,
            yiaddr,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: req.giaddr,
            chaddr: req.chaddr,
            sname: [0; 64],
            file: [0; 128],
            options,
        },
    }
}

/// Token buckets per key (a NIC) for work a tenant can trigger, such as
/// packet-ins. Time is passed in, so tests need no clock; the driver passes
/// `tokio::time::Instant::now().into_std()`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate_per_sec: f64,
    burst: f64,
    buckets: HashMap<K, Bucket>,
    /// Events refused since the last [`RateLimiter::take_suppressed`].
    suppressed: u64,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `rate_per_sec` events per second on average, up to `burst` at once.
    /// A burst below 1 is raised to 1 (otherwise nothing would pass).
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        Self {
            rate_per_sec: rate_per_sec.max(0.0),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
            suppressed: 0,
        }
    }

    /// Takes a token for `key` at `now`; false means drop the event.
    /// A `now` before the key's previous call counts as no time passed.
    pub fn check(&mut self, key: &K, now: Instant) -> bool {
        let (rate, burst) = (self.rate_per_sec, self.burst);
        let bucket = self.buckets.entry(key.clone()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = bucket.last.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Forgets a key (its NIC went away).
    pub fn remove(&mut self, key: &K) {
        self.buckets.remove(key);
    }

    /// Drops buckets that have refilled completely by `now`: they behave
    /// exactly like new ones, so memory stays bounded by the active keys.
    pub fn prune(&mut self, now: Instant) {
        let (rate, burst) = (self.rate_per_sec, self.burst);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens + elapsed * rate < burst
        });
    }

    /// How many keys have state.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Events refused since the last call, for a rate-limited log line.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }

    /// How long until `key` may pass again at `now` (zero if it may now).
    pub fn retry_after(&self, key: &K, now: Instant) -> Duration {
        let Some(b) = self.buckets.get(key) else {
            return Duration::ZERO;
        };
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        let tokens = (b.tokens + elapsed * self.rate_per_sec).min(self.burst);
        if tokens >= 1.0 {
            Duration::ZERO
        } else if self.rate_per_sec <= 0.0 {
            Duration::MAX
        } else {
            // A tiny rate gives more seconds than a Duration holds.
            Duration::try_from_secs_f64((1.0 - tokens) / self.rate_per_sec).unwrap_or(Duration::MAX)
        }
    }
}

#[cfg(test)]
mod tests;
