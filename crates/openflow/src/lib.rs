//! OpenFlow 1.4 with the Nicira extensions the pipeline needs: a sans-IO
//! codec and a small async connection driver.

mod action;
pub mod conn;
pub mod driver;
pub mod error;
pub mod flow;
pub mod message;
pub mod oxm;
pub mod wire;

pub use conn::{Change, Config};
pub use driver::{PacketIns, Switch};
pub use error::{Error, Result};
pub use flow::{Action, Field, FieldMatch, Flow, FlowKey, Match};
pub use message::{canonical, Message, OfpError};
