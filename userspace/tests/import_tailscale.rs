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
    let acl = std::fs::read_to_string(root().join("examples/tailscale-acl.hujson")).unwrap();
    let t = tailscale::translate("tailscale-acl.hujson", &acl).unwrap();
    let m = example();
    let toml = wgbpf::import::to_toml(&t, Some(&m.directory));
    let head = std::fs::read_to_string(root().join("examples/tailscale-import.toml")).unwrap();
    let head = &head[..head.find("[policy]").unwrap()];
    let text = format!("{head}\n{toml}");
    let m2 = source::parse("printed.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let (_, failures) = run_tests(&m2.policy, &m2.tests);
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(m2.policy.rules.len() + 1, m.policy.rules.len());
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
    // Grants and postures are refused, not ignored.
    let e = err(&GOOD.replace("\"acls\"", "\"grants\": [{\"src\": [\"*\"]}], \"acls\""));
    assert!(e.message.contains("grants"), "{e}");
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
