//! The node agent: keeps br-int in the state flowctl asks for.

pub mod openflow;
