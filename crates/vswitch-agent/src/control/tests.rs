//! The control client against a scripted flowctl: a real HTTP/2 server whose
//! every stream the test drives by hand. (The tests against the real flowctl
//! live in the flowctl crate: `crates/flowctl/tests/control_client.rs`.)

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proto::NodeInfo;

use super::*;

/// One agent stream as the scripted flowctl sees it.
struct Stream {
    hello: AgentMessage,
    /// What the agent sent after its Hello.
    inbound: mpsc::Receiver<AgentMessage>,
    /// Frames to the agent; dropping it ends the response.
    out: mpsc::Sender<Bytes>,
}

impl Stream {
    async fn send(&self, m: ServerMessage) {
        self.out.send(frame::encode(&m).unwrap()).await.unwrap();
    }

    async fn recv(&mut self) -> AgentMessage {
        tokio::time::timeout(Duration::from_secs(5), self.inbound.recv())
            .await
            .expect("agent sent nothing")
            .expect("stream closed")
    }
}

struct FakeFlowctl {
    addr: SocketAddr,
    streams: mpsc::Receiver<Stream>,
    task: JoinHandle<()>,
}

impl Drop for FakeFlowctl {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_stream(body: Incoming, streams: mpsc::Sender<Stream>, out: mpsc::Sender<Bytes>) {
    let mut body = body;
    let mut dec = FrameDecoder::new();
    let mut inbound: Option<mpsc::Sender<AgentMessage>> = None;
    // Moved into the Stream: the test alone decides when the response ends.
    let mut out = Some(out);
    while let Some(Ok(f)) = body.frame().await {
        let Ok(data) = f.into_data() else { continue };
        dec.push(&data);
        while let Ok(Some(m)) = dec.next_message::<AgentMessage>() {
            match &inbound {
                None => {
                    let (tx, rx) = mpsc::channel(16);
                    inbound = Some(tx);
                    let _ = streams
                        .send(Stream {
                            hello: m,
                            inbound: rx,
                            out: out.take().unwrap(),
                        })
                        .await;
                }
                Some(tx) => {
                    let _ = tx.send(m).await;
                }
            }
        }
    }
}

impl FakeFlowctl {
    async fn start() -> FakeFlowctl {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, streams) = mpsc::channel(16);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let tx = tx.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let tx = tx.clone();
                        async move {
                            assert_eq!(req.uri().path(), STREAM_PATH);
                            let (out, rx) = mpsc::channel::<Bytes>(16);
                            tokio::spawn(read_stream(req.into_body(), tx, out));
                            let body = StreamBody::new(
                                receiver_stream(rx)
                                    .map(|b| Ok::<_, Infallible>(Frame::data(b)))
                                    .boxed(),
                            );
                            Ok::<_, Infallible>(Response::new(body))
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        FakeFlowctl {
            addr,
            streams,
            task,
        }
    }

    async fn stream(&mut self) -> Stream {
        tokio::time::timeout(Duration::from_secs(5), self.streams.recv())
            .await
            .expect("no agent stream")
            .unwrap()
    }
}

fn config(addr: SocketAddr) -> ControlConfig {
    let mut cfg = ControlConfig::new(vec![addr.to_string()], "n1", "tok");
    cfg.backoff_min = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(50);
    cfg
}

fn state(revision: Revision) -> NodeState {
    NodeState {
        node: NodeInfo {
            name: "n1".into(),
            underlay_ip: None,
        },
        revision,
        ..NodeState::default()
    }
}

fn hello_revision(m: &AgentMessage) -> Option<Revision> {
    match m {
        AgentMessage::Hello {
            version,
            node,
            token,
            last_applied,
        } => {
            assert_eq!(
                (*version, node.as_str(), token.as_str()),
                (PROTOCOL_VERSION, "n1", "tok")
            );
            *last_applied
        }
        other => panic!("expected hello, got {other:?}"),
    }
}

#[tokio::test]
async fn a_delta_from_the_wrong_base_means_a_snapshot() {
    let mut f = FakeFlowctl::start().await;
    let mut c = ControlClient::new(config(f.addr).resume_from(Some(3)));
    let next = tokio::spawn(async move {
        let first = c.next().await;
        let second = c.next().await;
        (c, first, second)
    });

    let s1 = f.stream().await;
    assert_eq!(hello_revision(&s1.hello), Some(3));
    s1.send(ServerMessage::Delta {
        base: 3,
        revision: 5,
        changes: vec![],
    })
    .await;
    // Not based on 5: the client must not apply it, and asks again
    // without a revision.
    s1.send(ServerMessage::Delta {
        base: 4,
        revision: 6,
        changes: vec![],
    })
    .await;
    let s2 = f.stream().await;
    assert_eq!(hello_revision(&s2.hello), None);
    s2.send(ServerMessage::Snapshot { state: state(6) }).await;

    let (c, first, second) = next.await.unwrap();
    assert_eq!(first.revision(), 5);
    assert_eq!(second, Update::Snapshot(state(6)));
    assert_eq!(c.last_applied(), Some(6));
    assert!(matches!(
        c.last_error(),
        Some(ControlError::BaseMismatch {
            base: 4,
            have: Some(5)
        })
    ));
}

#[tokio::test]
async fn acks_reach_flowctl_and_are_replayed_after_a_reconnect() {
    let mut f = FakeFlowctl::start().await;
    let mut c = ControlClient::new(config(f.addr));
    let next = tokio::spawn(async move {
        let u = c.next().await;
        (c, u)
    });
    let mut s1 = f.stream().await.clone_hello_checked(None);
    s1.send(ServerMessage::Snapshot { state: state(5) }).await;
    let (mut c, u) = next.await.unwrap();
    assert_eq!(u, Update::Snapshot(state(5)));
    c.ack(5, vec!["nic-1".into()]).await;
    let ack = AgentMessage::Ack {
        revision: 5,
        ready_nics: vec!["nic-1".into()],
    };
    assert_eq!(s1.recv().await, ack);

    // flowctl ends the stream; the client resumes from 5 and repeats its
    // last ack, in case it was lost.
    drop(s1);
    let next = tokio::spawn(async move {
        let u = c.next().await;
        (c, u)
    });
    let mut s2 = f.stream().await.clone_hello_checked(Some(5));
    assert_eq!(s2.recv().await, ack);
    s2.send(ServerMessage::Delta {
        base: 5,
        revision: 7,
        changes: vec![],
    })
    .await;
    let (mut c, u) = next.await.unwrap();
    assert_eq!(u.revision(), 7);
    c.nack(7, "bridge missing".into()).await;
    assert_eq!(
        s2.recv().await,
        AgentMessage::Nack {
            revision: 7,
            error: "bridge missing".into()
        }
    );
}

#[tokio::test]
async fn a_refusal_is_reported_and_retried() {
    let mut f = FakeFlowctl::start().await;
    let mut c = ControlClient::new(config(f.addr));
    let next = tokio::spawn(async move {
        let u = c.next().await;
        (c, u)
    });
    let s1 = f.stream().await;
    s1.send(ServerMessage::Refused {
        reason: "unknown node n1".into(),
    })
    .await;
    drop(s1);
    // It comes back (after a backoff) and gets served.
    let s2 = f.stream().await;
    s2.send(ServerMessage::Snapshot { state: state(9) }).await;
    let (c, u) = next.await.unwrap();
    assert_eq!(u.revision(), 9);
    assert!(matches!(c.last_error(), Some(ControlError::Refused(r)) if r == "unknown node n1"));
}

#[test]
fn endpoints_are_checked() {
    assert_eq!(
        stream_uri("10.0.0.1:6653").unwrap().to_string(),
        "http://10.0.0.1:6653/agent/v1/stream"
    );
    assert_eq!(
        stream_uri("http://flowctl.example:6653/")
            .unwrap()
            .to_string(),
        "http://flowctl.example:6653/agent/v1/stream"
    );
    for bad in ["", "10.0.0.1", "https://10.0.0.1:6653", "http://:80:80"] {
        assert!(stream_uri(bad).is_err(), "{bad}");
    }
}

#[test]
fn backoff_grows_to_its_cap() {
    let mut c = ControlClient::new(ControlConfig::new(vec![], "n1", "t"));
    c.failures = 1;
    let first = c.backoff();
    assert!(first >= c.cfg.backoff_min && first <= c.cfg.backoff_min.mul_f64(1.25));
    c.failures = 40;
    let capped = c.backoff();
    assert!(capped >= c.cfg.backoff_max && capped <= c.cfg.backoff_max.mul_f64(1.25));
}

impl Stream {
    /// Checks the Hello carries `last_applied`, and hands the stream on.
    fn clone_hello_checked(self, last_applied: Option<Revision>) -> Stream {
        assert_eq!(hello_revision(&self.hello), last_applied);
        self
    }
}
