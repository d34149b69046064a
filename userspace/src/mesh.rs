//! The mesh file (TOML): the interface, its peers and the access policy, in
//! one place. Resolved here into a [`Policy`]; errors name the file, line
//! and column.
//!
//! ```toml
//! [interface]
//! name = "wg0"
//! addresses = ["10.77.0.1/24", "fd77::1/64"]
//!
//! [[peer]]
//! name = "alice"
//! allowed_ips = ["10.77.0.2/32", "fd77::2/128"]
//!
//! [policy]
//! audit = false            # whole interface in audit mode
//!
//! [[policy.rule]]
//! name = "alice-ssh"
//! action = "accept"        # or "deny" (deny wins)
//! from = ["alice"]         # peer names, "gateway", "*", or CIDRs
//! to = ["gateway"]
//! proto = "tcp"            # tcp udp sctp icmp icmpv6 any, or a number
//! ports = ["22", "8000-8080"]
//! ```

use std::{collections::HashMap, ops::Range, path::Path};

use ipnet::IpNet;
use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::policy::model::{Action, Peer, Policy, PortRange, Rule, Selector};

#[derive(Debug, Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct MeshError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshFile {
    pub interface: InterfaceSection,
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerSection>,
    #[serde(default)]
    pub policy: PolicySection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSection {
    pub name: Spanned<String>,
    #[serde(default)]
    pub addresses: Vec<Spanned<String>>,
    #[serde(default)]
    pub private_key_file: Option<Spanned<String>>,
    #[serde(default)]
    pub listen_port: Option<Spanned<u16>>,
    #[serde(default)]
    pub mtu: Option<Spanned<u32>>,
    #[serde(default)]
    pub fwmark: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    pub name: Spanned<String>,
    #[serde(default)]
    pub public_key: Option<Spanned<String>>,
    #[serde(default)]
    pub allowed_ips: Vec<Spanned<String>>,
    #[serde(default)]
    pub endpoint: Option<Spanned<String>>,
    #[serde(default)]
    pub persistent_keepalive: Option<Spanned<u16>>,
    #[serde(default)]
    pub preshared_key_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    #[serde(default)]
    pub audit: bool,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    #[serde(default)]
    pub name: Option<String>,
    pub action: Spanned<String>,
    #[serde(default)]
    pub audit: bool,
    pub from: Vec<Spanned<String>>,
    pub to: Vec<Spanned<String>>,
    #[serde(default)]
    pub proto: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub ports: Vec<Spanned<toml::Value>>,
}

/// A mesh file, resolved.
#[derive(Debug, Clone)]
pub struct Mesh {
    pub interface: String,
    pub policy: Policy,
    /// The WireGuard side. Without a private key file the interface is
    /// managed elsewhere (wg-quick, another tool) and only the policy is
    /// enforced.
    pub wg: WgSpec,
}

/// The interface's WireGuard configuration as the mesh file gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WgSpec {
    pub private_key_file: Option<std::path::PathBuf>,
    pub listen_port: Option<u16>,
    pub mtu: Option<u32>,
    pub fwmark: Option<u32>,
    /// The interface's addresses with their prefix length, as written.
    pub addresses: Vec<IpNet>,
    pub peers: Vec<WgPeerSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeerSpec {
    pub name: String,
    /// Base64, checked to be 32 bytes.
    pub public_key: Option<String>,
    pub allowed_ips: Vec<IpNet>,
    /// `host:port` or `[v6]:port`; the host may be a DNS name.
    pub endpoint: Option<String>,
    pub persistent_keepalive: Option<u16>,
    pub preshared_key_file: Option<std::path::PathBuf>,
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> MeshError {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        MeshError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }
}

pub fn load(path: &Path) -> Result<Mesh, MeshError> {
    let text = std::fs::read_to_string(path).map_err(|e| MeshError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse(&path.display().to_string(), &text)
}

pub fn parse(file: &str, text: &str) -> Result<Mesh, MeshError> {
    let ctx = Ctx { file, text };
    let raw: MeshFile = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        ctx.err(span, e.message().to_string())
    })?;
    resolve(&ctx, raw)
}

fn parse_net(ctx: &Ctx, s: &Spanned<String>, host_only: bool) -> Result<IpNet, MeshError> {
    let v = s.get_ref();
    let net = v
        .parse::<IpNet>()
        .or_else(|_| v.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| ctx.err(s.span(), format!("`{v}` is not an IP address or CIDR")))?;
    Ok(if host_only {
        IpNet::from(net.addr())
    } else {
        net
    })
}

fn resolve(ctx: &Ctx, raw: MeshFile) -> Result<Mesh, MeshError> {
    let local = raw
        .interface
        .addresses
        .iter()
        .map(|a| parse_net(ctx, a, true))
        .collect::<Result<Vec<_>, _>>()?;
    let mut wg = WgSpec {
        private_key_file: raw
            .interface
            .private_key_file
            .as_ref()
            .map(|f| f.get_ref().into()),
        listen_port: raw.interface.listen_port.as_ref().map(|p| *p.get_ref()),
        mtu: raw.interface.mtu.as_ref().map(|m| *m.get_ref()),
        fwmark: raw.interface.fwmark.as_ref().map(|m| *m.get_ref()),
        addresses: raw
            .interface
            .addresses
            .iter()
            .map(|a| parse_net(ctx, a, false))
            .collect::<Result<Vec<_>, _>>()?,
        peers: Vec::new(),
    };
    if let Some(m) = &raw.interface.mtu {
        if !(1280..=65535).contains(m.get_ref()) {
            return Err(ctx.err(m.span(), "mtu: expected 1280-65535"));
        }
    }
    let mut peers = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for (i, p) in raw.peers.iter().enumerate() {
        let name = p.name.get_ref().clone();
        if name == "gateway" || name == "*" || name.is_empty() {
            return Err(ctx.err(p.name.span(), format!("peer name `{name}` is reserved")));
        }
        if name.len() > wgbpf_common::PEER_NAME_MAX {
            return Err(ctx.err(
                p.name.span(),
                format!(
                    "peer name is longer than {} bytes",
                    wgbpf_common::PEER_NAME_MAX
                ),
            ));
        }
        if by_name.insert(name.clone(), i).is_some() {
            return Err(ctx.err(p.name.span(), format!("peer `{name}` is defined twice")));
        }
        if let Some(k) = &p.public_key {
            check_key(ctx, k)?;
        }
        let allowed_ips = p
            .allowed_ips
            .iter()
            .map(|a| parse_net(ctx, a, false))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(e) = &p.endpoint {
            check_endpoint(ctx, e)?;
        }
        wg.peers.push(WgPeerSpec {
            name: name.clone(),
            public_key: p.public_key.as_ref().map(|k| k.get_ref().clone()),
            allowed_ips: allowed_ips.clone(),
            endpoint: p.endpoint.as_ref().map(|e| e.get_ref().clone()),
            persistent_keepalive: p.persistent_keepalive.as_ref().map(|k| *k.get_ref()),
            preshared_key_file: p.preshared_key_file.as_ref().map(|f| f.get_ref().into()),
        });
        peers.push(Peer {
            name,
            index: i as u32 + 1,
            allowed_ips,
        });
    }
    let selector = |items: &[Spanned<String>]| -> Result<Selector, MeshError> {
        let mut prefixes = Vec::new();
        for item in items {
            match item.get_ref().as_str() {
                "*" => return Ok(Selector::Any),
                "gateway" => prefixes.extend(local.iter().copied()),
                name if by_name.contains_key(name) => {
                    prefixes.extend(peers[by_name[name]].allowed_ips.iter().copied())
                }
                other if other.contains('.') || other.contains(':') => {
                    prefixes.push(parse_net(ctx, item, false)?)
                }
                other => {
                    return Err(ctx.err(
                        item.span(),
                        format!("unknown peer `{other}` (expected a peer name, \"gateway\", \"*\" or a CIDR)"),
                    ))
                }
            }
        }
        Ok(Selector::Prefixes(prefixes))
    };
    let mut rules = Vec::new();
    for (i, r) in raw.policy.rules.iter().enumerate() {
        let action = match r.action.get_ref().as_str() {
            "accept" => Action::Accept,
            "deny" => Action::Deny,
            other => {
                return Err(ctx.err(
                    r.action.span(),
                    format!("action `{other}`: expected \"accept\" or \"deny\""),
                ))
            }
        };
        let proto = match &r.proto {
            None => None,
            Some(p) => parse_proto(ctx, p)?,
        };
        let ports = r
            .ports
            .iter()
            .map(|p| parse_ports(ctx, p))
            .collect::<Result<Vec<_>, _>>()?;
        if !ports.is_empty() && !proto.is_some_and(crate::policy::model::proto_has_ports) {
            let span = r.ports[0].span();
            return Err(ctx.err(
                span,
                "ports need proto = \"tcp\", \"udp\", \"sctp\", \"icmp\" or \"icmpv6\"",
            ));
        }
        if r.audit && action == Action::Accept {
            return Err(ctx.err(
                r.action.span(),
                "audit applies to deny rules (an accept rule in audit mode means nothing)",
            ));
        }
        rules.push(Rule {
            name: r.name.clone().unwrap_or_else(|| format!("rule #{}", i + 1)),
            action,
            audit: r.audit,
            src: selector(&r.from)?,
            dst: selector(&r.to)?,
            proto,
            ports,
        });
    }
    Ok(Mesh {
        interface: raw.interface.name.get_ref().clone(),
        policy: Policy {
            peers,
            local,
            rules,
            audit: raw.policy.audit,
        },
        wg,
    })
}

/// `host:port`, `a.b.c.d:port` or `[v6]:port` with a port 1-65535.
fn check_endpoint(ctx: &Ctx, e: &Spanned<String>) -> Result<(), MeshError> {
    let v = e.get_ref();
    let bad = || {
        ctx.err(
            e.span(),
            format!("endpoint `{v}`: expected host:port, a.b.c.d:port or [v6]:port"),
        )
    };
    let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
    let _ = port;
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && !host.contains(':')
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    if host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

fn check_key(ctx: &Ctx, k: &Spanned<String>) -> Result<(), MeshError> {
    let s = k.get_ref();
    let ok = s.len() == 44
        && s.ends_with('=')
        && s[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if ok {
        Ok(())
    } else {
        Err(ctx.err(
            k.span(),
            "public_key is not a base64 WireGuard key (44 characters)",
        ))
    }
}

fn parse_proto(ctx: &Ctx, p: &Spanned<toml::Value>) -> Result<Option<u8>, MeshError> {
    use wgbpf_common::*;
    let bad = || {
        ctx.err(
            p.span(),
            "proto: expected tcp, udp, sctp, icmp, icmpv6, any or 0-255",
        )
    };
    match p.get_ref() {
        toml::Value::String(s) => match s.as_str() {
            "tcp" => Ok(Some(PROTO_TCP)),
            "udp" => Ok(Some(PROTO_UDP)),
            "sctp" => Ok(Some(PROTO_SCTP)),
            "icmp" => Ok(Some(PROTO_ICMP)),
            "icmpv6" | "ipv6-icmp" => Ok(Some(PROTO_ICMPV6)),
            "any" | "*" => Ok(None),
            _ => Err(bad()),
        },
        toml::Value::Integer(n) if (1..=255).contains(n) => Ok(Some(*n as u8)),
        _ => Err(bad()),
    }
}

fn parse_ports(ctx: &Ctx, p: &Spanned<toml::Value>) -> Result<PortRange, MeshError> {
    let bad = |why: &str| ctx.err(p.span(), format!("port: {why}"));
    let num = |s: &str| -> Result<u16, MeshError> {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= 65535)
            .map(|n| n as u16)
            .ok_or_else(|| bad(&format!("`{s}` is not a port number 0-65535")))
    };
    let range = match p.get_ref() {
        toml::Value::Integer(n) => num(&n.to_string()).map(PortRange::single)?,
        toml::Value::String(s) if s == "*" => PortRange::new(0, 65535),
        toml::Value::String(s) => match s.split_once('-') {
            Some((a, b)) => PortRange::new(num(a)?, num(b)?),
            None => PortRange::single(num(s)?),
        },
        _ => return Err(bad("expected a number or \"first-last\"")),
    };
    if range.first > range.last {
        return Err(bad(&format!(
            "range {}-{} is empty",
            range.first, range.last
        )));
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "[interface]\nname = \"wg0\"\naddresses = [\"10.0.0.1/24\"]\n\n\
                        [[peer]]\nname = \"alice\"\nallowed_ips = [\"10.0.0.2/32\"]\n\n";

    fn err(text: &str) -> MeshError {
        parse("mesh.toml", text).expect_err("must fail")
    }

    #[test]
    fn resolves_names_gateway_and_cidrs() {
        let m = parse(
            "mesh.toml",
            &format!(
                "{HEAD}[[policy.rule]]\naction = \"accept\"\nfrom = [\"alice\", \"192.0.2.0/24\"]\n\
                 to = [\"gateway\"]\nproto = \"tcp\"\nports = [22, \"80-81\"]\n"
            ),
        )
        .unwrap();
        assert_eq!(m.interface, "wg0");
        let r = &m.policy.rules[0];
        assert_eq!(
            r.src,
            Selector::Prefixes(vec![
                "10.0.0.2/32".parse().unwrap(),
                "192.0.2.0/24".parse().unwrap()
            ])
        );
        assert_eq!(
            r.dst,
            Selector::Prefixes(vec!["10.0.0.1/32".parse().unwrap()])
        );
        assert_eq!(r.ports, vec![PortRange::single(22), PortRange::new(80, 81)]);
        assert_eq!(m.policy.peers[0].index, 1);
    }

    #[test]
    fn errors_name_line_column_and_cause() {
        let e = err(&format!(
            "{HEAD}[[policy.rule]]\naction = \"accept\"\nfrom = [\"mallory\"]\nto = [\"*\"]\n"
        ));
        assert_eq!((e.file.as_str(), e.line), ("mesh.toml", 11));
        assert!(e.message.contains("unknown peer `mallory`"), "{e}");

        let e = err(&format!(
            "{HEAD}[[policy.rule]]\naction = \"accept\"\nfrom = [\"*\"]\nto = [\"*\"]\n\
             proto = \"tcp\"\nports = [\"90-80\"]\n"
        ));
        assert_eq!(e.line, 14);
        assert!(e.message.contains("empty"), "{e}");

        let e = err(&format!(
            "{HEAD}[[policy.rule]]\naction = \"accept\"\nfrom = [\"*\"]\nto = [\"*\"]\nports = [22]\n"
        ));
        assert!(e.message.contains("ports need proto"), "{e}");

        let e = err(&format!(
            "{HEAD}[[policy.rule]]\naction = \"accept\"\nfrom = [\"*\"]\nto = [\"*\"]\n\
             proto = \"tcp\"\nports = [70000]\n"
        ));
        assert!(e.message.contains("70000"), "{e}");

        let e = err(&format!(
            "{HEAD}[[policy.rule]]\naction = \"allow\"\nfrom = [\"*\"]\nto = [\"*\"]\n"
        ));
        assert_eq!((e.line, e.column), (10, 10));

        let e = err("[interface]\nname = \"wg0\"\n[[peer]]\nname = \"a\"\nallowed_ips = [\"10.0.0.300/32\"]\n");
        assert_eq!((e.line, e.column), (5, 16));
        assert!(e.message.contains("10.0.0.300/32"), "{e}");

        let e = err("[interface]\nname = \"wg0\"\nmtux = 1420\n");
        assert!(e.message.contains("unknown field"), "{e}");
        assert_eq!(e.line, 3);

        let e = err("[interface]\nname = \"wg0\"\nmtu = \"x\"\n");
        assert!(e.message.contains("expected u32"), "{e}");
        assert_eq!((e.line, e.column), (3, 7));

        let e = err("[interface]\nname = \"wg0\"\nlisten_port = 70000\n");
        assert_eq!(e.line, 3);

        let e = err(
            "[interface]\nname = \"wg0\"\n[[peer]]\nname = \"a\"\nendpoint = \"gw.example:0\"\n",
        );
        assert!(e.message.contains("endpoint"), "{e}");
        assert_eq!(e.line, 5);
    }

    #[test]
    fn accept_rules_cannot_audit_and_keys_are_checked() {
        let e = err(&format!(
            "{HEAD}[[policy.rule]]\naction = \"accept\"\naudit = true\nfrom = [\"*\"]\nto = [\"*\"]\n"
        ));
        assert!(e.message.contains("audit"), "{e}");
        let e =
            err("[interface]\nname = \"wg0\"\n[[peer]]\nname = \"a\"\npublic_key = \"short\"\n");
        assert!(e.message.contains("public_key"), "{e}");
        assert_eq!(e.line, 5);
    }
}
