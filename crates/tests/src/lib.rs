//! The lab: simulated nodes and VMs in network namespaces with real Open
//! vSwitch, and the packet-level scenarios.
