//! The async driver: a [`Session`] over a Unix socket.
//!
//! One task owns the socket and the session; [`Client`] handles send it
//! requests and await the matching replies. Monitor updates and other
//! notifications arrive, in order, on the channel returned by `connect`.
//! When the connection ends every pending request fails with
//! [`Error::Disconnected`], the notification channel closes and
//! [`Client::closed`] resolves.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::monitor::{monitor_params, MonitorRequest, TableUpdates};
use crate::ops::{decode_transact_reply, transact_params, OpResult, Operation};
use crate::session::{Event, Session, SessionConfig};

/// A notification from the server.
#[derive(Clone, Debug, PartialEq)]
pub enum Notification {
    Update {
        monitor_id: Value,
        updates: TableUpdates,
    },
    Other {
        method: String,
        params: Value,
    },
}

type Reply = oneshot::Sender<std::result::Result<Value, Value>>;

enum Command {
    Request {
        method: String,
        params: Value,
        reply: Reply,
    },
}

/// A handle on one connection. Cheap to clone; the connection closes when
/// the last handle is dropped.
#[derive(Clone, Debug)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    connected: watch::Receiver<bool>,
    target: String,
    echoes: Arc<AtomicU64>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Request { method, .. } => write!(f, "Request({method})"),
        }
    }
}

/// Parses an OVSDB target; only `unix:PATH` (or a bare path) is supported.
pub fn unix_path(target: &str) -> Result<PathBuf> {
    if let Some(p) = target.strip_prefix("unix:") {
        return Ok(PathBuf::from(p));
    }
    if target.starts_with('/') {
        return Ok(PathBuf::from(target));
    }
    Err(Error::Target(target.to_string()))
}

impl Client {
    /// Connects to `unix:/path/db.sock`.
    pub async fn connect(
        target: &str,
        config: SessionConfig,
    ) -> Result<(Client, mpsc::UnboundedReceiver<Notification>)> {
        let path = unix_path(target)?;
        Self::connect_unix(&path, config).await
    }

    pub async fn connect_unix(
        path: &Path,
        config: SessionConfig,
    ) -> Result<(Client, mpsc::UnboundedReceiver<Notification>)> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| Error::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (note_tx, note_rx) = mpsc::unbounded_channel();
        let (conn_tx, conn_rx) = watch::channel(true);
        let target = format!("unix:{}", path.display());
        let session = Session::new(config, Instant::now());
        let span = tracing::info_span!("ovsdb", target = %target);
        let echoes = Arc::new(AtomicU64::new(0));
        let echo_count = Arc::clone(&echoes);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let r = drive(stream, session, cmd_rx, note_tx, echo_count).await;
                match &r {
                    Ok(()) => tracing::debug!("connection closed"),
                    Err(e) => tracing::warn!(error = %e, "connection lost"),
                }
                let _ = conn_tx.send(false);
            },
            span,
        ));
        tracing::debug!(%target, "connected to ovsdb-server");
        Ok((
            Client {
                commands: cmd_tx,
                connected: conn_rx,
                target,
                echoes,
            },
            note_rx,
        ))
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// How many `echo` probes from the server were answered.
    pub fn echoes_answered(&self) -> u64 {
        self.echoes.load(Ordering::Relaxed)
    }

    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Resolves once the connection is gone.
    pub async fn closed(&self) {
        let mut rx = self.connected.clone();
        // An Err means the driver task is gone, which is closed too.
        let _ = rx.wait_for(|c| !*c).await;
    }

    /// Sends any request and returns its raw result.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Request {
                method: method.to_string(),
                params,
                reply: tx,
            })
            .map_err(|_| Error::Disconnected)?;
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(error)) => Err(Error::Rpc {
                method: method.to_string(),
                error,
            }),
            Err(_) => Err(Error::Disconnected),
        }
    }

    pub async fn list_dbs(&self) -> Result<Vec<String>> {
        let v = self.request("list_dbs", json!([])).await?;
        serde_json::from_value(v).map_err(|e| Error::Data(format!("list_dbs reply: {e}")))
    }

    pub async fn get_schema(&self, db: &str) -> Result<Value> {
        self.request("get_schema", json!([db])).await
    }

    pub async fn echo(&self) -> Result<()> {
        let v = self.request("echo", json!(["ping"])).await?;
        if v != json!(["ping"]) {
            return Err(Error::Protocol(format!("echo returned {v}")));
        }
        Ok(())
    }

    /// Runs a transaction; a refused one is an [`Error::Transaction`]
    /// naming the operation that failed.
    pub async fn transact(&self, db: &str, ops: &[Operation]) -> Result<Vec<OpResult>> {
        let v = self.request("transact", transact_params(db, ops)).await?;
        decode_transact_reply(ops, &v)
    }

    /// Starts a monitor and returns the initial contents. Later changes come
    /// as [`Notification::Update`] carrying `monitor_id`.
    pub async fn monitor(
        &self,
        db: &str,
        monitor_id: Value,
        requests: &BTreeMap<String, MonitorRequest>,
    ) -> Result<TableUpdates> {
        let v = self
            .request("monitor", monitor_params(db, &monitor_id, requests))
            .await?;
        TableUpdates::from_json(&v)
    }

    pub async fn monitor_cancel(&self, monitor_id: Value) -> Result<()> {
        self.request("monitor_cancel", json!([monitor_id]))
            .await
            .map(|_| ())
    }
}

async fn drive(
    mut stream: UnixStream,
    mut session: Session,
    mut commands: mpsc::UnboundedReceiver<Command>,
    notes: mpsc::UnboundedSender<Notification>,
    echoes: Arc<AtomicU64>,
) -> Result<()> {
    let mut waiting: HashMap<u64, Reply> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(bytes) = session.poll_transmit() {
            stream.write_all(&bytes).await?;
        }
        while let Some(ev) = session.poll_event() {
            match ev {
                Event::Reply { id, result, .. } => {
                    if let Some(tx) = waiting.remove(&id) {
                        // The caller may have given up; that is fine.
                        let _ = tx.send(result);
                    }
                }
                Event::Update {
                    monitor_id,
                    updates,
                } => {
                    let _ = notes.send(Notification::Update {
                        monitor_id,
                        updates,
                    });
                }
                Event::Notification { method, params } => {
                    let _ = notes.send(Notification::Other { method, params });
                }
            }
        }
        let deadline = session.poll_timeout();
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(Command::Request { method, params, reply }) => {
                    let id = session.send_request(&method, params);
                    tracing::trace!(id, %method, "request");
                    waiting.insert(id, reply);
                }
                // Every Client is gone.
                None => return Ok(()),
            },
            n = stream.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    return Err(Error::Disconnected);
                }
                session.handle_input(Instant::now(), &buf[..n])?;
                echoes.store(session.echoes_answered(), Ordering::Relaxed);
            }
            _ = sleep_until(deadline) => {
                session.handle_timeout(Instant::now())?;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
