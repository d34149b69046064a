//! Tailscale ACL files: the example imported into a mesh, its tests, answers
//! that match Tailscale's semantics, the TOML translation, and errors that
//! name the ACL file, line and column.

use std::{net::IpAddr, path::PathBuf, process::Command};

use wgbpf::{
    import::tailscale,
    policy::check::{explain, run_tests},
    source,
};

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn example() -> wgbpf::mesh::Mesh {
    source::load(&root().join("examples/tailscale-import.toml")).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn the_example_imports_and_its_tests_pass() {
    let m = example();
    // The mesh file's own rule comes first, then the ACL file's.
    assert_eq!(m.policy.rules[0].name, "ping-gateway");
    assert!(m.policy.rules[1].name.starts_with("tailscale-acl.hujson:"));
    // The mesh's test and the ACL file's seven.
    assert_eq!(m.tests.len(), 8);
    assert!(
        m.tests[1].at.contains("tailscale-acl.hujson:"),
        "{}",
        m.tests[1].at
    );
    let (checked, failures) = run_tests(&m.policy, &m.tests);
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(checked >= 30, "{checked}");
    // Groups and hosts joined the directory: explain can use them.
    assert!(m.directory.groups.contains_key("eng"));
    assert!(m.directory.hosts.contains_key("nas"));
}

#[test]
fn answers_follow_tailscale_semantics() {
    let m = example();
    let amy = ip("100.64.0.10");
    let web = ip("100.64.0.21");
    let db = ip("100.64.0.20");
    let nas = ip("10.30.0.40");
    let verdict = |s, d, proto, port| explain(&m.policy, s, d, proto, port).verdict;
    // No "proto": TCP and UDP on the listed ports...
    assert_eq!(verdict(amy, web, 6, 443), "accept");
    assert_eq!(verdict(amy, web, 17, 443), "accept");
    assert_eq!(verdict(amy, web, 6, 8050), "accept");
    assert_eq!(verdict(amy, web, 6, 22), "deny");
    // ...and ICMP to the destination, whatever the port (Tailscale matches
    // ICMP on addresses only), over IPv6 too.
    assert_eq!(verdict(amy, web, 1, 8), "accept");
    assert_eq!(
        verdict(ip("fd7a:115c:a1e0::10"), ip("fd7a:115c:a1e0::21"), 58, 128),
        "accept"
    );
    // But not other protocols (GRE).
    assert_eq!(verdict(amy, web, 47, 0), "deny");
    // "proto": "tcp" is TCP only: raj's SSH rule opens no UDP nor ICMP.
    let raj = ip("100.64.0.11");
    assert_eq!(verdict(raj, db, 6, 22), "accept");
    assert_eq!(verdict(raj, db, 17, 22), "deny");
    // From autogroup:member's NAS rule: raj has a user.
    assert_eq!(verdict(raj, nas, 1, 8), "accept");
    // autogroup:member: every peer with a user, not the tagged servers.
    assert_eq!(verdict(amy, nas, 6, 445), "accept");
    assert_eq!(verdict(web, nas, 6, 445), "deny");
    // "*:*" without proto: every port of TCP and UDP, and ICMP; not SCTP.
    let prom = ip("100.64.0.30");
    assert_eq!(verdict(prom, db, 6, 9), "accept");
    assert_eq!(verdict(prom, db, 17, 65535), "accept");
    assert_eq!(verdict(prom, db, 132, 9), "deny");
    // A host's CIDR: billing is a /16.
    let lee = ip("100.64.0.12");
    assert_eq!(verdict(lee, ip("10.20.7.7"), 6, 443), "accept");
    assert_eq!(verdict(lee, ip("10.21.0.1"), 6, 443), "deny");
    // The deciding rule names the ACL file and line.
    let e = explain(&m.policy, amy, web, 6, 443);
    let line = std::fs::read_to_string(root().join("examples/tailscale-acl.hujson"))
        .unwrap()
        .lines()
        .position(|l| l.contains("\"action\": \"accept\""))
        .unwrap()
        + 1;
    assert_eq!(e.rule, format!("tailscale-acl.hujson:{line} tcp"));
}

#[test]
fn policy_check_and_explain_on_the_command_line() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_wgbpf"))
            .args(args)
            .current_dir(root())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["policy", "check", "examples/tailscale-import.toml"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("0 failed"), "{out}");
    let (code, out, _) = run(&[
        "policy",
        "explain",
        "-c",
        "examples/tailscale-import.toml",
        "--from",
        "group:finance",
        "--to",
        "host:billing",
        "--port",
        "443",
    ]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("accept 100.64.0.12 -> 10.20.0.1 tcp/443"),
        "{out}"
    );
    let (code, out, err) = run(&["import", "tailscale", "examples/tailscale-acl.hujson"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("[[policy.rule]]") && out.contains("[[policy.test]]"),
        "{out}"
    );
    let (code, out, err) = run(&[
        "import",
        "tailscale",
        "examples/tailscale-acl.hujson",
        "-c",
        "examples/tailscale-style.toml",
    ]);
    // tailscale-style.toml has other peers: the ACL's tests do not all hold.
    assert_ne!(code, Some(0), "{out}{err}");
    let (code, _, err) = run(&["import", "tailscale", "--help"]);
    assert_eq!(code, Some(0));
    assert!(err.is_empty());
}

/// The translation, printed as TOML, is a valid mesh-file policy section:
/// with the example's interface and peers it parses and passes the tests.
#[test]
fn the_printed_translation_is_a_mesh_policy() {
    // (ACL file, the mesh file including it, rules of the mesh file's own)
    for (acl_name, mesh_name, own_rules) in [
        ("tailscale-acl.hujson", "tailscale-import.toml", 1),
        ("tailscale-grants.hujson", "tailscale-grants.toml", 0),
    ] {
        let acl = std::fs::read_to_string(root().join("examples").join(acl_name)).unwrap();
        let t = tailscale::translate(acl_name, &acl).unwrap();
        let m = source::load(&root().join("examples").join(mesh_name)).unwrap();
        let toml = wgbpf::import::to_toml(&t, Some(&m.directory));
        let head = std::fs::read_to_string(root().join("examples").join(mesh_name)).unwrap();
        let head = &head[..head.find("[policy]").unwrap()];
        let text = format!("{head}\n{toml}");
        let m2 = source::parse("printed.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let (checked, failures) = run_tests(&m2.policy, &m2.tests);
        assert!(failures.is_empty(), "{acl_name}: {failures:#?}");
        assert!(checked > 10, "{acl_name}: {checked}");
        assert_eq!(m2.policy.rules.len() + own_rules, m.policy.rules.len());
        // The same verdicts as the included file's, rule for rule.
        for (a, b) in m2.policy.rules.iter().zip(&m.policy.rules[own_rules..]) {
            assert_eq!((a.action, a.proto, &a.ports), (b.action, b.proto, &b.ports));
            assert_eq!(a.src, b.src, "{acl_name}: {}", a.name);
            assert_eq!(a.dst, b.dst, "{acl_name}: {}", a.name);
        }
    }
}

const GOOD: &str = r#"{
  "groups": {"group:eng": ["amy@example.com"]},
  "tagOwners": {"tag:db": []},
  "hosts": {"office": "192.0.2.0/24"},
  "acls": [
    {"action": "accept", "src": ["group:eng"], "dst": ["tag:db:5432"]},
  ],
}"#;

fn err(text: &str) -> wgbpf::import::ImportError {
    tailscale::translate("acl.hujson", text).expect_err("must fail")
}

/// The 1-based line and column where `needle` starts in `text`.
fn pos(text: &str, needle: &str) -> (usize, usize) {
    // The last one: the items replaced in GOOD are in its acls, last.
    let at = text
        .rfind(needle)
        .unwrap_or_else(|| panic!("{needle} not in text"));
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

#[test]
fn errors_name_the_acl_file_line_and_column() {
    assert!(tailscale::translate("acl.hujson", GOOD).is_ok());
    for (from, to, what) in [
        ("\"group:eng\"]", "\"group:ops\"]", "unknown group `ops`"),
        ("\"tag:db:5432\"", "\"tag:db:99999\"", "99999"),
        ("\"tag:db:5432\"", "\"tag:db:90-80\"", "empty"),
        ("\"tag:db:5432\"", "\"tag:db\"", "port"),
        (
            "\"tag:db:5432\"",
            "\"tag:web:5432\"",
            "tag `web` is not in tagOwners",
        ),
        (
            "\"action\": \"accept\"",
            "\"action\": \"deny\"",
            "only accept",
        ),
        (
            "\"src\": [\"group:eng\"]",
            "\"src\": [\"mallory\"]",
            "unknown alias `mallory`",
        ),
        (
            "\"src\": [\"group:eng\"]",
            "\"src\": [\"autogroup:self\"]",
            "autogroup:self",
        ),
        (
            "\"192.0.2.0/24\"",
            "\"192.0.2.300/24\"",
            "not an IP address",
        ),
    ] {
        let text = GOOD.replace(from, to);
        assert_ne!(text, GOOD);
        let e = err(&text);
        assert_eq!(e.file, "acl.hujson");
        assert!(e.message.contains(what), "{what}: {e}");
        let needle = to
            .trim_start_matches("\"action\": ")
            .trim_start_matches("\"src\": [");
        assert_eq!((e.line, e.column), pos(&text, needle), "{e}");
        assert!(e
            .to_string()
            .starts_with(&format!("acl.hujson:{}:{}: ", e.line, e.column)));
    }
    // A bad proto.
    let text = GOOD.replace(
        "\"src\": [\"group:eng\"],",
        "\"src\": [\"group:eng\"], \"proto\": \"bogus\",",
    );
    let e = err(&text);
    assert_eq!((e.line, e.column), pos(&text, "\"bogus\""), "{e}");
    // Ports with a protocol without ports.
    let text = GOOD.replace(
        "\"src\": [\"group:eng\"],",
        "\"src\": [\"group:eng\"], \"proto\": \"icmp\",",
    );
    let e = err(&text);
    assert!(e.message.contains("ports need proto"), "{e}");
    // JSON syntax errors, after comments: the position is the original's.
    let text = "// a comment\n{\n  /* two\n lines */ \"acls\": [ {\"action\": } ],\n}";
    let e = err(text);
    assert_eq!(e.line, 4, "{e}");
    // Unknown fields and unknown sections.
    let e = err(&GOOD.replace("\"hosts\"", "\"hostz\""));
    assert!(e.message.contains("unknown field `hostz`"), "{e}");
    assert_eq!(e.line, 4);
    let e = err(&GOOD.replace(
        "\"action\": \"accept\",",
        "\"action\": \"accept\", \"users2\": [],",
    ));
    assert!(e.message.contains("users2"), "{e}");
    // A grant without dst is refused, not ignored.
    let e = err(&GOOD.replace("\"acls\"", "\"grants\": [{\"src\": [\"*\"]}], \"acls\""));
    assert!(e.message.contains("dst"), "{e}");
}

#[test]
fn an_include_that_fails_names_the_acl_file() {
    let dir = std::env::temp_dir().join(format!("wgbpf-ts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let acl = GOOD.replace("\"tag:db:5432\"", "\"tag:db:80,https\"");
    std::fs::write(dir.join("acl.hujson"), &acl).unwrap();
    let mesh_text = "[interface]\nname = \"wg0\"\naddresses = [\"10.0.0.1/24\"]\n\n\
                     [[peer]]\nname = \"db\"\ntags = [\"db\"]\nallowed_ips = [\"10.0.0.2/32\"]\n\n\
                     [policy]\ntailscale = \"acl.hujson\"\n";
    std::fs::write(dir.join("mesh.toml"), mesh_text).unwrap();
    let e = source::load(&dir.join("mesh.toml")).unwrap_err();
    assert!(e.file.ends_with("acl.hujson"), "{e}");
    assert_eq!((e.line, e.column), pos(&acl, "\"tag:db:80,https\""), "{e}");
    assert!(e.message.contains("https"), "{e}");
    // A missing file is named where the mesh file includes it.
    std::fs::write(
        dir.join("mesh.toml"),
        mesh_text.replace("acl.hujson", "nope.hujson"),
    )
    .unwrap();
    let e = source::load(&dir.join("mesh.toml")).unwrap_err();
    assert!(e.file.ends_with("mesh.toml"), "{e}");
    assert_eq!((e.line, e.column), (11, 13), "{e}");
    // A good file: users without a peer here and declared tags without a
    // peer stand for nobody, and are no error.
    let acl = GOOD.replace(
        "\"amy@example.com\"",
        "\"amy@example.com\", \"zed@example.com\"",
    );
    let acl = acl.replace("\"tag:db\": []", "\"tag:db\": [], \"tag:none\": []");
    let acl = acl.replace(
        "[\"tag:db:5432\"]",
        "[\"tag:db:5432\", \"tag:none:*\", \"zed@example.com:22\"]",
    );
    std::fs::write(dir.join("acl.hujson"), &acl).unwrap();
    std::fs::write(dir.join("mesh.toml"), mesh_text).unwrap();
    let m = source::load(&dir.join("mesh.toml")).unwrap();
    assert_eq!(m.policy.rules.len(), 4 * 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The grants example: every packet of a grid of sources, destinations,
/// protocols and ports gets from the reference evaluator (through
/// `explain`) the verdict an independent reading of
/// examples/tailscale-grants.hujson gives, written here from Tailscale's
/// documented semantics.
#[test]
fn grants_and_ipsets_agree_with_an_independent_reading() {
    let m = source::load(&root().join("examples/tailscale-grants.toml")).unwrap();
    let (checked, failures) = run_tests(&m.policy, &m.tests);
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(checked >= 20, "{checked}");

    let ana = ["100.80.0.10", "fd7a:115c:a1e0::10"];
    let bo = ["100.80.0.11"];
    let web = ["100.80.0.21", "fd7a:115c:a1e0::21"];
    let db = ["100.80.0.22"];
    let dns = ["100.80.0.53", "fd7a:115c:a1e0::53"];
    let lab = [
        "10.60.0.1",
        "10.60.1.8",
        "10.60.1.9",
        "10.60.1.10",
        "10.60.200.3",
        "10.60.254.255",
        "10.60.255.0",
        "10.60.255.77",
    ];
    let other = ["100.80.0.1", "fd7a:115c:a1e0::1", "100.80.0.2", "10.61.0.1"];
    let is = |set: &[&str], a: IpAddr| set.iter().any(|s| ip(s) == a);
    let dev = |a| is(&ana, a) || is(&bo, a);
    let ops = |a| is(&bo, a);
    let member = dev;
    let lab_open = |a: IpAddr| {
        let lab: ipnet::IpNet = "10.60.0.0/16".parse().unwrap();
        let mgmt: ipnet::IpNet = "10.60.255.0/24".parse().unwrap();
        lab.contains(&a) && !mgmt.contains(&a) && a != ip("10.60.1.9")
    };
    let icmp = |p: u8| p == 1 || p == 58;
    // Tailscale's meaning of the file, grant by grant.
    let oracle = |s: IpAddr, d: IpAddr, proto: u8, port: u16| -> bool {
        let tcp_udp = proto == 6 || proto == 17;
        // ACLs: ops -> db, web: port 22 of TCP and UDP, and ICMP.
        (ops(s) && (is(&db, d) || is(&web, d)) && ((tcp_udp && port == 22) || icmp(proto)))
            // dev -> web: tcp:443, udp:443.
            || (dev(s) && is(&web, d) && tcp_udp && port == 443)
            // web -> db: tcp:5432.
            || (is(&web, s) && is(&db, d) && proto == 6 && port == 5432)
            // members, web, db -> dns servers: "53".
            || ((member(s) || is(&web, s) || is(&db, s))
                && is(&dns, d)
                && ((tcp_udp && port == 53) || icmp(proto)))
            // ops -> the open lab: "*".
            || (ops(s) && lab_open(d) && (tcp_udp || icmp(proto)))
            // dev -> db: icmp:*, tcp:9100-9199.
            || (dev(s) && is(&db, d) && (icmp(proto) || (proto == 6 && (9100..=9199).contains(&port))))
    };
    let everyone: Vec<&str> = [&ana[..], &bo, &web, &db, &dns, &lab, &other]
        .concat()
        .into_iter()
        .collect();
    let sources: Vec<&str> = [&ana[..], &bo, &web, &db, &dns, &["100.80.0.2"][..]].concat();
    let mut compared = 0;
    let mut accepted = 0;
    for s in &sources {
        for d in &everyone {
            let (s, d) = (ip(s), ip(d));
            if s.is_ipv4() != d.is_ipv4() || s == d {
                continue;
            }
            let icmp_proto = if s.is_ipv4() { 1 } else { 58 };
            for proto in [6, 17, icmp_proto, 132, 47] {
                let ports: &[u16] = match proto {
                    1 => &[8, 13],
                    58 => &[128],
                    47 => &[0],
                    _ => &[
                        1, 22, 53, 443, 631, 5432, 8080, 9099, 9100, 9150, 9199, 9200, 65535,
                    ],
                };
                for &port in ports {
                    let want = oracle(s, d, proto, port);
                    let got = explain(&m.policy, s, d, proto, port);
                    assert_eq!(
                        got.verdict == "accept",
                        want,
                        "{s} -> {d} proto {proto} port {port}: {} by {}",
                        got.verdict,
                        got.rule
                    );
                    compared += 1;
                    accepted += usize::from(want);
                }
            }
        }
    }
    // Both verdicts are well represented.
    assert!(compared > 2000, "{compared}");
    assert!(
        accepted > 150 && compared - accepted > 1000,
        "{accepted}/{compared}"
    );
    // The deciding rule names the grant's line.
    let text = std::fs::read_to_string(root().join("examples/tailscale-grants.hujson")).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("\"ip\": [\"tcp:5432\"]"))
        .unwrap()
        + 1;
    let e = explain(&m.policy, ip(web[0]), ip(db[0]), 6, 5432);
    assert_eq!(e.rule, format!("tailscale-grants.hujson:{line} tcp"));
}

/// Tailscale reads field names in any case; so does the import, and an
/// unknown field is still an error, in any case, at its line.
#[test]
fn field_names_in_any_case() {
    let lower = GOOD.to_string();
    let shouted = GOOD
        .replace("\"groups\"", "\"Groups\"")
        .replace("\"tagOwners\"", "\"tagowners\"")
        .replace("\"hosts\"", "\"HOSTS\"")
        .replace("\"acls\"", "\"ACLs\"")
        .replace("\"action\"", "\"Action\"")
        .replace("\"src\"", "\"Users\"")
        .replace("\"dst\"", "\"Ports\"");
    assert_ne!(lower, shouted);
    let a = tailscale::translate("acl.hujson", &lower).unwrap();
    let b = tailscale::translate("acl.hujson", &shouted).unwrap();
    // The same rules (positions aside: "Users" is longer than "src").
    let meaning = |t: &wgbpf::import::Translated| -> Vec<String> {
        t.rules
            .iter()
            .map(|r| {
                let names = |v: &[wgbpf::import::Item]| {
                    v.iter().map(|i| i.name.clone()).collect::<Vec<_>>()
                };
                format!(
                    "{} {:?} {:?} {:?} {:?} {:?}",
                    r.name,
                    r.action,
                    names(&r.from),
                    names(&r.to),
                    r.proto,
                    r.ports
                )
            })
            .collect()
    };
    assert_eq!(meaning(&a), meaning(&b));
    assert_eq!(a.rules.len(), 4, "tcp, udp, icmp, icmpv6: {:#?}", a.rules);
    assert_eq!(a.groups.len(), b.groups.len());
    assert_eq!(a.hosts.len(), 1);
    assert_eq!(b.hosts.len(), 1);
    // Group, tag and host names are data: their case matters.
    let e = err(&GOOD.replace("[\"group:eng\"],", "[\"group:Eng\"],"));
    assert!(e.message.contains("unknown group `Eng`"), "{e}");
    // An unknown field, in any case, names its line.
    for (from, to, bad) in [
        ("\"hosts\"", "\"Hostz\"", "Hostz"),
        (
            "\"action\": \"accept\",",
            "\"Action\": \"accept\", \"Proto2\": 1,",
            "Proto2",
        ),
    ] {
        let text = GOOD.replace(from, to);
        let e = err(&text);
        assert!(e.message.contains(&format!("unknown field `{bad}`")), "{e}");
        assert_eq!(e.line, pos(&text, bad).0, "{e}");
    }
    // The same field twice, in two cases, is an error, not a silent pick.
    let e = err(&GOOD.replace("\"acls\": [", "\"ACLS\": [], \"acls\": ["));
    assert!(e.message.contains("duplicate field `acls`"), "{e}");
}

#[test]
fn what_grants_and_ipsets_cannot_say_is_refused_at_its_line() {
    let good = r#"{
  "groups": {"group:eng": ["amy@example.com"]},
  "tagOwners": {"tag:db": []},
  "hosts": {"office": "192.0.2.0/24"},
  "ipsets": {"ipset:net": ["add office", "remove 192.0.2.128/25"]},
  "grants": [
    {"src": ["group:eng"], "dst": ["tag:db", "ipset:net"], "ip": ["tcp:5432"]},
  ],
}"#;
    let t = tailscale::translate("acl.hujson", good).unwrap();
    assert_eq!(t.rules.len(), 1);
    assert_eq!(t.rules[0].ports.len(), 1);
    let net = t.groups.iter().find(|(g, _)| g == "ipset:net").unwrap();
    let members: Vec<&str> = net.1.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(members, ["192.0.2.0/25"]);
    for (from, to, needle, what) in [
        (
            "\"ip\": [",
            "\"via\": [\"tag:db\"], \"ip\": [",
            "[\"tag:db\"], \"ip\"",
            "via",
        ),
        (
            "\"ip\": [",
            "\"srcPosture\": [\"posture:x\"], \"ip\": [",
            "[\"posture:x\"]",
            "srcPosture",
        ),
        (
            "\"tag:db\", \"ipset",
            "\"tag:db:5432\", \"ipset",
            "\"tag:db:5432\"",
            "no ports",
        ),
        (
            "\"tcp:5432\"",
            "\"bogus:22\"",
            "\"bogus:22\"",
            "unknown protocol",
        ),
        ("\"tcp:5432\"", "\"icmp:8\"", "\"icmp:8\"", "ports need"),
        ("\"tcp:5432\"", "\"tcp:99999\"", "\"tcp:99999\"", "99999"),
        (
            "\"ipset:net\"]",
            "\"ipset:nope\"]",
            "\"ipset:nope\"",
            "unknown ipset",
        ),
        (
            "\"tag:db\", \"ipset",
            "\"svc:web\", \"ipset",
            "\"svc:web\"",
            "services",
        ),
        (
            "\"add office\"",
            "\"office\"",
            "\"office\"",
            "write `add office`",
        ),
        (
            "\"add office\"",
            "\"add tag:db\"",
            "\"add tag:db\"",
            "not users, groups or tags",
        ),
        (
            "\"add office\"",
            "\"add autogroup:internet\"",
            "\"add autogroup:internet\"",
            "autogroup:internet",
        ),
        (
            "\"add office\"",
            "\"add ipset:net\"",
            "[\"add ipset:net\"",
            "contains itself",
        ),
        (
            "\"add office\"",
            "\"add nowhere\"",
            "\"add nowhere\"",
            "expected an address",
        ),
        (
            ", \"ip\": [\"tcp:5432\"]",
            "",
            "[\"group:eng\"], \"dst\"",
            "needs ip",
        ),
    ] {
        let text = good.replace(from, to);
        assert_ne!(text, good, "{from}");
        let e = tailscale::translate("acl.hujson", &text).expect_err(what);
        assert!(e.message.contains(what), "{what}: {e}");
        assert_eq!((e.line, e.column), pos(&text, needle), "{what}: {e}");
    }
    // A set that would be more than 4096 prefixes (40 addresses taken out
    // of the whole IPv6 space: about 40 x 128) is refused where it is
    // defined.
    let removes: Vec<String> = (1..=40).map(|i| format!("\"remove {i:x}00::1\"")).collect();
    let text = good.replace(
        "[\"add office\", \"remove 192.0.2.128/25\"]",
        &format!("[\"add ::/0\", {}]", removes.join(", ")),
    );
    let e = tailscale::translate("acl.hujson", &text).expect_err("too large");
    assert!(e.message.contains("more than 4096 prefixes"), "{e}");
    assert_eq!((e.line, e.column), pos(&text, "[\"add ::/0\""), "{e}");
    // A group cannot pass for an ipset (both become mesh groups).
    let text = good.replace(
        "\"group:eng\": [\"amy@example.com\"]",
        "\"group:eng\": [\"amy@example.com\"], \"group:ipset:net\": [\"mallory@example.com\"]",
    );
    let e = tailscale::translate("acl.hujson", &text).expect_err("reserved");
    assert!(e.message.contains("reserved"), "{e}");
    assert_eq!(
        (e.line, e.column),
        pos(&text, "[\"mallory@example.com\"]"),
        "{e}"
    );
    // An app grant opens nothing and is noted; with ip, the ip part counts.
    let text = good.replace(
        "\"ip\": [\"tcp:5432\"]",
        "\"ip\": [\"tcp:5432\"], \"app\": {\"example.com/cap/x\": [{}]}",
    );
    let t = tailscale::translate("acl.hujson", &text).unwrap();
    assert_eq!(t.rules.len(), 1);
    assert!(
        t.notes.iter().any(|n| n.contains("acl.hujson:7: app")),
        "{:?}",
        t.notes
    );
    let text = good.replace(
        "\"ip\": [\"tcp:5432\"]",
        "\"app\": {\"example.com/cap/x\": [{}]}",
    );
    let t = tailscale::translate("acl.hujson", &text).unwrap();
    assert!(t.rules.is_empty());
    assert!(
        t.notes.iter().any(|n| n.contains("app capabilities only")),
        "{:?}",
        t.notes
    );
}

/// Random grants over a small mesh: the imported policy (through the
/// reference evaluator) and a plain reading of each grant's `ip` entries,
/// as Tailscale's grammar defines them, agree on every packet of a grid.
#[test]
fn random_grants_agree_with_their_plain_reading() {
    use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
    const MESH: &str = r#"
[interface]
name = "wg0"
addresses = ["10.9.0.1/24", "fd09::1/64"]

[[peer]]
name = "ana"
tags = ["a"]
allowed_ips = ["10.9.0.10/32", "fd09::10/128"]

[[peer]]
name = "bo"
tags = ["b"]
allowed_ips = ["10.9.0.11/32"]

[[peer]]
name = "cy"
tags = ["c"]
allowed_ips = ["10.9.0.12/32", "fd09::12/128"]
"#;
    let peers: [(&str, &[&str]); 3] = [
        ("tag:a", &["10.9.0.10", "fd09::10"]),
        ("tag:b", &["10.9.0.11"]),
        ("tag:c", &["10.9.0.12", "fd09::12"]),
    ];
    let addrs: Vec<IpAddr> = peers
        .iter()
        .flat_map(|(_, a)| a.iter().map(|s| ip(s)))
        .chain([ip("10.9.0.1"), ip("fd09::1")])
        .collect();
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    let ports = [22u16, 53, 80, 443, 1000, 1500, 2000, 65535];
    let mut checked = 0;
    for round in 0..150 {
        // Each grant: sources, destinations (tags or "*"), ip entries.
        let mut grants = Vec::new();
        for _ in 0..rng.gen_range(1..4) {
            let pick = |rng: &mut StdRng| -> Vec<&str> {
                if rng.gen_bool(0.15) {
                    return vec!["*"];
                }
                let n = rng.gen_range(1..=3);
                let mut v: Vec<&str> = peers.iter().map(|(t, _)| *t).collect();
                v.shuffle(rng);
                v.truncate(n);
                v
            };
            let src = pick(&mut rng);
            let dst = pick(&mut rng);
            let mut ip_entries = Vec::new();
            for _ in 0..rng.gen_range(1..4) {
                let p = *ports.choose(&mut rng).unwrap();
                let q = p.saturating_add(rng.gen_range(0..600));
                let range = if rng.gen_bool(0.5) {
                    p.to_string()
                } else {
                    format!("{p}-{q}")
                };
                ip_entries.push(match rng.gen_range(0..8) {
                    0 => "*".to_string(),
                    1 => range,
                    2 => format!("tcp:{range}"),
                    3 => format!("udp:{range}"),
                    4 => "tcp:*".to_string(),
                    5 => "icmp:*".to_string(),
                    6 => format!("sctp:{range}"),
                    _ => "gre:*".to_string(),
                });
            }
            grants.push((src, dst, ip_entries));
        }
        let json = serde_json::json!({
            "tagOwners": {"tag:a": [], "tag:b": [], "tag:c": []},
            "grants": grants.iter().map(|(s, d, i)| serde_json::json!({"src": s, "dst": d, "ip": i})).collect::<Vec<_>>(),
        })
        .to_string();
        let t = tailscale::translate("random.hujson", &json)
            .unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}\n{json}"));
        let mut m = source::parse("mesh.toml", MESH).unwrap();
        wgbpf::import::apply(&t, &mut m).unwrap();
        let holds = |sel: &[&str], a: IpAddr| {
            sel.iter().any(|s| {
                *s == "*"
                    || peers
                        .iter()
                        .any(|(t, v)| t == s && v.iter().any(|x| ip(x) == a))
            })
        };
        let in_range = |r: &str, port: u16| match r.split_once('-') {
            Some((a, b)) => (a.parse::<u16>().unwrap()..=b.parse().unwrap()).contains(&port),
            None => r == "*" || r.parse::<u16>().unwrap() == port,
        };
        let entry_allows = |e: &str, proto: u8, port: u16| -> bool {
            let icmp = proto == 1 || proto == 58;
            match e.split_once(':') {
                None if e == "*" => proto == 6 || proto == 17 || icmp,
                None => ((proto == 6 || proto == 17) && in_range(e, port)) || icmp,
                Some((p, r)) => {
                    let want = match p {
                        "tcp" => proto == 6,
                        "udp" => proto == 17,
                        "sctp" => proto == 132,
                        "icmp" => icmp,
                        "gre" => proto == 47,
                        _ => unreachable!(),
                    };
                    want && in_range(r, port)
                }
            }
        };
        for &s in &addrs {
            for &d in &addrs {
                if s == d || s.is_ipv4() != d.is_ipv4() {
                    continue;
                }
                let icmp = if s.is_ipv4() { 1 } else { 58 };
                for proto in [6, 17, icmp, 132, 47] {
                    for &port in if proto == 47 { &[0u16][..] } else { &ports[..] } {
                        let want = grants.iter().any(|(src, dst, ipe)| {
                            holds(src, s)
                                && holds(dst, d)
                                && ipe.iter().any(|e| entry_allows(e, proto, port))
                        });
                        let got = explain(&m.policy, s, d, proto, port);
                        assert_eq!(
                            got.verdict == "accept",
                            want,
                            "seed {seed} round {round}: {s} -> {d} proto {proto} port {port} \
                             ({} by {})\n{json}",
                            got.verdict,
                            got.rule
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 50_000, "{checked}");
}
