//! The agent side of the agent protocol: a client that streams this node's
//! desired state from flowctl.
//!
//! One [`ControlClient`] per agent. It connects to one of the configured
//! flowctl endpoints over HTTP/2 cleartext, says Hello (with the revision it
//! already holds, so flowctl can resume with deltas), and hands out
//! [`Update`]s. When the connection fails, is refused or goes silent (HTTP/2
//! pings every second, dead after three without answer), it moves on to the
//! next endpoint with exponential backoff, by itself.
//!
//! ```ignore
//! let mut control = ControlClient::new(ControlConfig::new(endpoints, node, token)
//!     .resume_from(saved.map(|s| s.revision)));
//! loop {
//!     let update = control.next().await;    // reconnects as needed
//!     match &update {
//!         Update::Snapshot(state) => desired = state.clone(),
//!         Update::Delta { changes, .. } => changes.iter().for_each(|c| desired.apply(c)),
//!     }
//!     desired.revision = update.revision();
//!     match reconcile(&desired).await {
//!         Ok(ready) => control.ack(update.revision(), ready).await,
//!         Err(e) => control.nack(update.revision(), e.to_string()).await,
//!     }
//! }
//! ```
//!
//! Contract: every update returned by [`ControlClient::next`] is applied to
//! the desired state before `next` is called again; the client resumes from
//! the revision of the last update it returned. A delta whose `base` is not
//! that revision is never returned: the client reconnects for a snapshot.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use proto::frame::{self, FrameDecoder, FrameError};
use proto::{AgentMessage, Change, NodeState, Revision, ServerMessage, PROTOCOL_VERSION};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// The path of the agent stream on flowctl.
pub const STREAM_PATH: &str = "/agent/v1/stream";

/// What went wrong with one connection attempt or stream.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("bad endpoint {0:?}: expected host:port or http://host:port")]
    Endpoint(String),
    #[error("connecting to {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("{0} did not answer in time")]
    Timeout(String),
    #[error("HTTP/2")]
    Http(#[from] hyper::Error),
    #[error("flowctl answered HTTP {0}")]
    Status(u16),
    #[error("flowctl refused the stream: {0}")]
    Refused(String),
    #[error("agent protocol framing")]
    Frame(#[from] FrameError),
    #[error("flowctl closed the stream")]
    Closed,
    #[error("delta from {base} does not apply to revision {have:?}")]
    BaseMismatch {
        base: Revision,
        have: Option<Revision>,
    },
}

/// How to reach flowctl.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// flowctl agent endpoints, `host:port` or `http://host:port`, tried in
    /// turn.
    pub endpoints: Vec<String>,
    pub node: String,
    /// The node token (`flowctl node-token NODE`).
    pub token: String,
    /// The revision of the state the agent already holds (from disk), if any.
    pub last_applied: Option<Revision>,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// For the TCP connect and the answer to the stream request.
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl ControlConfig {
    pub fn new(endpoints: Vec<String>, node: impl Into<String>, token: impl Into<String>) -> Self {
        ControlConfig {
            endpoints,
            node: node.into(),
            token: token.into(),
            last_applied: None,
            keepalive_interval: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(3),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
        }
    }

    /// Resume from the state at `revision` instead of asking for a snapshot.
    pub fn resume_from(mut self, revision: Option<Revision>) -> Self {
        self.last_applied = revision;
        self
    }
}

/// One step of the desired state.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// Replace the whole desired state.
    Snapshot(NodeState),
    /// Apply `changes` to the state at `base` to reach `revision`.
    Delta {
        base: Revision,
        revision: Revision,
        changes: Vec<Change>,
    },
}

impl Update {
    /// The revision the desired state is at once this update is applied.
    pub fn revision(&self) -> Revision {
        match self {
            Update::Snapshot(s) => s.revision,
            Update::Delta { revision, .. } => *revision,
        }
    }
}

/// One open stream to a flowctl.
struct Conn {
    endpoint: String,
    /// The request body: frames to flowctl.
    tx: mpsc::Sender<Bytes>,
    body: Incoming,
    decoder: FrameDecoder,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Conn {
    async fn recv(&mut self) -> Result<ServerMessage, ControlError> {
        loop {
            if let Some(m) = self.decoder.next_message::<ServerMessage>()? {
                return Ok(m);
            }
            match self.body.frame().await {
                None => return Err(ControlError::Closed),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.decoder.push(&data);
                    }
                }
            }
        }
    }

    async fn send(&self, msg: &AgentMessage) -> Result<(), ControlError> {
        self.tx
            .send(frame::encode(msg)?)
            .await
            .map_err(|_| ControlError::Closed)
    }
}

/// The agent's connection to flowctl. See the module docs for the loop.
pub struct ControlClient {
    cfg: ControlConfig,
    conn: Option<Conn>,
    next_endpoint: usize,
    /// Consecutive failed attempts, for the backoff.
    failures: u32,
    /// The revision of the last update returned.
    applied: Option<Revision>,
    /// Sent again on a new stream, in case it was lost with the old one.
    last_ack: Option<AgentMessage>,
    last_error: Option<ControlError>,
}

impl ControlClient {
    pub fn new(cfg: ControlConfig) -> Self {
        let applied = cfg.last_applied;
        ControlClient {
            cfg,
            conn: None,
            next_endpoint: 0,
            failures: 0,
            applied,
            last_ack: None,
            last_error: None,
        }
    }

    /// The next update for the desired state. Waits (and reconnects, fails
    /// over, backs off) as long as it takes; errors are logged and kept in
    /// [`ControlClient::last_error`].
    pub async fn next(&mut self) -> Update {
        loop {
            if self.conn.is_none() {
                if self.failures > 0 {
                    tokio::time::sleep(self.backoff()).await;
                }
                if let Err(e) = self.connect().await {
                    self.fail(e);
                    continue;
                }
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            let result = conn.recv().await;
            match result {
                Ok(ServerMessage::Snapshot { state }) => {
                    self.failures = 0;
                    self.applied = Some(state.revision);
                    return Update::Snapshot(state);
                }
                Ok(ServerMessage::Delta {
                    base,
                    revision,
                    changes,
                }) => {
                    if Some(base) != self.applied {
                        let have = self.applied.take();
                        // Reconnect without a revision: a snapshot fixes it.
                        self.fail(ControlError::BaseMismatch { base, have });
                        continue;
                    }
                    self.failures = 0;
                    self.applied = Some(revision);
                    return Update::Delta {
                        base,
                        revision,
                        changes,
                    };
                }
                Ok(ServerMessage::Refused { reason }) => self.fail(ControlError::Refused(reason)),
                Err(e) => self.fail(e),
            }
        }
    }

    /// Reports the state at `revision` installed, with these local NICs
    /// ready. Lost if the stream is down; it is sent again on the next one.
    pub async fn ack(&mut self, revision: Revision, ready_nics: Vec<String>) {
        let msg = AgentMessage::Ack {
            revision,
            ready_nics,
        };
        self.send(&msg).await;
        self.last_ack = Some(msg);
    }

    /// Reports that the state at `revision` could not be installed.
    pub async fn nack(&mut self, revision: Revision, error: String) {
        let msg = AgentMessage::Nack { revision, error };
        self.send(&msg).await;
        self.last_ack = Some(msg);
    }

    /// The revision of the last update returned (or the one resumed from).
    pub fn last_applied(&self) -> Option<Revision> {
        self.applied
    }

    /// The endpoint of the open stream, if any.
    pub fn endpoint(&self) -> Option<&str> {
        self.conn.as_ref().map(|c| c.endpoint.as_str())
    }

    /// The last error seen (a refusal, a failed connection...).
    pub fn last_error(&self) -> Option<&ControlError> {
        self.last_error.as_ref()
    }

    async fn send(&mut self, msg: &AgentMessage) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        if let Err(e) = conn.send(msg).await {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: ControlError) {
        let endpoint = self.conn.take().map(|c| c.endpoint.clone());
        match &e {
            ControlError::Refused(_) | ControlError::BaseMismatch { .. } => {
                warn!(node = %self.cfg.node, ?endpoint, error = %e, "control stream failed")
            }
            _ => info!(node = %self.cfg.node, ?endpoint, error = %e, "control stream failed"),
        }
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(e);
    }

    fn backoff(&self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(16);
        let base = self
            .cfg
            .backoff_min
            .saturating_mul(1 << exp)
            .min(self.cfg.backoff_max);
        // Up to 25% jitter so a fleet does not reconnect in lockstep.
        let jitter = base.mul_f64(rand::random::<f64>() * 0.25);
        base + jitter
    }

    async fn connect(&mut self) -> Result<(), ControlError> {
        if self.cfg.endpoints.is_empty() {
            return Err(ControlError::Endpoint(String::new()));
        }
        let i = self.next_endpoint % self.cfg.endpoints.len();
        // Whatever happens, the next attempt goes to the next endpoint.
        self.next_endpoint = i + 1;
        let endpoint = self.cfg.endpoints[i].clone();
        let uri = stream_uri(&endpoint)?;
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .ok_or_else(|| ControlError::Endpoint(endpoint.clone()))?;
        let timeout = self.cfg.connect_timeout;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(&authority))
            .await
            .map_err(|_| ControlError::Timeout(endpoint.clone()))?
            .map_err(|e| ControlError::Connect(endpoint.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, connection) =
            hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(self.cfg.keepalive_interval)
                .keep_alive_timeout(self.cfg.keepalive_timeout)
                .keep_alive_while_idle(true)
                .handshake(TokioIo::new(tcp))
                .await?;
        let node = self.cfg.node.clone();
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%node, error = %e, "HTTP/2 connection ended");
            }
        });
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let body = StreamBody::new(
            receiver_stream(rx)
                .map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)))
                .boxed(),
        );
        let req = Request::post(uri)
            .header(hyper::header::CONTENT_TYPE, "application/x-stacknet-frames")
            .body(body)
            .map_err(|_| ControlError::Endpoint(endpoint.clone()))?;
        // Hello goes first, before waiting for the answer's headers.
        let hello = AgentMessage::Hello {
            version: PROTOCOL_VERSION,
            node: self.cfg.node.clone(),
            token: self.cfg.token.clone(),
            last_applied: self.applied,
        };
        let _ = tx.send(frame::encode(&hello)?).await;
        // Our last ack may have died with the previous stream.
        if let Some(ack) = &self.last_ack {
            let _ = tx.send(frame::encode(ack)?).await;
        }
        let resp = tokio::time::timeout(timeout, sender.send_request(req))
            .await
            .map_err(|_| ControlError::Timeout(endpoint.clone()))??;
        if !resp.status().is_success() {
            return Err(ControlError::Status(resp.status().as_u16()));
        }
        info!(node = %self.cfg.node, %endpoint, last_applied = ?self.applied, "control stream open");
        self.conn = Some(Conn {
            endpoint,
            tx,
            body: resp.into_body(),
            decoder: FrameDecoder::new(),
            driver,
        });
        Ok(())
    }
}

/// `http://host:port/agent/v1/stream` for an endpoint.
fn stream_uri(endpoint: &str) -> Result<Uri, ControlError> {
    let bad = || ControlError::Endpoint(endpoint.to_string());
    let base = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let uri: Uri = base.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") || uri.port().is_none() {
        return Err(bad());
    }
    let authority = uri.authority().ok_or_else(bad)?;
    format!("http://{authority}{STREAM_PATH}")
        .parse()
        .map_err(|_| bad())
}

/// A receiver as a stream.
fn receiver_stream<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

#[cfg(test)]
mod tests;
