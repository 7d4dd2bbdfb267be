//! A TCP proxy on 127.0.0.1 that can black-hole its connections: the lab's
//! way to cut the agent <-> flowctl link without a reset and without touching
//! the root namespace (no iptables there; agents and flowctl both live in it).
//!
//! Forwarding: each accepted connection gets one upstream connection and two
//! pump threads. Black-holed: every byte read from either side is dropped
//! and nothing is written, but both sockets stay open, so neither peer gets a
//! FIN or RST, only silence, like a cable cut or a firewall dropping packets.
//! New connections made while black-holed are accepted and never forwarded
//! (the peer's handshake times out). Resuming forwarding only helps new
//! connections; a black-holed one lost bytes and stays useless.
//!
//! Each connection is recorded (open, first byte from upstream, close, byte
//! counts) so tests can tell when an agent gave up a connection (detection)
//! and when its new one carried state (resume), and how many bytes it took.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};

/// How often blocked pumps look at the black-hole and stop flags.
const POLL: Duration = Duration::from_millis(20);

/// What happened on one proxied connection.
#[derive(Clone, Debug)]
pub struct ConnRecord {
    /// Accepted at.
    pub opened: Instant,
    /// Whether it was accepted while black-holed (never forwarded).
    pub black_holed_at_open: bool,
    /// The downstream peer (the agent) closed its side or reset.
    pub client_closed: Option<Instant>,
    /// The upstream (flowctl) closed its side or reset.
    pub server_closed: Option<Instant>,
    /// Bytes forwarded client -> server and server -> client.
    pub up_bytes: u64,
    pub down_bytes: u64,
    /// When the first forwarded server -> client byte went out.
    pub first_down: Option<Instant>,
}

#[derive(Debug)]
struct Shared {
    black_hole: AtomicBool,
    stop: AtomicBool,
    conns: Mutex<Vec<ConnRecord>>,
}

impl Shared {
    fn conns(&self) -> MutexGuard<'_, Vec<ConnRecord>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running proxy; stops (and closes every connection) on drop.
#[derive(Debug)]
pub struct Proxy {
    listen: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free 127.0.0.1 port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<Proxy> {
        let io = |op: &'static str| {
            move |source| LabError::Io {
                op,
                path: PathBuf::from("127.0.0.1:0"),
                source,
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io("bind"))?;
        let listen = listener.local_addr().map_err(io("query"))?;
        listener.set_nonblocking(true).map_err(io("configure"))?;
        let shared = Arc::new(Shared {
            black_hole: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name(format!("proxy-{}", listen.port()))
            .spawn(move || accept_loop(listener, upstream, s))
            .map_err(io("spawn"))?;
        tracing::info!(%listen, %upstream, "proxy started");
        Ok(Proxy {
            listen,
            upstream,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// Where it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Drop everything from now on, silently (no FIN, no RST).
    pub fn black_hole(&self) {
        tracing::info!(listen = %self.listen, "proxy black-holed");
        self.shared.black_hole.store(true, Ordering::SeqCst);
    }

    /// Forward new connections again.
    pub fn restore(&self) {
        tracing::info!(listen = %self.listen, "proxy forwarding again");
        self.shared.black_hole.store(false, Ordering::SeqCst);
    }

    /// Every connection so far, in accept order.
    pub fn connections(&self) -> Vec<ConnRecord> {
        self.shared.conns().clone()
    }

    /// Connections still open on the client's side.
    pub fn open_connections(&self) -> usize {
        self.shared
            .conns()
            .iter()
            .filter(|c| c.client_closed.is_none())
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut pumps: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let black = shared.black_hole.load(Ordering::SeqCst);
                let id = {
                    let mut conns = shared.conns();
                    conns.push(ConnRecord {
                        opened: Instant::now(),
                        black_holed_at_open: black,
                        client_closed: None,
                        server_closed: None,
                        up_bytes: 0,
                        down_bytes: 0,
                        first_down: None,
                    });
                    conns.len() - 1
                };
                pumps.extend(start_conn(id, client, upstream, black, &shared));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                tracing::warn!(error = %e, "proxy accept failed");
                std::thread::sleep(POLL);
            }
        }
        pumps.retain(|p| !p.is_finished());
    }
    for p in pumps {
        let _ = p.join();
    }
}

/// Connects upstream (unless black-holed) and starts the two pumps.
fn start_conn(
    id: usize,
    client: TcpStream,
    upstream: SocketAddr,
    black: bool,
    shared: &Arc<Shared>,
) -> Vec<JoinHandle<()>> {
    let _ = client.set_nodelay(true);
    let server = if black {
        None
    } else {
        match TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) {
            Ok(s) => Some(s),
            Err(e) => {
                // As a dead server would: the client's connection resets.
                tracing::info!(%upstream, error = %e, "proxy: upstream refused");
                let now = Instant::now();
                let mut conns = shared.conns();
                conns[id].server_closed = Some(now);
                conns[id].client_closed = Some(now);
                let _ = client.shutdown(Shutdown::Both);
                return Vec::new();
            }
        }
    };
    let Some(server) = server else {
        // Accepted while black-holed: swallow whatever comes, forever.
        let s = shared.clone();
        return std::thread::Builder::new()
            .name("proxy-sink".into())
            .spawn(move || sink(id, client, s))
            .into_iter()
            .collect();
    };
    let _ = server.set_nodelay(true);
    let pair = (client.try_clone(), server.try_clone());
    let (Ok(client2), Ok(server2)) = pair else {
        return Vec::new();
    };
    let (s1, s2) = (shared.clone(), shared.clone());
    let up = std::thread::Builder::new()
        .name("proxy-up".into())
        .spawn(move || pump(id, client, server, Dir::Up, s1));
    let down = std::thread::Builder::new()
        .name("proxy-down".into())
        .spawn(move || pump(id, server2, client2, Dir::Down, s2));
    [up, down].into_iter().flatten().collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

fn pump(id: usize, mut from: TcpStream, mut to: TcpStream, dir: Dir, shared: Arc<Shared>) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                closed(id, dir, &shared);
                // Pass the end on, unless black-holed (silence, not a FIN).
                if !shared.black_hole.load(Ordering::SeqCst) {
                    let _ = to.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => {
                closed(id, dir, &shared);
                if !shared.black_hole.load(Ordering::SeqCst) {
                    let _ = to.shutdown(Shutdown::Both);
                }
                return;
            }
        };
        if shared.black_hole.load(Ordering::SeqCst) {
            // Dropped on the floor, as a black hole does.
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            closed(
                id,
                match dir {
                    Dir::Up => Dir::Down,
                    Dir::Down => Dir::Up,
                },
                &shared,
            );
            let _ = from.shutdown(Shutdown::Both);
            return;
        }
        let mut conns = shared.conns();
        let c = &mut conns[id];
        match dir {
            Dir::Up => c.up_bytes += n as u64,
            Dir::Down => {
                c.down_bytes += n as u64;
                c.first_down.get_or_insert_with(Instant::now);
            }
        }
    }
}

/// Reads and drops everything a black-holed new connection sends.
fn sink(id: usize, mut client: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 16 * 1024];
    while !shared.stop.load(Ordering::SeqCst) {
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    closed(id, Dir::Up, &shared);
}

/// Records that the side `dir` reads from has ended.
fn closed(id: usize, dir: Dir, shared: &Shared) {
    let now = Instant::now();
    let mut conns = shared.conns();
    let c = &mut conns[id];
    match dir {
        Dir::Up => {
            c.client_closed.get_or_insert(now);
        }
        Dir::Down => {
            c.server_closed.get_or_insert(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let Some(Ok(mut c)) = l.incoming().next() else {
                return;
            };
            let mut buf = [0u8; 1024];
            loop {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if c.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        (addr, h)
    }

    #[test]
    fn forwards_then_black_holes_without_closing() {
        let (upstream, server) = echo_server();
        let proxy = Proxy::start(upstream).unwrap();
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");

        proxy.black_hole();
        c.write_all(b"lost").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let err = c.read(&mut buf).unwrap_err();
        // Silence: a timeout, not an end of stream or a reset.
        assert!(
            matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{err:?}"
        );
        let rec = &proxy.connections()[0];
        assert_eq!(rec.up_bytes, 5);
        assert_eq!(rec.down_bytes, 5);
        assert!(rec.client_closed.is_none() && rec.server_closed.is_none());

        // The client giving up is seen even while black-holed.
        drop(c);
        wait_closed(&proxy);
        drop(proxy);
        server.join().unwrap();
    }

    #[test]
    fn dead_upstream_resets_the_client() {
        // A port nobody listens on.
        let dead = crate::bins::free_port().unwrap();
        let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], dead))).unwrap();
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 4];
        // End of stream or reset, not a timeout.
        match c.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("read {n} bytes from nowhere"),
            Err(e) => assert!(
                !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "{e:?}"
            ),
        }
    }

    fn wait_closed(proxy: &Proxy) {
        crate::util::wait_until(Duration::from_secs(2), "client close seen", || {
            proxy.open_connections() == 0
        })
        .unwrap();
    }
}
