//! `wgbpf doctor` on a real gateway namespace (root, wireguard-go): made
//! healthy, then made to fail each check in turn — the tunnel MTU too big
//! for the underlay, forwarding off while the policy routes through the
//! gateway, strict rp_filter, GRO off on the underlay, no data plane —
//! each found by its check, with its fix, and the exit status following
//! the worst finding. (The socket-buffer limits are global sysctls: the
//! test reads what the host has and does not change them.)

mod common;

use std::os::fd::AsRawFd;

use common::{in_netns, wgbpf, wgbpf_code, TempDir, Unload};
use serde_json::Value;
use testbed::{gateway_mesh_file, Host, Testbed, TestbedSpec};

const POLICY: &str = r#"
[policy]

[[policy.rule]]
action = "accept"
from = ["alice"]
to = ["bob"]
proto = "udp"
ports = [5000]
"#;

fn sysctl(host: &Host, kv: &str) {
    host.run(&["sysctl", "-qw", kv]).unwrap();
}

/// GRO on or off on `iface` in `host`'s namespace (ETHTOOL_SGRO).
fn set_gro(host: &Host, iface: &str, on: bool) {
    let iface = iface.to_string();
    in_netns(&host.netns, move || {
        #[repr(C)]
        struct Value {
            cmd: u32,
            data: u32,
        }
        let mut v = Value {
            cmd: 0x2c,
            data: on as u32,
        };
        let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
        // SAFETY: a zeroed ifreq, its name, and a pointer to `v` for the
        // duration of the call.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(iface.as_bytes()) {
            *d = *s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = (&mut v as *mut Value).cast();
        if unsafe { libc::ioctl(sock.as_raw_fd(), 0x8946, &mut ifr) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })
    .unwrap();
}

/// `wgbpf doctor --json`: (exit status, findings).
fn doctor(gw: &Host, cfg: &str) -> (i32, Vec<Value>) {
    let (code, out, err) = wgbpf_code(gw, &["doctor", "-c", cfg, "--underlay", "ul1", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!(v["status"], code, "{v}");
    (code, v["findings"].as_array().unwrap().clone())
}

fn worst(findings: &[Value], check: &str) -> String {
    let rank = |s: &str| {
        ["ok", "info", "warning", "error"]
            .iter()
            .position(|x| *x == s)
            .unwrap()
    };
    findings
        .iter()
        .filter(|f| f["check"] == check)
        .map(|f| f["severity"].as_str().unwrap().to_string())
        .max_by_key(|s| rank(s))
        .unwrap_or_else(|| "none".into())
}

/// The exit status the findings call for.
fn status_of(findings: &[Value]) -> i32 {
    let all: Vec<&str> = findings
        .iter()
        .map(|f| f["severity"].as_str().unwrap())
        .collect();
    if all.contains(&"error") {
        2
    } else if all.contains(&"warning") {
        1
    } else {
        0
    }
}

#[test]
fn doctor_finds_each_misconfiguration() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let gw = &mesh.gateway;
    let dir = TempDir::create(std::env::temp_dir().join(format!("wgbpf-doctor-{}", mesh.run_id())));
    let cfg = dir.0.join("mesh.toml");
    std::fs::write(&cfg, gateway_mesh_file(&mesh, POLICY)).unwrap();
    let cfg = cfg.to_str().unwrap();
    let _unload = Unload(gw);
    let (ok, _, err) = wgbpf(gw, &["load", "-c", cfg]);
    assert!(ok, "{err}");
    let wg_if = gw.wg_if.as_str();

    // Healthy.
    sysctl(gw, "net.ipv4.ip_forward=1");
    sysctl(gw, "net.ipv6.conf.all.forwarding=1");
    sysctl(gw, "net.ipv4.conf.all.rp_filter=2");
    sysctl(gw, &format!("net.ipv4.conf.{wg_if}.rp_filter=2"));
    gw.run(&["ip", "link", "set", wg_if, "mtu", "1420"])
        .unwrap();
    gw.run(&["ip", "link", "set", "ul1", "mtu", "1500"])
        .unwrap();
    set_gro(gw, "ul1", true);
    let (code, f) = doctor(gw, cfg);
    for (check, want) in [
        ("mtu", "ok"),
        ("forwarding", "ok"),
        ("rp_filter", "ok"),
        ("dataplane", "ok"),
        ("flow_table", "ok"),
        ("offloads", "none"),
        ("keepalive", "info"),
    ] {
        assert_eq!(worst(&f, check), want, "{check}: {f:#?}");
    }
    assert_eq!(code, status_of(&f));
    assert!(
        code <= 1,
        "only the host's global socket buffers may warn: {f:#?}"
    );

    // Each fault, alone, then put right.
    type Step<'a> = (
        &'a str,
        &'a str,
        i32,
        Box<dyn Fn() + 'a>,
        Box<dyn Fn() + 'a>,
    );
    let steps: Vec<Step> = vec![
        (
            "mtu",
            "error",
            2,
            Box::new(|| {
                gw.run(&["ip", "link", "set", wg_if, "mtu", "1480"])
                    .map(drop)
                    .unwrap()
            }),
            Box::new(|| {
                gw.run(&["ip", "link", "set", wg_if, "mtu", "1420"])
                    .map(drop)
                    .unwrap()
            }),
        ),
        (
            "forwarding",
            "error",
            2,
            Box::new(|| sysctl(gw, "net.ipv4.ip_forward=0")),
            Box::new(|| sysctl(gw, "net.ipv4.ip_forward=1")),
        ),
        (
            "rp_filter",
            "warning",
            1,
            // The kernel takes the larger of `all` and the interface's.
            Box::new(|| {
                sysctl(gw, "net.ipv4.conf.all.rp_filter=1");
                sysctl(gw, &format!("net.ipv4.conf.{wg_if}.rp_filter=1"));
            }),
            Box::new(|| sysctl(gw, &format!("net.ipv4.conf.{wg_if}.rp_filter=2"))),
        ),
        (
            "offloads",
            "warning",
            1,
            Box::new(|| set_gro(gw, "ul1", false)),
            Box::new(|| set_gro(gw, "ul1", true)),
        ),
    ];
    for (check, want, at_least, break_it, fix_it) in steps {
        break_it();
        let (code, f) = doctor(gw, cfg);
        assert_eq!(worst(&f, check), want, "{check}: {f:#?}");
        let fix = f
            .iter()
            .find(|x| x["check"] == check && x["severity"] == want)
            .and_then(|x| x["fix"].as_str())
            .unwrap_or_else(|| panic!("{check}: no fix said"));
        assert!(!fix.is_empty());
        assert!(code >= at_least && code == status_of(&f), "{check}: {code}");
        fix_it();
        let (_, f) = doctor(gw, cfg);
        assert!(
            matches!(worst(&f, check).as_str(), "ok" | "none"),
            "{check} put right: {f:#?}"
        );
    }

    // No data plane: an error, and the text says how to fix it.
    let (ok, _, _) = wgbpf(gw, &["unload", "-i", wg_if]);
    assert!(ok);
    let (code, f) = doctor(gw, cfg);
    assert_eq!((worst(&f, "dataplane").as_str(), code), ("error", 2));
    let (code, text, _) = wgbpf_code(gw, &["doctor", "-c", cfg, "--underlay", "ul1"]);
    assert_eq!(code, 2);
    assert!(
        text.contains("[ERROR] dataplane:") && text.contains("fix: wgbpf load"),
        "{text}"
    );
}
