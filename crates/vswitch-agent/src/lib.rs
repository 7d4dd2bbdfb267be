//! The node agent: keeps br-int in the state flowctl asks for.
//!
//! [`agent`] is the node loop; [`pipeline`] renders the desired state into
//! flows, [`reconcile`] diffs them against the switch, [`switch`] applies
//! them over OpenFlow, [`control`] streams the state from flowctl, [`dhcp`]
//! answers DHCP from packet-ins, [`neighbor`] resolves and announces
//! addresses on external networks, and [`local`] keeps the last applied
//! state on disk for headless restarts.

pub mod agent;
pub mod control;
pub mod dhcp;
pub mod local;
pub mod neighbor;
pub mod pipeline;
pub mod reconcile;
pub mod switch;
