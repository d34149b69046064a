//! deploy/: the Prometheus alerting rules pass `promtool check rules` and
//! their unit tests (`promtool test rules deploy/alerts_test.yml`), and the
//! Grafana dashboard is well-formed JSON with the expected panels. Every
//! metric the rules and the dashboard use is one wgbpf exports (named in
//! docs/metrics.md). Needs Debian's `prometheus` package (promtool).

mod common;

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use serde_json::Value;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy())
        .output()
        .expect("run promtool (Debian package `prometheus`)");
    common::ok_said(&out)
}

/// Metric names in a PromQL expression: identifiers followed by `{`, `[`
/// or a space that start with one of wgbpf's prefixes.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if word.starts_with("wgbpf_") || word.starts_with("wireguard_") {
            out.insert(std::mem::take(&mut word));
        }
        word.clear();
    }
    out
}

fn documented() -> String {
    std::fs::read_to_string(deploy().join("../docs/metrics.md")).unwrap()
}

#[test]
fn alert_rules_check_and_pass_their_tests() {
    let (ok, out) = promtool(&["check", "rules", "alerts.yml"]);
    assert!(ok, "promtool check rules: {out}");
    assert!(out.contains("SUCCESS"), "{out}");
    let (ok, out) = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(ok, "promtool test rules: {out}");

    // Every alert named by the brief exists and has a test.
    let rules = std::fs::read_to_string(deploy().join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy().join("alerts_test.yml")).unwrap();
    for alert in [
        "WireGuardPeerHandshakeStale",
        "WireGuardPeerEgressSpike",
        "WgbpfPersistentDenials",
        "WgbpfProgramDetached",
        "WgbpfUnderlayFlood",
        "WgbpfXdpGuardDetached",
        "WgbpfTargetDown",
        "WgbpfDataplaneDown",
        "WgbpfWireGuardDown",
        "WgbpfDenyEventsLost",
        "WgbpfPeerKeyInTwoPlaces",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
        assert!(tests.contains(&format!("alertname: {alert}")), "{alert}");
    }
    let docs = documented();
    for line in rules.lines() {
        for m in metric_names(line) {
            let base = m.trim_end_matches("_total");
            assert!(
                docs.contains(base),
                "alerts.yml uses {m}, not in docs/metrics.md"
            );
        }
    }
}

#[test]
fn grafana_dashboard_is_well_formed() {
    let text = std::fs::read_to_string(deploy().join("grafana-dashboard.json")).unwrap();
    let d: Value = serde_json::from_str(&text).expect("grafana-dashboard.json is JSON");
    assert_eq!(d["uid"], "wgbpf-gateway");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 30);
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    let mut metrics = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "duplicate id: {p}"
        );
        titles.insert(p["title"].as_str().unwrap().to_string());
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24 && g["h"].as_u64().unwrap() > 0, "gridPos: {p}");
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{p}");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            assert!(expr.contains("$instance"), "filtered by instance: {expr}");
            metrics.extend(metric_names(expr));
        }
    }
    for want in [
        "Programs attached",
        "Allowed packets/s by peer",
        "Denied packets/s by peer",
        "Top denies (last hour)",
        "Bytes/s received from peers",
        "Bytes/s sent to peers",
        "Time since last handshake",
        "Handshakes observed",
        "Drift repairs",
    ] {
        assert!(titles.contains(want), "panel {want:?} missing: {titles:?}");
    }
    let docs = documented();
    for m in &metrics {
        let base = m.trim_end_matches("_total");
        assert!(
            docs.contains(base),
            "dashboard uses {m}, not in docs/metrics.md"
        );
    }
    for m in [
        "wireguard_tunnel_bytes_out_total",
        "wireguard_tunnel_last_handshake_timestamp_seconds",
        "wgbpf_drift_repairs_total",
        "wireguard_acl_denied_total",
    ] {
        assert!(metrics.contains(m), "dashboard does not show {m}");
    }
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vars, ["datasource", "instance"]);
}
