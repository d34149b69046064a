//! Interface names from the command line are checked as the kernel checks
//! them, before anything is touched: `unload -i ..` once joined the name to
//! the pin directory unchecked and removed every pin on the bpf filesystem.

mod common;

use std::process::Command;

fn wgbpf(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wgbpf"))
        .args(args)
        .output()
        .unwrap();
    common::code_out_err(&out)
}

#[test]
fn unload_refuses_names_that_leave_the_pin_directory() {
    // A directory of our own beside wgbpf's on the bpf filesystem, standing
    // for someone else's pins.
    let victim_name = format!("wgbpf-victim-{}", std::process::id());
    let victim = std::path::Path::new("/sys/fs/bpf").join(&victim_name);
    std::fs::create_dir_all(&victim).unwrap();
    struct Cleanup<'a>(&'a std::path::Path);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    let _cleanup = Cleanup(&victim);
    let escape = format!("../{victim_name}");
    for bad in [
        "..",
        ".",
        escape.as_str(),
        "a/b",
        "wg 0",
        "wg0123456789abcd",
        "",
    ] {
        for cmd in ["unload", "counters", "show"] {
            let (code, out, err) = wgbpf(&[cmd, "-i", bad]);
            assert_eq!(code, 2, "{cmd} -i {bad:?}: {out}{err}");
            assert!(
                err.contains("is not an interface name"),
                "{cmd} -i {bad:?}: {err}"
            );
        }
        assert!(
            victim.exists(),
            "unload -i {bad:?} removed {}",
            victim.display()
        );
    }
    // A good name that has nothing loaded: nothing to remove, said so.
    let (code, out, _) = wgbpf(&["unload", "-i", "wgbnothing0"]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing loaded"), "{out}");
    assert!(victim.exists());
}
