//! Asynchronous operations end to end in flowctl: scripted agents against
//! the real server and store advance them (ack → succeeded, nack → failed,
//! offline → running), and the callback duty delivers a signed callback to
//! a real HTTP receiver that fails a few times first.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::operation::{
    keys as op_keys, Action, Backoff, CallbackState, Delivery, Operation, OperationState, Target,
};
use api::store::{Compare, Op, Store, Txn};
use common::*;
use proto::{AgentMessage, ServerMessage};

/// Writes `nic` changed and a pending operation about it in one
/// transaction, as the API does; returns the transaction's revision.
async fn change_with_op(store: &dyn Store, op_id: &str, nic: Option<api::model::Nic>) -> u64 {
    let op = Operation::new(
        op_id,
        "tenant-1",
        Action::Update,
        Target::nic("nic-1"),
        None,
        "2026-01-01T00:00:00Z",
    );
    let mut success = vec![Op::put(
        op_keys::operation(op_id),
        serde_json::to_vec(&op).unwrap(),
    )];
    if let Some(n) = nic {
        success.push(Op::put(
            api::model::keys::nic(&n.id),
            serde_json::to_vec(&n).unwrap(),
        ));
    }
    let r = store
        .txn(Txn {
            compare: vec![Compare::absent(op_keys::operation(op_id))],
            success,
            failure: vec![],
        })
        .await
        .unwrap();
    assert!(r.succeeded);
    r.revision
}

async fn op(store: &dyn Store, id: &str) -> Operation {
    let kv = store.get(&op_keys::operation(id)).await.unwrap().unwrap();
    serde_json::from_slice(&kv.value).unwrap()
}

/// Waits until operation `id` satisfies `f`.
async fn wait_op(store: &dyn Store, id: &str, f: impl Fn(&Operation) -> bool) -> Operation {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let o = op(store, id).await;
        if f(&o) {
            return o;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "operation {id} stuck at {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The revision of the next state message.
async fn next_revision(a: &mut FakeAgent) -> u64 {
    match a.recv().await {
        Some(ServerMessage::Snapshot { state }) => state.revision,
        Some(ServerMessage::Delta { revision, .. }) => revision,
        other => panic!("expected state, got {other:?}"),
    }
}

fn port_security(on: bool) -> api::model::Nic {
    let (_, mut n) = nic("nic-1", "vpc-a", "sub-a", Some("n1"), 11);
    n.port_security = on;
    n
}

#[tokio::test]
async fn acks_succeed_it_a_nack_fails_it_an_offline_node_keeps_it_running() {
    let c = Cluster::start(async |s| two_nodes(s).await).await;
    let store = &*c.store;
    let mut a1 = FakeAgent::hello(c.addr, "n1", None).await;
    let mut a2 = FakeAgent::hello(c.addr, "n2", None).await;
    for a in [&mut a1, &mut a2] {
        let r = next_revision(a).await;
        a.send(AgentMessage::Ack {
            revision: r,
            ready_nics: vec![],
        })
        .await;
    }

    // nic-1 is in the state of both nodes (both host NICs of vpc-a).
    let r1 = change_with_op(store, "op-0000000000000001", Some(port_security(false))).await;
    let o = wait_op(store, "op-0000000000000001", |o| {
        o.state == OperationState::Running
    })
    .await;
    assert_eq!(o.nodes, ["n1", "n2"]);
    assert_eq!(o.waiting_on, ["n1", "n2"]);
    assert_eq!(next_revision(&mut a1).await, r1);
    a1.send(AgentMessage::Ack {
        revision: r1,
        ready_nics: vec![],
    })
    .await;
    let o = wait_op(store, "op-0000000000000001", |o| o.waiting_on == ["n2"]).await;
    assert_eq!(o.state, OperationState::Running, "n2 has not acked yet");
    assert_eq!(next_revision(&mut a2).await, r1);
    a2.send(AgentMessage::Ack {
        revision: r1,
        ready_nics: vec![],
    })
    .await;
    let o = wait_op(store, "op-0000000000000001", |o| o.state.is_terminal()).await;
    assert_eq!(o.state, OperationState::Succeeded);
    assert!(o.waiting_on.is_empty() && o.error.is_none());

    // A nack of the change's revision fails it with the agent's error.
    let r2 = change_with_op(store, "op-0000000000000002", Some(port_security(true))).await;
    assert_eq!(next_revision(&mut a1).await, r2);
    assert_eq!(next_revision(&mut a2).await, r2);
    a2.send(AgentMessage::Ack {
        revision: r2,
        ready_nics: vec![],
    })
    .await;
    a1.send(AgentMessage::Nack {
        revision: r2,
        error: "bundle refused: OFPBFC_MSG_FAILED".into(),
    })
    .await;
    let o = wait_op(store, "op-0000000000000002", |o| o.state.is_terminal()).await;
    assert_eq!(o.state, OperationState::Failed);
    let e = o.error.unwrap();
    assert_eq!(e.code, "node_rejected");
    assert!(e.message.contains("n1") && e.message.contains("OFPBFC_MSG_FAILED"));

    // A change no node's state depends on: succeeded at once, no nodes.
    change_with_op(store, "op-0000000000000003", None).await;
    let o = wait_op(store, "op-0000000000000003", |o| o.state.is_terminal()).await;
    assert_eq!(o.state, OperationState::Succeeded);
    assert!(o.nodes.is_empty());

    // n2 goes away: the next change stays running on it, also after n1
    // acked, until n2 comes back and acks.
    drop(a2);
    let r4 = change_with_op(store, "op-0000000000000004", Some(port_security(false))).await;
    assert_eq!(next_revision(&mut a1).await, r4);
    a1.send(AgentMessage::Ack {
        revision: r4,
        ready_nics: vec![],
    })
    .await;
    wait_op(store, "op-0000000000000004", |o| o.waiting_on == ["n2"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let o = op(store, "op-0000000000000004").await;
    assert_eq!(
        (o.state, o.waiting_on.as_slice()),
        (OperationState::Running, &["n2".to_string()][..])
    );
    let mut a2 = FakeAgent::hello(c.addr, "n2", Some(r2)).await;
    assert_eq!(next_revision(&mut a2).await, r4);
    a2.send(AgentMessage::Ack {
        revision: r4,
        ready_nics: vec![],
    })
    .await;
    let o = wait_op(store, "op-0000000000000004", |o| o.state.is_terminal()).await;
    assert_eq!(o.state, OperationState::Succeeded);
}

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    posts: Vec<(std::time::Instant, String, String, Vec<u8>)>,
}

/// Test 6 of issue 5: a real HTTP receiver that fails `FAILS` times, then
/// acks. The callback is retried with growing waits, delivered exactly
/// once after the ack, and survives a change of duty holder in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_is_retried_until_acked_then_delivered_once() {
    const FAILS: usize = 3;
    let c = Cluster::start(async |s| two_nodes(s).await).await;
    let store = c.store.clone();

    // The receiver: 500 for the first FAILS posts, then 200.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let count = Arc::new(AtomicUsize::new(0));
    let app = {
        let (seen, count) = (seen.clone(), count.clone());
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
                let (seen, count) = (seen.clone(), count.clone());
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default()
                    };
                    seen.lock().unwrap().posts.push((
                        std::time::Instant::now(),
                        h(api::operation::SIGNATURE_HEADER),
                        h(api::operation::DELIVERY_HEADER),
                        body.to_vec(),
                    ));
                    if count.fetch_add(1, Ordering::SeqCst) < FAILS {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });

    // An operation with a callback that no node is affected by: it ends at
    // once and its callback joins the outbox.
    let id = "op-00000000000000cb";
    let mut o = Operation::new(
        id,
        "tenant-1",
        Action::Create,
        Target::nic("nic-9"),
        Some(url.clone()),
        "2026-01-01T00:00:00Z",
    );
    o.state = OperationState::Pending;
    store
        .put(&op_keys::operation(id), serde_json::to_vec(&o).unwrap())
        .await
        .unwrap();

    let auth = api::http::auth::AuthConfig::new(SECRET.to_vec());
    let cfg = flowctl::callbacks::CallbackConfig {
        poll: Duration::from_millis(20),
        backoff: Backoff {
            base: Duration::from_millis(150),
            cap: Duration::from_millis(400),
        },
        timeout: Duration::from_secs(2),
        ttl: Duration::from_secs(1),
        concurrency: 4,
        extra_ca: None,
    };
    let metrics = Arc::new(flowctl::metrics::Metrics::default());
    let duty = |name: &str| {
        tokio::spawn(flowctl::callbacks::run_callbacks(
            store.clone(),
            auth.clone(),
            name.to_string(),
            cfg.clone(),
            metrics.clone(),
        ))
    };
    let a = duty("a");
    // Two failed attempts under holder a, then a dies; b takes over with
    // the attempts counted so far (the outbox is in the store).
    // (Waiting on the record, not the receiver: a holder stopped between a
    // POST and its record would make the next one POST again.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let kv = store.get(&op_keys::callback_pending(id)).await.unwrap();
        let d: Option<Delivery> = kv.map(|kv| serde_json::from_slice(&kv.value).unwrap());
        if d.is_some_and(|d| d.status.attempts >= 2) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no attempts");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.abort();
    assert_eq!(count.load(Ordering::SeqCst), 2);
    let b = duty("b");
    let done_key = op_keys::callback_done(id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let done: Delivery = loop {
        if let Some(kv) = store.get(&done_key).await.unwrap() {
            break serde_json::from_slice(&kv.value).unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done.status.state, CallbackState::Delivered);
    assert_eq!(done.status.attempts as usize, FAILS + 1);
    assert!(store
        .get(&op_keys::callback_pending(id))
        .await
        .unwrap()
        .is_none());
    // Delivered once: nothing more comes, however long we wait.
    tokio::time::sleep(Duration::from_millis(800)).await;
    b.abort();
    receiver.abort();
    let posts = std::mem::take(&mut seen.lock().unwrap().posts);
    assert_eq!(posts.len(), FAILS + 1, "exactly one POST after the ack");

    // Every POST: the operation (ended, with its revision), signed with
    // the tenant's callback secret, naming the operation.
    let secret = api::http::operations::callback_secret(&*store, &auth, "tenant-1")
        .await
        .unwrap()
        .secret;
    for (_, sig, delivery, body) in &posts {
        assert_eq!(delivery, id);
        let now = proto::sign::unix_now();
        assert!(
            api::operation::verify_callback(&secret, sig, body, now, 300),
            "bad signature {sig}"
        );
        let op: Operation = serde_json::from_slice(body).unwrap();
        assert_eq!(op.state, OperationState::Succeeded);
        assert!(op.revision > 0);
    }
    // The waits between attempts follow the backoff (150, 300, 400 ms),
    // give or take the poll period; the holder change in between adds its
    // takeover time, never less.
    let gaps: Vec<Duration> = posts
        .windows(2)
        .map(|w| w[1].0.duration_since(w[0].0))
        .collect();
    for (i, gap) in gaps.iter().enumerate() {
        let want = cfg.backoff.delay(i as u32 + 1);
        assert!(
            *gap + Duration::from_millis(5) >= want,
            "gap {i}: {gap:?} < {want:?}"
        );
    }
    assert!(metrics.callbacks_delivered.load(Ordering::Relaxed) == 1);
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with openssl.
fn test_pki(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
    ]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&csr);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
    ]);
}

/// `https://` receivers: the callback client verifies them against the
/// system roots plus the configured CA, and talks TLS to them.
#[tokio::test]
async fn https_callbacks_verify_the_receiver() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::ServerConfig;

    let dir = tempfile::tempdir().unwrap();
    test_pki(dir.path());
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(dir.path().join("leaf.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.path().join("leaf.key")).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let receiver = {
        let got = got.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, got) = (acceptor.clone(), got.clone());
                tokio::spawn(async move {
                    // A client that does not trust us fails the handshake.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let got = got.clone();
                        async move {
                            let sig = req.headers()[api::operation::SIGNATURE_HEADER]
                                .to_str()
                                .unwrap()
                                .to_string();
                            got.lock().unwrap().push(sig);
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Empty::<bytes::Bytes>::new(),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        })
    };
    let timeout = Duration::from_secs(5);
    let trusting =
        flowctl::callbacks::Poster::new(Some(&dir.path().join("ca.pem")), timeout).unwrap();
    let status = trusting
        .post(
            &url,
            &[(api::operation::SIGNATURE_HEADER, "t=1,v1=00")],
            b"{}".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(got.lock().unwrap().as_slice(), ["t=1,v1=00"]);
    // Without the CA: the receiver is not trusted, nothing is delivered.
    let system_only = flowctl::callbacks::Poster::new(None, timeout).unwrap();
    let err = system_only
        .post(&url, &[], b"{}".to_vec())
        .await
        .unwrap_err();
    assert!(err.contains("TLS") && err.contains("certificate"), "{err}");
    assert_eq!(got.lock().unwrap().len(), 1);
    receiver.abort();
}

/// Two flowctl replicas on one store, each with one of the two agents: each
/// sees only its own agent's ack, and together they still end the
/// operation (every transition fenced on the record, any replica may make
/// it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_each_with_one_agent_end_it_together() {
    let c = Cluster::start(async |s| two_nodes(s).await).await;
    let store = &*c.store;
    let other = Replica::start(c.store.clone()).await;
    let mut a1 = FakeAgent::hello(c.addr, "n1", None).await;
    let mut a2 = FakeAgent::hello(other.addr, "n2", None).await;
    for a in [&mut a1, &mut a2] {
        let r = next_revision(a).await;
        a.send(AgentMessage::Ack {
            revision: r,
            ready_nics: vec![],
        })
        .await;
    }
    for (i, on) in [(5u8, false), (6, true), (7, false)] {
        let id = format!("op-00000000000000{i:02}");
        let r = change_with_op(store, &id, Some(port_security(on))).await;
        assert_eq!(next_revision(&mut a1).await, r);
        assert_eq!(next_revision(&mut a2).await, r);
        // n2 first, to the other replica; then n1.
        a2.send(AgentMessage::Ack {
            revision: r,
            ready_nics: vec![],
        })
        .await;
        wait_op(store, &id, |o| o.waiting_on == ["n1"]).await;
        a1.send(AgentMessage::Ack {
            revision: r,
            ready_nics: vec![],
        })
        .await;
        let o = wait_op(store, &id, |o| o.state.is_terminal()).await;
        assert_eq!(o.state, OperationState::Succeeded, "{o:?}");
        assert_eq!(o.nodes, ["n1", "n2"]);
    }
}
