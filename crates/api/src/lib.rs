//! The northbound API: the logical model, its validation, the REST server
//! and the `Store` it keeps everything in.

pub mod http;
pub mod model;
pub mod operation;
pub mod store;
