//! The agent protocol server: `POST /agent/v1/stream` over HTTP/2 cleartext
//! (prior knowledge), plus `GET /metrics` (HTTP/1.1 or HTTP/2).
//!
//! The request body carries the agent's frames (Hello, then acks and
//! nacks); the response body carries flowctl's (a snapshot or resume delta,
//! then a delta per revision that changed the node). The session asks the
//! hub what the agent needs each time the node changes, so a slow reader
//! gets one coalesced delta rather than a queue.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use proto::frame::{self, FrameDecoder};
use proto::{AgentMessage, Revision, ServerMessage, PROTOCOL_VERSION};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::metrics::Metrics;
use crate::service::{Shared, StatusCmd};

/// The path of the agent stream.
pub const STREAM_PATH: &str = "/agent/v1/stream";
/// An agent must say Hello within this time.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// An agent resuming from a revision this replica has not compiled yet
/// waits this long for it before getting a snapshot.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// HTTP/2 pings, so a dead or black-holed agent is noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

type Body = BoxBody<Bytes, Infallible>;

/// Accepts connections on `listener`. Dropping (aborting) this future
/// closes every connection it accepted.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next() => continue,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait, do not spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        conns.spawn(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT);
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(req, shared, peer)) }
            });
            if let Err(e) = builder.serve_connection(TokioIo::new(tcp), svc).await {
                debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

fn route(req: Request<Incoming>, shared: Arc<Shared>, peer: SocketAddr) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, STREAM_PATH) => {
            let (tx, rx) = mpsc::channel::<Bytes>(1);
            let body = req.into_body();
            tokio::spawn(session(body, tx, shared).instrument(info_span!("agent", %peer)));
            let stream = ReceiverStream::new(rx).map(|b| Ok(Frame::data(b)));
            response(
                StatusCode::OK,
                "application/x-stacknet-frames",
                BodyExt::boxed(StreamBody::new(stream)),
            )
        }
        (&Method::GET, "/metrics") => response(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            Full::new(Bytes::from(shared.metrics.render())).boxed(),
        ),
        _ => response(
            StatusCode::NOT_FOUND,
            "text/plain",
            Full::new(Bytes::from_static(b"not found\n")).boxed(),
        ),
    }
}

fn response(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

/// Reads the agent's frames as they arrive.
struct Inbound {
    body: Incoming,
    decoder: FrameDecoder,
}

impl Inbound {
    /// The next message; `None` when the agent closed its side.
    async fn next(&mut self) -> Result<Option<AgentMessage>, String> {
        loop {
            match self.decoder.next_message::<AgentMessage>() {
                Ok(Some(m)) => return Ok(Some(m)),
                Ok(None) => {}
                Err(e) => return Err(format!("bad frame: {e}")),
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.decoder.push(&data);
                    }
                }
            }
        }
    }
}

/// Why a Hello is refused, if it is.
fn check_hello(shared: &Shared, version: u32, node: &str, token: &str) -> Option<String> {
    if version != PROTOCOL_VERSION {
        return Some(format!(
            "protocol version {version} is not supported (this flowctl speaks {PROTOCOL_VERSION})"
        ));
    }
    if !proto::auth::verify_node_token(&shared.config.cluster_secret, node, token) {
        return Some(format!("bad token for node {node}"));
    }
    if shared.hub().compiler().model().node(node).is_none() {
        return Some(format!("unknown node {node}"));
    }
    None
}

async fn send(shared: &Shared, tx: &mpsc::Sender<Bytes>, msg: &ServerMessage) -> bool {
    let bytes = match frame::encode(msg) {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "cannot encode message");
            return false;
        }
    };
    shared
        .metrics
        .bytes_sent
        .fetch_add(bytes.len() as u64, Relaxed);
    tx.send(bytes).await.is_ok()
}

async fn session(body: Incoming, tx: mpsc::Sender<Bytes>, shared: Arc<Shared>) {
    let mut inbound = Inbound {
        body,
        decoder: FrameDecoder::new(),
    };
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.next()).await {
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            debug!(error = %e, "stream failed before hello");
            return;
        }
        Err(_) => {
            refuse(&shared, &tx, "no hello".into()).await;
            return;
        }
    };
    let AgentMessage::Hello {
        version,
        node,
        token,
        last_applied,
    } = hello
    else {
        refuse(&shared, &tx, "the first message must be hello".into()).await;
        return;
    };
    if let Some(reason) = check_hello(&shared, version, &node, &token) {
        refuse(&shared, &tx, reason).await;
        return;
    }
    let span = info_span!("session", node = %node);
    async {
        let m = &shared.metrics;
        Metrics::inc(&m.sessions_total);
        m.agents_connected.fetch_add(1, Relaxed);
        info!(?last_applied, "agent connected");
        let (done_tx, done_rx) = oneshot::channel();
        let reader = tokio::spawn(
            read_acks(inbound, shared.clone(), node.clone(), done_tx).in_current_span(),
        );
        stream_states(&shared, &node, last_applied, &tx, done_rx).await;
        reader.abort();
        m.agents_connected.fetch_sub(1, Relaxed);
        info!("agent disconnected");
    }
    .instrument(span)
    .await;
}

async fn refuse(shared: &Shared, tx: &mpsc::Sender<Bytes>, reason: String) {
    Metrics::inc(&shared.metrics.refused_total);
    warn!(%reason, "agent refused");
    send(shared, tx, &ServerMessage::Refused { reason }).await;
}

/// Sends the agent what it lacks, then again each time its node changes,
/// until the agent goes away.
async fn stream_states(
    shared: &Shared,
    node: &str,
    last_applied: Option<Revision>,
    tx: &mpsc::Sender<Bytes>,
    mut done: oneshot::Receiver<()>,
) {
    let mut have = last_applied;
    if let Some(l) = have {
        // Another replica may be ahead of this one: let this one catch up.
        let mut rev = shared.subscribe_revision();
        let caught_up = tokio::time::timeout(CATCH_UP_WAIT, rev.wait_for(|r| *r >= l)).await;
        if !matches!(caught_up, Ok(Ok(_))) {
            warn!(
                last_applied = l,
                "agent is ahead of this replica; sending a snapshot"
            );
            have = None;
        }
    }
    if let Some(l) = have {
        // What the agent holds counts as acked for operations: an agent
        // that acked on a replica that died before recording it, and that
        // needs nothing new from this one, would otherwise never ack it.
        shared
            .status(StatusCmd::Holds {
                node: node.to_string(),
                revision: l,
            })
            .await;
    }
    let mut changed = shared.subscribe(node);
    loop {
        // Marked seen before reading the hub, so no change is missed.
        changed.borrow_and_update();
        let msg = shared.hub().catch_up(node, have);
        if let Some(msg) = msg {
            let (revision, counter) = match &msg {
                ServerMessage::Snapshot { state } => {
                    (state.revision, &shared.metrics.snapshots_sent)
                }
                ServerMessage::Delta { revision, .. } => (*revision, &shared.metrics.deltas_sent),
                ServerMessage::Refused { .. } => return,
            };
            debug!(
                revision,
                kind = if have.is_none() { "snapshot" } else { "delta" },
                "sending"
            );
            tokio::select! {
                ok = send(shared, tx, &msg) => if !ok { return },
                _ = &mut done => return,
            }
            Metrics::inc(counter);
            have = Some(revision);
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = &mut done => return,
        }
    }
}

/// Forwards acks and nacks to the status task until the agent's side ends.
async fn read_acks(
    mut inbound: Inbound,
    shared: Arc<Shared>,
    node: String,
    done: oneshot::Sender<()>,
) {
    loop {
        match inbound.next().await {
            Ok(Some(AgentMessage::Ack {
                revision,
                ready_nics,
            })) => {
                Metrics::inc(&shared.metrics.acks_total);
                debug!(revision, ready = ready_nics.len(), "ack");
                shared
                    .status(StatusCmd::Ack {
                        node: node.clone(),
                        revision,
                        ready: ready_nics,
                    })
                    .await;
            }
            Ok(Some(AgentMessage::Nack { revision, error })) => {
                Metrics::inc(&shared.metrics.nacks_total);
                warn!(revision, %error, "agent could not apply state");
                shared
                    .status(StatusCmd::Nack {
                        node: node.clone(),
                        revision,
                        error,
                    })
                    .await;
            }
            Ok(Some(AgentMessage::Hello { .. })) => {
                warn!("second hello on a stream; closing");
                break;
            }
            Ok(None) => break,
            Err(e) => {
                debug!(error = %e, "agent stream ended");
                break;
            }
        }
    }
    let _ = done.send(());
}
