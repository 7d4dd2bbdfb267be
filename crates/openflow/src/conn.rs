//! The sans-IO OpenFlow connection: bytes in ([`Connection::handle_input`]),
//! bytes out ([`Connection::transmit`]), events out
//! ([`Connection::poll_event`]). It negotiates the version, answers echo
//! requests, allocates xids and runs the multi-message operations
//! (barrier, checked sends, flow dumps, atomic bundles) as small state
//! machines keyed by xid. No sockets, no clocks: the driver adds those.

use std::collections::{HashMap, VecDeque};

use crate::error::{Error, Result};
use crate::flow::{Flow, FlowKey};
use crate::message::{
    self, BundleControl, BundleCtrlType, FlowModCommand, FlowParts, FlowStats, FlowStatsRequest,
    GroupMod, Hello, Message, MultipartReplyBody, MultipartRequest, MultipartRequestBody, OfpError,
    PacketIn, SwitchConfig, NXPIF_NXT_PACKET_IN2, OFPBF_ATOMIC, OFPBF_ORDERED, OFPMPF_MORE,
};
use crate::wire::{frame_len, Packet};

/// What to ask of the switch once connected.
#[derive(Clone, Debug)]
pub struct Config {
    /// Sent in Set-config when non-zero. OVS sends a service connection
    /// (`<bridge>.mgmt`) no asynchronous messages, packet-ins included,
    /// until this is set.
    pub miss_send_len: u16,
    /// Ask for NXT_PACKET_IN2, the only packet-in that carries
    /// NXAST_CONTROLLER2 userdata.
    pub packet_in2: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            miss_send_len: crate::action::OFPCML_NO_BUFFER,
            packet_in2: true,
        }
    }
}

/// One change in a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add, or replace an entry with the same key (cookie and counters
    /// included: an add is how a cookie changes).
    Add(Flow),
    /// Replace the instructions of the entry with the same key. OpenFlow
    /// 1.2+ semantics: the cookie is NOT changed and nothing is added when
    /// no entry matches.
    ModifyStrict(Flow),
    /// Remove the entry with exactly this key.
    DeleteStrict(FlowKey),
    /// A group add/modify/delete, applied in order with the flows around
    /// it (add a group before the flows that use it, delete it after).
    Group(GroupMod),
}

/// What a [`Change`] is sent as.
enum ChangeMsg<'a> {
    Flow(FlowModCommand, FlowParts<'a>),
    Group(&'a GroupMod),
}

impl Change {
    fn msg(&self) -> ChangeMsg<'_> {
        match self {
            Change::Add(f) | Change::ModifyStrict(f) => ChangeMsg::Flow(
                if matches!(self, Change::Add(_)) {
                    FlowModCommand::Add
                } else {
                    FlowModCommand::ModifyStrict
                },
                FlowParts {
                    table: f.table,
                    priority: f.priority,
                    cookie: f.cookie,
                    matches: &f.matches,
                    actions: &f.actions,
                    goto_table: f.goto_table,
                },
            ),
            Change::DeleteStrict(k) => ChangeMsg::Flow(
                FlowModCommand::DeleteStrict,
                FlowParts {
                    table: k.table,
                    priority: k.priority,
                    cookie: 0,
                    matches: &k.matches,
                    actions: &[],
                    goto_table: None,
                },
            ),
            Change::Group(g) => ChangeMsg::Group(g),
        }
    }
}

/// Handle of an operation started on a [`Connection`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpId(u64);

/// What a finished operation produced.
#[derive(Debug)]
pub enum Output {
    /// Barrier, checked send or bundle: done, no data.
    Done,
    /// A flow dump, all parts.
    Flows(Vec<FlowStats>),
    /// The reply to a plain request.
    Reply(Message),
    /// A multipart request's reply, every part joined into one body.
    Multipart(MultipartReplyBody),
}

#[derive(Debug)]
pub enum Event {
    /// Hello exchange finished: OpenFlow 1.4 agreed.
    Connected,
    /// An operation finished.
    Completed {
        op: OpId,
        result: Result<Output>,
    },
    PacketIn(PacketIn),
    /// Anything else the switch sent on its own (port status, an error for
    /// a message nobody waits for, ...).
    Unsolicited {
        xid: u32,
        msg: Message,
    },
}

#[derive(Debug)]
enum Op {
    /// Finishes with the first reply or error carrying `xid`.
    Request,
    /// A message followed by a barrier: finishes at the barrier reply,
    /// failed if an error for the message came first.
    Checked {
        msg_xid: u32,
        error: Option<OfpError>,
    },
    Dump {
        flows: Vec<FlowStats>,
    },
    /// Any other multipart request: parts are joined as they come.
    Multipart {
        body: Option<MultipartReplyBody>,
    },
    Bundle(BundleOp),
}

#[derive(Debug)]
struct BundleOp {
    bundle_id: u32,
    close_xid: u32,
    /// xids `first_add .. first_add + n_adds` are the add messages, in
    /// change order.
    first_add: u32,
    n_adds: u32,
    phase: BundlePhase,
    /// The first error seen, with the index of the change it blames.
    error: Option<(OfpError, Option<usize>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BundlePhase {
    /// Open and adds sent; waiting for the close reply, collecting errors.
    Closing,
    Committing,
    Discarding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitHello,
    Ready,
    Failed,
}

/// A sans-IO OpenFlow 1.4 controller-side connection.
#[derive(Debug)]
pub struct Connection {
    state: State,
    config: Config,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// Bytes of `tx` already handed out and written.
    tx_sent: usize,
    next_xid: u32,
    next_op: u64,
    next_bundle: u32,
    /// xid → operation, for every xid a reply may carry except bundle adds.
    by_xid: HashMap<u32, OpId>,
    ops: HashMap<OpId, Op>,
    /// Bundles in flight (few), searched for add-message xids.
    bundles: Vec<OpId>,
    events: VecDeque<Event>,
}

impl Connection {
    /// A new connection; our hello is already queued for transmission.
    pub fn new(config: Config) -> Self {
        let mut c = Self {
            state: State::AwaitHello,
            config,
            rx: Vec::new(),
            tx: Vec::new(),
            tx_sent: 0,
            next_xid: 1,
            next_op: 1,
            next_bundle: 1,
            by_xid: HashMap::new(),
            ops: HashMap::new(),
            bundles: Vec::new(),
            events: VecDeque::new(),
        };
        let xid = c.alloc_xid();
        c.queue(&Message::Hello(Hello::ours()), xid);
        c
    }

    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Bytes waiting to be written. Call [`Connection::advance_transmit`]
    /// with how many were written.
    pub fn transmit(&self) -> &[u8] {
        &self.tx[self.tx_sent..]
    }

    pub fn advance_transmit(&mut self, n: usize) {
        self.tx_sent = (self.tx_sent + n).min(self.tx.len());
        if self.tx_sent == self.tx.len() {
            self.tx.clear();
            self.tx_sent = 0;
        } else if self.tx_sent > (1 << 20) && self.tx_sent * 2 > self.tx.len() {
            // Drop the written prefix now and then; a big bundle is written
            // in many steps.
            self.tx.drain(..self.tx_sent);
            self.tx_sent = 0;
        }
    }

    /// Moves every pending byte to the end of `out` (for drivers that
    /// keep their own write buffer).
    pub fn drain_transmit_into(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() && self.tx_sent == 0 {
            std::mem::swap(out, &mut self.tx);
        } else {
            out.extend_from_slice(&self.tx[self.tx_sent..]);
            self.tx.clear();
        }
        self.tx_sent = 0;
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The connection is unusable (bad framing, failed negotiation, peer
    /// gone): fails every pending operation with `why`'s kind.
    pub fn close(&mut self, why: &Error) {
        self.state = State::Failed;
        let mut ops: Vec<OpId> = self.ops.keys().copied().collect();
        ops.sort_by_key(|o| o.0);
        for op in ops {
            self.ops.remove(&op);
            self.events.push_back(Event::Completed {
                op,
                result: Err(clone_kind(why)),
            });
        }
        self.by_xid.clear();
        self.bundles.clear();
    }

    fn alloc_xid(&mut self) -> u32 {
        let x = self.next_xid;
        self.next_xid = self.next_xid.wrapping_add(1).max(1);
        x
    }

    /// `n` consecutive xids (no wrap inside the range).
    fn alloc_xid_range(&mut self, n: u32) -> u32 {
        if self.next_xid.checked_add(n).is_none() {
            self.next_xid = 1;
        }
        let first = self.next_xid;
        self.next_xid = (first + n).max(1);
        first
    }

    fn new_op(&mut self, op: Op) -> OpId {
        let id = OpId(self.next_op);
        self.next_op += 1;
        self.ops.insert(id, op);
        id
    }

    /// Queues an already-valid message. Our own messages cannot fail to
    /// encode except for oversized bodies, which callers check first.
    fn queue(&mut self, msg: &Message, xid: u32) {
        let len = self.tx.len();
        if let Err(e) = msg.emit(xid, &mut self.tx) {
            self.tx.truncate(len);
            tracing::error!(error = %e, xid, "dropping message that does not encode");
        }
    }

    fn check_usable(&self) -> Result<()> {
        if self.state == State::Failed {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Sends `msg`; the operation completes with the first reply (or error)
    /// carrying its xid. Only for requests the switch answers.
    pub fn request(&mut self, msg: &Message) -> Result<OpId> {
        self.check_usable()?;
        let xid = self.alloc_xid();
        let start = self.tx.len();
        if let Err(e) = msg.emit(xid, &mut self.tx) {
            self.tx.truncate(start);
            return Err(e);
        }
        let op = self.new_op(Op::Request);
        self.by_xid.insert(xid, op);
        Ok(op)
    }

    /// Sends `msg` then a barrier: completes when the switch has processed
    /// it, with its error if it had one.
    pub fn send_checked(&mut self, msg: &Message) -> Result<OpId> {
        self.check_usable()?;
        let msg_xid = self.alloc_xid();
        let start = self.tx.len();
        if let Err(e) = msg.emit(msg_xid, &mut self.tx) {
            self.tx.truncate(start);
            return Err(e);
        }
        let barrier_xid = self.alloc_xid();
        self.queue(&Message::BarrierRequest, barrier_xid);
        let op = self.new_op(Op::Checked {
            msg_xid,
            error: None,
        });
        self.by_xid.insert(msg_xid, op);
        self.by_xid.insert(barrier_xid, op);
        Ok(op)
    }

    /// A barrier: completes when everything sent before it is processed.
    pub fn barrier(&mut self) -> Result<OpId> {
        self.request(&Message::BarrierRequest)
    }

    /// Dumps flows (all multipart parts).
    pub fn dump_flows(&mut self, req: FlowStatsRequest) -> Result<OpId> {
        self.check_usable()?;
        let xid = self.alloc_xid();
        let msg = Message::MultipartRequest(MultipartRequest {
            flags: 0,
            body: MultipartRequestBody::Flow(req),
        });
        let start = self.tx.len();
        if let Err(e) = msg.emit(xid, &mut self.tx) {
            self.tx.truncate(start);
            return Err(e);
        }
        let op = self.new_op(Op::Dump { flows: Vec::new() });
        self.by_xid.insert(xid, op);
        Ok(op)
    }

    /// Sends a multipart request (meter config, meter stats, ...) and
    /// completes with every part of the reply joined.
    pub fn multipart(&mut self, body: MultipartRequestBody) -> Result<OpId> {
        self.check_usable()?;
        let xid = self.alloc_xid();
        let msg = Message::MultipartRequest(MultipartRequest { flags: 0, body });
        let start = self.tx.len();
        if let Err(e) = msg.emit(xid, &mut self.tx) {
            self.tx.truncate(start);
            return Err(e);
        }
        let op = self.new_op(Op::Multipart { body: None });
        self.by_xid.insert(xid, op);
        Ok(op)
    }

    /// Applies `changes` atomically in one bundle: open, every add message
    /// and close are pipelined; once the close reply shows no error the
    /// bundle is committed, otherwise discarded (OVS leaves a failed add
    /// out of the bundle instead of failing it, so committing then would
    /// not be atomic). Completes with [`Error::Bundle`] naming the change
    /// the switch blamed, or `Done`.
    pub fn apply_bundle(&mut self, changes: &[Change]) -> Result<OpId> {
        self.check_usable()?;
        let n_adds = u32::try_from(changes.len()).map_err(|_| Error::TooLarge("bundle"))?;
        let bundle_id = self.next_bundle;
        self.next_bundle = self.next_bundle.wrapping_add(1);
        let flags = OFPBF_ATOMIC | OFPBF_ORDERED;
        let start = self.tx.len();
        let open_xid = self.alloc_xid();
        self.queue(
            &bundle_ctrl(bundle_id, BundleCtrlType::OpenRequest),
            open_xid,
        );
        let first_add = self.alloc_xid_range(n_adds);
        for (i, c) in changes.iter().enumerate() {
            // `i` < n_adds, which fits u32.
            let xid = first_add.wrapping_add(i as u32);
            let emitted = match c.msg() {
                ChangeMsg::Flow(command, parts) => message::emit_bundle_flow_mod_parts(
                    &mut self.tx,
                    xid,
                    bundle_id,
                    flags,
                    command,
                    &parts,
                ),
                ChangeMsg::Group(g) => {
                    message::emit_bundle_group_mod(&mut self.tx, xid, bundle_id, flags, g)
                }
            };
            if let Err(e) = emitted {
                // Nothing of this bundle goes out: the switch never sees it.
                self.tx.truncate(start);
                return Err(e);
            }
        }
        let close_xid = self.alloc_xid();
        self.queue(
            &bundle_ctrl(bundle_id, BundleCtrlType::CloseRequest),
            close_xid,
        );
        let op = self.new_op(Op::Bundle(BundleOp {
            bundle_id,
            close_xid,
            first_add,
            n_adds,
            phase: BundlePhase::Closing,
            error: None,
        }));
        self.by_xid.insert(open_xid, op);
        self.by_xid.insert(close_xid, op);
        self.bundles.push(op);
        tracing::debug!(bundle_id, changes = changes.len(), "bundle sent");
        Ok(op)
    }

    /// Feeds bytes read from the switch. An error means the stream is
    /// broken (impossible framing, no common version); the connection is
    /// closed then.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<()> {
        self.check_usable()?;
        self.rx.extend_from_slice(bytes);
        let mut consumed = 0;
        let result = loop {
            let len = match frame_len(&self.rx[consumed..]) {
                Ok(Some(len)) => len,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            let frame = self.rx[consumed..consumed + len].to_vec();
            consumed += len;
            if let Err(e) = self.handle_frame(&frame) {
                break Err(e);
            }
        };
        self.rx.drain(..consumed);
        if let Err(e) = &result {
            self.close(e);
        }
        result
    }

    fn handle_frame(&mut self, frame: &[u8]) -> Result<()> {
        let packet = Packet::new_checked(frame)?;
        let xid = packet.xid();
        let msg = match Message::parse_packet(&packet) {
            Ok(m) => m,
            Err(e) => {
                // A message we cannot decode fails whoever waits for it;
                // the stream itself is still in sync.
                tracing::warn!(xid, msg_type = packet.msg_type(), error = %e, "undecodable message");
                if let Some(op) = self.op_for_xid(xid) {
                    self.finish(op, Err(e));
                }
                return Ok(());
            }
        };
        match msg {
            Message::Hello(h) => return self.handle_hello(&h),
            Message::EchoRequest(data) => {
                self.queue(&Message::EchoReply(data), xid);
                return Ok(());
            }
            Message::PacketIn(p) | Message::NxPacketIn2(p) => {
                self.events.push_back(Event::PacketIn(p));
                return Ok(());
            }
            _ => {}
        }
        match self.op_for_xid(xid) {
            Some(op) => self.handle_reply(op, xid, msg),
            None => self.events.push_back(Event::Unsolicited { xid, msg }),
        }
        Ok(())
    }

    fn handle_hello(&mut self, h: &Hello) -> Result<()> {
        if self.state != State::AwaitHello {
            return Ok(());
        }
        if !h.accepts_ours() {
            let peer_bitmap = h.bitmap.unwrap_or(1 << h.version);
            let xid = self.alloc_xid();
            self.queue(
                &Message::Error(OfpError {
                    err_type: 0,
                    code: 0,
                    experimenter: None,
                    data: b"OpenFlow 1.4 required".to_vec(),
                }),
                xid,
            );
            return Err(Error::VersionNegotiation { peer_bitmap });
        }
        self.state = State::Ready;
        if self.config.packet_in2 {
            let xid = self.alloc_xid();
            self.queue(&Message::NxSetPacketInFormat(NXPIF_NXT_PACKET_IN2), xid);
        }
        if self.config.miss_send_len != 0 {
            let xid = self.alloc_xid();
            self.queue(
                &Message::SetConfig(SwitchConfig {
                    flags: 0,
                    miss_send_len: self.config.miss_send_len,
                }),
                xid,
            );
        }
        self.events.push_back(Event::Connected);
        Ok(())
    }

    fn op_for_xid(&self, xid: u32) -> Option<OpId> {
        if let Some(op) = self.by_xid.get(&xid) {
            return Some(*op);
        }
        self.bundles
            .iter()
            .copied()
            .find(|op| match self.ops.get(op) {
                Some(Op::Bundle(b)) => xid.wrapping_sub(b.first_add) < b.n_adds,
                _ => false,
            })
    }

    fn finish(&mut self, op: OpId, result: Result<Output>) {
        if self.ops.remove(&op).is_none() {
            return;
        }
        self.by_xid.retain(|_, o| *o != op);
        self.bundles.retain(|o| *o != op);
        self.events.push_back(Event::Completed { op, result });
    }

    fn handle_reply(&mut self, op: OpId, xid: u32, msg: Message) {
        let Some(state) = self.ops.get_mut(&op) else {
            return;
        };
        match state {
            Op::Request => {
                let result = match msg {
                    Message::Error(e) => Err(Error::Switch(e)),
                    m => Ok(Output::Reply(m)),
                };
                self.finish(op, result);
            }
            Op::Checked { msg_xid, error } => {
                if xid == *msg_xid {
                    if let Message::Error(e) = msg {
                        error.get_or_insert(e);
                    }
                    return;
                }
                let result = match (error.take(), msg) {
                    (Some(e), _) | (None, Message::Error(e)) => Err(Error::Switch(e)),
                    (None, Message::BarrierReply) => Ok(Output::Done),
                    (None, _) => Err(Error::UnexpectedReply("barrier reply")),
                };
                self.finish(op, result);
            }
            Op::Dump { flows } => match msg {
                Message::MultipartReply(r) => {
                    let more = r.flags & OFPMPF_MORE != 0;
                    match r.body {
                        MultipartReplyBody::Flow(mut f) => flows.append(&mut f),
                        _ => {
                            self.finish(op, Err(Error::UnexpectedReply("flow stats reply")));
                            return;
                        }
                    }
                    if !more {
                        let flows = std::mem::take(flows);
                        self.finish(op, Ok(Output::Flows(flows)));
                    }
                }
                Message::Error(e) => self.finish(op, Err(Error::Switch(e))),
                _ => self.finish(op, Err(Error::UnexpectedReply("flow stats reply"))),
            },
            Op::Multipart { body } => match msg {
                Message::MultipartReply(r) => {
                    let more = r.flags & OFPMPF_MORE != 0;
                    let joined = match body.take() {
                        None => Some(r.body),
                        Some(acc) => join_parts(acc, r.body),
                    };
                    match (joined, more) {
                        (None, _) => {
                            self.finish(op, Err(Error::UnexpectedReply("same multipart type")))
                        }
                        (Some(b), true) => *body = Some(b),
                        (Some(b), false) => self.finish(op, Ok(Output::Multipart(b))),
                    }
                }
                Message::Error(e) => self.finish(op, Err(Error::Switch(e))),
                _ => self.finish(op, Err(Error::UnexpectedReply("multipart reply"))),
            },
            Op::Bundle(_) => self.handle_bundle_reply(op, xid, msg),
        }
    }

    fn handle_bundle_reply(&mut self, op: OpId, xid: u32, msg: Message) {
        let Some(Op::Bundle(b)) = self.ops.get_mut(&op) else {
            return;
        };
        let is_add = xid.wrapping_sub(b.first_add) < b.n_adds;
        match msg {
            Message::Error(e) => {
                let change = is_add.then(|| xid.wrapping_sub(b.first_add) as usize);
                tracing::debug!(bundle_id = b.bundle_id, error = %e, ?change, "bundle error");
                // Keep the most specific error: one that names a change
                // beats the bundle-level OFPBFC_MSG_FAILED that follows it.
                let better = match &b.error {
                    None => true,
                    Some((_, None)) => change.is_some(),
                    Some((_, Some(_))) => false,
                };
                if better {
                    b.error = Some((e, change));
                }
                if is_add {
                    return;
                }
                // An error for a control message ends its phase like a reply.
                self.bundle_step(op, xid, None);
            }
            Message::BundleControl(c) => self.bundle_step(op, xid, Some(c.ctrl_type)),
            _ => {
                if let Some(Op::Bundle(b)) = self.ops.get_mut(&op) {
                    b.error.get_or_insert((
                        OfpError {
                            err_type: 1,
                            code: 1,
                            experimenter: None,
                            data: Vec::new(),
                        },
                        None,
                    ));
                }
                self.bundle_step(op, xid, None);
            }
        }
    }

    /// A bundle control message got its reply (`Some`) or an error.
    fn bundle_step(&mut self, op: OpId, xid: u32, reply: Option<BundleCtrlType>) {
        let Some(Op::Bundle(b)) = self.ops.get_mut(&op) else {
            return;
        };
        if reply == Some(BundleCtrlType::OpenReply) {
            return;
        }
        let bundle_id = b.bundle_id;
        match (b.phase, reply) {
            // The open failed: wait for the close (reply or error).
            (BundlePhase::Closing, _) if xid != b.close_xid => {}
            (BundlePhase::Closing, _) => {
                let (phase, ctrl) = if b.error.is_some() {
                    (BundlePhase::Discarding, BundleCtrlType::DiscardRequest)
                } else {
                    (BundlePhase::Committing, BundleCtrlType::CommitRequest)
                };
                b.phase = phase;
                let next = self.alloc_xid();
                self.queue(&bundle_ctrl(bundle_id, ctrl), next);
                self.by_xid.insert(next, op);
            }
            (BundlePhase::Committing, _) | (BundlePhase::Discarding, _) => {
                let result = match b.error.take() {
                    None if reply == Some(BundleCtrlType::CommitReply) => Ok(Output::Done),
                    None => Err(Error::UnexpectedReply("bundle commit reply")),
                    Some((error, change)) => Err(Error::Bundle { error, change }),
                };
                tracing::debug!(bundle_id, ok = result.is_ok(), "bundle finished");
                self.finish(op, result);
            }
        }
    }
}

/// Appends a multipart reply part to the ones before; `None` when the
/// switch changed the type mid-reply.
fn join_parts(acc: MultipartReplyBody, next: MultipartReplyBody) -> Option<MultipartReplyBody> {
    use MultipartReplyBody as B;
    Some(match (acc, next) {
        (B::Flow(mut a), B::Flow(b)) => {
            a.extend(b);
            B::Flow(a)
        }
        (B::MeterStats(mut a), B::MeterStats(b)) => {
            a.extend(b);
            B::MeterStats(a)
        }
        (B::MeterConfig(mut a), B::MeterConfig(b)) => {
            a.extend(b);
            B::MeterConfig(a)
        }
        (
            B::Unknown {
                mp_type: t,
                body: mut a,
            },
            B::Unknown { mp_type, body: b },
        ) if t == mp_type => {
            a.extend(b);
            B::Unknown { mp_type, body: a }
        }
        _ => return None,
    })
}

fn bundle_ctrl(bundle_id: u32, ctrl_type: BundleCtrlType) -> Message {
    Message::BundleControl(BundleControl {
        bundle_id,
        ctrl_type,
        flags: OFPBF_ATOMIC | OFPBF_ORDERED,
        properties: Vec::new(),
    })
}

/// Errors are not `Clone` (they may hold an io::Error); pending operations
/// get the same kind of error as the one that closed the connection.
fn clone_kind(e: &Error) -> Error {
    match e {
        Error::VersionNegotiation { peer_bitmap } => Error::VersionNegotiation {
            peer_bitmap: *peer_bitmap,
        },
        _ => Error::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Action, Match};
    use crate::message::{
        FlowStats, MultipartReply, MultipartReplyBody, OFPMPF_MORE, OFPT_ERR_BUNDLE_MSG_FAILED,
    };
    use crate::wire::frame_len;

    /// Everything the connection wants to send, parsed.
    fn sent(c: &mut Connection) -> Vec<(u32, Message)> {
        let mut out = Vec::new();
        c.drain_transmit_into(&mut out);
        let mut msgs = Vec::new();
        let mut rest = &out[..];
        while let Some(len) = frame_len(rest).unwrap() {
            msgs.push(Message::parse(&rest[..len]).unwrap());
            rest = &rest[len..];
        }
        assert!(rest.is_empty());
        msgs
    }

    fn feed(c: &mut Connection, xid: u32, m: Message) {
        c.handle_input(&m.to_bytes(xid).unwrap()).unwrap();
    }

    fn events(c: &mut Connection) -> Vec<Event> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    fn ready() -> Connection {
        let mut c = Connection::new(Config::default());
        let hello = sent(&mut c);
        assert_eq!(hello.len(), 1);
        assert!(matches!(hello[0].1, Message::Hello(_)));
        feed(
            &mut c,
            1,
            Message::Hello(Hello {
                version: 6,
                bitmap: Some(0x72),
            }),
        );
        assert!(matches!(events(&mut c)[..], [Event::Connected]));
        let setup = sent(&mut c);
        assert!(matches!(
            setup[..],
            [
                (_, Message::NxSetPacketInFormat(NXPIF_NXT_PACKET_IN2)),
                (
                    _,
                    Message::SetConfig(SwitchConfig {
                        miss_send_len: 0xffff,
                        ..
                    })
                )
            ]
        ));
        c
    }

    fn flow(p: u16) -> Flow {
        Flow {
            table: 0,
            priority: p,
            cookie: 1,
            matches: Match::new().reg(0, p.into()),
            actions: vec![Action::Output(1)],
            goto_table: None,
        }
    }

    fn ctrl_reply(id: u32, t: BundleCtrlType) -> Message {
        Message::BundleControl(BundleControl {
            bundle_id: id,
            ctrl_type: t,
            flags: OFPBF_ATOMIC | OFPBF_ORDERED,
            properties: vec![],
        })
    }

    fn err(t: u16, code: u16) -> Message {
        Message::Error(OfpError {
            err_type: t,
            code,
            experimenter: None,
            data: vec![],
        })
    }

    fn completed(c: &mut Connection) -> (OpId, Result<Output>) {
        let ev = events(c);
        assert_eq!(ev.len(), 1, "{ev:?}");
        match ev.into_iter().next() {
            Some(Event::Completed { op, result }) => (op, result),
            e => panic!("{e:?}"),
        }
    }

    /// Sends a bundle of 3 and checks the pipelined messages; returns the
    /// op, bundle id and the xids of open, adds and close.
    fn start_bundle(c: &mut Connection) -> (OpId, u32, Vec<u32>) {
        let op = c
            .apply_bundle(&[
                Change::Add(flow(1)),
                Change::ModifyStrict(flow(2)),
                Change::DeleteStrict(flow(3).key()),
            ])
            .unwrap();
        let msgs = sent(c);
        assert_eq!(msgs.len(), 5);
        let Message::BundleControl(open) = &msgs[0].1 else {
            panic!()
        };
        assert_eq!(open.ctrl_type, BundleCtrlType::OpenRequest);
        for (i, (xid, m)) in msgs[1..4].iter().enumerate() {
            let Message::BundleAdd(a) = m else { panic!() };
            assert_eq!(a.bundle_id, open.bundle_id);
            assert_eq!(*xid, msgs[1].0 + i as u32);
            assert!(matches!(*a.message, Message::FlowMod(_)));
        }
        assert!(matches!(
            msgs[4].1,
            Message::BundleControl(BundleControl {
                ctrl_type: BundleCtrlType::CloseRequest,
                ..
            })
        ));
        (op, open.bundle_id, msgs.iter().map(|m| m.0).collect())
    }

    #[test]
    fn echo_is_answered() {
        let mut c = ready();
        feed(&mut c, 77, Message::EchoRequest(vec![1, 2]));
        assert_eq!(sent(&mut c), vec![(77, Message::EchoReply(vec![1, 2]))]);
    }

    #[test]
    fn bundle_commits_when_clean() {
        let mut c = ready();
        let (op, id, x) = start_bundle(&mut c);
        feed(&mut c, x[0], ctrl_reply(id, BundleCtrlType::OpenReply));
        assert!(sent(&mut c).is_empty());
        feed(&mut c, x[4], ctrl_reply(id, BundleCtrlType::CloseReply));
        let commit = sent(&mut c);
        assert!(matches!(
            commit[..],
            [(
                _,
                Message::BundleControl(BundleControl {
                    ctrl_type: BundleCtrlType::CommitRequest,
                    ..
                })
            )]
        ));
        assert!(events(&mut c).is_empty());
        feed(
            &mut c,
            commit[0].0,
            ctrl_reply(id, BundleCtrlType::CommitReply),
        );
        let (done, r) = completed(&mut c);
        assert_eq!(done, op);
        assert!(matches!(r, Ok(Output::Done)));
    }

    #[test]
    fn failed_add_discards_the_bundle() {
        let mut c = ready();
        let (op, id, x) = start_bundle(&mut c);
        feed(&mut c, x[0], ctrl_reply(id, BundleCtrlType::OpenReply));
        feed(&mut c, x[2], err(4, 9));
        feed(&mut c, x[4], ctrl_reply(id, BundleCtrlType::CloseReply));
        let discard = sent(&mut c);
        assert!(matches!(
            discard[..],
            [(
                _,
                Message::BundleControl(BundleControl {
                    ctrl_type: BundleCtrlType::DiscardRequest,
                    ..
                })
            )]
        ));
        feed(
            &mut c,
            discard[0].0,
            ctrl_reply(id, BundleCtrlType::DiscardReply),
        );
        let (done, r) = completed(&mut c);
        assert_eq!(done, op);
        match r {
            Err(Error::Bundle { error, change }) => {
                assert_eq!(change, Some(1));
                assert_eq!(error.name(), Some("OFPBMC_BAD_PREREQ"));
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn commit_failure_blames_the_change() {
        let mut c = ready();
        let (_, id, x) = start_bundle(&mut c);
        feed(&mut c, x[4], ctrl_reply(id, BundleCtrlType::CloseReply));
        let commit = sent(&mut c);
        // OVS: the failing message's error, then the commit's.
        feed(&mut c, x[3], err(5, 1));
        feed(&mut c, commit[0].0, err(17, OFPT_ERR_BUNDLE_MSG_FAILED));
        match completed(&mut c).1 {
            Err(Error::Bundle { error, change }) => {
                assert_eq!(change, Some(2));
                assert_eq!(error.name(), Some("OFPFMFC_TABLE_FULL"));
            }
            r => panic!("{r:?}"),
        }
        assert!(sent(&mut c).is_empty(), "no discard after a failed commit");
    }

    #[test]
    fn dump_collects_every_part() {
        let mut c = ready();
        c.dump_flows(FlowStatsRequest::default()).unwrap();
        let xid = sent(&mut c)[0].0;
        let stats = |p: u16| FlowStats {
            flow: flow(p),
            duration_sec: 1,
            duration_nsec: 2,
            idle_timeout: 0,
            hard_timeout: 0,
            flags: 0,
            importance: 0,
            packet_count: 3,
            byte_count: 4,
        };
        let part = |flags, f: Vec<FlowStats>| {
            Message::MultipartReply(MultipartReply {
                flags,
                body: MultipartReplyBody::Flow(f),
            })
        };
        feed(&mut c, xid, part(OFPMPF_MORE, vec![stats(1), stats(2)]));
        assert!(events(&mut c).is_empty());
        feed(&mut c, xid, part(0, vec![stats(3)]));
        match completed(&mut c).1 {
            Ok(Output::Flows(f)) => {
                assert_eq!(f, vec![stats(1), stats(2), stats(3)]);
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn bundle_carries_group_mods_in_order() {
        use crate::message::{Bucket, GroupModCommand, GroupType, OFPG_ANY};
        let g = GroupMod {
            command: GroupModCommand::Add,
            group_type: GroupType::Select,
            group_id: 3,
            buckets: vec![Bucket {
                weight: 1,
                watch_port: crate::flow::port::ANY,
                watch_group: OFPG_ANY,
                actions: vec![Action::Output(1)],
            }],
        };
        let mut c = ready();
        c.apply_bundle(&[Change::Group(g.clone()), Change::Add(flow(1))])
            .unwrap();
        let msgs = sent(&mut c);
        assert_eq!(msgs.len(), 4);
        let inner: Vec<&Message> = msgs[1..3]
            .iter()
            .map(|(_, m)| match m {
                Message::BundleAdd(a) => &*a.message,
                m => panic!("{m:?}"),
            })
            .collect();
        assert_eq!(inner[0], &Message::GroupMod(g));
        assert!(matches!(inner[1], Message::FlowMod(_)));
    }

    #[test]
    fn multipart_joins_parts_and_checks_their_type() {
        use crate::meter::{MeterBand, MeterConfig, OFPM_ALL};
        let mut c = ready();
        c.multipart(MultipartRequestBody::MeterConfig(OFPM_ALL))
            .unwrap();
        let (xid, req) = sent(&mut c).remove(0);
        assert!(matches!(
            req,
            Message::MultipartRequest(MultipartRequest {
                body: MultipartRequestBody::MeterConfig(OFPM_ALL),
                ..
            })
        ));
        let cfg = |id| MeterConfig {
            flags: crate::meter::flags::KBPS,
            meter_id: id,
            bands: vec![MeterBand::Drop {
                rate: id * 1000,
                burst_size: 0,
            }],
        };
        let part = |flags, body| Message::MultipartReply(MultipartReply { flags, body });
        feed(
            &mut c,
            xid,
            part(OFPMPF_MORE, MultipartReplyBody::MeterConfig(vec![cfg(1)])),
        );
        assert!(events(&mut c).is_empty());
        feed(
            &mut c,
            xid,
            part(0, MultipartReplyBody::MeterConfig(vec![cfg(2), cfg(3)])),
        );
        match completed(&mut c).1 {
            Ok(Output::Multipart(MultipartReplyBody::MeterConfig(v))) => {
                assert_eq!(v, vec![cfg(1), cfg(2), cfg(3)])
            }
            r => panic!("{r:?}"),
        }
        // A part of another type fails the operation.
        c.multipart(MultipartRequestBody::MeterStats(1)).unwrap();
        let xid = sent(&mut c)[0].0;
        feed(
            &mut c,
            xid,
            part(OFPMPF_MORE, MultipartReplyBody::MeterStats(vec![])),
        );
        feed(
            &mut c,
            xid,
            part(0, MultipartReplyBody::MeterConfig(vec![])),
        );
        assert!(matches!(
            completed(&mut c).1,
            Err(Error::UnexpectedReply(_))
        ));
    }

    #[test]
    fn checked_send_reports_its_error_at_the_barrier() {
        let mut c = ready();
        c.send_checked(&Message::GetConfigRequest).unwrap();
        let m = sent(&mut c);
        assert!(matches!(m[1].1, Message::BarrierRequest));
        feed(&mut c, m[0].0, err(1, 1));
        assert!(events(&mut c).is_empty());
        feed(&mut c, m[1].0, Message::BarrierReply);
        assert!(matches!(completed(&mut c).1, Err(Error::Switch(e)) if e.code == 1));
    }

    #[test]
    fn close_fails_pending_operations() {
        let mut c = ready();
        c.barrier().unwrap();
        c.close(&Error::Closed);
        assert!(matches!(completed(&mut c).1, Err(Error::Closed)));
        assert!(matches!(c.barrier(), Err(Error::Closed)));
    }

    #[test]
    fn refuses_peers_without_1_4() {
        let mut c = Connection::new(Config::default());
        sent(&mut c);
        let hello = Message::Hello(Hello {
            version: 4,
            bitmap: Some(0x12),
        });
        let e = c.handle_input(&hello.to_bytes(1).unwrap()).unwrap_err();
        assert!(matches!(e, Error::VersionNegotiation { peer_bitmap: 0x12 }));
        assert!(matches!(sent(&mut c)[..], [(_, Message::Error(_))]));
    }

    #[test]
    fn split_and_garbled_input() {
        let mut c = ready();
        c.barrier().unwrap();
        let xid = sent(&mut c)[0].0;
        // One byte at a time still frames correctly.
        for b in Message::BarrierReply.to_bytes(xid).unwrap() {
            c.handle_input(&[b]).unwrap();
        }
        assert!(matches!(completed(&mut c).1, Ok(Output::Reply(_))));
        // An undecodable message is skipped, the stream goes on.
        c.handle_input(&[5, 14, 0, 9, 0, 0, 0, 1, 0xff]).unwrap();
        assert!(events(&mut c).is_empty());
        // Impossible framing closes the connection.
        assert!(c.handle_input(&[5, 0, 0, 2, 0, 0, 0, 0]).is_err());
        assert!(matches!(c.barrier(), Err(Error::Closed)));
    }
}
