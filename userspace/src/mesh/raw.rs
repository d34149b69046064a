//! The mesh file as TOML says it, with spans for error messages.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshFile {
    pub interface: InterfaceSection,
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerSection>,
    #[serde(default)]
    pub policy: PolicySection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSection {
    pub name: Spanned<String>,
    #[serde(default)]
    pub addresses: Vec<Spanned<String>>,
    #[serde(default)]
    pub private_key_file: Option<Spanned<String>>,
    #[serde(default)]
    pub listen_port: Option<Spanned<u16>>,
    #[serde(default)]
    pub mtu: Option<Spanned<u32>>,
    #[serde(default)]
    pub fwmark: Option<Spanned<u32>>,
    /// The XDP guard on the underlay (docs/xdp-guard.md).
    #[serde(default)]
    pub guard: Option<Spanned<GuardSection>>,
    /// The flow table (docs/dataplane.md, *Flows*).
    #[serde(default)]
    pub flows: Option<Spanned<FlowsSection>>,
    /// Where peers reach the gateway (`host:port`), for exported peer
    /// configs (`wgbpf export wg-quick`).
    #[serde(default)]
    pub public_endpoint: Option<Spanned<String>>,
    /// DNS servers (or search domains) for exported peer configs.
    #[serde(default)]
    pub dns: Vec<Spanned<String>>,
    /// The eBPF programs' own log level (docs/metrics.md), "off" by default.
    #[serde(default)]
    pub program_log: Option<Spanned<String>>,
}

/// `[interface.flows]`: numbers as written (seconds, entries), checked by
/// [`super::flows`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowsSection {
    #[serde(default)]
    pub table_size: Option<Spanned<i64>>,
    #[serde(default)]
    pub new_per_second: Option<Spanned<i64>>,
    #[serde(default)]
    pub new_burst: Option<Spanned<i64>>,
    #[serde(default)]
    pub tcp_opening: Option<Spanned<i64>>,
    #[serde(default)]
    pub tcp_established: Option<Spanned<i64>>,
    #[serde(default)]
    pub tcp_closing: Option<Spanned<i64>>,
    #[serde(default)]
    pub other_opening: Option<Spanned<i64>>,
    #[serde(default)]
    pub other_established: Option<Spanned<i64>>,
    #[serde(default)]
    pub sweep_interval: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardSection {
    /// The interfaces the WireGuard packets arrive on.
    pub underlay: Vec<Spanned<String>>,
    #[serde(default)]
    pub handshake_rate: Option<Spanned<u32>>,
    #[serde(default)]
    pub handshake_burst: Option<Spanned<u32>>,
    #[serde(default)]
    pub allow_sources: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    pub name: Spanned<String>,
    #[serde(default)]
    pub public_key: Option<Spanned<String>>,
    #[serde(default)]
    pub allowed_ips: Vec<Spanned<String>>,
    #[serde(default)]
    pub endpoint: Option<Spanned<String>>,
    #[serde(default)]
    pub persistent_keepalive: Option<Spanned<u16>>,
    #[serde(default)]
    pub preshared_key_file: Option<Spanned<String>>,
    /// A key rotation in progress: the peer's old public key, accepted
    /// with `public_key` until `rotation_ends` (docs/wireguard.md).
    #[serde(default)]
    pub previous_public_key: Option<Spanned<String>>,
    #[serde(default)]
    pub rotation_ends: Option<Spanned<toml::value::Datetime>>,
    /// The peer's own interface addresses in its exported config (default:
    /// its host AllowedIPs).
    #[serde(default)]
    pub address: Vec<Spanned<String>>,
    /// AllowedIPs of the gateway in the peer's exported config (default:
    /// what the policy lets the peer reach, and the gateway).
    #[serde(default)]
    pub export_allowed_ips: Option<Vec<Spanned<String>>>,
    /// Identity for the policy: who uses this peer, its groups and tags.
    #[serde(default)]
    pub user: Option<Spanned<String>>,
    #[serde(default)]
    pub groups: Vec<Spanned<String>>,
    #[serde(default)]
    pub tags: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    #[serde(default)]
    pub audit: bool,
    /// Group name -> members: peer names, `user:U`, `tag:T`, `group:G`.
    #[serde(default)]
    pub groups: std::collections::BTreeMap<String, Vec<Spanned<String>>>,
    /// Host name -> address or CIDR.
    #[serde(default)]
    pub hosts: std::collections::BTreeMap<String, Spanned<String>>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleSection>,
    #[serde(default, rename = "test")]
    pub tests: Vec<TestSection>,
    // Imported policies (crate::import, docs/imports.md).
    /// A Tailscale/Headscale ACL file (HuJSON), relative to the mesh file.
    #[serde(default)]
    pub tailscale: Option<Spanned<String>>,
    /// A Netbird policy file (JSON), relative to the mesh file.
    #[serde(default)]
    pub netbird: Option<Spanned<String>>,
}

/// A policy test, with Tailscale's meaning: from `src`, every `accept`
/// destination must be reachable and every `deny` one must not.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSection {
    pub src: Spanned<String>,
    #[serde(default)]
    pub proto: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub accept: Vec<Spanned<String>>,
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    #[serde(default)]
    pub name: Option<String>,
    pub action: Spanned<String>,
    #[serde(default)]
    pub audit: bool,
    pub from: Vec<Spanned<String>>,
    pub to: Vec<Spanned<String>>,
    #[serde(default)]
    pub proto: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub ports: Vec<Spanned<toml::Value>>,
}
