//! flowctl: turns the logical model into per-node state and streams it to
//! the agents.

pub mod compile;
pub mod hub;

#[cfg(test)]
mod testutil;
