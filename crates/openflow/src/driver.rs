//! The async driver: owns the socket, feeds a [`Connection`] and hands
//! results to callers. All protocol logic lives in [`crate::conn`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use crate::conn::{Change, Config, Connection, Event, OpId, Output};
use crate::error::{Error, Result};
use crate::message::{
    FlowStats, FlowStatsRequest, Message, MultipartReplyBody, MultipartRequestBody, PacketIn,
    PacketOut,
};
use crate::meter::{MeterConfig, MeterStats};

/// Packet-ins queued for the consumer before new ones are dropped.
const PACKET_IN_QUEUE: usize = 1024;
/// Read chunk size.
const READ_BUF: usize = 256 * 1024;

/// How long to wait for the hello exchange and for each operation.
#[derive(Clone, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub operation: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            // A bundle of 100k flows takes OVS seconds to commit.
            operation: Duration::from_secs(120),
        }
    }
}

enum Cmd {
    Request(Message),
    Checked(Message),
    Barrier,
    Dump(FlowStatsRequest),
    Multipart(MultipartRequestBody),
    Bundle(Vec<Change>),
}

type Reply = oneshot::Sender<Result<Output>>;

/// A handle to one OpenFlow connection; cheap to clone. The connection
/// lives until every handle is dropped or the switch goes away.
#[derive(Clone)]
pub struct Switch {
    name: Arc<str>,
    cmds: mpsc::Sender<(Cmd, Reply)>,
    closed: watch::Receiver<bool>,
    timeout: Duration,
}

/// Packet-ins from the switch; ends when the connection closes.
pub type PacketIns = mpsc::Receiver<PacketIn>;

impl Switch {
    /// Connects to a Unix socket (OVS: `<OVS_RUNDIR>/<bridge>.mgmt`).
    pub async fn connect_unix(
        path: impl AsRef<Path>,
        config: Config,
    ) -> Result<(Switch, PacketIns)> {
        let path = path.as_ref();
        let stream = tokio::net::UnixStream::connect(path).await?;
        Self::connect(
            stream,
            &path.display().to_string(),
            config,
            Timeouts::default(),
        )
        .await
    }

    /// Connects over TCP (`ovs-vsctl set-controller ... ptcp:PORT` style
    /// listeners).
    pub async fn connect_tcp(
        addr: std::net::SocketAddr,
        config: Config,
    ) -> Result<(Switch, PacketIns)> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Self::connect(stream, &addr.to_string(), config, Timeouts::default()).await
    }

    /// Runs the protocol over any byte stream; returns once OpenFlow 1.4 is
    /// agreed.
    pub async fn connect<S>(
        stream: S,
        name: &str,
        config: Config,
        timeouts: Timeouts,
    ) -> Result<(Switch, PacketIns)>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let name: Arc<str> = name.into();
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (pin_tx, pin_rx) = mpsc::channel(PACKET_IN_QUEUE);
        let (closed_tx, closed_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = Task {
            name: name.clone(),
            conn: Connection::new(config),
            cmds: cmd_rx,
            packet_ins: pin_tx,
            waiters: HashMap::new(),
            ready: Some(ready_tx),
            dropped_packet_ins: 0,
        };
        tokio::spawn(async move {
            task.run(stream).await;
            let _ = closed_tx.send(true);
        });
        match tokio::time::timeout(timeouts.connect, ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) => return Err(Error::Closed),
            Err(_) => return Err(Error::Timeout("hello")),
        }
        tracing::debug!(switch = %name, "OpenFlow 1.4 connected");
        Ok((
            Switch {
                name,
                cmds: cmd_tx,
                closed: closed_rx,
                timeout: timeouts.operation,
            },
            pin_rx,
        ))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves when the connection is gone.
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    async fn op(&self, cmd: Cmd, what: &'static str) -> Result<Output> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send((cmd, tx)).await.map_err(|_| Error::Closed)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout(what)),
        }
    }

    /// Waits until the switch has processed everything sent before.
    pub async fn barrier(&self) -> Result<()> {
        self.op(Cmd::Barrier, "barrier reply").await.map(|_| ())
    }

    /// Applies `changes` atomically (one bundle, pipelined). On error
    /// nothing changed; [`Error::Bundle`] carries the switch's error and the
    /// index of the change it blamed.
    pub async fn apply_bundle(&self, changes: Vec<Change>) -> Result<()> {
        self.op(Cmd::Bundle(changes), "bundle commit")
            .await
            .map(|_| ())
    }

    /// Dumps the flows `req` selects (`FlowStatsRequest::default()`: all;
    /// set `cookie`/`cookie_mask` to dump only ours).
    pub async fn dump_flows(&self, req: FlowStatsRequest) -> Result<Vec<FlowStats>> {
        match self.op(Cmd::Dump(req), "flow stats").await? {
            Output::Flows(f) => Ok(f),
            _ => Err(Error::UnexpectedReply("flow stats reply")),
        }
    }

    /// Sends a multipart request and returns every part of the reply
    /// joined.
    pub async fn multipart(&self, body: MultipartRequestBody) -> Result<MultipartReplyBody> {
        match self.op(Cmd::Multipart(body), "multipart reply").await? {
            Output::Multipart(b) => Ok(b),
            _ => Err(Error::UnexpectedReply("multipart reply")),
        }
    }

    /// The configuration of meter `id` ([`crate::meter::OFPM_ALL`]: all).
    pub async fn meter_configs(&self, id: u32) -> Result<Vec<MeterConfig>> {
        match self
            .multipart(MultipartRequestBody::MeterConfig(id))
            .await?
        {
            MultipartReplyBody::MeterConfig(c) => Ok(c),
            _ => Err(Error::UnexpectedReply("meter config reply")),
        }
    }

    /// The counters of meter `id` ([`crate::meter::OFPM_ALL`]: all).
    pub async fn meter_stats(&self, id: u32) -> Result<Vec<MeterStats>> {
        match self.multipart(MultipartRequestBody::MeterStats(id)).await? {
            MultipartReplyBody::MeterStats(s) => Ok(s),
            _ => Err(Error::UnexpectedReply("meter stats reply")),
        }
    }

    /// Sends a packet; returns once the switch processed it (errors
    /// included).
    pub async fn packet_out(&self, po: PacketOut) -> Result<()> {
        self.send_checked(Message::PacketOut(po)).await
    }

    /// Sends any message followed by a barrier (group mods, single flow
    /// mods); fails with the switch's error for it.
    pub async fn send_checked(&self, msg: Message) -> Result<()> {
        self.op(Cmd::Checked(msg), "barrier reply")
            .await
            .map(|_| ())
    }

    /// Sends a request and returns the reply with the same xid (features,
    /// config, ...).
    pub async fn request(&self, msg: Message) -> Result<Message> {
        match self.op(Cmd::Request(msg), "reply").await? {
            Output::Reply(m) => Ok(m),
            _ => Err(Error::UnexpectedReply("reply")),
        }
    }
}

struct Task {
    name: Arc<str>,
    conn: Connection,
    cmds: mpsc::Receiver<(Cmd, Reply)>,
    packet_ins: mpsc::Sender<PacketIn>,
    waiters: HashMap<OpId, Reply>,
    ready: Option<oneshot::Sender<Result<()>>>,
    dropped_packet_ins: u64,
}

impl Task {
    async fn run<S: AsyncRead + AsyncWrite>(mut self, stream: S) {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut rbuf = vec![0u8; READ_BUF];
        let mut wbuf: Vec<u8> = Vec::new();
        let mut wpos = 0;
        loop {
            self.dispatch();
            if wpos == wbuf.len() {
                wbuf.clear();
                wpos = 0;
            }
            self.conn.drain_transmit_into(&mut wbuf);
            let pending = &wbuf[wpos..];
            tokio::select! {
                r = rd.read(&mut rbuf) => match r {
                    Ok(0) => {
                        self.fail(Error::Closed, "switch closed the connection");
                        break;
                    }
                    Ok(n) => {
                        if let Err(e) = self.conn.handle_input(&rbuf[..n]) {
                            self.fail(e, "protocol error");
                            break;
                        }
                    }
                    Err(e) => {
                        self.fail(Error::Io(e), "read failed");
                        break;
                    }
                },
                w = wr.write(pending), if !pending.is_empty() => match w {
                    Ok(n) => wpos += n,
                    Err(e) => {
                        self.fail(Error::Io(e), "write failed");
                        break;
                    }
                },
                c = self.cmds.recv() => match c {
                    Some((cmd, reply)) => self.start(cmd, reply),
                    // Every handle is gone (or connect gave up): nobody
                    // can use the connection any more.
                    None => break,
                },
            }
        }
        self.dispatch();
        let _ = wr.shutdown().await;
    }

    fn start(&mut self, cmd: Cmd, reply: Reply) {
        let started = match cmd {
            Cmd::Request(m) => self.conn.request(&m),
            Cmd::Checked(m) => self.conn.send_checked(&m),
            Cmd::Barrier => self.conn.barrier(),
            Cmd::Dump(r) => self.conn.dump_flows(r),
            Cmd::Multipart(b) => self.conn.multipart(b),
            Cmd::Bundle(changes) => self.conn.apply_bundle(&changes),
        };
        match started {
            Ok(op) => {
                self.waiters.insert(op, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn fail(&mut self, e: Error, why: &'static str) {
        tracing::warn!(switch = %self.name, error = %e, "{why}");
        self.conn.close(&e);
        if let Some(r) = self.ready.take() {
            let _ = r.send(Err(e));
        }
    }

    fn dispatch(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                Event::Connected => {
                    if let Some(r) = self.ready.take() {
                        let _ = r.send(Ok(()));
                    }
                }
                Event::Completed { op, result } => {
                    if let Some(w) = self.waiters.remove(&op) {
                        let _ = w.send(result);
                    }
                }
                Event::PacketIn(p) => {
                    if self.packet_ins.try_send(p).is_err() {
                        // Tenant traffic can cause these: count, log rarely.
                        self.dropped_packet_ins += 1;
                        if self.dropped_packet_ins.is_power_of_two() {
                            tracing::warn!(
                                switch = %self.name,
                                dropped = self.dropped_packet_ins,
                                "packet-in queue full, dropping"
                            );
                        }
                    }
                }
                Event::Unsolicited { xid, msg } => match msg {
                    Message::Error(e) => {
                        tracing::warn!(switch = %self.name, xid, error = %e, "unsolicited error")
                    }
                    m => {
                        tracing::trace!(switch = %self.name, xid, msg_type = m.msg_type(), "async message")
                    }
                },
            }
        }
    }
}
