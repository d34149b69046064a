//! What a gateway enforces: its own part (`[interface]`, `[[peer]]`s) and
//! the fleet's shared part (`[policy]`: groups, hosts, rules, tests),
//! joined into one mesh ([`crate::mesh::parse_joined`]). `push` checks the
//! very join a gateway makes, so what passed there is what a gateway gets.

use serde::Serialize;

use crate::mesh::{self, Mesh, MeshError};

/// One part: its text and the name errors give it (a file at `push`, the
/// key on a gateway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Part {
    pub name: String,
    pub text: String,
}

/// A gateway's parts as one revision of the store holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayDocument {
    pub gateway: String,
    /// The fleet revision (`P/revision`; 0 before the first push).
    pub revision: u64,
    /// The etcd revision of the newest of the three keys: changes when
    /// anything the gateway reads changes, pushed or written by hand.
    pub etcd_revision: i64,
    pub shared: Option<Part>,
    pub own: Option<Part>,
    /// A key the store holds but that cannot be read as what it must be
    /// (a part that is not UTF-8, a revision that is not a number): the
    /// document is refused, naming it, like any broken revision.
    pub unreadable: Option<(String, String)>,
}

impl GatewayDocument {
    /// The mesh the gateway enforces. Refused: no part for this gateway,
    /// a part that is not TOML, parts that do not join, a mesh that does
    /// not resolve, an include (the file would be read on the gateway,
    /// not from the store).
    pub fn mesh(&self) -> Result<Mesh, MeshError> {
        if let Some((key, message)) = &self.unreadable {
            return Err(MeshError {
                file: key.clone(),
                line: 0,
                column: 0,
                message: message.clone(),
            });
        }
        let Some(own) = &self.own else {
            return Err(MeshError {
                file: format!("gateway {}", self.gateway),
                line: 0,
                column: 0,
                message: format!(
                    "revision {} has no part for this gateway (it is not in the fleet)",
                    self.revision
                ),
            });
        };
        join(own, self.shared.as_ref())
    }
}

/// The top-level tables each part may hold: a gateway's own settings and
/// peers, and the policy every gateway shares. Anything else would let one
/// part decide what the other is for (a shared `[interface]` applied on
/// every gateway, a gateway's own `[policy]`).
const OWN_TABLES: &[&str] = &["interface", "peer"];
const SHARED_TABLES: &[&str] = &["policy"];

/// Refuses a top-level table `part` may not hold, at its line.
fn check_tables(part: &Part, allowed: &[&str], what: &str) -> Result<(), MeshError> {
    // A part that is not TOML is left to the join, which says where.
    let Ok(table) = toml::from_str::<toml::Table>(&part.text) else {
        return Ok(());
    };
    match table.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => {
            let line = part
                .text
                .lines()
                .position(|l| {
                    let l = l.trim_start().trim_start_matches('[').trim_start();
                    l.starts_with(key.as_str())
                })
                .map_or(0, |i| i + 1);
            Err(MeshError {
                file: part.name.clone(),
                line,
                column: 1,
                message: format!(
                    "`{key}` does not belong in {what}, which holds {} only",
                    allowed
                        .iter()
                        .map(|t| format!("[{t}]"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            })
        }
    }
}

/// A gateway's part and the shared part as one mesh, refusing includes.
pub fn join(own: &Part, shared: Option<&Part>) -> Result<Mesh, MeshError> {
    check_tables(own, OWN_TABLES, "a gateway's part")?;
    let mut parts = vec![(own.name.as_str(), own.text.as_str())];
    if let Some(s) = shared {
        check_tables(s, SHARED_TABLES, "the shared part")?;
        parts.push((s.name.as_str(), s.text.as_str()));
    }
    let mesh = mesh::parse_joined(&parts)?;
    if let Some(i) = mesh.includes.first() {
        // Includes are [policy] keys, and only the shared part holds it.
        let file = shared.unwrap_or(own);
        return Err(MeshError {
            file: file.name.clone(),
            line: i.line,
            column: i.column,
            message: format!(
                "includes are not pushed (`{}` would be read on each gateway): \
                 convert it with `wgbpf import` and push the result",
                i.path
            ),
        });
    }
    Ok(mesh)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, text: &str) -> Part {
        Part {
            name: name.into(),
            text: text.into(),
        }
    }

    const OWN: &str = r#"[interface]
name = "wg0"
addresses = ["10.9.0.1/24"]

[[peer]]
name = "alice"
groups = ["eng"]
allowed_ips = ["10.9.0.2/32"]
"#;

    #[test]
    fn the_parts_join_and_errors_name_the_part_and_its_own_line() {
        let shared = part(
            "shared.toml",
            "[[policy.rule]]\naction = \"accept\"\nfrom = [\"group:eng\"]\nto = [\"gateway\"]\nproto = \"tcp\"\nports = [22]\n",
        );
        let m = join(&part("eu.toml", OWN), Some(&shared)).unwrap();
        assert_eq!(m.interface, "wg0");
        assert_eq!(m.policy.rules.len(), 1);
        assert_eq!(m.rule_sources[0].at, "shared.toml:1");

        let broken = part(
            "shared.toml",
            "[[policy.rule]]\naction = \"accept\"\nfrom = [\"group:nobody\"]\nto = [\"gateway\"]\n",
        );
        let e = join(&part("eu.toml", OWN), Some(&broken)).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("shared.toml", 3), "{e}");

        let e = join(&part("eu.toml", "[interface]\nname = 7\n"), Some(&shared)).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("eu.toml", 2), "{e}");
    }

    #[test]
    fn parts_that_overlap_or_leak_bare_keys_are_refused() {
        // A gateway's own [policy], with or without one in the shared part.
        let own_with_policy = format!("{OWN}\n[policy]\naudit = true\n");
        let shared = part("shared.toml", "[policy]\naudit = false\n");
        for shared in [Some(&shared), None] {
            let e = join(&part("eu.toml", &own_with_policy), shared).unwrap_err();
            assert_eq!((e.file.as_str(), e.line), ("eu.toml", 10), "{e}");
            assert!(
                e.message
                    .contains("`policy` does not belong in a gateway's part"),
                "{e}"
            );
        }
        // A shared [interface] would be applied on every gateway.
        let own_peers = part(
            "eu.toml",
            "[[peer]]\nname = \"alice\"\nallowed_ips = [\"10.9.0.2/32\"]\n",
        );
        let shared_iface = part(
            "shared.toml",
            "[policy]\naudit = false\n\n[interface]\nname = \"wg0\"\naddresses = [\"10.9.0.1/24\"]\n",
        );
        let e = join(&own_peers, Some(&shared_iface)).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("shared.toml", 4), "{e}");
        assert!(
            e.message
                .contains("`interface` does not belong in the shared part"),
            "{e}"
        );

        // A bare key in the shared part would land in alice's [[peer]]:
        // not a table the shared part may hold.
        let leak = part("shared.toml", "tags = [\"x\"]\n[policy]\n");
        let e = join(&part("eu.toml", OWN), Some(&leak)).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("shared.toml", 1), "{e}");
        assert!(
            e.message
                .contains("`tags` does not belong in the shared part"),
            "{e}"
        );
    }

    #[test]
    fn includes_and_a_missing_gateway_part_are_refused() {
        let shared = part("shared.toml", "[policy]\ntailscale = \"acl.hujson\"\n");
        let e = join(&part("eu.toml", OWN), Some(&shared)).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("shared.toml", 2), "{e}");
        assert!(e.message.contains("not pushed"), "{e}");
        let doc = GatewayDocument {
            gateway: "us".into(),
            revision: 4,
            etcd_revision: 9,
            shared: Some(shared),
            own: None,
            unreadable: None,
        };
        assert!(doc
            .mesh()
            .unwrap_err()
            .message
            .contains("revision 4 has no part"));
    }
}
