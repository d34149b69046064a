//! Packets through the real programs (BPF_PROG_TEST_RUN) against the
//! reference parser and evaluator: any disagreement panics. Needs root (the
//! programs are loaded once, at the first input). The input's layout is in
//! bpf-tests/src/packet_diff.rs. At exit it prints how many packets ran
//! (libFuzzer counts inputs; one input is a policy and many packets).
#![no_main]

use std::sync::atomic::Ordering;

use libfuzzer_sys::fuzz_target;
use wgbpf_bpf_tests::packet_diff::{load, run, PACKETS};

extern "C" fn report_packets() {
    eprintln!(
        "packet_diff: {} packets run",
        PACKETS.load(Ordering::Relaxed)
    );
}

fuzz_target!(
    init: {
        // SAFETY: registering a function without arguments to run at exit.
        unsafe { libc::atexit(report_packets) };
        // Before the first input, outside libFuzzer's per-input timeout.
        load();
    },
    |data: &[u8]| {
        run(data);
    }
);
