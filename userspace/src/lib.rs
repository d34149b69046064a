//! wgbpf: an eBPF ACL data plane for WireGuard gateways, and its controller.
pub mod daemon;
pub mod dataplane;
pub mod doctor;
pub mod enforce;
pub mod export;
pub mod fleet;
/// The fuzz targets' bodies (fuzz/), only with the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod ifname;
pub mod import;
pub mod mesh;
pub mod metrics;
pub mod netlink;
pub mod plan;
pub mod policy;
pub mod source;
pub mod utc;
pub mod wg;
