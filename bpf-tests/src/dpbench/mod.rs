//! `bench-dataplane`: real packets through a veth pair and through a
//! wireguard-go tunnel, with no filter, wgbpf, nftables with one rule per
//! (peer, port), and nftables with a set. See docs/benchmarks.md.

pub mod acl;
pub mod args;
pub mod case;
pub mod cleanup;
pub mod counters;
pub mod cpu;
pub mod frames;
pub mod generator;
pub mod measure;
pub mod netns;
pub mod nft;
pub mod stats;
pub mod tcp;
pub mod tunnel;
pub mod veth;
pub mod wgbpf;
