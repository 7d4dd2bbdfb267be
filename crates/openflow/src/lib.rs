//! OpenFlow 1.4 (wire version 0x05) with the Nicira extensions the pipeline
//! needs: a sans-IO codec and a small async connection driver.
//!
//! - [`flow`]: the [`Flow`]/[`Match`]/[`Action`]/[`Field`] types the
//!   pipeline renders.
//! - [`message`]: every message as a [`Message`] with `parse`/`emit`
//!   (never panics on untrusted bytes; unknown things kept as `Unknown`),
//!   plus [`canonical`], the form in which a switch reports a flow back.
//! - [`meter`]: meter mods, meter config and stats.
//! - [`oxm`], [`wire`]: match encoding and the checked header view.
//! - [`conn`]: the sans-IO connection (negotiation, echo, xids, barrier,
//!   multipart dumps, atomic bundles).
//! - [`driver`]: [`Switch`], the tokio driver over a Unix socket
//!   (`<OVS_RUNDIR>/<bridge>.mgmt`) or TCP.
//!
//! ```no_run
//! # async fn f() -> openflow::Result<()> {
//! use openflow::{Change, Config, Flow, Match, Switch};
//! let (sw, mut packet_ins) = Switch::connect_unix("/run/sn/br-int.mgmt", Config::default()).await?;
//! let flow = Flow {
//!     table: 0,
//!     priority: 10,
//!     cookie: 0x1,
//!     matches: Match::new().in_port(1),
//!     actions: vec![],
//!     goto_table: Some(10),
//! };
//! sw.apply_bundle(vec![Change::Add(flow)]).await?;
//! let installed = sw.dump_flows(Default::default()).await?;
//! # Ok(()) }
//! ```

mod action;
pub mod conn;
pub mod driver;
pub mod error;
pub mod flow;
pub mod message;
pub mod meter;
pub mod oxm;
pub mod wire;

pub use conn::{Change, Config};
pub use driver::{PacketIns, Switch, Timeouts};
pub use error::{Error, Result};
pub use flow::{Action, CtNat, CtZone, Field, FieldMatch, Flow, FlowKey, Match, NatRange};
pub use message::{canonical, FlowStats, FlowStatsRequest, Message, OfpError, PacketIn, PacketOut};
