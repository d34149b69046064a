//! deploy/wgbpf@.service as systemd reads it (root; systemd-analyze and
//! strace, installed by scripts/setup.sh). There is no systemd as PID 1 on
//! the test machines, so the unit is checked offline and its commands are
//! run as the unit would run them:
//! - `systemd-analyze verify` accepts it without a single warning;
//! - `systemd-analyze security --offline` rates it, with each hardening
//!   setting the unit claims in effect;
//! - the daemon, started with the unit's own `ExecStart=` line (under the
//!   unit's capability bounding set) and reloaded with its `ExecReload=`,
//!   makes only system calls that the unit's `SystemCallFilter=` allows
//!   (traced with strace): a filter that missed one would kill it with
//!   EPERM under systemd;
//! - the capability set the other daemon tests use is the unit's.

mod common;

use std::{
    collections::BTreeSet,
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{print_log_tails, stop, unload, TempDir, DAEMON_CAPS};
use testbed::{Testbed, TestbedSpec};

const UNIT: &str = include_str!("../../deploy/wgbpf@.service");
const POLICY: &str = r#"
[policy]

[[policy.rule]]
action = "accept"
from = ["alice"]
to = ["bob"]
proto = "udp"
ports = ["5000"]
"#;

/// The values of `key=` in the unit's [Service] section, in order.
fn settings(key: &str) -> Vec<String> {
    UNIT.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

fn setting(key: &str) -> String {
    let v = settings(key);
    assert_eq!(v.len(), 1, "{key}= set {} times", v.len());
    v[0].clone()
}

/// An `Exec*=` line as systemd would run it for instance `iface`, with
/// the mesh file and binary of this test.
fn exec_line(key: &str, iface: &str, cfg: &Path, metrics: &str) -> Vec<String> {
    let line = setting(key)
        .replace("/etc/wgbpf/%i.toml", cfg.to_str().unwrap())
        .replace("%i", iface)
        .replace("${WGBPF_METRICS_ADDR}", metrics);
    let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    assert_eq!(words[0], "/usr/local/bin/wgbpf", "{key}: {line}");
    words[0] = env!("CARGO_BIN_EXE_wgbpf").to_string();
    words
}

/// The unit file, written where systemd-analyze can load it, with the
/// binary path pointing at this build.
fn unit_dir(dir: &Path) -> PathBuf {
    let text = UNIT.replace("/usr/local/bin/wgbpf", env!("CARGO_BIN_EXE_wgbpf"));
    std::fs::write(dir.join("wgbpf@.service"), text).unwrap();
    dir.join("wgbpf@wg0.service")
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn systemd_analyze_verify_accepts_the_unit_without_warnings() {
    let dir = TempDir::create(
        std::env::temp_dir().join(format!("wgbpf-unit-verify-{}", std::process::id())),
    );
    let unit = unit_dir(&dir.0);
    // man:wgbpf(8) exists only once installed (`wgbpf manpage`).
    let (ok, said) = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit));
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );

    // The check can fail: a misspelt setting is reported.
    let broken = dir.0.join("broken@.service");
    std::fs::write(
        &broken,
        UNIT.replace("NotifyAccess=main", "NotifyAccess=mian"),
    )
    .unwrap();
    let (_, said) = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.0.join("broken@wg0.service")));
    assert!(said.contains("notify access"), "{said}");
}

#[test]
fn the_unit_is_hardened_as_it_says() {
    let dir = TempDir::create(
        std::env::temp_dir().join(format!("wgbpf-unit-security-{}", std::process::id())),
    );
    let unit = unit_dir(&dir.0);
    let (ok, said) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit));
    assert!(ok, "{said}");
    let score: f64 = said
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{said}"));
    // 4.4 before this unit was hardened; the rest is what wgbpf needs
    // (root with CAP_BPF/CAP_NET_ADMIN, the host's network, netlink).
    assert!(score <= 2.5, "exposure {score}:\n{said}");
    for passed in [
        "ProtectSystem=",
        "ProtectKernelTunables=",
        "ProtectKernelLogs=",
        "PrivateDevices=",
        "ProtectProc=",
        "UMask=",
        "SystemCallFilter=~@mount",
        "NotifyAccess=",
    ] {
        assert!(
            said.lines()
                .any(|l| l.trim_start().starts_with('✓') && l.contains(passed)),
            "{passed} not in effect:\n{said}"
        );
    }
    // The capabilities the daemon tests run with are the unit's.
    let caps: BTreeSet<String> = setting("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect();
    let tested: BTreeSet<String> = DAEMON_CAPS
        .split(',')
        .filter_map(|c| c.strip_prefix('+'))
        .map(str::to_string)
        .collect();
    assert_eq!(caps, tested);
}

/// The system calls `SystemCallFilter=` allows: its groups expanded with
/// systemd-analyze, as systemd expands them.
fn allowed_syscalls() -> BTreeSet<String> {
    fn expand(name: &str, out: &mut BTreeSet<String>, seen: &mut BTreeSet<String>) {
        if !name.starts_with('@') {
            out.insert(name.to_string());
            return;
        }
        if !seen.insert(name.to_string()) {
            return;
        }
        let (ok, said) = run(Command::new("systemd-analyze").args(["syscall-filter", name]));
        assert!(ok, "{said}");
        for l in said.lines().skip(1) {
            let w = l.trim();
            if !w.is_empty() && !w.starts_with('#') {
                expand(w, out, seen);
            }
        }
    }
    let mut allowed = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut denied = BTreeSet::new();
    for line in settings("SystemCallFilter") {
        match line.strip_prefix('~') {
            Some(deny) => deny
                .split_whitespace()
                .for_each(|n| expand(n, &mut denied, &mut BTreeSet::new())),
            None => line
                .split_whitespace()
                .for_each(|n| expand(n, &mut allowed, &mut seen)),
        }
    }
    assert!(allowed.contains("read") && allowed.contains("bpf"));
    &allowed - &denied
}

/// The system calls named in an `strace -f` log.
fn traced_syscalls(log: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| {
            // "PID name(args...) = ret", "PID <... name resumed>...".
            let rest = l.split_once(' ')?.1.trim_start();
            let rest = rest.strip_prefix("<... ").unwrap_or(rest);
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty() && !rest.starts_with("+++") && !rest.starts_with("---"))
                .then_some(name)
        })
        .collect()
}

#[test]
fn the_daemon_stays_inside_the_units_system_call_filter() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let gw = mesh.gateway.clone();
    let iface = gw.wg_if.clone();
    let dir = TempDir::create(std::env::temp_dir().join(format!("wgbpf-unit-{}", mesh.run_id())));
    let _unload = common::Unload(&gw);
    let cfg = dir.0.join("mesh.toml");
    std::fs::write(
        &cfg,
        common::managed_mesh_file(&mesh, POLICY, &mesh.private_key_file(&gw)),
    )
    .unwrap();
    let port = common::free_port(&gw.netns);
    let metrics = format!("127.0.0.1:{port}");

    // ExecStartPre, then ExecStart under strace (the daemon's threads too).
    let pre = exec_line("ExecStartPre", &iface, &cfg, &metrics);
    let (ok, said) = run(Command::new(&pre[0]).args(&pre[1..]));
    assert!(ok, "ExecStartPre: {said}");
    let start = exec_line("ExecStart", &iface, &cfg, &metrics);
    let trace = dir.0.join("strace.log");
    let mut daemon = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", gw.netns))
        .args(["--", "setpriv", "--bounding-set", DAEMON_CAPS, "--"])
        .args(["strace", "-f", "-qq", "-o"])
        .arg(&trace)
        .args(&start)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(dir.0.join("wgbpf.log")).unwrap())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(120);
    while common::scrape(&gw.netns, port).is_err() {
        if let Ok(Some(s)) = daemon.try_wait() {
            print_log_tails(&dir.0, &["wgbpf.log"], 40);
            panic!("the daemon exited: {s}");
        }
        assert!(Instant::now() < deadline, "no metrics");
        std::thread::sleep(Duration::from_millis(200));
    }
    // ExecReload, a scrape, a drift pass, then systemd's stop.
    let reload = exec_line("ExecReload", &iface, &cfg, &metrics);
    let (ok, said) = run(Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", gw.netns))
        .arg("--")
        .args(&reload));
    assert!(ok, "ExecReload: {said}");
    common::scrape(&gw.netns, port).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    // SIGTERM to wgbpf itself (strace's child), as systemd sends it.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", daemon.id())).unwrap();
    let wgbpf: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: a signal to a process this test started.
    unsafe { libc::kill(wgbpf, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Ok(Some(s)) = daemon.try_wait() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break stop(&mut daemon, Duration::from_secs(5));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    unload(&gw);

    let used = traced_syscalls(&trace);
    assert!(
        used.contains("bpf") && used.contains("flock"),
        "the trace is not the daemon's: {used:?}"
    );
    // execve is the exec systemd itself does into the filter.
    let allowed = allowed_syscalls();
    let outside: Vec<&String> = used
        .difference(&allowed)
        .filter(|s| *s != "execve")
        .collect();
    assert!(
        outside.is_empty(),
        "system calls SystemCallFilter= would refuse: {outside:?}"
    );
}
