//! The agent side of the agent protocol: a client that streams state from flowctl.
