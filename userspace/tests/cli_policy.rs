//! The policy commands as an operator runs them: the examples check, a
//! failing test is named by file and line and exits 1, and `load` refuses a
//! policy whose tests fail before touching the kernel.

mod common;

use std::process::Command;

fn wgbpf(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wgbpf"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    common::code_out_err(&out)
}

#[test]
fn examples_pass_their_own_tests() {
    for file in ["examples/static-mesh.toml", "examples/tailscale-style.toml"] {
        let (code, out, err) = wgbpf(&["policy", "check", file, "--json"]);
        assert_eq!(code, 0, "{file}: {out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(v["checks"].as_u64().unwrap() >= 10, "{v}");
        assert_eq!(v["failures"].as_array().unwrap().len(), 0);
    }
}

fn broken_copy(name: &str) -> (std::path::PathBuf, String) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/static-mesh.toml"
    ))
    .unwrap()
    // The test now claims laptops may reach the database.
    .replace(
        "deny = [\"server:5432\", \"office:22\", \"gateway:22\"]",
        "deny = [\"office:22\", \"gateway:22\"]",
    )
    .replace(
        "accept = [\"server:22\", \"server:443\", \"gateway:80\"]",
        "accept = [\"server:22\", \"server:443\", \"gateway:80\", \"server:5432\"]",
    );
    let dir = std::env::temp_dir().join(format!("wgbpf-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mesh.toml");
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

#[test]
fn a_failing_test_is_named_and_exits_1() {
    let (path, text) = broken_copy("check");
    let (code, out, _) = wgbpf(&["policy", "check", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    let line = text
        .lines()
        .position(|l| l.contains("\"server:5432\"]"))
        .unwrap()
        + 1;
    assert!(
        out.contains(&format!("mesh.toml:{line}:")) && out.contains("db-only-from-office"),
        "{out}"
    );
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn load_refuses_a_policy_whose_tests_fail_before_touching_the_kernel() {
    let (path, _) = broken_copy("load");
    let (code, _, err) = wgbpf(&["load", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("policy test(s) failed, nothing applied"),
        "{err}"
    );
    // The example's interface does not exist here; the refusal came first.
    assert!(!wgbpf::dataplane::pin_dir("wg0").exists());
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn explain_names_the_deciding_rule() {
    let (code, out, err) = wgbpf(&[
        "policy",
        "explain",
        "-c",
        "examples/static-mesh.toml",
        "--from",
        "laptop-ben",
        "--to",
        "server",
        "--port",
        "5432",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "deny 10.10.0.4 -> 10.10.0.5 tcp/5432: db-only-from-office"
    );
    let (code, _, err) = wgbpf(&[
        "policy",
        "explain",
        "-c",
        "examples/static-mesh.toml",
        "--from",
        "nobody",
        "--to",
        "server",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--from: unknown name `nobody`"), "{err}");
}

#[test]
fn load_runs_the_policy_tests_before_it_creates_the_interface() {
    // A file that manages a kernel WireGuard interface which does not
    // exist, with a failing policy test: the refusal must come before the
    // interface step (which, here without the module, would fail with its
    // own error, and on a kernel with WireGuard would create the link).
    let iface = format!("wgbo{}", std::process::id() % 100_000);
    let (path, text) = broken_copy("order");
    let dir = path.parent().unwrap();
    let key = dir.join("gw.key");
    {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&key)
            .unwrap();
        writeln!(f, "{}", wgbpf::wg::Key::from_bytes([9; 32]).to_base64()).unwrap();
    }
    let managed = text.replacen(
        "name = \"wg0\"",
        &format!(
            "name = \"{iface}\"\nprivate_key_file = \"{}\"",
            key.display()
        ),
        1,
    );
    assert!(managed.contains(&iface), "the example names wg0");
    std::fs::write(&path, managed).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wgbpf"))
        .args(["load", "-c", path.to_str().unwrap()])
        .env("WGBPF_WG_BACKEND", "kernel")
        .output()
        .unwrap();
    let (code, _, err) = common::code_out_err(&out);
    assert_eq!(code, 1);
    assert!(
        err.contains("policy test(s) failed, nothing applied"),
        "the tests must run first: {err}"
    );
    let link = Command::new("ip")
        .args(["link", "show", &iface])
        .output()
        .unwrap();
    assert!(!link.status.success(), "{iface} was created");
    assert!(!wgbpf::dataplane::pin_dir(&iface).exists());
    std::fs::remove_dir_all(dir).unwrap();
}
