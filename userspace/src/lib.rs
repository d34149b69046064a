//! wgbpf: an eBPF ACL data plane for WireGuard gateways, and its controller.
pub mod dataplane;
pub mod enforce;
pub mod mesh;
pub mod policy;
pub mod wg;
