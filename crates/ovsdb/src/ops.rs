//! Transactions: operations (RFC 7047 section 5.2), their results and errors.

use serde_json::{json, Map, Value};

use crate::data::{row_from_json, row_to_json, Datum, Row, Uuid};
use crate::error::{Error, Result, TransactionError};

/// A comparison in a `where` clause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Lt,
    Le,
    Eq,
    Ne,
    Ge,
    Gt,
    Includes,
    Excludes,
}

impl Function {
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Ge => ">=",
            Function::Gt => ">",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "<" => Function::Lt,
            "<=" => Function::Le,
            "==" => Function::Eq,
            "!=" => Function::Ne,
            ">=" => Function::Ge,
            ">" => Function::Gt,
            "includes" => Function::Includes,
            "excludes" => Function::Excludes,
            _ => return Err(Error::Data(format!("unknown function {s:?}"))),
        })
    }
}

/// `[column, function, value]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub column: String,
    pub function: Function,
    pub value: Datum,
}

impl Condition {
    pub fn new(column: impl Into<String>, function: Function, value: Datum) -> Self {
        Condition {
            column: column.into(),
            function,
            value,
        }
    }

    pub fn eq(column: impl Into<String>, value: Datum) -> Self {
        Self::new(column, Function::Eq, value)
    }

    /// `_uuid == uuid`.
    pub fn uuid(u: Uuid) -> Self {
        Self::eq("_uuid", Datum::uuid(u))
    }

    fn to_json(&self) -> Value {
        json!([self.column, self.function.as_str(), self.value.to_json()])
    }

    fn from_json(v: &Value) -> Result<Self> {
        match v.as_array().map(Vec::as_slice) {
            Some([Value::String(c), Value::String(f), val]) => Ok(Condition {
                column: c.clone(),
                function: Function::parse(f)?,
                value: Datum::from_json(val)?,
            }),
            _ => Err(Error::Data(format!("bad condition {v}"))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutator {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Insert,
    Delete,
}

impl Mutator {
    pub fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "+=" => Mutator::Add,
            "-=" => Mutator::Sub,
            "*=" => Mutator::Mul,
            "/=" => Mutator::Div,
            "%=" => Mutator::Mod,
            "insert" => Mutator::Insert,
            "delete" => Mutator::Delete,
            _ => return Err(Error::Data(format!("unknown mutator {s:?}"))),
        })
    }
}

/// `[column, mutator, value]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    pub column: String,
    pub mutator: Mutator,
    pub value: Datum,
}

impl Mutation {
    pub fn new(column: impl Into<String>, mutator: Mutator, value: Datum) -> Self {
        Mutation {
            column: column.into(),
            mutator,
            value,
        }
    }

    fn to_json(&self) -> Value {
        json!([self.column, self.mutator.as_str(), self.value.to_json()])
    }

    fn from_json(v: &Value) -> Result<Self> {
        match v.as_array().map(Vec::as_slice) {
            Some([Value::String(c), Value::String(m), val]) => Ok(Mutation {
                column: c.clone(),
                mutator: Mutator::parse(m)?,
                value: Datum::from_json(val)?,
            }),
            _ => Err(Error::Data(format!("bad mutation {v}"))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Wait until the selected rows equal `rows`.
    Eq,
    /// Wait until they differ.
    Ne,
}

/// One database operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Operation {
    Insert {
        table: String,
        row: Row,
        /// Lets later operations refer to the new row as `named-uuid`.
        uuid_name: Option<String>,
    },
    Select {
        table: String,
        conditions: Vec<Condition>,
        columns: Option<Vec<String>>,
    },
    Update {
        table: String,
        conditions: Vec<Condition>,
        row: Row,
    },
    Mutate {
        table: String,
        conditions: Vec<Condition>,
        mutations: Vec<Mutation>,
    },
    Delete {
        table: String,
        conditions: Vec<Condition>,
    },
    /// With `timeout_ms: Some(0)` this is an assertion: the transaction
    /// fails unless the selected rows already (do not) equal `rows`. It is
    /// how we guard read-modify-write against concurrent writers.
    Wait {
        table: String,
        conditions: Vec<Condition>,
        columns: Vec<String>,
        until: Until,
        rows: Vec<Row>,
        timeout_ms: Option<u64>,
    },
    Commit {
        durable: bool,
    },
    Abort,
    Comment(String),
    Assert {
        lock: String,
    },
}

fn conds_json(c: &[Condition]) -> Value {
    Value::Array(c.iter().map(Condition::to_json).collect())
}

impl Operation {
    /// Short description for errors and logs, e.g. `insert into Port`.
    pub fn describe(&self) -> String {
        match self {
            Operation::Insert { table, .. } => format!("insert into {table}"),
            Operation::Select { table, .. } => format!("select from {table}"),
            Operation::Update { table, .. } => format!("update {table}"),
            Operation::Mutate { table, .. } => format!("mutate {table}"),
            Operation::Delete { table, .. } => format!("delete from {table}"),
            Operation::Wait { table, .. } => format!("wait on {table}"),
            Operation::Commit { .. } => "commit".into(),
            Operation::Abort => "abort".into(),
            Operation::Comment(_) => "comment".into(),
            Operation::Assert { lock } => format!("assert lock {lock}"),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Operation::Insert {
                table,
                row,
                uuid_name,
            } => {
                let mut v = json!({"op": "insert", "table": table, "row": row_to_json(row)});
                if let (Some(n), Value::Object(o)) = (uuid_name, &mut v) {
                    o.insert("uuid-name".into(), json!(n));
                }
                v
            }
            Operation::Select {
                table,
                conditions,
                columns,
            } => {
                let mut v =
                    json!({"op": "select", "table": table, "where": conds_json(conditions)});
                if let (Some(c), Value::Object(o)) = (columns, &mut v) {
                    o.insert("columns".into(), json!(c));
                }
                v
            }
            Operation::Update {
                table,
                conditions,
                row,
            } => json!({"op": "update", "table": table, "where": conds_json(conditions),
                        "row": row_to_json(row)}),
            Operation::Mutate {
                table,
                conditions,
                mutations,
            } => json!({"op": "mutate", "table": table, "where": conds_json(conditions),
                        "mutations": mutations.iter().map(Mutation::to_json).collect::<Vec<_>>()}),
            Operation::Delete { table, conditions } => {
                json!({"op": "delete", "table": table, "where": conds_json(conditions)})
            }
            Operation::Wait {
                table,
                conditions,
                columns,
                until,
                rows,
                timeout_ms,
            } => {
                let mut v = json!({"op": "wait", "table": table, "where": conds_json(conditions),
                    "columns": columns,
                    "until": match until { Until::Eq => "==", Until::Ne => "!=" },
                    "rows": rows.iter().map(row_to_json).collect::<Vec<_>>()});
                if let (Some(t), Value::Object(o)) = (timeout_ms, &mut v) {
                    o.insert("timeout".into(), json!(t));
                }
                v
            }
            Operation::Commit { durable } => json!({"op": "commit", "durable": durable}),
            Operation::Abort => json!({"op": "abort"}),
            Operation::Comment(c) => json!({"op": "comment", "comment": c}),
            Operation::Assert { lock } => json!({"op": "assert", "lock": lock}),
        }
    }

    pub fn from_json(v: &Value) -> Result<Operation> {
        let o = v
            .as_object()
            .ok_or_else(|| Error::Data(format!("operation is not an object: {v}")))?;
        let s = |k: &str| -> Result<String> {
            o.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| Error::Data(format!("operation lacks string {k:?}: {v}")))
        };
        let conds = || -> Result<Vec<Condition>> {
            o.get("where")
                .and_then(Value::as_array)
                .ok_or_else(|| Error::Data(format!("operation lacks where: {v}")))?
                .iter()
                .map(Condition::from_json)
                .collect()
        };
        let row = |k: &str| -> Result<Row> {
            row_from_json(
                o.get(k)
                    .ok_or_else(|| Error::Data(format!("operation lacks {k}: {v}")))?,
            )
        };
        let strings = |k: &str| -> Result<Option<Vec<String>>> {
            o.get(k)
                .map(|c| {
                    c.as_array()
                        .and_then(|a| {
                            a.iter()
                                .map(|x| x.as_str().map(str::to_string))
                                .collect::<Option<Vec<_>>>()
                        })
                        .ok_or_else(|| Error::Data(format!("bad {k}: {c}")))
                })
                .transpose()
        };
        Ok(match s("op")?.as_str() {
            "insert" => Operation::Insert {
                table: s("table")?,
                row: row("row")?,
                uuid_name: o
                    .get("uuid-name")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            },
            "select" => Operation::Select {
                table: s("table")?,
                conditions: conds()?,
                columns: strings("columns")?,
            },
            "update" => Operation::Update {
                table: s("table")?,
                conditions: conds()?,
                row: row("row")?,
            },
            "mutate" => Operation::Mutate {
                table: s("table")?,
                conditions: conds()?,
                mutations: o
                    .get("mutations")
                    .and_then(Value::as_array)
                    .ok_or_else(|| Error::Data(format!("mutate lacks mutations: {v}")))?
                    .iter()
                    .map(Mutation::from_json)
                    .collect::<Result<_>>()?,
            },
            "delete" => Operation::Delete {
                table: s("table")?,
                conditions: conds()?,
            },
            "wait" => Operation::Wait {
                table: s("table")?,
                conditions: conds()?,
                columns: strings("columns")?.unwrap_or_default(),
                until: match s("until")?.as_str() {
                    "==" => Until::Eq,
                    "!=" => Until::Ne,
                    u => return Err(Error::Data(format!("bad until {u:?}"))),
                },
                rows: o
                    .get("rows")
                    .and_then(Value::as_array)
                    .ok_or_else(|| Error::Data(format!("wait lacks rows: {v}")))?
                    .iter()
                    .map(row_from_json)
                    .collect::<Result<_>>()?,
                timeout_ms: o.get("timeout").and_then(Value::as_u64),
            },
            "commit" => Operation::Commit {
                durable: o.get("durable").and_then(Value::as_bool).unwrap_or(false),
            },
            "abort" => Operation::Abort,
            "comment" => Operation::Comment(s("comment")?),
            "assert" => Operation::Assert { lock: s("lock")? },
            other => return Err(Error::Data(format!("unknown op {other:?}"))),
        })
    }
}

/// `transact` params: the database name, then the operations.
pub fn transact_params(db: &str, ops: &[Operation]) -> Value {
    let mut p = Vec::with_capacity(ops.len() + 1);
    p.push(json!(db));
    p.extend(ops.iter().map(Operation::to_json));
    Value::Array(p)
}

/// Parses `transact` params back into the database and operations.
pub fn parse_transact_params(params: &Value) -> Result<(String, Vec<Operation>)> {
    let a = params
        .as_array()
        .ok_or_else(|| Error::Data("transact params is not an array".into()))?;
    let db = a
        .first()
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Data("transact params lack the database name".into()))?;
    let ops = a[1..]
        .iter()
        .map(Operation::from_json)
        .collect::<Result<_>>()?;
    Ok((db.to_string(), ops))
}

/// The result of one successful operation.
#[derive(Clone, Debug, PartialEq)]
pub enum OpResult {
    /// `insert`: the new row's UUID.
    Insert(Uuid),
    /// `select`: the matching rows.
    Rows(Vec<Row>),
    /// `update`, `mutate`, `delete`: how many rows matched.
    Count(u64),
    /// Operations with no result (`wait`, `comment`, `commit`, ...).
    Empty,
}

impl OpResult {
    pub fn to_json(&self) -> Value {
        match self {
            OpResult::Insert(u) => json!({"uuid": ["uuid", u.to_string()]}),
            OpResult::Rows(r) => json!({"rows": r.iter().map(row_to_json).collect::<Vec<_>>()}),
            OpResult::Count(c) => json!({"count": c}),
            OpResult::Empty => Value::Object(Map::new()),
        }
    }

    fn from_json(op: &Operation, v: &Value) -> Result<OpResult> {
        let o = v
            .as_object()
            .ok_or_else(|| Error::Data(format!("operation result is not an object: {v}")))?;
        Ok(match op {
            Operation::Insert { .. } => {
                let u = o
                    .get("uuid")
                    .ok_or_else(|| Error::Data(format!("insert result lacks uuid: {v}")))?;
                OpResult::Insert(
                    Datum::from_json(u)?
                        .as_uuid()
                        .ok_or_else(|| Error::Data(format!("bad insert uuid: {u}")))?,
                )
            }
            Operation::Select { .. } => OpResult::Rows(
                o.get("rows")
                    .and_then(Value::as_array)
                    .ok_or_else(|| Error::Data(format!("select result lacks rows: {v}")))?
                    .iter()
                    .map(row_from_json)
                    .collect::<Result<_>>()?,
            ),
            Operation::Update { .. } | Operation::Mutate { .. } | Operation::Delete { .. } => {
                OpResult::Count(
                    o.get("count")
                        .and_then(Value::as_u64)
                        .ok_or_else(|| Error::Data(format!("result lacks count: {v}")))?,
                )
            }
            _ => OpResult::Empty,
        })
    }
}

fn op_error(index: Option<usize>, operation: String, v: &Value) -> Option<TransactionError> {
    let e = v.as_object()?.get("error")?;
    Some(TransactionError {
        index,
        operation,
        error: e
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string()),
        details: v.get("details").and_then(Value::as_str).map(str::to_string),
    })
}

/// Decodes a `transact` reply for `ops`.
///
/// The reply is an array with one element per operation: a result object, an
/// object with `error` for the operation that failed, then `null` for those not
/// attempted. One extra element means the commit itself failed.
pub fn decode_transact_reply(ops: &[Operation], result: &Value) -> Result<Vec<OpResult>> {
    let items = result
        .as_array()
        .ok_or_else(|| Error::Data(format!("transact result is not an array: {result}")))?;
    let mut out = Vec::with_capacity(ops.len());
    for (i, item) in items.iter().enumerate() {
        let Some(op) = ops.get(i) else {
            // The extra element after all operations: a commit error.
            if let Some(e) = op_error(None, "commit".into(), item) {
                return Err(e.into());
            }
            continue;
        };
        if let Some(e) = op_error(Some(i), op.describe(), item) {
            return Err(e.into());
        }
        if item.is_null() {
            return Err(Error::Data(format!(
                "operation {i} ({}) not attempted, but no error reported",
                op.describe()
            )));
        }
        out.push(OpResult::from_json(op, item)?);
    }
    if out.len() != ops.len() {
        return Err(Error::Data(format!(
            "{} results for {} operations",
            out.len(),
            ops.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::row;

    fn sample_ops() -> Vec<Operation> {
        let u: Uuid = "36bd6d1a-6f3f-4b11-8e2b-0c4f0c35e7a9".parse().unwrap();
        vec![
            Operation::Wait {
                table: "Port".into(),
                conditions: vec![Condition::eq("name", Datum::string("vx-b"))],
                columns: vec!["name".into()],
                until: Until::Eq,
                rows: vec![],
                timeout_ms: Some(0),
            },
            Operation::Insert {
                table: "Interface".into(),
                row: row([
                    ("name", Datum::string("vx-b")),
                    ("type", Datum::string("vxlan")),
                    (
                        "options",
                        Datum::map([("key", "flow"), ("remote_ip", "192.0.2.2")]),
                    ),
                ]),
                uuid_name: Some("iface".into()),
            },
            Operation::Insert {
                table: "Port".into(),
                row: row([
                    ("name", Datum::string("vx-b")),
                    ("interfaces", Datum::named_uuid("iface")),
                ]),
                uuid_name: Some("port".into()),
            },
            Operation::Mutate {
                table: "Bridge".into(),
                conditions: vec![Condition::eq("name", Datum::string("br-int"))],
                mutations: vec![Mutation::new(
                    "ports",
                    Mutator::Insert,
                    Datum::named_uuid("port"),
                )],
            },
            Operation::Update {
                table: "Bridge".into(),
                conditions: vec![Condition::uuid(u)],
                row: row([("fail_mode", Datum::string("secure"))]),
            },
            Operation::Select {
                table: "Bridge".into(),
                conditions: vec![Condition::new("ports", Function::Includes, Datum::empty())],
                columns: Some(vec!["name".into()]),
            },
            Operation::Delete {
                table: "Port".into(),
                conditions: vec![Condition::new("name", Function::Ne, Datum::string("x"))],
            },
            Operation::Comment("stacknet: tunnel".into()),
            Operation::Commit { durable: false },
            Operation::Abort,
            Operation::Assert { lock: "l".into() },
            Operation::Mutate {
                table: "Open_vSwitch".into(),
                conditions: vec![],
                mutations: vec![Mutation::new("next_cfg", Mutator::Add, Datum::integer(1))],
            },
        ]
    }

    #[test]
    fn operations_roundtrip() {
        let ops = sample_ops();
        let params = transact_params("Open_vSwitch", &ops);
        let (db, back) = parse_transact_params(&params).unwrap();
        assert_eq!(db, "Open_vSwitch");
        assert_eq!(back, ops);
        // Spot-check the wire form against RFC 7047's notation.
        assert_eq!(
            params[1],
            json!({"op":"wait","table":"Port","where":[["name","==","vx-b"]],
                   "columns":["name"],"until":"==","rows":[],"timeout":0})
        );
        assert_eq!(params[2]["uuid-name"], json!("iface"));
        assert_eq!(
            params[4]["mutations"],
            json!([["ports", "insert", ["named-uuid", "port"]]])
        );
    }

    #[test]
    fn reply_success() {
        let ops = sample_ops();
        let reply = json!([
            {}, {"uuid": ["uuid", "00000000-0000-0000-0000-000000000001"]},
            {"uuid": ["uuid", "00000000-0000-0000-0000-000000000002"]},
            {"count": 1}, {"count": 1}, {"rows": [{"name": "br-int"}]}, {"count": 0},
            {}, {}, {}, {}, {"count": 1}
        ]);
        let r = decode_transact_reply(&ops, &reply).unwrap();
        assert_eq!(r.len(), ops.len());
        assert_eq!(r[1], OpResult::Insert(Uuid(1)));
        assert_eq!(r[3], OpResult::Count(1));
        assert_eq!(
            r[5],
            OpResult::Rows(vec![row([("name", Datum::string("br-int"))])])
        );
        for (res, raw) in r.iter().zip(reply.as_array().unwrap()) {
            assert_eq!(&res.to_json(), raw);
        }
    }

    #[test]
    fn reply_operation_error_names_the_operation() {
        let ops = sample_ops();
        let reply = json!([{"details":"\"wait\" timed out","error":"timed out"}, null, null, null,
                           null, null, null, null, null, null, null, null]);
        let Err(Error::Transaction(e)) = decode_transact_reply(&ops, &reply) else {
            panic!("expected a transaction error");
        };
        assert_eq!(e.index, Some(0));
        assert_eq!(e.operation, "wait on Port");
        assert!(e.is_wait_failure());
        assert_eq!(
            e.to_string(),
            "operation 0 (wait on Port) failed: timed out (\"wait\" timed out)"
        );
    }

    #[test]
    fn reply_commit_error() {
        let ops = vec![Operation::Comment("x".into())];
        let reply = json!([{}, {"error": "referential integrity violation",
                                "details": "cannot delete"}]);
        let Err(Error::Transaction(e)) = decode_transact_reply(&ops, &reply) else {
            panic!("expected a commit error");
        };
        assert_eq!(e.index, None);
        assert_eq!(e.error, "referential integrity violation");
        assert!(!e.is_wait_failure());
    }

    #[test]
    fn reply_malformed() {
        let ops = vec![Operation::Delete {
            table: "Port".into(),
            conditions: vec![],
        }];
        assert!(decode_transact_reply(&ops, &json!({})).is_err());
        assert!(decode_transact_reply(&ops, &json!([])).is_err());
        assert!(decode_transact_reply(&ops, &json!([null])).is_err());
        assert!(decode_transact_reply(&ops, &json!([{}])).is_err());
        assert!(decode_transact_reply(&ops, &json!([{"count": -1}])).is_err());
    }

    #[test]
    fn bad_operations_rejected() {
        for v in [
            json!({"op": "frobnicate", "table": "T"}),
            json!({"op": "insert", "table": "T"}),
            json!({"op": "select", "table": "T", "where": [["a", "~", 1]]}),
            json!({"op": "mutate", "table": "T", "where": [], "mutations": [["a", "^=", 1]]}),
            json!({"op": "wait", "table": "T", "where": [], "until": "<", "rows": []}),
            json!("insert"),
        ] {
            assert!(Operation::from_json(&v).is_err(), "{v}");
        }
    }
}
