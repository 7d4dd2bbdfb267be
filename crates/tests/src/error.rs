//! The lab's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while building, driving or tearing down the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command ran but exited unsuccessfully.
    #[error("`{cmd}` exited with {status}: {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    /// A command could not be started at all.
    #[error("could not run `{cmd}`")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    /// A file system operation on a lab path failed.
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A condition did not become true in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout { what: String, timeout: Duration },
    /// The machine lacks root or a tool the lab needs.
    #[error("lab requirements not met: {0}")]
    Requirements(String),
    /// A lab call was given something it cannot work with.
    #[error("invalid lab request: {0}")]
    Invalid(String),
    /// Output of a tool could not be understood.
    #[error("could not parse {what}: {output}")]
    Parse { what: &'static str, output: String },
    /// The stacknet API could not be reached or answered unexpectedly.
    #[error("API {method} {path}: {detail}")]
    Api {
        method: &'static str,
        path: String,
        detail: String,
    },
    /// A data-path check ran but its result was wrong.
    #[error("check failed: {0}")]
    Check(String),
    /// Teardown cleans up everything it can and reports every failure.
    #[error("teardown failed: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Teardown(Vec<LabError>),
}

/// Result with [`LabError`].
pub type Result<T, E = LabError> = std::result::Result<T, E>;
