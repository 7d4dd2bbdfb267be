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
//!
//! What the agent does with it:
//!
//! ```no_run
//! # async fn agent() -> ovsdb::Result<()> {
//! use ovsdb::{BridgeConfig, TunnelSpec, Vswitch, VswitchEvent};
//!
//! let vs = Vswitch::connect("unix:/run/ovs/db.sock", BridgeConfig::new("br-int", "netdev"))
//!     .await?;
//! vs.ensure_bridge().await?; // idempotent; never recreates
//! let peers = [TunnelSpec {
//!     peer: "node-2".into(),
//!     remote_ip: "192.0.2.2".parse().unwrap(),
//!     local_ip: None,
//!     bfd: false,
//!     cpath_down: false,
//! }];
//! vs.sync_tunnels(&peers).await?; // ensures these, removes our others
//! let mut ports = vs.ofports(); // watch: NIC id / port name -> ofport
//! let mut events = vs.events();
//! loop {
//!     tokio::select! {
//!         _ = ports.changed() => {
//!             let m = ports.borrow_and_update().clone();
//!             let _nic = m.iface("nic-1");
//!             let _tun = m.port("vx-node-2");
//!             // re-render the pipeline with the new port map
//!         }
//!         ev = events.recv() => {
//!             if let Ok(VswitchEvent::VswitchdUp) = ev {
//!                 // ovs-vswitchd restarted with no flows: reinstall them
//!             }
//!         }
//!     }
//! }
//! # }
//! ```

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
