//! `wgbpf run` logs, on each reload, the flows whose verdict the new file
//! changed: the same lines `wgbpf load --dry-run` printed for it before.

mod common;

use std::{
    fs::File,
    process::Stdio,
    time::{Duration, Instant},
};

use common::{json_lines, print_log_tails, stop, wgbpf_code, TempDir, Unload};
use testbed::{Testbed, TestbedSpec};

const POLICY: &str = "[policy]\n\n[[policy.rule]]\nname = \"alice-web\"\naction = \"accept\"\n\
                      from = [\"alice\"]\nto = [\"gateway\"]\nproto = \"tcp\"\nports = [80]\n";

#[test]
fn a_reload_logs_the_flows_it_changed() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let gw = &mesh.gateway;
    let dir = std::env::temp_dir().join(format!("wgbpf-reloaddiff-{}", mesh.run_id()));
    let _dir = TempDir::create(dir.clone());
    let _unload = Unload(gw);
    let text = testbed::gateway_mesh_file(&mesh, POLICY);
    let cfg = dir.join("mesh.toml");
    std::fs::write(&cfg, &text).unwrap();
    let log = dir.join("wgbpf.log");
    let mut daemon = common::wgbpf_daemon_command(gw)
        .args(["run", "-c"])
        .arg(&cfg)
        .args([
            "--log-format",
            "json",
            "--repair-interval",
            "0",
            "--no-metrics",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("spawn wgbpf run");
    let outcome = std::panic::catch_unwind(|| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (code, out, _) = wgbpf_code(gw, &["reload", "--status", "--json"]);
            if code == 0 && out.contains("\"policy_version\"") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon never enforced: {out}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::write(
            &cfg,
            text.replace("from = [\"alice\"]", "from = [\"bob\"]")
                .replace("ports = [80]", "ports = [80, 443]"),
        )
        .unwrap();
        let (code, dry, err) = wgbpf_code(gw, &["load", "--dry-run", "-c", cfg.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let expected: Vec<&str> = dry.lines().filter(|l| l.starts_with(['+', '-'])).collect();
        assert_eq!(expected.len(), 2, "{dry}");
        let (code, out, err) = wgbpf_code(gw, &["reload"]);
        assert_eq!(code, 0, "{out}{err}");
        let logged: Vec<String> = json_lines(&log)
            .iter()
            .filter(|l| l["message"] == "flows whose verdict the reload changed")
            .map(|l| l["changes"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(logged, vec![expected.join("; ")]);
    });
    stop(&mut daemon, Duration::from_secs(20));
    if let Err(e) = outcome {
        print_log_tails(&dir, &["wgbpf.log"], 40);
        std::panic::resume_unwind(e);
    }
}
