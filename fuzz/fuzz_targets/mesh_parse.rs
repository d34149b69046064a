//! The mesh file parser on any input: errors are fine, panics are not. A
//! mesh that parses also runs its tests (the reference evaluator).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wgbpf::fuzzing::mesh(data);
});
