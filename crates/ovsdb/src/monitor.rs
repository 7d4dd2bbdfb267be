//! Monitors (RFC 7047 section 4.1.5): what to watch, the updates the server
//! sends, and a local replica kept current from them.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::data::{row_from_json, row_to_json, Row, Uuid};
use crate::error::{Error, Result};

/// Which changes a monitor reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Select {
    pub initial: bool,
    pub insert: bool,
    pub delete: bool,
    pub modify: bool,
}

impl Default for Select {
    fn default() -> Self {
        Select {
            initial: true,
            insert: true,
            delete: true,
            modify: true,
        }
    }
}

/// What to monitor in one table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonitorRequest {
    /// `None` means every column.
    pub columns: Option<Vec<String>>,
    pub select: Select,
}

impl MonitorRequest {
    pub fn columns<S: Into<String>>(cols: impl IntoIterator<Item = S>) -> Self {
        MonitorRequest {
            columns: Some(cols.into_iter().map(Into::into).collect()),
            select: Select::default(),
        }
    }

    fn to_json(&self) -> Value {
        let mut o = Map::new();
        if let Some(c) = &self.columns {
            o.insert("columns".into(), json!(c));
        }
        let s = &self.select;
        o.insert(
            "select".into(),
            json!({"initial": s.initial, "insert": s.insert, "delete": s.delete,
                   "modify": s.modify}),
        );
        Value::Object(o)
    }

    fn from_json(v: &Value) -> Result<Self> {
        let o = v
            .as_object()
            .ok_or_else(|| Error::Data(format!("monitor request is not an object: {v}")))?;
        let columns = match o.get("columns") {
            None => None,
            Some(c) => Some(
                c.as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|x| x.as_str().map(str::to_string))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(|| Error::Data(format!("bad monitor columns {c}")))?,
            ),
        };
        let mut select = Select::default();
        if let Some(s) = o.get("select") {
            let flag = |k: &str| s.get(k).and_then(Value::as_bool).unwrap_or(true);
            select = Select {
                initial: flag("initial"),
                insert: flag("insert"),
                delete: flag("delete"),
                modify: flag("modify"),
            };
        }
        Ok(MonitorRequest { columns, select })
    }
}

/// `monitor` params: database, the monitor's id, and a request per table.
pub fn monitor_params(
    db: &str,
    monitor_id: &Value,
    requests: &BTreeMap<String, MonitorRequest>,
) -> Value {
    let reqs: Map<String, Value> = requests
        .iter()
        .map(|(t, r)| (t.clone(), r.to_json()))
        .collect();
    json!([db, monitor_id, reqs])
}

/// Parses `monitor` params (a table may carry one request or an array).
pub fn parse_monitor_params(
    params: &Value,
) -> Result<(String, Value, BTreeMap<String, Vec<MonitorRequest>>)> {
    match params.as_array().map(Vec::as_slice) {
        Some([Value::String(db), id, Value::Object(reqs)]) => {
            let mut out = BTreeMap::new();
            for (t, r) in reqs {
                let list = match r {
                    Value::Array(a) => a
                        .iter()
                        .map(MonitorRequest::from_json)
                        .collect::<Result<_>>()?,
                    _ => vec![MonitorRequest::from_json(r)?],
                };
                out.insert(t.clone(), list);
            }
            Ok((db.clone(), id.clone(), out))
        }
        _ => Err(Error::Data(format!("bad monitor params {params}"))),
    }
}

/// The change to one row. `old` is absent for inserts (and initial rows),
/// `new` for deletes. For a modify, `old` holds only the columns that
/// changed, with their previous values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowUpdate {
    pub old: Option<Row>,
    pub new: Option<Row>,
}

/// Table name → row UUID → change.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableUpdates(pub BTreeMap<String, BTreeMap<Uuid, RowUpdate>>);

impl TableUpdates {
    pub fn from_json(v: &Value) -> Result<Self> {
        let tables = v
            .as_object()
            .ok_or_else(|| Error::Data(format!("table-updates is not an object: {v}")))?;
        let mut out = BTreeMap::new();
        for (t, rows) in tables {
            let rows = rows
                .as_object()
                .ok_or_else(|| Error::Data(format!("table-update {t} is not an object")))?;
            let mut tu = BTreeMap::new();
            for (uuid, ru) in rows {
                let ru = ru
                    .as_object()
                    .ok_or_else(|| Error::Data(format!("row-update {uuid} is not an object")))?;
                let get = |k: &str| ru.get(k).map(row_from_json).transpose();
                tu.insert(
                    uuid.parse::<Uuid>()?,
                    RowUpdate {
                        old: get("old")?,
                        new: get("new")?,
                    },
                );
            }
            out.insert(t.clone(), tu);
        }
        Ok(TableUpdates(out))
    }

    pub fn to_json(&self) -> Value {
        let tables: Map<String, Value> = self
            .0
            .iter()
            .map(|(t, rows)| {
                let rows: Map<String, Value> = rows
                    .iter()
                    .map(|(u, ru)| {
                        let mut o = Map::new();
                        if let Some(old) = &ru.old {
                            o.insert("old".into(), row_to_json(old));
                        }
                        if let Some(new) = &ru.new {
                            o.insert("new".into(), row_to_json(new));
                        }
                        (u.to_string(), Value::Object(o))
                    })
                    .collect();
                (t.clone(), Value::Object(rows))
            })
            .collect();
        Value::Object(tables)
    }

    pub fn is_empty(&self) -> bool {
        self.0.values().all(BTreeMap::is_empty)
    }
}

/// Decodes `update` notification params: `[monitor-id, table-updates]`.
pub fn parse_update_params(params: &Value) -> Result<(Value, TableUpdates)> {
    match params.as_array().map(Vec::as_slice) {
        Some([id, updates]) => Ok((id.clone(), TableUpdates::from_json(updates)?)),
        _ => Err(Error::Data(format!("bad update params {params}"))),
    }
}

/// A local copy of the monitored tables, kept current by applying the
/// monitor's initial reply and then every update in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Replica {
    tables: BTreeMap<String, BTreeMap<Uuid, Row>>,
    /// Bumped on every applied update, so readers can wait for change.
    version: u64,
}

impl Replica {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Applies one batch of updates (atomic from the reader's view, as the
    /// server sends one batch per committed transaction).
    pub fn apply(&mut self, updates: &TableUpdates) {
        for (t, rows) in &updates.0 {
            let table = self.tables.entry(t.clone()).or_default();
            for (uuid, ru) in rows {
                match &ru.new {
                    None => {
                        table.remove(uuid);
                    }
                    Some(new) => {
                        // Merge rather than replace: a modify may carry only
                        // the changed columns.
                        let row = table.entry(*uuid).or_default();
                        for (c, v) in new {
                            row.insert(c.clone(), v.clone());
                        }
                    }
                }
            }
        }
        self.version += 1;
    }

    pub fn table(&self, name: &str) -> impl Iterator<Item = (&Uuid, &Row)> {
        self.tables.get(name).into_iter().flat_map(|t| t.iter())
    }

    pub fn row(&self, table: &str, uuid: &Uuid) -> Option<&Row> {
        self.tables.get(table)?.get(uuid)
    }

    /// The first row of `table` whose string column `column` is `value`.
    pub fn find_by(&self, table: &str, column: &str, value: &str) -> Option<(Uuid, &Row)> {
        self.table(table)
            .find(|(_, r)| r.get(column).and_then(|d| d.as_str()) == Some(value))
            .map(|(u, r)| (*u, r))
    }

    pub fn len(&self, table: &str) -> usize {
        self.tables.get(table).map_or(0, BTreeMap::len)
    }

    pub fn is_empty(&self) -> bool {
        self.tables.values().all(BTreeMap::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Datum;

    #[test]
    fn params_roundtrip() {
        let mut reqs = BTreeMap::new();
        reqs.insert(
            "Interface".to_string(),
            MonitorRequest::columns(["name", "ofport"]),
        );
        reqs.insert("Bridge".to_string(), MonitorRequest::default());
        let p = monitor_params("Open_vSwitch", &json!("m1"), &reqs);
        let (db, id, back) = parse_monitor_params(&p).unwrap();
        assert_eq!(db, "Open_vSwitch");
        assert_eq!(id, json!("m1"));
        assert_eq!(back["Interface"], vec![reqs["Interface"].clone()]);
        assert_eq!(back["Bridge"], vec![reqs["Bridge"].clone()]);
        assert!(parse_monitor_params(&json!(["db"])).is_err());
    }

    #[test]
    fn replica_follows_initial_insert_modify_delete() {
        let u1 = "00000000-0000-0000-0000-000000000001";
        let u2 = "00000000-0000-0000-0000-000000000002";
        let mut r = Replica::new();
        let initial = TableUpdates::from_json(&json!({
            "Interface": {
                u1: {"new": {"name": "p1", "ofport": ["set", []]}},
                u2: {"new": {"name": "p2", "ofport": 2}}
            }
        }))
        .unwrap();
        r.apply(&initial);
        assert_eq!(r.len("Interface"), 2);
        assert_eq!(r.version(), 1);

        // A modify: "old" has only the changed column.
        let modify = TableUpdates::from_json(&json!({
            "Interface": {u1: {"old": {"ofport": ["set", []]}, "new": {"name": "p1", "ofport": 7}}}
        }))
        .unwrap();
        r.apply(&modify);
        let (uuid, row) = r.find_by("Interface", "name", "p1").unwrap();
        assert_eq!(uuid.to_string(), u1);
        assert_eq!(row["ofport"], Datum::integer(7));

        let delete = TableUpdates::from_json(&json!({
            "Interface": {u2: {"old": {"name": "p2", "ofport": 2}}}
        }))
        .unwrap();
        r.apply(&delete);
        assert_eq!(r.len("Interface"), 1);
        assert!(r.find_by("Interface", "name", "p2").is_none());

        // Updates encode back to what was decoded.
        for u in [initial, modify, delete] {
            assert_eq!(TableUpdates::from_json(&u.to_json()).unwrap(), u);
        }
    }

    #[test]
    fn bad_updates_rejected() {
        assert!(TableUpdates::from_json(&json!([])).is_err());
        assert!(TableUpdates::from_json(&json!({"T": []})).is_err());
        assert!(TableUpdates::from_json(&json!({"T": {"not-a-uuid": {}}})).is_err());
        assert!(TableUpdates::from_json(
            &json!({"T": {"00000000-0000-0000-0000-000000000001": 3}})
        )
        .is_err());
        assert!(parse_update_params(&json!([1])).is_err());
    }
}
