//! flowctl: turns the logical model into per-node state and streams it to
//! the agents.
