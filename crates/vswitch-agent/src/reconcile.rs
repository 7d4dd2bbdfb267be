//! Diffs desired flows against installed ones.
