//! flowctl: turns the logical model into per-node state and streams it to
//! the agents.
//!
//! - [`compile`]: the model cache and per-node compilation (pure).
//! - [`hub`]: per-node states and delta history; what to send whom (pure).
//! - [`status`]: NIC status writes from acks, nacks and moves (pure).
//! - [`operations`]: operation transitions from acks and nacks (pure).
//! - [`service`]: the drivers: store watch → hub, status writes.
//! - [`server`]: the agent protocol over HTTP/2 and `/metrics`.
//! - [`duties`]: singleton duties under a store lease (history compaction).
//! - [`callbacks`]: the singleton duty that delivers operation callbacks.
//! - [`cli`]: the operator CLI against the REST API.

pub mod callbacks;
pub mod cli;
pub mod compile;
pub mod duties;
pub mod hub;
pub mod metrics;
pub mod operations;
pub mod server;
pub mod service;
pub mod status;

#[cfg(test)]
mod testutil;

/// Everything that can go wrong in flowctl.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store")]
    Store(#[from] api::store::StoreError),
    #[error("agent protocol framing")]
    Frame(#[from] proto::frame::FrameError),
    #[error("I/O")]
    Io(#[from] std::io::Error),
    #[error("HTTP")]
    Http(#[from] hyper::Error),
    #[error("request to {url} failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the API refused the request (HTTP {status}): {detail}")]
    Api { status: u16, detail: String },
    #[error("operation {id} {detail}")]
    Operation { id: String, detail: String },
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
