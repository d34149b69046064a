//! The XDP guard under BPF_PROG_TEST_RUN: the loaded program with private
//! maps, frames built field by field, and a reference model of the guard's
//! rules (docs/xdp-guard.md) written from the specification, not from the
//! program, to check the kernel's verdicts and counters against.

mod frames;
mod harness;
mod model;

pub use frames::{gw_of, message, v4, v6, Frag, UdpFrame};
pub use harness::GuardHarness;
pub use model::Model;

/// XDP return values.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// The listen port the tests guard.
pub const PORT: u16 = 51820;
