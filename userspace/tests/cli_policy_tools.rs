//! `wgbpf policy matrix | check (warnings) | diff` as an operator runs them,
//! their answers checked against the reference evaluator on many random
//! packets of the examples and of a hand-made mesh (denies overriding
//! accepts, audit rules, `*` sources, a network peer, IPv4 and IPv6).

mod common;

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use ipnet::IpNet;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::Value;
use wgbpf::{
    mesh::reach::{self, RowsBy},
    policy::{
        model::Policy,
        reference::{evaluate, PacketMeta},
        space::Named,
    },
};
use wgbpf_common::severity;

fn wgbpf(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wgbpf"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    common::code_out_err(&out)
}

const HAND_MADE: &str = r#"
[interface]
name = "wgpt0"
addresses = ["10.9.0.1/24", "fd09::1/64"]

[[peer]]
name = "alice"
groups = ["dev"]
allowed_ips = ["10.9.0.2/32", "fd09::2/128"]

[[peer]]
name = "bob"
groups = ["dev"]
tags = ["ops"]
allowed_ips = ["10.9.0.3/32"]

[[peer]]
name = "lab"
tags = ["lab"]
allowed_ips = ["10.9.8.0/24"]

[policy]

[policy.groups]
empty = []

[policy.hosts]
printer = "10.9.8.10/32"

[[policy.rule]]
name = "dev-web"
action = "accept"
from = ["group:dev"]
to = ["lab"]
proto = "tcp"
ports = [80, "8000-8010"]

[[policy.rule]]
name = "no-printer-admin"
action = "deny"
from = ["group:dev"]
to = ["printer"]
proto = "tcp"
ports = ["8000-8010"]

[[policy.rule]]
name = "ssh-lab"
action = "accept"
from = ["alice"]
to = ["lab"]
proto = "tcp"
ports = [22]

[[policy.rule]]
name = "ssh-printer"
action = "accept"
from = ["alice"]
to = ["printer"]
proto = "tcp"
ports = [22]

[[policy.rule]]
name = "bob-printer"
action = "accept"
from = ["bob"]
to = ["printer"]
proto = "tcp"
ports = [8005]

[[policy.rule]]
name = "ping-any"
action = "accept"
from = ["*"]
to = ["gateway"]
proto = "icmp"
ports = [8]

[[policy.rule]]
name = "audit-dns"
action = "deny"
audit = true
from = ["bob"]
to = ["gateway"]
proto = "udp"
ports = [53]

[[policy.rule]]
name = "dns"
action = "accept"
from = ["group:dev"]
to = ["gateway"]
proto = "udp"
ports = [53]

[[policy.rule]]
name = "nobody"
action = "accept"
from = ["group:empty"]
to = ["gateway"]
proto = "tcp"
ports = [443]

[[policy.rule]]
name = "alice-gateway"
action = "accept"
from = ["alice"]
to = ["gateway"]

[[policy.rule]]
name = "lab-out"
action = "accept"
from = ["lab"]
to = ["*"]
proto = "tcp"

[[policy.rule]]
name = "v6-to-lab"
action = "accept"
from = ["fd09::2"]
to = ["lab"]
proto = "tcp"
ports = [443]
"#;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("wgbpf-pt-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn repo(p: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(p)
}

fn proto_number(name: &str) -> Option<u8> {
    Some(match name {
        "tcp" => 6,
        "udp" => 17,
        "sctp" => 132,
        "icmp" => 1,
        "icmpv6" => 58,
        "other" => return None,
        n => n.parse().unwrap(),
    })
}

/// Does a JSON flow set (`[{"proto", "ports"}]`) hold (proto, port)?
/// `named`: the protocols the policy's rules name ("other" is the rest).
fn holds(set: &Value, named: &BTreeSet<u8>, proto: u8, port: u16) -> bool {
    set.as_array().unwrap().iter().any(|e| {
        let p = proto_number(e["proto"].as_str().unwrap());
        let proto_ok = match p {
            Some(p) => p == proto,
            None => !named.contains(&proto),
        };
        let ports = e["ports"].as_array().unwrap();
        proto_ok
            && (ports.is_empty()
                || ports.iter().any(|r| {
                    let r = r.as_str().unwrap();
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    (a.parse::<u16>().unwrap()..=b.parse::<u16>().unwrap()).contains(&port)
                }))
    })
}

fn random_in(rng: &mut StdRng, n: &IpNet) -> IpAddr {
    match n {
        IpNet::V4(v) => {
            let host = u32::MAX.checked_shr(v.prefix_len() as u32).unwrap_or(0);
            IpAddr::V4((u32::from(v.network()) | (rng.gen::<u32>() & host)).into())
        }
        IpNet::V6(v) => {
            let host = u128::MAX.checked_shr(v.prefix_len() as u32).unwrap_or(0);
            IpAddr::V6((u128::from(v.network()) | (rng.gen::<u128>() & host)).into())
        }
    }
}

/// A random first packet between the two names, of a protocol the policy
/// names (or one it does not), at a port near the ones rules name.
fn sample(rng: &mut StdRng, from: &Named, to: &Named, ports: &[u16]) -> Option<PacketMeta> {
    let (i, j) = (
        rng.gen_range(0..from.nets.len()),
        rng.gen_range(0..to.nets.len()),
    );
    let s = random_in(rng, &from.nets[i]);
    let d = random_in(rng, &to.nets[j]);
    if s.is_ipv4() != d.is_ipv4() {
        return None;
    }
    let proto = [6u8, 6, 17, 1, 58, 132, 47][rng.gen_range(0..7)];
    let icmp = (proto == 1 && s.is_ipv4()) || (proto == 58 && s.is_ipv6());
    let base = ports[rng.gen_range(0..ports.len())] as i32;
    let port = if rng.gen_bool(0.2) {
        rng.gen::<u16>()
    } else {
        (base + rng.gen_range(-2..=2)).clamp(0, 65535) as u16
    };
    let port = if icmp { port % 256 } else { port };
    Some(PacketMeta {
        src: s,
        dst: d,
        proto,
        fragment: false,
        sport: 40000,
        dport: if icmp { 0 } else { port },
        icmp_type: if icmp { port as u8 } else { 0 },
        icmp_id: 0,
        tcp_flags: 2,
        frag: None,
        quoted: None,
    })
}

fn named_protos(p: &Policy) -> BTreeSet<u8> {
    p.rules.iter().filter_map(|r| r.proto).collect()
}

fn rule_ports(p: &Policy) -> Vec<u16> {
    let mut v: Vec<u16> = p
        .rules
        .iter()
        .flat_map(|r| r.ports.iter().flat_map(|r| [r.first, r.last]))
        .collect();
    v.extend([0, 8, 53, 1000]);
    v
}

/// The port a flow set speaks of: the ICMP type, the port, or nothing for
/// a protocol without ports.
fn set_port(pkt: &PacketMeta) -> u16 {
    if pkt.has_port() {
        pkt.policy_port()
    } else {
        0
    }
}

/// `policy matrix --json` on FILE agrees with the evaluator: a flow in a
/// cell's `allowed` is accepted for every address pair, an accepted flow is
/// in `allowed` or `partly`, an audited one in `audited`.
fn matrix_agrees(file: &Path, by: RowsBy, flag: &str, samples: usize) -> usize {
    let (code, out, err) = wgbpf(&[
        "policy",
        "matrix",
        "-c",
        file.to_str().unwrap(),
        "--by",
        flag,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let m: Value = serde_json::from_str(&out).unwrap();
    let mesh = wgbpf::source::load(file).unwrap();
    let rows = reach::rows(&mesh, by);
    let cols = reach::columns(&mesh);
    let named = named_protos(&mesh.policy);
    let ports = rule_ports(&mesh.policy);
    let mut rng = StdRng::seed_from_u64(1414);
    let (mut checked, mut accepted, mut world_checked) = (0, 0, 0);
    for cell in m["cells"].as_array().unwrap() {
        let from = rows.iter().find(|r| r.name == cell["from"]).unwrap();
        let to = cols.iter().find(|c| c.name == cell["to"]).unwrap();
        if from.nets.is_empty() {
            continue;
        }
        // The other addresses: anywhere, but in no named prefix.
        let anywhere = Named::new(
            &to.name,
            vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
        );
        let named_nets: Vec<IpNet> = wgbpf::policy::space::policy_prefixes(&mesh.policy)
            .into_iter()
            .chain(cols.iter().flat_map(|c| c.nets.iter().copied()))
            .collect();
        for _ in 0..samples {
            let Some(pkt) = sample(
                &mut rng,
                from,
                if to.world { &anywhere } else { to },
                &ports,
            ) else {
                continue;
            };
            if to.world && named_nets.iter().any(|n| n.contains(&pkt.dst)) {
                continue;
            }
            if to.world {
                world_checked += 1;
            }
            let v = evaluate(&mesh.policy, &pkt).severity;
            let port = set_port(&pkt);
            let in_allowed = holds(&cell["allowed"], &named, pkt.proto, port);
            let in_partly = holds(&cell["partly"], &named, pkt.proto, port);
            let what = format!("{}: {} -> {} {pkt:?}", file.display(), from.name, to.name);
            if in_allowed {
                assert_eq!(v, severity::ALLOW, "{what}");
            }
            if v == severity::ALLOW {
                accepted += 1;
                assert!(in_allowed || in_partly, "{what}");
            } else {
                assert!(!in_allowed, "{what}");
            }
            if v == severity::AUDIT {
                assert!(holds(&cell["audited"], &named, pkt.proto, port), "{what}");
            }
            checked += 1;
        }
    }
    assert!(accepted > 0, "{}: no sample was accepted", file.display());
    if cols.iter().any(|c| c.world) {
        assert!(world_checked > 0, "{}", file.display());
    }
    checked
}

#[test]
fn the_matrix_is_what_the_evaluator_says() {
    let dir = TempDir::new("matrix");
    let hand = dir.write("hand.toml", HAND_MADE);
    let mut checked = 0;
    for f in [
        repo("examples/static-mesh.toml"),
        repo("examples/tailscale-style.toml"),
        repo("examples/tailscale-import.toml"),
        hand.clone(),
    ] {
        checked += matrix_agrees(&f, RowsBy::Peer, "peer", 400);
        checked += matrix_agrees(&f, RowsBy::Group, "group", 400);
    }
    checked += matrix_agrees(
        &repo("examples/tailscale-style.toml"),
        RowsBy::Tag,
        "tag",
        400,
    );
    assert!(checked > 50_000, "{checked}");
}

#[test]
fn the_matrix_reads_as_a_table() {
    let dir = TempDir::new("text");
    let hand = dir.write("hand.toml", HAND_MADE);
    let (code, out, err) = wgbpf(&["policy", "matrix", "-c", hand.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let row = |name: &str| -> Vec<String> {
        out.lines()
            .skip_while(|l| *l != name)
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    // The deny on the printer's 8000-8010 cuts bob's web access there; his
    // DNS to the gateway is audited; lab reaches anyone on TCP.
    assert!(
        row("bob").contains(&"-> printer tcp 80".to_string()),
        "{out}"
    );
    assert!(
        row("bob").contains(&"-> gateway icmp 8 (audited: udp 53)".to_string()),
        "{out}"
    );
    assert!(
        row("lab").contains(&"-> (other addresses) tcp".to_string()),
        "{out}"
    );
}

/// Opening and closing tags pair up (void elements aside).
fn assert_balanced(h: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = h;
    while let Some(i) = rest.find('<') {
        let end = rest[i..].find('>').expect("unclosed <") + i;
        let tag = &rest[i + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') {
            continue;
        }
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(!name.is_empty(), "stray < in {tag}");
        if name == "meta" {
            continue;
        }
        if tag.starts_with('/') {
            assert_eq!(stack.pop().as_deref(), Some(name.as_str()), "</{name}>");
        } else {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

#[test]
fn the_html_page_stands_alone_and_escapes_a_hostile_name() {
    let dir = TempDir::new("html");
    let evil = "<img src=x onerror=alert(1)>&\"'";
    let text = HAND_MADE
        .replace("name = \"bob\"", &format!("name = {evil:?}"))
        .replace("from = [\"bob\"]", &format!("from = [{evil:?}]"));
    let file = dir.write("evil.toml", &text);
    let page = dir.0.join("m.html");
    let (code, _, err) = wgbpf(&[
        "policy",
        "matrix",
        "-c",
        file.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let h = std::fs::read_to_string(&page).unwrap();
    assert!(!h.contains("<img"), "{h}");
    assert!(
        h.contains("&lt;img src=x onerror=alert(1)&gt;&amp;&quot;&#39;"),
        "{h}"
    );
    assert_balanced(&h);
    // No external assets.
    for outside in ["http:", "https:", "src=\"", "href="] {
        assert!(!h.contains(outside), "{outside} in {h}");
    }
}

fn line_of(text: &str, rule: &str) -> usize {
    // The rule's header is the line before its name: the name's index
    // from 0 is the header's line number from 1.
    text.lines()
        .position(|l| l == format!("name = \"{rule}\""))
        .unwrap()
}

#[test]
fn check_warns_of_each_broad_or_dead_rule_with_its_line() {
    let dir = TempDir::new("lint");
    let file = dir.write("hand.toml", HAND_MADE);
    let path = file.to_str().unwrap();
    let (code, out, err) = wgbpf(&["policy", "check", path, "--json"]);
    assert_eq!(code, 0, "warnings alone do not fail: {out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let got: Vec<(String, String, String, Vec<String>)> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["at"].as_str().unwrap().to_string(),
                w["rule"].as_str().unwrap().to_string(),
                w["kind"].as_str().unwrap().to_string(),
                w["by"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b["rule"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    let want = |rule: &str, kind: &str, by: &[&str]| {
        (
            format!("{path}:{}", line_of(HAND_MADE, rule)),
            rule.to_string(),
            kind.to_string(),
            by.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        got,
        vec![
            want("ssh-printer", "shadowed", &["ssh-lab"]),
            want("bob-printer", "cancelled-by-deny", &["no-printer-admin"]),
            want("ping-any", "any-source", &[]),
            want("nobody", "empty-identities", &[]),
            want("alice-gateway", "all-ports", &[]),
            want("lab-out", "all-ports", &[]),
            want("v6-to-lab", "matches-nothing", &[]),
        ]
    );
    // Text: file:line, the rule as written, why.
    let (code, out, _) = wgbpf(&["policy", "check", path]);
    assert_eq!(code, 0);
    let line = line_of(HAND_MADE, "bob-printer");
    assert!(
        out.contains(&format!(
            "{path}:{line}: warning: bob-printer (accept bob -> printer tcp 8005): never decides: `no-printer-admin` ({path}:{})",
            line_of(HAND_MADE, "no-printer-admin")
        )),
        "{out}"
    );
    let (code, _, err) = wgbpf(&["policy", "check", path, "--strict"]);
    assert_eq!(code, 1);
    assert!(err.contains("7 warning(s) and --strict"), "{err}");
}

#[test]
fn the_examples_warn_of_what_is_broad_in_them() {
    let cases = [
        // office may reach anything: every protocol and port.
        (
            "examples/static-mesh.toml",
            vec![("office-anything", "all-ports")],
        ),
        // Anyone may ping the gateway.
        (
            "examples/tailscale-style.toml",
            vec![("ping-gateway", "any-source")],
        ),
    ];
    for (file, want) in cases {
        let text = std::fs::read_to_string(repo(file)).unwrap();
        let (code, out, err) = wgbpf(&["policy", "check", file, "--json"]);
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let got: Vec<(String, String, String)> = v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["at"].as_str().unwrap().to_string(),
                    w["rule"].as_str().unwrap().to_string(),
                    w["kind"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(r, k)| {
                (
                    format!("{file}:{}", line_of(&text, r)),
                    r.to_string(),
                    k.to_string(),
                )
            })
            .collect();
        assert_eq!(got, want, "{file}");
        let (code, _, _) = wgbpf(&["policy", "check", file, "--strict"]);
        assert_eq!(code, 1, "{file}");
    }
}

/// The Tailscale import: the `*` ping of the mesh file; the importer's two
/// ICMP rules for one ACL with two destinations of the same tag (the second
/// copy shadowed); the monitoring ACL to `*:*` on every TCP and UDP port;
/// the staging ACL, whose tag nobody has.
#[test]
fn the_tailscale_import_warns_of_its_broad_and_dead_rules() {
    let toml = std::fs::read_to_string(repo("examples/tailscale-import.toml")).unwrap();
    let acl = std::fs::read_to_string(repo("examples/tailscale-acl.hujson")).unwrap();
    let acl_line = |needle: &str, back: usize| {
        let i = acl.lines().position(|l| l.contains(needle)).unwrap();
        format!("examples/tailscale-acl.hujson:{}", i + 1 - back)
    };
    let eng = acl_line("\"src\":    [\"group:eng\"],", 1);
    let monitoring = acl_line("\"tag:monitoring\"], \"dst\": [\"*:*\"]", 0);
    let staging = acl_line("\"tag:staging:*\"", 0);
    let (code, out, err) = wgbpf(&[
        "policy",
        "check",
        "examples/tailscale-import.toml",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let got: Vec<(String, String)> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["at"].as_str().unwrap().to_string(),
                w["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        (
            format!(
                "examples/tailscale-import.toml:{}",
                line_of(&toml, "ping-gateway")
            ),
            "any-source",
        ),
        (eng.clone(), "shadowed"),
        (eng, "shadowed"),
        (monitoring.clone(), "all-ports"),
        (monitoring, "all-ports"),
        (staging.clone(), "all-ports"),
        (staging.clone(), "empty-identities"),
        (staging.clone(), "all-ports"),
        (staging.clone(), "empty-identities"),
        (staging.clone(), "empty-identities"),
        (staging, "empty-identities"),
    ]
    .into_iter()
    .map(|(a, k)| (a, k.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn diff_lists_the_flows_that_change_verdict() {
    let dir = TempDir::new("diff");
    let old = dir.write("old.toml", HAND_MADE);
    // Port 81 joins dev-web, the printer deny goes, ping becomes peers-only.
    let changed = HAND_MADE
        .replace(
            "ports = [80, \"8000-8010\"]",
            "ports = [\"80-81\", \"8000-8010\"]",
        )
        .replace(
            "name = \"no-printer-admin\"\naction = \"deny\"",
            "name = \"no-printer-admin\"\naction = \"accept\"",
        )
        .replace(
            "from = [\"*\"]\nto = [\"gateway\"]",
            "from = [\"group:dev\", \"lab\"]\nto = [\"gateway\"]",
        );
    let new = dir.write("new.toml", &changed);
    let (code, out, err) = wgbpf(&[
        "policy",
        "diff",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    for line in [
        // The printer is in lab's network: its ports count for lab too.
        "+ alice -> lab: tcp 81,8000-8010",
        "+ alice -> printer: tcp 81,8000-8010",
        "+ bob -> printer: tcp 81,8000-8010",
        "- (other addresses) -> gateway: icmp 8",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} in\n{out}");
    }
    // Every flow that changes verdict is listed under its pair, and no
    // other: checked on random packets between the names.
    let (code, out, _) = wgbpf(&[
        "policy",
        "diff",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    let changes = v["changes"].as_array().unwrap();
    let (a, b) = (
        wgbpf::source::load(&old).unwrap(),
        wgbpf::source::load(&new).unwrap(),
    );
    let names = reach::diff_names(reach::columns(&a), &b);
    let named: BTreeSet<u8> = named_protos(&a.policy)
        .union(&named_protos(&b.policy))
        .copied()
        .collect();
    let ports = rule_ports(&b.policy);
    let mut rng = StdRng::seed_from_u64(77);
    let mut seen_change = 0;
    let empty = serde_json::json!([]);
    for from in names.iter().filter(|n| !n.world) {
        for to in names.iter().filter(|n| !n.world) {
            let c = changes
                .iter()
                .find(|c| c["from"] == from.name.as_str() && c["to"] == to.name.as_str());
            let (plus, minus) = c.map_or((&empty, &empty), |c| {
                (&c["newly_allowed"], &c["newly_denied"])
            });
            for _ in 0..300 {
                let Some(pkt) = sample(&mut rng, from, to, &ports) else {
                    continue;
                };
                let o = evaluate(&a.policy, &pkt).severity == severity::ALLOW;
                let n = evaluate(&b.policy, &pkt).severity == severity::ALLOW;
                let port = set_port(&pkt);
                let what = format!("{} -> {} {pkt:?}", from.name, to.name);
                if n && !o {
                    seen_change += 1;
                    assert!(holds(plus, &named, pkt.proto, port), "{what}");
                }
                if o && !n {
                    seen_change += 1;
                    assert!(holds(minus, &named, pkt.proto, port), "{what}");
                }
            }
        }
    }
    assert!(seen_change > 20, "{seen_change}");
    let (code, out, _) = wgbpf(&[
        "policy",
        "diff",
        old.to_str().unwrap(),
        old.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "no flow changes verdict");
}
