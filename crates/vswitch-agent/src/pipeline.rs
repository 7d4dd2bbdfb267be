//! Renders a node's desired state into OpenFlow flows.
