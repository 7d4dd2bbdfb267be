//! The node agent: keeps br-int in the state flowctl asks for.

pub mod control;
pub mod dhcp;
pub mod local;
pub mod pipeline;
pub mod reconcile;
