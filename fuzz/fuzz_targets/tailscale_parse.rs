//! The HuJSON normalizer, the Tailscale ACL and Netbird policy translations,
//! and their application to a small mesh, on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wgbpf::fuzzing::tailscale(data);
});
