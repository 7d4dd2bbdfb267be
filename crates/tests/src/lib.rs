//! The lab: simulated nodes and VMs in network namespaces with real Open
//! vSwitch, and the packet-level scenarios.
//!
//! Safety: the lab never creates, moves or deletes an interface in the root
//! namespace; every namespace, directory and process carries a per-run name
//! (`sn<pid%10000><counter>`) and is removed on drop, also on panic.

pub mod bins;
pub mod cloud;
pub mod error;
pub mod etcd;
pub mod ha;
pub mod lab;
pub mod netns;
pub mod ovn;
pub mod ovs;
pub mod plug;
pub mod process;
pub mod proxy;
pub mod traffic;
pub mod util;

pub use cloud::{Answer, ApiClient, Cloud};
pub use error::{LabError, Result};
pub use lab::{Lab, LabConfig, Node, Vm, VmAddr, VmSpec};
pub use netns::Netns;
pub use ovs::OvsSandbox;
pub use plug::VifPlug;
pub use process::Proc;
pub use util::{
    cleanup_stale, require_root_and_ovs, require_root_and_tools, wait_for, wait_until, RunDir,
};
