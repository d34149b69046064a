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
}

impl GatewayDocument {
    /// The mesh the gateway enforces. Refused: no part for this gateway,
    /// a part that is not TOML, parts that do not join, a mesh that does
    /// not resolve, an include (the file would be read on the gateway,
    /// not from the store).
    pub fn mesh(&self) -> Result<Mesh, MeshError> {
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

/// A gateway's part and the shared part as one mesh, refusing includes.
pub fn join(own: &Part, shared: Option<&Part>) -> Result<Mesh, MeshError> {
    let mut parts = vec![(own.name.as_str(), own.text.as_str())];
    if let Some(s) = shared {
        parts.push((s.name.as_str(), s.text.as_str()));
    }
    let mesh = mesh::parse_joined(&parts)?;
    if let Some(i) = mesh.includes.first() {
        // The include sits in whichever part holds [policy].
        let file = shared.filter(|s| s.text.contains("policy")).unwrap_or(own);
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
        let own_with_policy = format!("{OWN}\n[policy]\naudit = true\n");
        let shared = part("shared.toml", "[policy]\naudit = false\n");
        let e = join(&part("eu.toml", &own_with_policy), Some(&shared)).unwrap_err();
        assert!(e.message.contains("`policy` is in another part"), "{e}");

        // A bare key in the shared part would land in alice's [[peer]].
        let leak = part("shared.toml", "tags = [\"x\"]\n[policy]\n");
        let e = join(&part("eu.toml", OWN), Some(&leak)).unwrap_err();
        assert!(e.message.contains("do not join"), "{e}");
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
        };
        assert!(doc
            .mesh()
            .unwrap_err()
            .message
            .contains("revision 4 has no part"));
    }
}
