//! `wgbpf genkey`, `pubkey` and `genpsk` against wg(8) itself: the same
//! formats, the same public keys, key files written 0600 and never over an
//! existing file, and a bad key never repeated in an error.

mod common;

use std::{
    io::Write,
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
};

fn run_with_stdin(program: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    common::code_out_err(&child.wait_with_output().unwrap())
}

fn wgbpf(args: &[&str], stdin: &str) -> (i32, String, String) {
    run_with_stdin(env!("CARGO_BIN_EXE_wgbpf"), args, stdin)
}

#[test]
fn keys_agree_with_wg() {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (code, private, _) = wgbpf(&["genkey"], "");
        assert_eq!(code, 0);
        assert!(
            private.ends_with('\n') && private.trim().len() == 44,
            "{private:?}"
        );
        assert!(seen.insert(private.clone()), "the same key twice");
        let (_, ours, _) = wgbpf(&["pubkey"], &private);
        let (code, theirs, err) = run_with_stdin("wg", &["pubkey"], &private);
        assert_eq!(code, 0, "wg pubkey refused our key: {err}");
        assert_eq!(ours, theirs);
        // And a key from wg(8) the other way round.
        let (_, wg_private, _) = run_with_stdin("wg", &["genkey"], "");
        let (_, ours, _) = wgbpf(&["pubkey"], &wg_private);
        let (_, theirs, _) = run_with_stdin("wg", &["pubkey"], &wg_private);
        assert_eq!(ours, theirs);
    }
    let (code, a, _) = wgbpf(&["genpsk"], "");
    let (_, b, _) = wgbpf(&["genpsk"], "");
    assert_eq!(code, 0);
    assert_ne!(a, b);
    assert_eq!(a.trim().len(), 44);

    // A bad private key is refused without being repeated.
    let secret = "not-a-key-but-could-be-secret";
    let (code, out, err) = wgbpf(&["pubkey"], secret);
    assert_eq!(code, 1);
    assert!(!out.contains(secret) && !err.contains(secret), "{err}");
}

#[test]
fn key_files_are_private_and_never_overwritten() {
    let dir = std::env::temp_dir().join(format!("wgbpf-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("wg0.key");
    let p = path.to_str().unwrap();
    let (code, out, err) = wgbpf(&["genkey", p], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "the key went to stdout too");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let first = std::fs::read_to_string(&path).unwrap();
    // What wgbpf itself accepts as a key file.
    assert!(wgbpf::wg::read_key_file(&path).is_ok());
    let (code, _, err) = wgbpf(&["genkey", p], "");
    assert_eq!(code, 1);
    assert!(err.contains("must not exist"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
    // Not through a symlink either.
    let link = dir.join("link.key");
    std::os::unix::fs::symlink(dir.join("elsewhere.key"), &link).unwrap();
    let (code, _, _) = wgbpf(&["genpsk", link.to_str().unwrap()], "");
    assert_eq!(code, 1);
    assert!(!dir.join("elsewhere.key").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
