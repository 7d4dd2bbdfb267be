//! OpenFlow 1.4 with the Nicira extensions the pipeline needs: a sans-IO
//! codec and a small async connection driver.

pub mod flow;

pub use flow::{Action, Field, FieldMatch, Flow, FlowKey, Match};
