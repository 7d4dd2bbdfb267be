//! The agent protocol, shared by `flowctl`, `vswitch-agent` and the CLI.
//!
//! flowctl streams each node the part of the logical model that node needs
//! ([`NodeState`]): a full snapshot first, then deltas, each stamped with the
//! store revision it reflects. The agent answers every message with an ack or
//! a nack. Messages are JSON documents in length-prefixed frames ([`frame`]);
//! the framing and the session logic are sans-IO so both ends test without
//! sockets.
//!
//! [`PROTOCOL_VERSION`] must change whenever the wire format changes.

pub mod auth;
pub mod frame;
pub mod sign;
mod state;

pub use state::*;

use serde::{Deserialize, Serialize};

/// Bumped on every change to the messages or the types they carry.
pub const PROTOCOL_VERSION: u32 = 3;

/// A global store revision. Every change in the store carries one.
pub type Revision = u64;

/// What the agent sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// First message on a stream. `last_applied` lets flowctl resume with
    /// deltas instead of a full snapshot when its history allows.
    Hello {
        version: u32,
        node: String,
        token: String,
        last_applied: Option<Revision>,
    },
    /// The state at `revision` is installed. `ready_nics` are the local NICs
    /// whose flows are in place at that revision.
    Ack {
        revision: Revision,
        ready_nics: Vec<String>,
    },
    /// The state at `revision` could not be applied.
    Nack { revision: Revision, error: String },
}

/// What flowctl sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The complete desired state of the node at `state.revision`.
    Snapshot { state: NodeState },
    /// Changes that move a node from `base` to `revision`. An agent whose
    /// applied revision is not `base` must ask for a snapshot (reconnect
    /// with `last_applied: None`).
    Delta {
        base: Revision,
        revision: Revision,
        changes: Vec<Change>,
    },
    /// The stream is refused (bad version, bad token, unknown node).
    Refused { reason: String },
}
