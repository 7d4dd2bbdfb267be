//! DHCP answered by the agent from packet-ins.
