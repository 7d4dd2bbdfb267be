//! Codec tests from bytes captured between the real `ovsdb-client` and
//! `ovsdb-server` (Open vSwitch 3.1.0, vswitch.ovsschema 8.3.1).
//!
//! Captured with a byte-for-byte Unix-socket tap between the two (a small
//! relay writing each direction to a file: `*.c2s` is what the client sent,
//! `*.s2c` what the server sent). The commands are named on each test.
//!
//! Each direction is split with our [`Splitter`] (whole and in small
//! chunks), decoded into typed values that are checked against what the
//! command asked for, and encoded back. The re-encoded JSON equals the
//! captured JSON as a value; it is not byte-identical only because OVS
//! writes object members in hash order, which JSON does not give meaning.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use ovsdb::data::{row, Datum, Uuid};
use ovsdb::framing::Splitter;
use ovsdb::jsonrpc::Message;
use ovsdb::monitor::{parse_monitor_params, MonitorRequest};
use ovsdb::ops::{decode_transact_reply, parse_transact_params, transact_params, OpResult};
use ovsdb::session::{Event, Session, SessionConfig};
use ovsdb::{Condition, Error, Function, Mutation, Mutator, Operation, Until};
use serde_json::{json, Value};
use tokio::time::Instant;

fn split(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut whole = Splitter::default();
    whole.push(bytes);
    let mut a = Vec::new();
    while let Some(m) = whole.next_message().unwrap() {
        a.push(m);
    }
    // The same stream in 7-byte reads must give the same messages.
    let mut chunked = Splitter::default();
    let mut b = Vec::new();
    for c in bytes.chunks(7) {
        chunked.push(c);
        while let Some(m) = chunked.next_message().unwrap() {
            b.push(m);
        }
    }
    assert_eq!(a, b);
    assert_eq!(a.concat(), bytes, "messages are exactly the stream");
    a
}

fn messages(bytes: &[u8]) -> Vec<(Message, Value)> {
    split(bytes)
        .into_iter()
        .map(|m| {
            let raw: Value = serde_json::from_slice(&m).unwrap();
            let msg = Message::from_slice(&m).unwrap();
            // Encoding back gives the same JSON value.
            assert_eq!(msg.to_json(), raw);
            (msg, raw)
        })
        .collect()
}

/// Feeds what the server sent into a session that issued the client's
/// requests, so replies are correlated by the captured ids.
fn replay(c2s: &[u8], s2c: &[u8]) -> (Session, Vec<Event>) {
    let t = Instant::now();
    let mut s = Session::new(SessionConfig::default(), t);
    for (m, _) in messages(c2s) {
        if let Message::Request { method, params, .. } = m {
            s.send_request(&method, params);
        }
    }
    while s.poll_transmit().is_some() {}
    for c in s2c.chunks(5) {
        s.handle_input(t, c).unwrap();
    }
    let mut events = Vec::new();
    while let Some(e) = s.poll_event() {
        events.push(e);
    }
    (s, events)
}

fn request(m: &Message) -> (&str, &Value) {
    match m {
        Message::Request { method, params, .. } => (method, params),
        other => panic!("expected a request, got {other:?}"),
    }
}

fn reply_result(e: &Event) -> &Value {
    match e {
        Event::Reply { result: Ok(v), .. } => v,
        other => panic!("expected a successful reply, got {other:?}"),
    }
}

/// `ovsdb-client transact unix:SOCK '["Open_vSwitch",
///   {"op":"insert","table":"Bridge","row":{"name":"br-cap","datapath_type":"netdev",
///    "fail_mode":"secure","protocols":["set",["OpenFlow10","OpenFlow13"]],
///    "other_config":["map",[["disable-in-band","true"]]]},"uuid-name":"br"},
///   {"op":"mutate","table":"Open_vSwitch","where":[],
///    "mutations":[["bridges","insert",["set",[["named-uuid","br"]]]]]}]'`
#[test]
fn transact_insert() {
    let c2s = include_bytes!("captures/transact_insert.c2s");
    let s2c = include_bytes!("captures/transact_insert.s2c");
    let msgs = messages(c2s);
    assert_eq!(msgs.len(), 1);
    let (method, params) = request(&msgs[0].0);
    assert_eq!(method, "transact");
    let (db, ops) = parse_transact_params(params).unwrap();
    assert_eq!(db, "Open_vSwitch");
    let want = vec![
        Operation::Insert {
            table: "Bridge".into(),
            row: row([
                ("name", Datum::string("br-cap")),
                ("datapath_type", Datum::string("netdev")),
                ("fail_mode", Datum::string("secure")),
                ("protocols", Datum::set(["OpenFlow10", "OpenFlow13"])),
                ("other_config", Datum::map([("disable-in-band", "true")])),
            ]),
            uuid_name: Some("br".into()),
        },
        Operation::Mutate {
            table: "Open_vSwitch".into(),
            conditions: vec![],
            mutations: vec![Mutation::new(
                "bridges",
                Mutator::Insert,
                Datum::named_uuid("br"),
            )],
        },
    ];
    assert_eq!(ops, want);
    // Our encoding of the same operations is the same JSON, except that we
    // write a one-element set as its bare atom (RFC 7047 allows both).
    let mut ours = transact_params("Open_vSwitch", &want);
    assert_eq!(ours[2]["mutations"][0][2], json!(["named-uuid", "br"]));
    ours[2]["mutations"][0][2] = json!(["set", [["named-uuid", "br"]]]);
    assert_eq!(&ours, params);

    let (_, events) = replay(c2s, s2c);
    assert_eq!(events.len(), 1);
    let results = decode_transact_reply(&ops, reply_result(&events[0])).unwrap();
    let uuid: Uuid = "8d3f61e9-fcf4-4d81-823e-57975a725065".parse().unwrap();
    assert_eq!(results, vec![OpResult::Insert(uuid), OpResult::Count(1)]);
}

/// `ovsdb-client transact unix:SOCK '["Open_vSwitch",
///   {"op":"wait","table":"Bridge","where":[["name","==","br-cap"]],"columns":["name"],
///    "until":"==","rows":[],"timeout":0},{"op":"comment","comment":"stacknet"}]'`
/// run after the bridge existed: the guard fails.
#[test]
fn transact_wait_failed() {
    let c2s = include_bytes!("captures/transact_wait_failed.c2s");
    let s2c = include_bytes!("captures/transact_wait_failed.s2c");
    let msgs = messages(c2s);
    let (_, params) = request(&msgs[0].0);
    let (_, ops) = parse_transact_params(params).unwrap();
    let want = vec![
        Operation::Wait {
            table: "Bridge".into(),
            conditions: vec![Condition::eq("name", Datum::string("br-cap"))],
            columns: vec!["name".into()],
            until: Until::Eq,
            rows: vec![],
            timeout_ms: Some(0),
        },
        Operation::Comment("stacknet".into()),
    ];
    assert_eq!(ops, want);
    assert_eq!(&transact_params("Open_vSwitch", &want), params);

    let (_, events) = replay(c2s, s2c);
    let Err(Error::Transaction(e)) = decode_transact_reply(&ops, reply_result(&events[0])) else {
        panic!("expected the wait to fail");
    };
    assert_eq!(e.index, Some(0));
    assert_eq!(e.operation, "wait on Bridge");
    assert_eq!(e.error, "timed out");
    assert_eq!(e.details.as_deref(), Some("\"where\" clause test failed"));
    assert!(e.is_wait_failure());
}

/// `ovsdb-client transact unix:SOCK '["Open_vSwitch",
///   {"op":"insert","table":"Bridge","row":{"name":"br-cap2",
///    "external_ids":["map",[["stacknet-owner","stacknet"]]]},"uuid-name":"b"},
///   {"op":"mutate","table":"Open_vSwitch","where":[],"mutations":[["bridges","insert",["named-uuid","b"]]]},
///   {"op":"update","table":"Bridge","where":[["name","==","br-cap2"]],
///    "row":{"fail_mode":"secure","protocols":["set",["OpenFlow13","OpenFlow14"]]}},
///   {"op":"select","table":"Bridge","where":[["external_ids","includes",
///    ["map",[["stacknet-owner","stacknet"]]]]],"columns":["name","fail_mode","protocols","_uuid"]},
///   {"op":"mutate","table":"Bridge","where":[["name","==","br-cap2"]],"mutations":[
///    ["other_config","delete",["set",["disable-in-band"]]],
///    ["other_config","insert",["map",[["disable-in-band","true"]]]]]},
///   {"op":"delete","table":"Bridge","where":[["name","==","br-cap2"]]},
///   {"op":"mutate","table":"Open_vSwitch","where":[],"mutations":[["bridges","delete",["named-uuid","b"]]]}]'`
#[test]
fn transact_mixed() {
    let c2s = include_bytes!("captures/transact_mixed.c2s");
    let s2c = include_bytes!("captures/transact_mixed.s2c");
    let msgs = messages(c2s);
    let (_, params) = request(&msgs[0].0);
    let (_, ops) = parse_transact_params(params).unwrap();
    let owner = Datum::map([("stacknet-owner", "stacknet")]);
    let by_name = || vec![Condition::eq("name", Datum::string("br-cap2"))];
    let want = vec![
        Operation::Insert {
            table: "Bridge".into(),
            row: row([
                ("name", Datum::string("br-cap2")),
                ("external_ids", owner.clone()),
            ]),
            uuid_name: Some("b".into()),
        },
        Operation::Mutate {
            table: "Open_vSwitch".into(),
            conditions: vec![],
            mutations: vec![Mutation::new(
                "bridges",
                Mutator::Insert,
                Datum::named_uuid("b"),
            )],
        },
        Operation::Update {
            table: "Bridge".into(),
            conditions: by_name(),
            row: row([
                ("fail_mode", Datum::string("secure")),
                ("protocols", Datum::set(["OpenFlow13", "OpenFlow14"])),
            ]),
        },
        Operation::Select {
            table: "Bridge".into(),
            conditions: vec![Condition::new("external_ids", Function::Includes, owner)],
            columns: Some(vec![
                "name".into(),
                "fail_mode".into(),
                "protocols".into(),
                "_uuid".into(),
            ]),
        },
        Operation::Mutate {
            table: "Bridge".into(),
            conditions: by_name(),
            mutations: vec![
                Mutation::new(
                    "other_config",
                    Mutator::Delete,
                    Datum::set(["disable-in-band"]),
                ),
                Mutation::new(
                    "other_config",
                    Mutator::Insert,
                    Datum::map([("disable-in-band", "true")]),
                ),
            ],
        },
        Operation::Delete {
            table: "Bridge".into(),
            conditions: by_name(),
        },
        Operation::Mutate {
            table: "Open_vSwitch".into(),
            conditions: vec![],
            mutations: vec![Mutation::new(
                "bridges",
                Mutator::Delete,
                Datum::named_uuid("b"),
            )],
        },
    ];
    assert_eq!(ops, want);
    // The one-element set ["set",["disable-in-band"]] is written bare by us.
    let mut ours = transact_params("Open_vSwitch", &want);
    ours[5]["mutations"][0][2] = json!(["set", ["disable-in-band"]]);
    assert_eq!(&ours, params);

    let (_, events) = replay(c2s, s2c);
    let results = decode_transact_reply(&ops, reply_result(&events[0])).unwrap();
    let uuid: Uuid = "9fb367cb-390a-43e1-91ed-6ced6b1ac6b2".parse().unwrap();
    assert_eq!(
        results,
        vec![
            OpResult::Insert(uuid),
            OpResult::Count(1),
            OpResult::Count(1),
            OpResult::Rows(vec![row([
                ("_uuid", Datum::uuid(uuid)),
                ("name", Datum::string("br-cap2")),
                ("fail_mode", Datum::string("secure")),
                ("protocols", Datum::set(["OpenFlow13", "OpenFlow14"])),
            ])]),
            OpResult::Count(1),
            OpResult::Count(1),
            OpResult::Count(1),
        ]
    );
    let back: Vec<Value> = results.iter().map(OpResult::to_json).collect();
    assert_eq!(&Value::Array(back), reply_result(&events[0]));
}

/// `ovsdb-client monitor unix:SOCK Open_vSwitch Bridge name,fail_mode`, while
/// `ovs-vsctl set Bridge br-cap fail_mode=standalone` and then
/// `ovs-vsctl del-br br-cap` ran against the same server.
#[test]
fn monitor_initial_modify_delete() {
    let c2s = include_bytes!("captures/monitor.c2s");
    let s2c = include_bytes!("captures/monitor.s2c");
    let msgs = messages(c2s);
    let methods: Vec<&str> = msgs.iter().map(|(m, _)| request(m).0).collect();
    assert_eq!(
        methods,
        ["list_dbs", "get_schema", "set_db_change_aware", "monitor"]
    );
    let (db, id, reqs) = parse_monitor_params(request(&msgs[3].0).1).unwrap();
    assert_eq!((db.as_str(), id), ("Open_vSwitch", Value::Null));
    assert_eq!(
        reqs["Bridge"],
        vec![MonitorRequest::columns(["name", "fail_mode"])]
    );

    // The server side: 4 replies (one a 15 kB schema), then 2 updates.
    let server = messages(s2c);
    assert_eq!(server.len(), 6);
    let (_, events) = replay(c2s, s2c);
    assert_eq!(events.len(), 6);
    assert_eq!(
        reply_result(&events[0]),
        &json!(["Open_vSwitch", "_Server"])
    );
    assert_eq!(reply_result(&events[1])["name"], json!("Open_vSwitch"));

    let uuid: Uuid = "8d3f61e9-fcf4-4d81-823e-57975a725065".parse().unwrap();
    let mut replica = ovsdb::Replica::new();
    let initial = ovsdb::TableUpdates::from_json(reply_result(&events[3])).unwrap();
    assert_eq!(initial.to_json(), *reply_result(&events[3]));
    replica.apply(&initial);
    assert_eq!(
        replica.row("Bridge", &uuid),
        Some(&row([
            ("name", Datum::string("br-cap")),
            ("fail_mode", Datum::string("secure"))
        ]))
    );

    let Event::Update {
        monitor_id,
        updates,
    } = &events[4]
    else {
        panic!("expected an update, got {:?}", events[4]);
    };
    assert_eq!(monitor_id, &Value::Null);
    let ru = &updates.0["Bridge"][&uuid];
    assert_eq!(ru.old, Some(row([("fail_mode", Datum::string("secure"))])));
    assert_eq!(server[4].1["params"][1], updates.to_json());
    replica.apply(updates);
    assert_eq!(
        replica.row("Bridge", &uuid).unwrap()["fail_mode"],
        Datum::string("standalone")
    );

    let Event::Update { updates, .. } = &events[5] else {
        panic!("expected an update");
    };
    assert!(updates.0["Bridge"][&uuid].new.is_none());
    replica.apply(updates);
    assert_eq!(replica.len("Bridge"), 0);
}

/// `ovsdb-client monitor unix:SOCK Open_vSwitch Open_vSwitch cur_cfg` on a
/// remote whose Manager row has `inactivity_probe=1000`
/// (`ovs-vsctl set-manager punix:SOCK -- set Manager . inactivity_probe=1000`,
/// ovsdb-server run with `--remote=db:Open_vSwitch,Open_vSwitch,manager_options`),
/// left idle for 3 s: the server probes with `echo` and the client answers.
#[test]
fn server_echo_and_the_answer() {
    let c2s = include_bytes!("captures/echo.c2s");
    let s2c = include_bytes!("captures/echo.s2c");
    let server = messages(s2c);
    let echoes: Vec<&Message> = server
        .iter()
        .map(|(m, _)| m)
        .filter(|m| matches!(m, Message::Request { method, .. } if method == "echo"))
        .collect();
    assert_eq!(echoes.len(), 2);
    assert_eq!(
        echoes[0],
        &Message::Request {
            id: json!("echo"),
            method: "echo".into(),
            params: json!([])
        }
    );
    let client = messages(c2s);
    let answers: Vec<&Message> = client
        .iter()
        .map(|(m, _)| m)
        .filter(|m| matches!(m, Message::Response { .. }))
        .collect();
    assert_eq!(answers.len(), 2);

    // Our session answers the server's echoes exactly as ovsdb-client did.
    let t = Instant::now();
    let mut s = Session::new(SessionConfig::default(), t);
    for (m, _) in &client {
        if let Message::Request { method, params, .. } = m {
            s.send_request(method, params.clone());
        }
    }
    while s.poll_transmit().is_some() {}
    s.handle_input(t, s2c).unwrap();
    assert_eq!(s.echoes_answered(), 2);
    let mut sent = Vec::new();
    while let Some(b) = s.poll_transmit() {
        sent.push(Message::from_slice(&b).unwrap());
    }
    assert_eq!(sent.iter().collect::<Vec<_>>(), answers);
}

/// Untrusted bytes never panic the session: every truncation of every
/// captured server stream, and many copies with bytes flipped, either parse
/// or fail with an error.
#[test]
fn mangled_server_bytes_never_panic() {
    let streams: [&[u8]; 5] = [
        include_bytes!("captures/transact_insert.s2c"),
        include_bytes!("captures/transact_wait_failed.s2c"),
        include_bytes!("captures/transact_mixed.s2c"),
        include_bytes!("captures/monitor.s2c"),
        include_bytes!("captures/echo.s2c"),
    ];
    let t = Instant::now();
    let feed = |bytes: &[u8]| {
        let mut s = Session::new(SessionConfig::default(), t);
        for i in 0..4 {
            s.send_request("x", json!([i]));
        }
        let _ = s.handle_input(t, bytes);
        while s.poll_event().is_some() {}
        while s.poll_transmit().is_some() {}
    };
    let mut seed: u64 = 7;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    for s in streams {
        let step = (s.len() / 300).max(1);
        for cut in (0..s.len()).step_by(step) {
            feed(&s[..cut]);
        }
        for _ in 0..300 {
            let mut m = s.to_vec();
            for _ in 0..1 + next() % 4 {
                let i = next() % m.len();
                const JUNK: &[u8] = b"{}[]\",:\\0aZ- \xff";
                m[i] = JUNK[next() % JUNK.len()];
            }
            feed(&m);
        }
    }
}
