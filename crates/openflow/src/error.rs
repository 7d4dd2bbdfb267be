//! The crate's one error type.

use crate::message::OfpError;

/// What went wrong while decoding, encoding or talking to a switch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes end before the structure named here does.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A length field disagrees with the bytes around it.
    #[error("bad length {len} in {what}")]
    BadLength { what: &'static str, len: usize },
    /// The message is not OpenFlow 1.4.
    #[error("unsupported OpenFlow version {0:#04x}")]
    BadVersion(u8),
    /// A well-formed value this codec does not model (and cannot keep as
    /// unknown without losing meaning).
    #[error("unsupported {what} {value:#x}")]
    Unsupported { what: &'static str, value: u64 },
    /// The value does not fit the field (or the message would exceed 64 KiB).
    #[error("value too large for {0}")]
    TooLarge(&'static str),
    /// A value Open vSwitch would refuse (bad NAT range, conjunction
    /// clause, meter placement...), caught before sending.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Hello exchange found no common version.
    #[error("no common OpenFlow version (peer bitmap {peer_bitmap:#x})")]
    VersionNegotiation { peer_bitmap: u32 },
    /// The switch answered a request with an OpenFlow error.
    #[error("switch error {0}")]
    Switch(OfpError),
    /// A bundle was rejected; nothing in it was applied.
    #[error("bundle rejected: {error}{}", change_suffix(*.change))]
    Bundle {
        error: OfpError,
        /// Index into the change list of the message the switch blamed, if
        /// the error names one.
        change: Option<usize>,
    },
    /// The reply did not have the expected type.
    #[error("unexpected reply {0}")]
    UnexpectedReply(&'static str),
    /// The connection to the switch is gone.
    #[error("connection closed")]
    Closed,
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("i/o")]
    Io(#[from] std::io::Error),
}

fn change_suffix(change: Option<usize>) -> String {
    match change {
        Some(i) => format!(" (change #{i})"),
        None => String::new(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
