//! JSON-RPC 1.0 messages as OVSDB uses them (RFC 7047 section 4).

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// One JSON-RPC 1.0 message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// A call expecting a reply with the same `id`.
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    /// A call with a null `id`: no reply (e.g. monitor `update`).
    Notification { method: String, params: Value },
    /// A successful reply.
    Response { id: Value, result: Value },
    /// A failed reply.
    Error { id: Value, error: Value },
}

impl Message {
    pub fn to_json(&self) -> Value {
        match self {
            Message::Request { id, method, params } => {
                json!({"id": id, "method": method, "params": params})
            }
            Message::Notification { method, params } => {
                json!({"id": null, "method": method, "params": params})
            }
            Message::Response { id, result } => {
                json!({"id": id, "result": result, "error": null})
            }
            Message::Error { id, error } => json!({"id": id, "result": null, "error": error}),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a Value cannot fail (no non-string keys, no I/O).
        serde_json::to_vec(&self.to_json()).unwrap_or_default()
    }

    pub fn from_json(v: Value) -> Result<Message> {
        let Value::Object(mut obj) = v else {
            return Err(Error::Protocol("message is not a JSON object".into()));
        };
        let id = obj.remove("id").unwrap_or(Value::Null);
        if let Some(method) = obj.remove("method") {
            let Value::String(method) = method else {
                return Err(Error::Protocol(format!("method is not a string: {method}")));
            };
            let params = obj.remove("params").unwrap_or(Value::Array(vec![]));
            if !params.is_array() {
                return Err(Error::Protocol(format!("{method}: params is not an array")));
            }
            return Ok(if id.is_null() {
                Message::Notification { method, params }
            } else {
                Message::Request { id, method, params }
            });
        }
        if id.is_null() {
            return Err(Error::Protocol("reply without an id".into()));
        }
        match (obj.remove("result"), obj.remove("error")) {
            (_, Some(error)) if !error.is_null() => Ok(Message::Error { id, error }),
            (Some(result), _) => Ok(Message::Response { id, result }),
            _ => Err(Error::Protocol(
                "neither method, result nor error in message".into(),
            )),
        }
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Message> {
        Message::from_json(serde_json::from_slice(bytes)?)
    }
}

/// The error object we send for requests we do not serve.
pub fn unknown_method_error(method: &str) -> Value {
    let mut m = Map::new();
    m.insert("error".into(), json!("unknown method"));
    m.insert(
        "details".into(),
        json!(format!("{method} is not supported by this client")),
    );
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_roundtrips() {
        let msgs = [
            Message::Request {
                id: json!(7),
                method: "transact".into(),
                params: json!(["Open_vSwitch", {"op": "comment", "comment": "x"}]),
            },
            Message::Request {
                id: json!("echo"),
                method: "echo".into(),
                params: json!([]),
            },
            Message::Notification {
                method: "update".into(),
                params: json!([null, {}]),
            },
            Message::Response {
                id: json!(7),
                result: json!([{}]),
            },
            Message::Response {
                id: json!(8),
                result: Value::Null,
            },
            Message::Error {
                id: json!(9),
                error: json!("unknown database"),
            },
        ];
        for m in msgs {
            let bytes = m.to_bytes();
            assert_eq!(Message::from_slice(&bytes).unwrap(), m, "{m:?}");
        }
    }

    #[test]
    fn classification() {
        let n = Message::from_json(json!({"method":"update","params":[1,{}],"id":null})).unwrap();
        assert!(matches!(n, Message::Notification { .. }));
        let e = Message::from_json(json!({"id":1,"result":null,"error":{"error":"x"}})).unwrap();
        assert!(matches!(e, Message::Error { .. }));
        assert!(Message::from_json(json!([])).is_err());
        assert!(Message::from_json(json!({"id":1})).is_err());
        assert!(Message::from_json(json!({"result":1,"error":null,"id":null})).is_err());
        assert!(Message::from_json(json!({"method":3,"params":[],"id":1})).is_err());
        assert!(Message::from_json(json!({"method":"x","params":{},"id":1})).is_err());
    }
}
