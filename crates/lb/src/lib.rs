//! Distributed load balancer stages, backend selection and health checks.
//!
//! Not built yet: this crate has no behaviour. Its issue comes after the
//! overlay spine.
