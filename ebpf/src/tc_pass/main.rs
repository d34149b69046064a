//! A test program only, never loaded by wgbpf: a TC classifier that accepts
//! every packet and ends the tcx chain (`TC_ACT_OK` is `TCX_PASS`). The
//! tests attach it beside wgbpf's programs to check that wgbpf runs first
//! and that drift repair notices when it no longer does.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};

#[classifier]
pub fn wgbpf_test_pass(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
