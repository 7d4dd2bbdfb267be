//! The client side of an OVSDB JSON-RPC session, without I/O.
//!
//! Bytes from the server go in through [`Session::handle_input`]; bytes to
//! send come out of [`Session::poll_transmit`]; replies, monitor updates and
//! other notifications come out of [`Session::poll_event`]. Time goes in
//! through [`Session::handle_timeout`] (for our own liveness probes). The
//! server's `echo` requests are answered here, so a driver only has to move
//! bytes.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::framing::{Splitter, DEFAULT_MAX_MESSAGE};
use crate::jsonrpc::{unknown_method_error, Message};
use crate::monitor::{parse_update_params, TableUpdates};
use crate::ops::{transact_params, Operation};

/// What the session reports.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The reply to request `id`. `Err` holds the JSON-RPC error object.
    Reply {
        id: u64,
        method: String,
        result: std::result::Result<Value, Value>,
    },
    /// A monitor `update` notification, decoded.
    Update {
        monitor_id: Value,
        updates: TableUpdates,
    },
    /// Any other notification (`locked`, `stolen`, ...).
    Notification { method: String, params: Value },
}

#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub max_message: usize,
    /// Send an `echo` after this long without hearing from the server, and
    /// give up after the same time again. `None`: never probe (Unix sockets
    /// notice a dead peer by themselves; a hung server is what this catches).
    pub probe_interval: Option<Duration>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_message: DEFAULT_MAX_MESSAGE,
            probe_interval: Some(Duration::from_secs(15)),
        }
    }
}

#[derive(Debug)]
pub struct Session {
    splitter: Splitter,
    next_id: u64,
    pending: HashMap<u64, String>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    probe_interval: Option<Duration>,
    last_heard: Instant,
    /// Set while our own probe is outstanding.
    probe_sent: Option<Instant>,
    /// Ids of our own probes; their replies are not reported.
    probe_ids: std::collections::HashSet<u64>,
    echoes_answered: u64,
}

impl Session {
    pub fn new(config: SessionConfig, now: Instant) -> Self {
        Session {
            splitter: Splitter::new(config.max_message),
            next_id: 0,
            pending: HashMap::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            probe_interval: config.probe_interval,
            last_heard: now,
            probe_sent: None,
            probe_ids: Default::default(),
            echoes_answered: 0,
        }
    }

    /// Queues a request and returns its id.
    pub fn send_request(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, method.to_string());
        self.queue(&Message::Request {
            id: json!(id),
            method: method.to_string(),
            params,
        });
        id
    }

    pub fn transact(&mut self, db: &str, ops: &[Operation]) -> u64 {
        self.send_request("transact", transact_params(db, ops))
    }

    /// Requests in flight.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// How many of the server's `echo` probes we answered.
    pub fn echoes_answered(&self) -> u64 {
        self.echoes_answered
    }

    fn queue(&mut self, m: &Message) {
        self.transmit.push_back(m.to_bytes());
    }

    /// Feeds bytes read from the server. An error is fatal for the session.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) -> Result<()> {
        if !bytes.is_empty() {
            self.last_heard = now;
            self.probe_sent = None;
        }
        self.splitter.push(bytes);
        while let Some(text) = self.splitter.next_message()? {
            let msg = Message::from_slice(&text)?;
            self.handle_message(msg)?;
        }
        Ok(())
    }

    fn handle_message(&mut self, msg: Message) -> Result<()> {
        match msg {
            Message::Request { id, method, params } => {
                if method == "echo" {
                    // The server drops sessions that leave its probe
                    // unanswered; the reply echoes the params back.
                    self.echoes_answered += 1;
                    tracing::trace!("answering server echo");
                    self.queue(&Message::Response { id, result: params });
                } else {
                    tracing::warn!(%method, "server sent an unsupported request");
                    self.queue(&Message::Error {
                        id,
                        error: unknown_method_error(&method),
                    });
                }
            }
            Message::Notification { method, params } => {
                if method == "update" {
                    let (monitor_id, updates) = parse_update_params(&params)?;
                    self.events.push_back(Event::Update {
                        monitor_id,
                        updates,
                    });
                } else {
                    self.events
                        .push_back(Event::Notification { method, params });
                }
            }
            Message::Response { id, result } => self.reply(id, Ok(result)),
            Message::Error { id, error } => self.reply(id, Err(error)),
        }
        Ok(())
    }

    fn reply(&mut self, id: Value, result: std::result::Result<Value, Value>) {
        let Some(n) = id.as_u64() else {
            tracing::warn!(%id, "reply with an id we never use");
            return;
        };
        if self.probe_ids.remove(&n) {
            self.pending.remove(&n);
            return;
        }
        match self.pending.remove(&n) {
            Some(method) => self.events.push_back(Event::Reply {
                id: n,
                method,
                result,
            }),
            None => tracing::warn!(id = n, "reply to no pending request"),
        }
    }

    /// Next bytes to write to the server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let p = self.probe_interval?;
        Some(match self.probe_sent {
            Some(sent) => sent + p,
            None => self.last_heard + p,
        })
    }

    /// Sends a probe when the server has been quiet for a probe interval;
    /// fails with [`Error::Disconnected`] when the probe went unanswered.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<()> {
        let Some(p) = self.probe_interval else {
            return Ok(());
        };
        match self.probe_sent {
            Some(sent) if now >= sent + p => {
                tracing::warn!(
                    quiet_ms = now.duration_since(self.last_heard).as_millis() as u64,
                    "ovsdb-server did not answer our echo"
                );
                Err(Error::Disconnected)
            }
            None if now >= self.last_heard + p => {
                let id = self.send_request("echo", json!([]));
                self.probe_ids.insert(id);
                self.probe_sent = Some(now);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::decode_transact_reply;

    fn now() -> Instant {
        Instant::now()
    }

    fn sent(s: &mut Session) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(b) = s.poll_transmit() {
            out.push(serde_json::from_slice(&b).unwrap());
        }
        out
    }

    #[test]
    fn request_reply_correlation() {
        let t = now();
        let mut s = Session::new(SessionConfig::default(), t);
        let a = s.send_request("list_dbs", json!([]));
        let ops = [Operation::Comment("hi".into())];
        let b = s.transact("Open_vSwitch", &ops);
        assert_ne!(a, b);
        let out = sent(&mut s);
        assert_eq!(out[0], json!({"id": a, "method": "list_dbs", "params": []}));
        assert_eq!(
            out[1]["params"],
            json!(["Open_vSwitch", {"op": "comment", "comment": "hi"}])
        );
        assert_eq!(s.pending(), 2);

        // Replies out of order, split across reads.
        let bytes = format!(
            r#"{{"id":{b},"result":[{{}}],"error":null}}{{"id":{a},"result":["Open_vSwitch"],"error":null}}"#
        );
        let (x, y) = bytes.as_bytes().split_at(10);
        s.handle_input(t, x).unwrap();
        assert_eq!(s.poll_event(), None);
        s.handle_input(t, y).unwrap();
        let Some(Event::Reply { id, method, result }) = s.poll_event() else {
            panic!()
        };
        assert_eq!((id, method.as_str()), (b, "transact"));
        assert_eq!(
            decode_transact_reply(&ops, &result.unwrap()).unwrap().len(),
            1
        );
        assert_eq!(
            s.poll_event(),
            Some(Event::Reply {
                id: a,
                method: "list_dbs".into(),
                result: Ok(json!(["Open_vSwitch"]))
            })
        );
        assert_eq!(s.pending(), 0);

        // A duplicate or unknown reply is dropped, not an error.
        s.handle_input(t, bytes.as_bytes()).unwrap();
        assert_eq!(s.poll_event(), None);
    }

    #[test]
    fn error_reply() {
        let t = now();
        let mut s = Session::new(SessionConfig::default(), t);
        let id = s.send_request("get_schema", json!(["nope"]));
        s.handle_input(
            t,
            format!(r#"{{"id":{id},"result":null,"error":"unknown database"}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(
            s.poll_event(),
            Some(Event::Reply {
                id,
                method: "get_schema".into(),
                result: Err(json!("unknown database"))
            })
        );
    }

    #[test]
    fn server_echo_is_answered_with_its_params() {
        let t = now();
        let mut s = Session::new(SessionConfig::default(), t);
        s.handle_input(t, br#"{"id":"echo","method":"echo","params":[]}"#)
            .unwrap();
        assert_eq!(s.poll_event(), None);
        assert_eq!(
            sent(&mut s),
            vec![json!({"id": "echo", "result": [], "error": null})]
        );
        assert_eq!(s.echoes_answered(), 1);

        // Unknown requests get an error reply, never silence.
        s.handle_input(t, br#"{"id":5,"method":"frob","params":[]}"#)
            .unwrap();
        let out = sent(&mut s);
        assert_eq!(out[0]["id"], json!(5));
        assert_eq!(out[0]["error"]["error"], json!("unknown method"));
    }

    #[test]
    fn notifications() {
        let t = now();
        let mut s = Session::new(SessionConfig::default(), t);
        s.handle_input(
            t,
            br#"{"id":null,"method":"update","params":["m",{"Bridge":{"00000000-0000-0000-0000-000000000001":{"new":{"name":"br-int"}}}}]}{"id":null,"method":"locked","params":["l"]}"#,
        )
        .unwrap();
        let Some(Event::Update {
            monitor_id,
            updates,
        }) = s.poll_event()
        else {
            panic!()
        };
        assert_eq!(monitor_id, json!("m"));
        assert_eq!(updates.0["Bridge"].len(), 1);
        assert_eq!(
            s.poll_event(),
            Some(Event::Notification {
                method: "locked".into(),
                params: json!(["l"])
            })
        );
        // A malformed update is fatal: the replica could not be trusted.
        assert!(s
            .handle_input(t, br#"{"id":null,"method":"update","params":["m",[]]}"#)
            .is_err());
    }

    #[test]
    fn garbage_is_fatal() {
        let t = now();
        let mut s = Session::new(SessionConfig::default(), t);
        assert!(s.handle_input(t, b"{\"id\":1,]").is_err());
    }

    #[test]
    fn probes_on_silence_and_gives_up() {
        let t0 = now();
        let p = Duration::from_secs(5);
        let mut s = Session::new(
            SessionConfig {
                probe_interval: Some(p),
                ..Default::default()
            },
            t0,
        );
        assert_eq!(s.poll_timeout(), Some(t0 + p));
        s.handle_timeout(t0 + Duration::from_secs(1)).unwrap();
        assert!(sent(&mut s).is_empty());

        // Quiet for an interval: a probe goes out.
        s.handle_timeout(t0 + p).unwrap();
        let out = sent(&mut s);
        assert_eq!(out[0]["method"], json!("echo"));
        let id = out[0]["id"].as_u64().unwrap();

        // Its reply resets the clock and is not reported; a user's own echo
        // request still gets its reply.
        let user = s.send_request("echo", json!(["mine"]));
        let t1 = t0 + p + Duration::from_secs(1);
        s.handle_input(
            t1,
            format!(
                r#"{{"id":{id},"result":[],"error":null}}{{"id":{user},"result":["mine"],"error":null}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            s.poll_event(),
            Some(Event::Reply {
                id: user,
                method: "echo".into(),
                result: Ok(json!(["mine"]))
            })
        );
        assert_eq!(s.poll_event(), None);
        assert_eq!(s.pending(), 0);
        assert_eq!(s.poll_timeout(), Some(t1 + p));
        sent(&mut s);

        // Unanswered probe: disconnect.
        s.handle_timeout(t1 + p).unwrap();
        assert_eq!(sent(&mut s).len(), 1);
        assert!(matches!(
            s.handle_timeout(t1 + p + p),
            Err(Error::Disconnected)
        ));
    }

    #[test]
    fn no_probes_when_disabled() {
        let t0 = now();
        let mut s = Session::new(
            SessionConfig {
                probe_interval: None,
                ..Default::default()
            },
            t0,
        );
        assert_eq!(s.poll_timeout(), None);
        s.handle_timeout(t0 + Duration::from_secs(3600)).unwrap();
        assert!(sent(&mut s).is_empty());
    }
}
