//! wgbpf: an eBPF ACL data plane for WireGuard gateways, and its controller.
pub mod daemon;
pub mod dataplane;
pub mod enforce;
pub mod import;
pub mod mesh;
pub mod metrics;
pub mod policy;
pub mod wg;
