//! Compute and storage plug-ins beside the network: instance drivers, NIC
//! hot-plug, volumes and placement.
//!
//! Not built yet: this crate has no behaviour.
