//! Fixtures: an embedded store in a tempdir, the real flowctl service and
//! agent server on 127.0.0.1:0, and a scripted agent speaking the real
//! framing over a real HTTP/2 connection.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use api::model::{self, keys, NicStatusRecord};
use api::store::embedded::EmbeddedStore;
use api::store::Store;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proto::frame::{self, FrameDecoder};
use proto::{AgentMessage, Mac, ServerMessage};
use tokio::sync::mpsc;

pub const SECRET: &[u8] = b"test-cluster-secret";

/// One flowctl (service + agent server) on a store.
pub struct Replica {
    pub addr: SocketAddr,
    pub service: flowctl::service::Service,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Replica {
    pub async fn start(store: Arc<dyn Store>) -> Replica {
        let service = flowctl::service::Service::start(
            store,
            flowctl::service::Config {
                cluster_secret: SECRET.to_vec(),
                history: Default::default(),
            },
        )
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(flowctl::server::serve(listener, service.shared.clone()));
        Replica {
            addr,
            service,
            server,
        }
    }

    /// Stops accepting and closes every connection.
    pub fn kill(&self) {
        self.server.abort();
    }
}

pub struct Cluster {
    pub store: Arc<dyn Store>,
    pub addr: SocketAddr,
    pub replica: Replica,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// A store seeded by `seed`, then flowctl started on it.
    pub async fn start(seed: impl AsyncFnOnce(&dyn Store)) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
        seed(&*store).await;
        let replica = Replica::start(store.clone()).await;
        Cluster {
            store,
            addr: replica.addr,
            replica,
            _dir: dir,
        }
    }

    pub async fn status(&self, nic: &str) -> Option<NicStatusRecord> {
        let kv = self.store.get(&keys::nic_status(nic)).await.unwrap()?;
        Some(serde_json::from_slice(&kv.value).unwrap())
    }

    /// Waits until the status of `nic` satisfies `f`.
    pub async fn wait_status(
        &self,
        nic: &str,
        f: impl Fn(Option<&NicStatusRecord>) -> bool,
    ) -> Option<NicStatusRecord> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let st = self.status(nic).await;
            if f(st.as_ref()) {
                return st;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "status of {nic} stuck at {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub async fn put<T: serde::Serialize>(store: &dyn Store, key: String, v: &T) -> u64 {
    store
        .put(&key, serde_json::to_vec(v).unwrap())
        .await
        .unwrap()
}

pub fn node(name: &str, ip: u8) -> (String, model::Node) {
    (
        keys::node(name),
        model::Node {
            name: name.into(),
            set: "set-1".into(),
            underlay_ip: Ipv4Addr::new(192, 0, 2, ip),
            roles: vec![model::NodeRole::Compute],
            drained: false,
            gateway_priority: 0,
            created_at: "2024-01-01T00:00:00Z".into(),
        },
    )
}

pub fn vpc(id: &str, vni: u32) -> (String, model::Vpc) {
    (
        keys::vpc(id),
        model::Vpc {
            id: id.into(),
            name: id.into(),
            set: "set-1".into(),
            cidrs: vec!["10.0.0.0/16".parse().unwrap()],
            vni,
            default_security_group_id: None,
            external_network_ids: vec![],
            created_at: "2024-01-01T00:00:00Z".into(),
        },
    )
}

pub fn subnet(id: &str, vpc: &str, third: u8) -> (String, model::Subnet) {
    (
        keys::subnet(id),
        model::Subnet {
            id: id.into(),
            name: id.into(),
            vpc_id: vpc.into(),
            cidr: format!("10.0.{third}.0/24").parse().unwrap(),
            gateway_ip: Ipv4Addr::new(10, 0, third, 1),
            gateway_mac: Mac([2, 0x5e, 0, 0, 0, third]),
            dns_servers: vec![],
            mtu: 1450,
            created_at: "2024-01-01T00:00:00Z".into(),
        },
    )
}

pub fn nic(
    id: &str,
    vpc: &str,
    subnet: &str,
    host: Option<&str>,
    last: u8,
) -> (String, model::Nic) {
    (
        keys::nic(id),
        model::Nic {
            id: id.into(),
            name: id.into(),
            subnet_id: subnet.into(),
            vpc_id: vpc.into(),
            mac: Mac([2, 0, 0, 0, 0, last]),
            ip: Ipv4Addr::new(10, 0, 1, last),
            node: host.map(str::to_string),
            interface_id: id.into(),
            port_security: true,
            security_groups: vec![],
            allowed_address_pairs: vec![],
            created_at: "2024-01-01T00:00:00Z".into(),
        },
    )
}

/// n1, n2 in vpc-a: nic-1 on n1, nic-2 on n2.
pub async fn two_nodes(store: &dyn Store) {
    for (k, v) in [node("n1", 1), node("n2", 2), node("n3", 3)] {
        put(store, k, &v).await;
    }
    let (k, v) = vpc("vpc-a", 100);
    put(store, k, &v).await;
    let (k, v) = subnet("sub-a", "vpc-a", 1);
    put(store, k, &v).await;
    for (k, v) in [
        nic("nic-1", "vpc-a", "sub-a", Some("n1"), 11),
        nic("nic-2", "vpc-a", "sub-a", Some("n2"), 12),
    ] {
        put(store, k, &v).await;
    }
}

/// A scripted agent: raw frames over its own HTTP/2 connection.
pub struct FakeAgent {
    tx: mpsc::Sender<Bytes>,
    body: Incoming,
    decoder: FrameDecoder,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl FakeAgent {
    pub async fn connect(addr: SocketAddr, hello: AgentMessage) -> FakeAgent {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
        })
        .boxed();
        let req = hyper::Request::post(format!("http://{addr}/agent/v1/stream"))
            .body(StreamBody::new(stream))
            .unwrap();
        tx.send(frame::encode(&hello).unwrap()).await.unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        FakeAgent {
            tx,
            body: resp.into_body(),
            decoder: FrameDecoder::new(),
            conn,
        }
    }

    pub async fn hello(addr: SocketAddr, node: &str, last_applied: Option<u64>) -> FakeAgent {
        Self::connect(
            addr,
            AgentMessage::Hello {
                version: proto::PROTOCOL_VERSION,
                node: node.into(),
                token: proto::auth::node_token(SECRET, node),
                last_applied,
            },
        )
        .await
    }

    /// The next message; `None` once flowctl closed the stream.
    pub async fn recv(&mut self) -> Option<ServerMessage> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(m) = self.decoder.next_message::<ServerMessage>().unwrap() {
                    return Some(m);
                }
                match self.body.frame().await {
                    None => return None,
                    Some(Err(_)) => return None,
                    Some(Ok(f)) => {
                        if let Ok(d) = f.into_data() {
                            self.decoder.push(&d);
                        }
                    }
                }
            }
        })
        .await
        .expect("flowctl said nothing for 10 s")
    }

    /// Asserts nothing arrives for a while.
    pub async fn expect_silence(&mut self, for_: Duration) {
        let got = tokio::time::timeout(for_, self.recv()).await;
        assert!(got.is_err(), "unexpected message {got:?}");
    }

    pub async fn send(&self, msg: AgentMessage) {
        self.tx.send(frame::encode(&msg).unwrap()).await.unwrap();
    }
}

/// A TCP relay that can be frozen: it then forwards nothing in either
/// direction, like a black-holed path.
pub struct Relay {
    pub addr: SocketAddr,
    pub frozen: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    pub async fn start(upstream: SocketAddr) -> Relay {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    return;
                };
                let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                for (mut r, mut w) in [
                    (
                        Box::new(dr) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(uw) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(ur), Box::new(dw)),
                ] {
                    let f = f.clone();
                    pipes.spawn(async move {
                        let mut buf = vec![0u8; 16384];
                        loop {
                            let n = match r.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            while f.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            if w.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Relay { addr, frozen, task }
    }
}
