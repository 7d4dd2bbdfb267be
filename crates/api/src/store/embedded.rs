//! The embedded single-file backend (the default for one machine).
