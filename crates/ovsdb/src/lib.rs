//! An OVSDB (RFC 7047) client.
//!
//! Layers, bottom up:
//! - [`framing`]: splits the unframed byte stream into JSON texts;
//! - [`jsonrpc`]: JSON-RPC 1.0 messages;
//! - [`data`], [`ops`], [`monitor`]: the OVSDB data model, transactions and
//!   monitors, with a local [`monitor::Replica`];
//! - [`session`]: the sans-IO client session (correlation, echo, probes);
//! - [`client`]: the tokio driver over a Unix socket;
//! - [`vswitch`]: the Open_vSwitch operations the agent needs (bridge,
//!   tunnel ports, ofport map, ovs-vswitchd restarts).

pub mod client;
pub mod data;
mod error;
pub mod framing;
pub mod jsonrpc;
pub mod monitor;
pub mod ops;
pub mod session;
pub mod vswitch;

pub use client::{Client, Notification};
pub use data::{Atom, Datum, Row, Uuid};
pub use error::{Error, Result, TransactionError};
pub use monitor::{MonitorRequest, Replica, RowUpdate, TableUpdates};
pub use ops::{Condition, Function, Mutation, Mutator, OpResult, Operation, Until};
pub use vswitch::{
    BridgeConfig, OfportMap, TunnelPort, TunnelSpec, Vswitch, VswitchEvent, VswitchOptions,
    VswitchdState,
};
