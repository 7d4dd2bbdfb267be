//! The OVSDB data model (RFC 7047 section 5.1): atoms, sets, maps and rows,
//! and their JSON notation.
//!
//! Values are decoded without a schema, so a JSON number with no fraction is
//! an integer and a bare atom is a one-element set (OVSDB treats both forms of
//! a single value the same).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// An OVSDB UUID. Ordered like OVS orders them (numerically, which is also
/// the order of the canonical text form).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uuid(pub u128);

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xffff_ffff_ffff
        )
    }
}

impl FromStr for Uuid {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Data(format!("invalid uuid {s:?}"));
        let b = s.as_bytes();
        if b.len() != 36 {
            return Err(bad());
        }
        let mut v: u128 = 0;
        for (i, &c) in b.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return Err(bad());
                }
                continue;
            }
            let d = (c as char).to_digit(16).ok_or_else(bad)?;
            v = (v << 4) | u128::from(d);
        }
        Ok(Uuid(v))
    }
}

/// A single OVSDB value.
#[derive(Clone, Debug)]
pub enum Atom {
    Integer(i64),
    Real(f64),
    Boolean(bool),
    String(String),
    Uuid(Uuid),
    /// A reference to a row inserted earlier in the same transaction.
    NamedUuid(String),
}

impl Atom {
    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) => 0,
            Atom::Real(_) => 1,
            Atom::Boolean(_) => 2,
            Atom::String(_) => 3,
            Atom::Uuid(_) => 4,
            Atom::NamedUuid(_) => 5,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Atom::Uuid(u) => Some(*u),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Atom::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Atom::Integer(i) => json!(i),
            Atom::Real(r) => json!(r),
            Atom::Boolean(b) => json!(b),
            Atom::String(s) => json!(s),
            Atom::Uuid(u) => json!(["uuid", u.to_string()]),
            Atom::NamedUuid(n) => json!(["named-uuid", n]),
        }
    }

    pub fn from_json(v: &Value) -> Result<Atom> {
        match v {
            Value::Bool(b) => Ok(Atom::Boolean(*b)),
            Value::String(s) => Ok(Atom::String(s.clone())),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(Atom::Integer(i))
                } else if let Some(f) = n.as_f64() {
                    Ok(Atom::Real(f))
                } else {
                    Err(Error::Data(format!("number out of range: {n}")))
                }
            }
            Value::Array(a) => match (a.first().and_then(Value::as_str), a.get(1), a.len()) {
                (Some("uuid"), Some(Value::String(s)), 2) => Ok(Atom::Uuid(s.parse()?)),
                (Some("named-uuid"), Some(Value::String(s)), 2) => Ok(Atom::NamedUuid(s.clone())),
                _ => Err(Error::Data(format!("not an atom: {v}"))),
            },
            _ => Err(Error::Data(format!("not an atom: {v}"))),
        }
    }
}

impl PartialEq for Atom {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Atom {}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Atom {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Atom::Integer(a), Atom::Integer(b)) => a.cmp(b),
            // total_cmp keeps Ord lawful even for NaN, which OVSDB forbids
            // anyway.
            (Atom::Real(a), Atom::Real(b)) => a.total_cmp(b),
            (Atom::Boolean(a), Atom::Boolean(b)) => a.cmp(b),
            (Atom::String(a), Atom::String(b)) => a.cmp(b),
            (Atom::Uuid(a), Atom::Uuid(b)) => a.cmp(b),
            (Atom::NamedUuid(a), Atom::NamedUuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl From<&str> for Atom {
    fn from(s: &str) -> Self {
        Atom::String(s.to_string())
    }
}

impl From<String> for Atom {
    fn from(s: String) -> Self {
        Atom::String(s)
    }
}

impl From<i64> for Atom {
    fn from(i: i64) -> Self {
        Atom::Integer(i)
    }
}

impl From<bool> for Atom {
    fn from(b: bool) -> Self {
        Atom::Boolean(b)
    }
}

impl From<Uuid> for Atom {
    fn from(u: Uuid) -> Self {
        Atom::Uuid(u)
    }
}

/// A column value: a set of atoms (a scalar is a set of one) or a map.
#[derive(Clone, Debug)]
pub enum Datum {
    Set(BTreeSet<Atom>),
    Map(BTreeMap<Atom, Atom>),
}

impl Default for Datum {
    fn default() -> Self {
        Datum::Set(BTreeSet::new())
    }
}

impl PartialEq for Datum {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Datum::Set(a), Datum::Set(b)) => a == b,
            (Datum::Map(a), Datum::Map(b)) => a == b,
            // An empty column has no type of its own in JSON: ["set",[]]
            // and ["map",[]] mean the same thing.
            (Datum::Set(s), Datum::Map(m)) | (Datum::Map(m), Datum::Set(s)) => {
                s.is_empty() && m.is_empty()
            }
        }
    }
}

impl Eq for Datum {}

impl From<Atom> for Datum {
    fn from(a: Atom) -> Self {
        Datum::Set(BTreeSet::from([a]))
    }
}

impl Datum {
    pub fn atom(a: impl Into<Atom>) -> Self {
        Datum::from(a.into())
    }

    pub fn string(s: impl Into<String>) -> Self {
        Datum::from(Atom::String(s.into()))
    }

    pub fn integer(i: i64) -> Self {
        Datum::from(Atom::Integer(i))
    }

    pub fn boolean(b: bool) -> Self {
        Datum::from(Atom::Boolean(b))
    }

    pub fn uuid(u: Uuid) -> Self {
        Datum::from(Atom::Uuid(u))
    }

    pub fn named_uuid(n: impl Into<String>) -> Self {
        Datum::from(Atom::NamedUuid(n.into()))
    }

    pub fn empty() -> Self {
        Datum::Set(BTreeSet::new())
    }

    pub fn set<A: Into<Atom>>(atoms: impl IntoIterator<Item = A>) -> Self {
        Datum::Set(atoms.into_iter().map(Into::into).collect())
    }

    pub fn map<K: Into<Atom>, V: Into<Atom>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Datum::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Datum::Set(s) => s.is_empty(),
            Datum::Map(m) => m.is_empty(),
        }
    }

    /// The single atom of a one-element set.
    pub fn as_atom(&self) -> Option<&Atom> {
        match self {
            Datum::Set(s) if s.len() == 1 => s.first(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        self.as_atom().and_then(Atom::as_str)
    }

    pub fn as_integer(&self) -> Option<i64> {
        self.as_atom().and_then(Atom::as_integer)
    }

    pub fn as_uuid(&self) -> Option<Uuid> {
        self.as_atom().and_then(Atom::as_uuid)
    }

    pub fn as_bool(&self) -> Option<bool> {
        self.as_atom().and_then(Atom::as_bool)
    }

    /// The elements of a set (empty for a map other than the empty map).
    pub fn atoms(&self) -> impl Iterator<Item = &Atom> {
        let set = match self {
            Datum::Set(s) => Some(s.iter()),
            Datum::Map(_) => None,
        };
        set.into_iter().flatten()
    }

    pub fn uuids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.atoms().filter_map(Atom::as_uuid)
    }

    pub fn strings(&self) -> impl Iterator<Item = &str> {
        self.atoms().filter_map(Atom::as_str)
    }

    /// Looks a string key up in a string→string map.
    pub fn map_get(&self, key: &str) -> Option<&str> {
        match self {
            Datum::Map(m) => m.get(&Atom::from(key)).and_then(Atom::as_str),
            Datum::Set(_) => None,
        }
    }

    /// A string→string map as owned strings; non-string entries are skipped.
    pub fn string_map(&self) -> BTreeMap<String, String> {
        match self {
            Datum::Map(m) => m
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect(),
            Datum::Set(_) => BTreeMap::new(),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Datum::Set(s) if s.len() == 1 => s.first().map(Atom::to_json).unwrap_or(Value::Null),
            Datum::Set(s) => json!(["set", s.iter().map(Atom::to_json).collect::<Vec<_>>()]),
            Datum::Map(m) => json!([
                "map",
                m.iter()
                    .map(|(k, v)| json!([k.to_json(), v.to_json()]))
                    .collect::<Vec<_>>()
            ]),
        }
    }

    pub fn from_json(v: &Value) -> Result<Datum> {
        if let Value::Array(a) = v {
            match (a.first().and_then(Value::as_str), a.get(1), a.len()) {
                (Some("set"), Some(Value::Array(items)), 2) => {
                    return Ok(Datum::Set(
                        items.iter().map(Atom::from_json).collect::<Result<_>>()?,
                    ));
                }
                (Some("map"), Some(Value::Array(pairs)), 2) => {
                    let mut m = BTreeMap::new();
                    for p in pairs {
                        match p.as_array().map(Vec::as_slice) {
                            Some([k, v]) => {
                                m.insert(Atom::from_json(k)?, Atom::from_json(v)?);
                            }
                            _ => return Err(Error::Data(format!("bad map pair: {p}"))),
                        }
                    }
                    return Ok(Datum::Map(m));
                }
                _ => {}
            }
        }
        Atom::from_json(v).map(Datum::from)
    }
}

/// A row: column name to value. Only the columns present in a message or
/// asked for are there.
pub type Row = BTreeMap<String, Datum>;

pub fn row_to_json(row: &Row) -> Value {
    Value::Object(row.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

pub fn row_from_json(v: &Value) -> Result<Row> {
    let obj = v
        .as_object()
        .ok_or_else(|| Error::Data(format!("row is not an object: {v}")))?;
    obj.iter()
        .map(|(k, v)| Ok((k.clone(), Datum::from_json(v)?)))
        .collect()
}

/// Builds a row from `(column, value)` pairs.
pub fn row<K: Into<String>>(cols: impl IntoIterator<Item = (K, Datum)>) -> Row {
    cols.into_iter().map(|(k, v)| (k.into(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text_roundtrip_and_order() {
        let s = "36bd6d1a-6f3f-4b11-8e2b-0c4f0c35e7a9";
        let u: Uuid = s.parse().unwrap();
        assert_eq!(u.to_string(), s);
        assert!("36bd6d1a-6f3f-4b11-8e2b-0c4f0c35e7a"
            .parse::<Uuid>()
            .is_err());
        assert!("36bd6d1a+6f3f-4b11-8e2b-0c4f0c35e7a9"
            .parse::<Uuid>()
            .is_err());
        assert!("36bd6d1a-6f3f-4b11-8e2b-0c4f0c35e7ag"
            .parse::<Uuid>()
            .is_err());
        // Upper case is accepted on input, written lower case.
        let up: Uuid = s.to_uppercase().parse().unwrap();
        assert_eq!(up, u);
        let a: Uuid = "00000000-0000-0000-0000-00000000000f".parse().unwrap();
        let b: Uuid = "00000000-0000-0000-0001-000000000000".parse().unwrap();
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn atoms_roundtrip() {
        for v in [
            json!(42),
            json!(-7),
            json!(1.5),
            json!(true),
            json!("br-int"),
            json!(["uuid", "36bd6d1a-6f3f-4b11-8e2b-0c4f0c35e7a9"]),
            json!(["named-uuid", "row1"]),
        ] {
            let a = Atom::from_json(&v).unwrap();
            assert_eq!(a.to_json(), v);
        }
        assert!(Atom::from_json(&json!(null)).is_err());
        assert!(Atom::from_json(&json!({})).is_err());
        assert!(Atom::from_json(&json!(["uuid", "nope"])).is_err());
        assert!(Atom::from_json(&json!(["uuid"])).is_err());
    }

    #[test]
    fn datums_roundtrip_and_normalise() {
        let set = json!(["set", ["OpenFlow10", "OpenFlow13"]]);
        let d = Datum::from_json(&set).unwrap();
        assert_eq!(d, Datum::set(["OpenFlow13", "OpenFlow10"]));
        assert_eq!(d.to_json(), set);

        // A one-element set is written as the bare atom, as OVS does.
        let one = Datum::from_json(&json!(["set", ["secure"]])).unwrap();
        assert_eq!(one.to_json(), json!("secure"));
        assert_eq!(one, Datum::string("secure"));

        let map = json!(["map", [["key", "flow"], ["remote_ip", "192.0.2.2"]]]);
        let m = Datum::from_json(&map).unwrap();
        assert_eq!(m.map_get("remote_ip"), Some("192.0.2.2"));
        assert_eq!(m.to_json(), map);

        assert_eq!(
            Datum::from_json(&json!(["set", []])).unwrap(),
            Datum::from_json(&json!(["map", []])).unwrap()
        );
        assert!(Datum::from_json(&json!(["map", [["a"]]])).is_err());
        assert!(Datum::from_json(&json!(["set", [null]])).is_err());
    }

    #[test]
    fn rows_roundtrip() {
        let v = json!({"name": "br-int", "ports": ["set", []], "ofport": 3});
        let r = row_from_json(&v).unwrap();
        assert_eq!(r["ofport"].as_integer(), Some(3));
        assert_eq!(row_to_json(&r), v);
        assert!(row_from_json(&json!([])).is_err());
    }
}
