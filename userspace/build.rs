//! Builds the eBPF programs (../ebpf) for bpfel-unknown-none and leaves the
//! object in OUT_DIR, where src/dataplane/mod.rs (`OBJECT`) embeds it.
//!
//! The eBPF crate needs `-Z build-std=core` and a rustc whose LLVM matches
//! bpf-linker's: Debian's rustc-web at /usr/bin/rustc (see scripts/setup.sh).
//! WGBPF_EBPF_RUSTC overrides that path. `WGBPF_SKIP_EBPF=1` builds the
//! userspace crates without the eBPF toolchain (editors, `cargo check`): the
//! object is then empty and loading the data plane says so.
use std::{env, path::PathBuf, process::Command};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let ebpf = root.join("ebpf");
    for dir in [
        "ebpf/src",
        "ebpf/Cargo.toml",
        "ebpf/Cargo.lock",
        "common/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=WGBPF_EBPF_RUSTC");
    println!("cargo:rerun-if-env-changed=WGBPF_SKIP_EBPF");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    // The TC programs, the XDP guard for the underlay, a program for the
    // tests and the benchmark's yardsticks (neither loaded by wgbpf).
    const OBJECTS: [&str; 4] = [
        "wgbpf-ebpf",
        "wgbpf-xdp-guard",
        "wgbpf-tc-pass",
        "wgbpf-acl-probe",
    ];
    if env::var("WGBPF_SKIP_EBPF").is_ok_and(|v| v == "1") {
        for name in OBJECTS {
            std::fs::write(out.join(format!("{name}.o")), b"").expect("writing an empty object");
        }
        return;
    }
    // The programs read kernel structures as the target architecture lays
    // them out (aya-ebpf's `bpf_target_arch`): the build target's, not ours.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let target_dir = out.join("ebpf-target");
    let rustc = env::var("WGBPF_EBPF_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());

    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&ebpf)
        .args(["build", "--release", "-Z", "build-std=core"])
        .args(["--target", "bpfel-unknown-none", "--target-dir"])
        .arg(&target_dir)
        // Only this nested build may use unstable features.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTC", &rustc)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        );
    for key in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(key);
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run cargo for the eBPF build: {e}");
    });
    if !status.success() {
        panic!(
            "building the eBPF programs failed ({status}); is the toolchain installed? \
             run `cargo xtask setup` (needs {rustc}, rust-web-src and bpf-linker)"
        );
    }
    for name in OBJECTS {
        let obj = target_dir.join("bpfel-unknown-none/release").join(name);
        std::fs::copy(&obj, out.join(format!("{name}.o")))
            .unwrap_or_else(|e| panic!("copy {}: {e}", obj.display()));
    }
}
