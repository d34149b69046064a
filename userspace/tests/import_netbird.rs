//! Netbird policies: groups of the mesh, protocols, ports and ranges,
//! bidirectional rules, drop, disabled rules, and errors with positions.

use wgbpf::{import::netbird, policy::check::explain, source};

const MESH: &str = r#"
[interface]
name = "wg0"
addresses = ["10.0.0.1/24"]

[[peer]]
name = "amy"
groups = ["devs"]
allowed_ips = ["10.0.0.2/32"]

[[peer]]
name = "web"
groups = ["servers"]
allowed_ips = ["10.0.0.3/32"]

[[peer]]
name = "db"
groups = ["servers"]
allowed_ips = ["10.0.0.4/32"]
"#;

const POLICIES: &str = r#"[
  {
    "name": "dev access",
    "enabled": true,
    "rules": [
      {
        "name": "devs to servers",
        "enabled": true,
        "action": "accept",
        "bidirectional": false,
        "protocol": "tcp",
        "ports": ["22", "443"],
        "port_ranges": [{"start": 8000, "end": 8099}],
        "sources": ["devs"],
        "destinations": [{"id": "ch8i4ug6lnn4g9hqv7m0", "name": "servers"}]
      },
      {
        "name": "servers both ways",
        "action": "accept",
        "bidirectional": true,
        "protocol": "icmp",
        "sources": ["servers"],
        "destinations": ["devs"]
      },
      {
        "name": "no db from devs",
        "action": "drop",
        "protocol": "all",
        "sources": ["devs"],
        "destinations": [{"name": "All"}]
      },
      {"name": "off", "enabled": false, "action": "accept", "protocol": "all",
       "sources": ["All"], "destinations": ["All"]}
    ]
  },
  {"name": "disabled", "enabled": false, "rules": []}
]"#;

fn with_policy(json: &str) -> Result<wgbpf::mesh::Mesh, String> {
    let t = netbird::translate("policies.json", json).map_err(|e| e.to_string())?;
    let mut m = source::parse("mesh.toml", MESH).unwrap();
    wgbpf::import::apply(&t, &mut m).map_err(|e| e.to_string())?;
    Ok(m)
}

#[test]
fn rules_map_onto_the_mesh() {
    let m = with_policy(
        &POLICIES
            .replace("\"name\": \"All\"", "\"name\": \"nobody-yet\"")
            .replace(
                "\"destinations\": [{\"name\": \"nobody-yet\"}]",
                "\"destinations\": [{\"name\": \"servers\"}], \"enabled\": false",
            ),
    )
    .unwrap();
    let ip = |s: &str| s.parse().unwrap();
    let v = |s, d, proto, port| explain(&m.policy, ip(s), ip(d), proto, port).verdict;
    assert_eq!(v("10.0.0.2", "10.0.0.3", 6, 22), "accept");
    assert_eq!(v("10.0.0.2", "10.0.0.4", 6, 8050), "accept");
    assert_eq!(v("10.0.0.2", "10.0.0.4", 6, 80), "deny");
    assert_eq!(v("10.0.0.2", "10.0.0.4", 17, 22), "deny");
    assert_eq!(v("10.0.0.3", "10.0.0.2", 6, 22), "deny");
    // bidirectional: both ways.
    assert_eq!(v("10.0.0.3", "10.0.0.2", 1, 8), "accept");
    assert_eq!(v("10.0.0.2", "10.0.0.3", 1, 8), "accept");
    assert_eq!(m.policy.rules.len(), 1 + 4);
    assert!(m
        .policy
        .rules
        .iter()
        .any(|r| r.name.ends_with("(reverse) icmp")));
}

#[test]
fn drop_wins_and_all_is_every_peer() {
    let m = with_policy(POLICIES).unwrap();
    let ip = |s: &str| s.parse().unwrap();
    let e = explain(&m.policy, ip("10.0.0.2"), ip("10.0.0.3"), 6, 22);
    assert_eq!(e.verdict, "deny");
    assert!(e.rule.contains("no db from devs"), "{}", e.rule);
    // All is the peers, not any address.
    let e = explain(&m.policy, ip("10.0.0.2"), ip("192.0.2.1"), 6, 22);
    assert_eq!(e.rule, "default deny");
}

#[test]
fn errors_name_the_policy_file_line_and_column() {
    for (from, to, what) in [
        (
            "\"sources\": [\"devs\"]",
            "\"sources\": [\"ghosts\"]",
            "unknown group `ghosts`",
        ),
        (
            "\"protocol\": \"tcp\"",
            "\"protocol\": \"gre\"",
            "protocol `gre`",
        ),
        (
            "\"action\": \"drop\"",
            "\"action\": \"reject\"",
            "action `reject`",
        ),
        (
            "\"ports\": [\"22\", \"443\"]",
            "\"ports\": [\"22\", \"x\"]",
            "port `x`",
        ),
        ("\"end\": 8099", "\"end\": 7000", "start is after end"),
        (
            "\"protocol\": \"icmp\",",
            "\"protocol\": \"icmp\", \"ports\": [\"1\"],",
            "ports need",
        ),
    ] {
        let text = POLICIES.replacen(from, to, 1);
        assert_ne!(text, POLICIES);
        let e = with_policy(&text).unwrap_err();
        assert!(e.starts_with("policies.json:"), "{e}");
        assert!(e.contains(what), "{what}: {e}");
        let line: usize = e.split(':').nth(1).unwrap().parse().unwrap();
        let expected = text
            .lines()
            .position(|l| {
                l.contains(
                    to.split(':')
                        .nth(1)
                        .unwrap()
                        .trim_matches(|c| c == ' ' || c == ','),
                )
            })
            .map(|i| i + 1);
        assert!(
            expected.is_some_and(|x| x.abs_diff(line) <= 1),
            "{what}: {e}"
        );
    }
    let e = with_policy("[{\"rules\": [{\"action\": 3}]}]").unwrap_err();
    assert!(e.starts_with("policies.json:1:"), "{e}");
}

#[test]
fn an_include_in_a_mesh_file() {
    let dir = std::env::temp_dir().join(format!("wgbpf-nb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("policies.json"), POLICIES).unwrap();
    std::fs::write(
        dir.join("mesh.toml"),
        format!("{MESH}\n[policy]\nnetbird = \"policies.json\"\n"),
    )
    .unwrap();
    let m = source::load(&dir.join("mesh.toml")).unwrap();
    assert_eq!(m.policy.rules.len(), 1 + 4 + 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
