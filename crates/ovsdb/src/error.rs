//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong talking to an OVSDB server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A JSON text in the stream grew past the configured bound. The stream
    /// cannot be resynchronised after this: the connection must be dropped.
    #[error("JSON message larger than {limit} bytes")]
    MessageTooLarge { limit: usize },

    /// The stream held something that is not a JSON object or array.
    #[error("invalid byte {byte:#04x} between JSON messages")]
    Framing { byte: u8 },

    /// A complete JSON text did not parse.
    #[error("invalid JSON")]
    Json(#[from] serde_json::Error),

    /// Well-formed JSON that is not a valid JSON-RPC 1.0 message.
    #[error("invalid JSON-RPC message: {0}")]
    Protocol(String),

    /// JSON that is not a valid OVSDB value (atom, set, map, row, update).
    #[error("invalid OVSDB data: {0}")]
    Data(String),

    /// The server answered a request with a JSON-RPC error.
    #[error("{method} request failed: {error}")]
    Rpc {
        method: String,
        error: serde_json::Value,
    },

    /// A transaction was refused; names the operation that failed.
    #[error(transparent)]
    Transaction(#[from] TransactionError),

    #[error("cannot connect to {path}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("unsupported OVSDB target {0:?} (expected unix:/path)")]
    Target(String),

    #[error("socket I/O failed")]
    Io(#[from] std::io::Error),

    /// The connection to ovsdb-server is gone (closed, reset or unanswered
    /// probes). Requests in flight fail with this.
    #[error("connection to ovsdb-server lost")]
    Disconnected,

    #[error("timed out waiting for {0}")]
    Timeout(String),

    /// An object we are asked to manage exists but is not marked as ours, so
    /// we leave it alone.
    #[error("{table} {name:?} exists and is not owned by {owner:?}")]
    NotOwned {
        table: &'static str,
        name: String,
        owner: String,
    },

    /// A bridge exists with settings we must not change on a live bridge.
    #[error("bridge {bridge:?} has datapath_type {found:?}, wanted {wanted:?}; not changing a live bridge")]
    DatapathMismatch {
        bridge: String,
        found: String,
        wanted: String,
    },

    #[error("invalid argument: {0}")]
    Invalid(String),

    /// Optimistic transactions kept losing races with other writers.
    #[error("{what}: still conflicting after {attempts} attempts")]
    Contention { what: String, attempts: u32 },
}

/// A transaction the server refused, decoded from its result array.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{error}{}", self.where_(), self.details.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
pub struct TransactionError {
    /// Index of the failing operation in the request; `None` when every
    /// operation succeeded but the commit failed (the extra result element).
    pub index: Option<usize>,
    /// What the failing operation was, e.g. `insert into Port`.
    pub operation: String,
    /// The RFC 7047 error tag, e.g. `constraint violation`, `timed out`.
    pub error: String,
    pub details: Option<String>,
}

impl TransactionError {
    fn where_(&self) -> String {
        match self.index {
            Some(i) => format!("operation {i} ({}) failed: ", self.operation),
            None => "commit failed: ".to_string(),
        }
    }

    /// A `wait` guard did not hold: another writer changed the rows we based
    /// the transaction on. Re-read and retry.
    pub fn is_wait_failure(&self) -> bool {
        self.error == "timed out" && self.operation.starts_with("wait")
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
