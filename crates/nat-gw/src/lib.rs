//! EIP (1:1 NAT) and NAT gateway stages, gateway nodes and their failover.
//!
//! Not built yet: this crate has no behaviour. Its issue comes after the
//! overlay spine.
