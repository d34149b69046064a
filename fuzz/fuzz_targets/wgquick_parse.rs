//! The wg-quick parser on any input (NUL bytes separate several files); a
//! mesh file it writes must parse.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wgbpf::fuzzing::wgquick(data);
});
