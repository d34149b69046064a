//! Support for running wgbpf's programs in the kernel with BPF_PROG_TEST_RUN.
pub mod bench_policies;
pub mod differential;
pub mod dpbench;
pub mod fixtures;
pub mod harness;
pub mod packet_diff;
pub mod packets;
pub mod policies;
pub mod reference_parse;
pub mod traffic;
pub mod xdp;
