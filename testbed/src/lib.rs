//! A real WireGuard mesh of network namespaces for wgbpf's tests and demo.
//!
//! The host kernel has no WireGuard module, so every host of the mesh runs
//! Debian's userspace `wireguard-go` inside its own network namespace. The
//! gateway namespace is joined to each peer namespace by its own veth pair (the
//! underlay); every peer has the gateway as its only WireGuard peer, with the
//! whole tunnel subnet as AllowedIPs, so peer-to-peer traffic is forwarded by
//! the gateway, which is where wgbpf's data plane sits.
//!
//! ```text
//!   alice (10.77.0.2) ──veth 198.18.1.0/24──┐
//!                                           gateway (10.77.0.1, forwarding)
//!   bob   (10.77.0.3) ──veth 198.18.2.0/24──┘
//! ```
//!
//! Everything is named after a per-run id, so concurrent meshes (even in one
//! process) never collide, and everything is removed again by
//! [`Testbed::down`] or, best effort, by `Drop` — also when [`Testbed::up`] fails
//! halfway. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for setns).
//!
//! Traffic helpers ([`tcp_connect`], [`udp_roundtrip`], ...) open their
//! sockets from a short-lived thread that has entered the host's namespace
//! with setns(2), so they need no external tools and honour exact timeouts.

mod exec;
mod host;
mod mesh;
mod meshfile;
mod names;
mod netns;
mod traffic;

pub use host::Host;
pub use mesh::{sweep_stale, Testbed, TestbedSpec, FAULT_STAGES};
pub use meshfile::gateway_mesh_file;
pub use traffic::{
    ping, tcp_connect, tcp_listen, udp_echo, udp_roundtrip, udp_send, udp_sink, Listener,
};
