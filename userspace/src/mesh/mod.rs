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

mod flows;
mod names;
mod raw;
pub mod reach;

pub use flows::{FlowSpec, DEFAULT_SWEEP_INTERVAL};

pub use names::{Directory, Resolved};

use std::{collections::HashMap, ops::Range, path::Path};

use ipnet::IpNet;
use thiserror::Error;
use toml::Spanned;

use raw::MeshFile;

use crate::{
    dataplane::program_log::ProgramLog,
    policy::model::{Action, Expectation, Peer, Policy, PolicyTest, PortRange, Rule, Selector},
    wg::{Endpoint, Key},
};

#[derive(Debug, Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct MeshError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// A mesh file, resolved.
#[derive(Debug, Clone)]
pub struct Mesh {
    pub interface: String,
    pub policy: Policy,
    /// The policy's tests, run before any apply.
    pub tests: Vec<PolicyTest>,
    /// Every name the file defines, for `policy explain`.
    pub directory: Directory,
    /// The WireGuard side. Without a private key file the interface is
    /// managed elsewhere (wg-quick, another tool) and only the policy is
    /// enforced.
    pub wg: WgSpec,
    /// `[interface.guard]`: the XDP guard on the underlay interfaces.
    pub guard: Option<GuardSpec>,
    /// `[interface.flows]`: the flow table's size, lifetimes, budget and
    /// sweep (defaults when absent).
    pub flows: FlowSpec,
    /// `[interface] program_log`: the level the programs log at through
    /// aya-log (`wgbpf monitor --program-log`); off by default.
    pub program_log: ProgramLog,
    /// Where each rule of `policy.rules` is written and the names it uses,
    /// index for index (for `policy check`'s warnings and the matrix).
    pub rule_sources: Vec<RuleSource>,
    /// `[policy] tailscale = "FILE"` / `netbird = "FILE"`, not yet applied:
    /// [`crate::source`] applies them (with [`crate::import`]).
    pub includes: Vec<Include>,
}

/// A rule as written: `file:line` of its `[[policy.rule]]` (or of the
/// imported rule) and its `from` and `to` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSource {
    pub at: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
}

/// Which kind of file a mesh file's `[policy]` includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeKind {
    Tailscale,
    Netbird,
}

/// `[policy] tailscale = "FILE"` or `netbird = "FILE"`, with the position
/// of the value in the mesh file.
#[derive(Debug, Clone)]
pub struct Include {
    pub kind: IncludeKind,
    pub path: String,
    pub line: usize,
    pub column: usize,
}

/// `[interface.guard]`, checked: the underlay names are interface names,
/// the listen port is set, the allowlist parses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardSpec {
    pub underlay: Vec<String>,
    /// The WireGuard listen port the guard watches (`listen_port`).
    pub listen_port: u16,
    pub handshake_rate: Option<u32>,
    pub handshake_burst: Option<u32>,
    pub allow_sources: Option<Vec<IpNet>>,
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
    /// `public_endpoint`: where peers reach the gateway.
    pub public_endpoint: Option<Endpoint>,
    /// `dns`: for exported peer configs.
    pub dns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeerSpec {
    pub name: String,
    pub public_key: Option<Key>,
    pub allowed_ips: Vec<IpNet>,
    /// The host may be a DNS name (resolved when the plan is built, and
    /// again by the daemon).
    pub endpoint: Option<Endpoint>,
    pub persistent_keepalive: Option<u16>,
    pub preshared_key_file: Option<std::path::PathBuf>,
    /// A key rotation declared in the file: the old key is accepted too
    /// until the window ends.
    pub rotation: Option<KeyRotation>,
    /// `address`: the peer's own addresses in its exported config.
    pub address: Vec<IpNet>,
    /// `export_allowed_ips`: the gateway's AllowedIPs in the peer's
    /// exported config, when the policy should not decide them.
    pub export_allowed_ips: Option<Vec<IpNet>>,
}

/// `previous_public_key` and `rotation_ends` of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotation {
    pub previous_public_key: Key,
    pub ends: std::time::SystemTime,
}

/// A peer's declared key rotation: both fields or neither, the old key
/// not the new one, the end a full date and time with its offset.
fn key_rotation(
    ctx: &Ctx,
    p: &raw::PeerSection,
    public_key: Option<&Key>,
) -> Result<Option<KeyRotation>, MeshError> {
    let (prev, ends) = match (&p.previous_public_key, &p.rotation_ends) {
        (None, None) => return Ok(None),
        (Some(k), None) => {
            return Err(ctx.err(
                k.span(),
                "previous_public_key needs rotation_ends (when to stop accepting it)",
            ))
        }
        (None, Some(e)) => {
            return Err(ctx.err(
                e.span(),
                "rotation_ends needs previous_public_key (the key being replaced)",
            ))
        }
        (Some(k), Some(e)) => (k, e),
    };
    let previous = Key::from_base64(prev.get_ref())
        .map_err(|w| ctx.err(prev.span(), format!("previous_public_key: {w}")))?;
    let Some(current) = public_key else {
        return Err(ctx.err(
            prev.span(),
            "previous_public_key needs public_key (the new key)",
        ));
    };
    if *current == previous {
        return Err(ctx.err(
            prev.span(),
            "previous_public_key is the same as public_key: nothing to rotate",
        ));
    }
    let ends = datetime_to_system_time(ends.get_ref())
        .map_err(|m| ctx.err(ends.span(), format!("rotation_ends: {m}")))?;
    Ok(Some(KeyRotation {
        previous_public_key: previous,
        ends,
    }))
}

/// A TOML offset date-time (`2026-12-04T18:00:00Z`) as a `SystemTime`.
fn datetime_to_system_time(d: &toml::value::Datetime) -> Result<std::time::SystemTime, String> {
    let (Some(date), Some(time), Some(offset)) = (d.date, d.time, d.offset) else {
        return Err(format!(
            "`{d}` needs a date, a time and an offset, e.g. 2026-12-04T18:00:00Z"
        ));
    };
    let offset_minutes = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => minutes.into(),
    };
    crate::utc::to_system_time(
        (date.year.into(), date.month.into(), date.day.into()),
        (
            time.hour.into(),
            time.minute.into(),
            time.second.into(),
            time.nanosecond,
        ),
        offset_minutes,
    )
    .ok_or_else(|| format!("`{d}` is before 1970"))
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    /// For a document joined from parts ([`parse_joined`]): where each
    /// part starts in `text` and its own name, so that positions name the
    /// part and its own line. Empty: `text` is all of `file`.
    parts: &'a [(usize, &'a str)],
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> MeshError {
        let (file, line, column) = self.locate(span);
        MeshError {
            file: file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    /// The file (or part) an offset lies in, and its line and column there.
    fn locate(&self, span: Range<usize>) -> (&str, usize, usize) {
        let at = span.start.min(self.text.len());
        let (start, file) = self
            .parts
            .iter()
            .rev()
            .find(|(start, _)| *start <= at)
            .copied()
            .unwrap_or((0, self.file));
        let before = &self.text[start..at];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        (file, line, column)
    }

    fn position(&self, span: Range<usize>) -> (usize, usize) {
        let (_, line, column) = self.locate(span);
        (line, column)
    }

    /// `file:line`, for the rule and test positions.
    fn line_at(&self, span: Range<usize>) -> String {
        let (file, line, _) = self.locate(span);
        format!("{file}:{line}")
    }

    fn at(&self, span: Range<usize>) -> String {
        let (file, line, column) = self.locate(span);
        format!("{file}:{line}:{column}")
    }
}

/// Reads and resolves a mesh file, its includes recorded but not applied
/// (see [`crate::source::load`] for the file as commands read it).
pub fn load(path: &Path) -> Result<Mesh, MeshError> {
    let text = std::fs::read_to_string(path).map_err(|e| MeshError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse(&path.display().to_string(), &text)
}

/// Parses and resolves a mesh file's text; includes recorded, not applied.
pub fn parse(file: &str, text: &str) -> Result<Mesh, MeshError> {
    parse_ctx(&Ctx {
        file,
        text,
        parts: &[],
    })
}

/// One mesh from parts, each a TOML document of its own (a fleet's
/// gateway part and its shared part): their top-level tables must be
/// distinct (`[interface]` and `[[peer]]` in one, `[policy]` in the other,
/// say), and the parts are read as one document. Errors name the part
/// (`file`) and its own line.
pub fn parse_joined(parts: &[(&str, &str)]) -> Result<Mesh, MeshError> {
    let mut text = String::new();
    let mut starts = Vec::new();
    let mut union = toml::Table::new();
    for (file, part) in parts {
        let single = Ctx {
            file,
            text: part,
            parts: &[],
        };
        let table: toml::Table = toml::from_str(part)
            .map_err(|e| single.err(e.span().unwrap_or(0..0), e.message().to_string()))?;
        for (key, value) in table {
            if union.contains_key(&key) {
                let at = part.find(&format!("[{key}")).unwrap_or(0);
                return Err(single.err(
                    at..at,
                    format!(
                        "`{key}` is in another part too: each top-level table belongs to one part \
                         (the gateway's [interface] and [[peer]]s, or the shared [policy])"
                    ),
                ));
            }
            union.insert(key, value);
        }
        starts.push((text.len(), *file));
        text.push_str(part);
        text.push('\n');
    }
    // Joined as text so that every span keeps its part; a part whose top
    // holds bare keys would slip them into the previous part's last table.
    let joined: toml::Table = toml::from_str(&text).unwrap_or_default();
    if joined != union {
        let (file, _) = parts.last().copied().unwrap_or(("", ""));
        return Err(MeshError {
            file: file.to_string(),
            line: 1,
            column: 1,
            message: "the parts do not join into one document: a part may hold \
                      [tables] only, no bare keys before its first [table]"
                .into(),
        });
    }
    let file = parts.first().map_or("", |(f, _)| *f);
    parse_ctx(&Ctx {
        file,
        text: &text,
        parts: &starts,
    })
}

fn parse_ctx(ctx: &Ctx) -> Result<Mesh, MeshError> {
    let raw: MeshFile = toml::from_str(ctx.text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        // A [policy] alone is a fragment of some other file, not a mesh.
        if e.message() == "missing field `interface`" {
            return ctx.err(
                span,
                "no [interface] section: a mesh file names its interface and \
                 [[peer]]s as well as its [policy] (a policy fragment cannot be \
                 checked alone: its names are the mesh's; see docs/mesh-file.md)",
            );
        }
        ctx.err(span, e.message().to_string())
    })?;
    let includes: Vec<Include> = [
        (IncludeKind::Tailscale, &raw.policy.tailscale),
        (IncludeKind::Netbird, &raw.policy.netbird),
    ]
    .into_iter()
    .filter_map(|(kind, path)| {
        let path = path.as_ref()?;
        let (line, column) = ctx.position(path.span());
        Some(Include {
            kind,
            path: path.get_ref().clone(),
            line,
            column,
        })
    })
    .collect();
    let mut mesh = resolve(ctx, raw)?;
    mesh.includes = includes;
    Ok(mesh)
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
    crate::ifname::check(raw.interface.name.get_ref())
        .map_err(|e| ctx.err(raw.interface.name.span(), format!("name: {e}")))?;
    let guard = guard(ctx, &raw.interface)?;
    let flows = flows::flows(ctx, raw.interface.flows.as_ref())?;
    let program_log = match &raw.interface.program_log {
        Some(v) => v
            .get_ref()
            .parse()
            .map_err(|e| ctx.err(v.span(), format!("program_log: {e}")))?,
        None => ProgramLog::Off,
    };
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
        public_endpoint: raw
            .interface
            .public_endpoint
            .as_ref()
            .map(|e| {
                Endpoint::parse(e.get_ref())
                    .map_err(|m| ctx.err(e.span(), format!("public_endpoint: {m}")))
            })
            .transpose()?,
        dns: raw
            .interface
            .dns
            .iter()
            .map(|d| {
                let v = d.get_ref();
                if v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == ',') {
                    Err(ctx.err(
                        d.span(),
                        format!("dns: `{v}` is not an address or a search domain"),
                    ))
                } else {
                    Ok(v.clone())
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
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
        let public_key = p
            .public_key
            .as_ref()
            .map(|k| {
                Key::from_base64(k.get_ref())
                    .map_err(|w| ctx.err(k.span(), format!("public_key: {w}")))
            })
            .transpose()?;
        let allowed_ips = p
            .allowed_ips
            .iter()
            .map(|a| parse_net(ctx, a, false))
            .collect::<Result<Vec<_>, _>>()?;
        // WireGuard accepts from a peer any source in its AllowedIPs: one
        // holding the gateway's address could speak as the gateway.
        for (net, spanned) in allowed_ips.iter().zip(&p.allowed_ips) {
            if let Some(own) = local.iter().find(|l| net.contains(&l.addr())) {
                return Err(ctx.err(
                    spanned.span(),
                    format!(
                        "allowed_ips: {net} contains the gateway's address {}: peer `{name}` \
                         could send as the gateway",
                        own.addr()
                    ),
                ));
            }
        }
        let endpoint = p
            .endpoint
            .as_ref()
            .map(|e| Endpoint::parse(e.get_ref()).map_err(|m| ctx.err(e.span(), m)))
            .transpose()?;
        let rotation = key_rotation(ctx, p, public_key.as_ref())?;
        let address = p
            .address
            .iter()
            .map(|a| parse_net(ctx, a, false))
            .collect::<Result<Vec<_>, _>>()?;
        let export_allowed_ips = p
            .export_allowed_ips
            .as_ref()
            .map(|v| v.iter().map(|a| parse_net(ctx, a, false)).collect())
            .transpose()?;
        wg.peers.push(WgPeerSpec {
            name: name.clone(),
            public_key,
            allowed_ips: allowed_ips.clone(),
            endpoint,
            persistent_keepalive: p.persistent_keepalive.as_ref().map(|k| *k.get_ref()),
            preshared_key_file: p.preshared_key_file.as_ref().map(|f| f.get_ref().into()),
            rotation,
            address,
            export_allowed_ips,
        });
        peers.push(Peer {
            name,
            index: i as u32 + 1,
            allowed_ips,
        });
    }
    let directory = directory(ctx, &raw, &peers, &local)?;
    let selector = |items: &[Spanned<String>]| -> Result<Selector, MeshError> {
        let mut prefixes = Vec::new();
        for item in items {
            match directory.resolve(item.get_ref()) {
                Ok(Resolved::Any) => return Ok(Selector::Any),
                Ok(Resolved::Prefixes(p)) => prefixes.extend(p),
                Err(e) => return Err(ctx.err(item.span(), e)),
            }
        }
        Ok(Selector::Prefixes(prefixes))
    };
    let mut rules = Vec::new();
    let mut rule_sources = Vec::new();
    for (i, r) in raw.policy.rules.iter().enumerate() {
        // The rule's header line: the last `[[policy.rule]]` before its action.
        let action_at = r.action.span().start.min(ctx.text.len());
        let header = ctx.text[..action_at]
            .rfind("[[policy.rule]]")
            .unwrap_or(action_at);
        rule_sources.push(RuleSource {
            at: ctx.line_at(header..header),
            from: r.from.iter().map(|f| f.get_ref().clone()).collect(),
            to: r.to.iter().map(|t| t.get_ref().clone()).collect(),
        });
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
            link_local: Default::default(),
            peers,
            local,
            rules,
            audit: raw.policy.audit,
        },
        tests: tests(ctx, &raw, &directory)?,
        directory,
        wg,
        guard,
        flows,
        program_log,
        rule_sources,
        includes: Vec::new(),
    })
}

fn guard(ctx: &Ctx, raw: &raw::InterfaceSection) -> Result<Option<GuardSpec>, MeshError> {
    let Some(g) = &raw.guard else {
        return Ok(None);
    };
    let listen_port = raw
        .listen_port
        .as_ref()
        .map(|p| *p.get_ref())
        .ok_or_else(|| {
            ctx.err(
                g.span(),
                "guard: needs the interface's listen_port (the port it watches)",
            )
        })?;
    let span = g.span();
    let g = g.get_ref();
    if g.underlay.is_empty() {
        return Err(ctx.err(span, "guard: underlay: name at least one interface"));
    }
    let mut underlay = Vec::new();
    for u in &g.underlay {
        crate::ifname::check(u.get_ref())
            .map_err(|e| ctx.err(u.span(), format!("guard: underlay: {e}")))?;
        if u.get_ref() == raw.name.get_ref() {
            return Err(ctx.err(
                u.span(),
                "guard: underlay: the WireGuard interface itself is not its underlay",
            ));
        }
        underlay.push(u.get_ref().clone());
    }
    let allow_sources = match &g.allow_sources {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|s| {
                    s.get_ref()
                        .parse::<IpNet>()
                        .or_else(|_| s.get_ref().parse::<std::net::IpAddr>().map(IpNet::from))
                        .map_err(|_| {
                            ctx.err(
                                s.span(),
                                format!("guard: allow_sources: `{}` is not a CIDR", s.get_ref()),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(Some(GuardSpec {
        underlay,
        listen_port,
        handshake_rate: g.handshake_rate.as_ref().map(|r| *r.get_ref()),
        handshake_burst: g.handshake_burst.as_ref().map(|b| *b.get_ref()),
        allow_sources,
    }))
}

/// The names the file defines. Group members are checked here, so a typo
/// in a group is reported where it is written.
fn directory(
    ctx: &Ctx,
    raw: &MeshFile,
    peers: &[Peer],
    local: &[IpNet],
) -> Result<Directory, MeshError> {
    let mut d = Directory {
        gateway: local.to_vec(),
        ..Default::default()
    };
    for (p, section) in peers.iter().zip(&raw.peers) {
        d.peers.insert(p.name.clone(), p.allowed_ips.clone());
        if let Some(u) = &section.user {
            d.users
                .entry(u.get_ref().clone())
                .or_default()
                .insert(p.name.clone());
        }
        for t in &section.tags {
            d.tags
                .entry(t.get_ref().clone())
                .or_default()
                .insert(p.name.clone());
        }
        for g in &section.groups {
            d.groups
                .entry(g.get_ref().clone())
                .or_default()
                .push(p.name.clone());
        }
    }
    for (name, h) in &raw.policy.hosts {
        if d.peers.contains_key(name) || name == "gateway" {
            return Err(ctx.err(h.span(), format!("host `{name}` has the name of a peer")));
        }
        d.hosts.insert(name.clone(), parse_net(ctx, h, false)?);
    }
    for (name, members) in &raw.policy.groups {
        let entry = d.groups.entry(name.clone()).or_default();
        entry.extend(members.iter().map(|m| m.get_ref().clone()));
    }
    for members in raw.policy.groups.values() {
        for m in members {
            d.resolve(m.get_ref()).map_err(|e| ctx.err(m.span(), e))?;
        }
    }
    for (section, p) in raw.peers.iter().zip(peers) {
        for g in &section.groups {
            d.resolve(&format!("group:{}", g.get_ref()))
                .map_err(|e| ctx.err(g.span(), format!("peer {}: {e}", p.name)))?;
        }
    }
    Ok(d)
}

/// `[[policy.test]]` blocks resolved to addresses.
fn tests(ctx: &Ctx, raw: &MeshFile, d: &Directory) -> Result<Vec<PolicyTest>, MeshError> {
    let mut out = Vec::new();
    for t in &raw.policy.tests {
        let src_addrs = d
            .addresses(t.src.get_ref())
            .map_err(|e| ctx.err(t.src.span(), e))?;
        let proto = match &t.proto {
            None => wgbpf_common::PROTO_TCP,
            Some(p) => parse_proto(ctx, p)?
                .ok_or_else(|| ctx.err(p.span(), "a test needs one protocol, not any"))?,
        };
        let mut expect = Vec::new();
        for (accept, list) in [(true, &t.accept), (false, &t.deny)] {
            for item in list {
                let (target, port) =
                    split_target(item.get_ref()).map_err(|e| ctx.err(item.span(), e))?;
                let addrs = d.addresses(target).map_err(|e| ctx.err(item.span(), e))?;
                expect.push(Expectation {
                    at: ctx.at(item.span()),
                    accept,
                    target: target.to_string(),
                    addrs,
                    port,
                });
            }
        }
        out.push(PolicyTest {
            at: ctx.line_at(t.src.span()),
            src: t.src.get_ref().clone(),
            src_addrs,
            proto,
            expect,
        });
    }
    Ok(out)
}

/// `name:port`, `a.b.c.d:port` or `[v6]:port` (for ICMP the "port" is the
/// message type).
fn split_target(s: &str) -> Result<(&str, u16), String> {
    let (name, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}`: expected destination:port"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("`{s}`: `{port}` is not a port number 0-65535"))?;
    let name = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(inner) => inner,
        None if name.contains(':') && name.parse::<std::net::IpAddr>().is_ok() => {
            return Err(format!(
                "`{s}`: write IPv6 addresses in brackets, [addr]:port"
            ))
        }
        None => name,
    };
    Ok((name, port))
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
    fn program_log_is_read_and_a_bad_level_is_named_at_its_place() {
        assert_eq!(
            parse("mesh.toml", HEAD).unwrap().program_log,
            ProgramLog::Off
        );
        let with = |level: &str| {
            HEAD.replacen(
                "[interface]\n",
                &format!("[interface]\nprogram_log = {level}\n"),
                1,
            )
        };
        assert_eq!(
            parse("mesh.toml", &with("\"Debug\"")).unwrap().program_log,
            ProgramLog::Debug
        );
        let e = err(&with("\"loud\""));
        assert_eq!((e.line, e.column), (2, 15), "{e}");
        assert!(
            e.message.contains("program_log: `loud` is not a log level"),
            "{e}"
        );
        // A wrong type: serde's message, at the value's place.
        let e = err(&with("3"));
        assert_eq!((e.line, e.column), (2, 15), "{e}");
        assert!(e.message.contains("expected a string"), "{e}");
    }

    #[test]
    fn key_rotations_are_checked_with_their_positions() {
        let (a, b) = (
            Key::from_bytes([1; 32]).to_base64(),
            Key::from_bytes([2; 32]).to_base64(),
        );
        let file = |extra: &str| {
            format!(
                "[interface]\nname = \"wg0\"\naddresses = [\"10.0.0.1/24\"]\n\n[[peer]]\n\
                 name = \"alice\"\npublic_key = \"{b}\"\nallowed_ips = [\"10.0.0.2/32\"]\n{extra}"
            )
        };
        let m = parse(
            "mesh.toml",
            &file(&format!(
                "previous_public_key = \"{a}\"\nrotation_ends = 2026-12-04T20:00:00+02:00\n"
            )),
        )
        .unwrap();
        let r = m.wg.peers[0].rotation.as_ref().unwrap();
        assert_eq!(r.previous_public_key.to_base64(), a);
        assert_eq!(
            r.ends,
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_407_200)
        );
        for (extra, line, want) in [
            (
                format!("previous_public_key = \"{a}\"\n"),
                9,
                "needs rotation_ends",
            ),
            (
                "rotation_ends = 2026-12-04T18:00:00Z\n".to_string(),
                9,
                "needs previous_public_key",
            ),
            (
                format!("previous_public_key = \"{b}\"\nrotation_ends = 2026-12-04T18:00:00Z\n"),
                9,
                "nothing to rotate",
            ),
            (
                format!("previous_public_key = \"{a}\"\nrotation_ends = 2026-12-04T18:00:00\n"),
                10,
                "needs a date, a time and an offset",
            ),
            (
                "previous_public_key = \"short\"\nrotation_ends = 2026-12-04T18:00:00Z\n"
                    .to_string(),
                9,
                "previous_public_key:",
            ),
        ] {
            let e = err(&file(&extra));
            assert!(e.message.contains(want), "{extra}: {e}");
            assert_eq!(e.line, line, "{extra}: {e}");
        }
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
        assert!(e.message.contains("unknown name `mallory`"), "{e}");

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

    #[test]
    fn the_guard_section_is_checked_where_it_is_written() {
        let ok = "[interface]\nname = \"wg0\"\nlisten_port = 51820\n\
                  [interface.guard]\nunderlay = [\"eth0\", \"eth1\"]\nhandshake_rate = 5\n\
                  allow_sources = [\"198.51.100.0/24\", \"2001:db8::1\"]\n";
        let g = parse("t.toml", ok).unwrap().guard.unwrap();
        assert_eq!(g.underlay, ["eth0", "eth1"]);
        assert_eq!(
            (g.listen_port, g.handshake_rate, g.handshake_burst),
            (51820, Some(5), None)
        );
        assert_eq!(g.allow_sources.unwrap().len(), 2);
        assert!(parse("t.toml", "[interface]\nname = \"wg0\"\n")
            .unwrap()
            .guard
            .is_none());

        // No listen port to watch.
        let e = err(&ok.replace("listen_port = 51820\n", ""));
        assert!(
            e.message.contains("needs the interface's listen_port"),
            "{e}"
        );
        // An underlay that is no interface name, or the tunnel itself.
        let e = err(&ok.replace("\"eth1\"", "\"../x\""));
        assert!(
            e.message.contains("underlay") && e.message.contains("not an interface name"),
            "{e}"
        );
        assert_eq!(e.line, 5, "{e}");
        let e = err(&ok.replace("\"eth1\"", "\"wg0\""));
        assert!(e.message.contains("the WireGuard interface itself"), "{e}");
        // An allowlist entry that is no CIDR; an unknown field.
        let e = err(&ok.replace("2001:db8::1", "not-a-net"));
        assert!(
            e.message.contains("allow_sources") && e.message.contains("not-a-net"),
            "{e}"
        );
        assert_eq!(e.line, 7, "{e}");
        let e = err(&ok.replace("[\"eth0\", \"eth1\"]", "[]"));
        assert!(
            e.message.contains("at least one interface") && e.line > 1,
            "{e}"
        );
        let e = err(&format!("{ok}burst = 3\n"));
        assert!(e.message.contains("burst"), "{e}");
    }

    #[test]
    fn a_peer_cannot_claim_the_gateways_address() {
        // WireGuard accepts from a peer any source inside its AllowedIPs: a
        // peer whose AllowedIPs hold the gateway's address could send as
        // the gateway, and the policy would judge it as the gateway.
        for (allowed, addr) in [
            ("10.9.0.0/16", "10.9.0.1"),
            ("0.0.0.0/0", "10.9.0.1"),
            ("fd09::/64", "fd09::1"),
        ] {
            let e = err(&format!(
                "[interface]\nname = \"wg0\"\naddresses = [\"10.9.0.1/24\", \"fd09::1/64\"]\n\
                 [[peer]]\nname = \"a\"\nallowed_ips = [\"10.9.0.2/32\",\n  \"{allowed}\"]\n"
            ));
            assert!(
                e.message.contains(allowed)
                    && e.message.contains(addr)
                    && e.message.contains("gateway"),
                "{e}"
            );
            assert_eq!((e.line, e.column), (7, 3), "{e}");
        }
        // Other prefixes, and the gateway's own subnet on the interface, are fine.
        parse(
            "t.toml",
            "[interface]\nname = \"wg0\"\naddresses = [\"10.9.0.1/24\"]\n\
             [[peer]]\nname = \"a\"\nallowed_ips = [\"10.9.0.2/32\", \"10.10.0.0/16\"]\n",
        )
        .unwrap();
    }
}

#[cfg(test)]
mod language_tests {
    use super::*;
    use crate::policy::check::{explain, run_tests};

    const MESH: &str = r#"
[interface]
name = "wg0"
addresses = ["10.0.0.1/24", "fd00::1/64"]

[[peer]]
name = "alice"
user = "alice@example.com"
groups = ["eng"]
allowed_ips = ["10.0.0.2/32", "fd00::2/128"]

[[peer]]
name = "bob"
user = "bob@example.com"
allowed_ips = ["10.0.0.3/32"]

[[peer]]
name = "db1"
tags = ["db"]
allowed_ips = ["10.0.1.10/32"]

[policy.groups]
ops = ["user:bob@example.com"]
staff = ["group:eng", "group:ops"]

[policy.hosts]
office = "192.0.2.0/24"

[[policy.rule]]
name = "staff-ssh"
action = "accept"
from = ["group:staff"]
to = ["gateway", "tag:db"]
proto = "tcp"
ports = [22]

[[policy.rule]]
name = "eng-db"
action = "accept"
from = ["group:eng", "host:office"]
to = ["tag:db"]
proto = "tcp"
ports = [5432]

[[policy.test]]
src = "alice"
accept = ["tag:db:5432", "gateway:22", "db1:22"]
deny = ["tag:db:80"]

[[policy.test]]
src = "user:bob@example.com"
accept = ["db1:22"]
deny = ["db1:5432"]
"#;

    #[test]
    fn groups_tags_users_hosts_resolve() {
        let m = parse("m.toml", MESH).unwrap();
        let d = &m.directory;
        let prefixes = |n: &str| match d.resolve(n).unwrap() {
            Resolved::Prefixes(p) => p.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            Resolved::Any => vec!["*".into()],
        };
        assert_eq!(
            prefixes("group:staff"),
            ["10.0.0.2/32", "fd00::2/128", "10.0.0.3/32"]
        );
        assert_eq!(prefixes("tag:db"), ["10.0.1.10/32"]);
        assert_eq!(prefixes("user:bob@example.com"), ["10.0.0.3/32"]);
        assert_eq!(prefixes("office"), ["192.0.2.0/24"]);
        assert_eq!(
            d.addresses("office").unwrap(),
            ["192.0.2.1".parse::<std::net::IpAddr>().unwrap()]
        );
        let (checked, failures) = run_tests(&m.policy, &m.tests);
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(checked, 7);
        let e = explain(
            &m.policy,
            "192.0.2.7".parse().unwrap(),
            "10.0.1.10".parse().unwrap(),
            6,
            5432,
        );
        assert_eq!((e.verdict, e.rule.as_str()), ("accept", "eng-db"));
        let e = explain(
            &m.policy,
            "10.0.0.3".parse().unwrap(),
            "10.0.1.10".parse().unwrap(),
            6,
            5432,
        );
        assert_eq!((e.verdict, e.rule.as_str()), ("deny", "default deny"));
    }

    #[test]
    fn failing_tests_are_named_with_their_line() {
        let text = MESH.replace("deny = [\"db1:5432\"]", "deny = [\"db1:22\"]");
        let m = parse("m.toml", &text).unwrap();
        let (_, failures) = run_tests(&m.policy, &m.tests);
        assert_eq!(failures.len(), 1);
        let f = failures[0].to_string();
        let line = text
            .lines()
            .position(|l| l.contains("deny = [\"db1:22\"]"))
            .unwrap()
            + 1;
        assert!(f.starts_with(&format!("m.toml:{line}:")), "{f}");
        assert!(f.contains("staff-ssh"), "{f}");
    }

    #[test]
    fn unknown_names_are_errors_where_written() {
        for (from, to, what) in [
            ("group:staff", "group:nope", "unknown group `nope`"),
            ("tag:dbx", "gateway", "unknown tag `dbx`"),
            ("user:eve@example.com", "gateway", "unknown user"),
            ("host:lab", "gateway", "unknown host `lab`"),
        ] {
            let text = MESH.replace(
                "from = [\"group:staff\"]\nto = [\"gateway\", \"tag:db\"]",
                &format!("from = [\"{from}\"]\nto = [\"{to}\"]"),
            );
            let e = parse("m.toml", &text).unwrap_err();
            assert!(e.message.contains(what), "{e}");
            let line = text
                .lines()
                .position(|l| {
                    l.contains(&format!("\"{from}\""))
                        || l.contains(&format!("\"{to}\"")) && l.starts_with("to")
                })
                .unwrap();
            assert!(e.line >= line, "{e}");
        }
        let bad_group = MESH.replace("ops = [\"user:bob@example.com\"]", "ops = [\"mallory\"]");
        let e = parse("m.toml", &bad_group).unwrap_err();
        assert!(e.message.contains("mallory"), "{e}");
        let cycle = MESH.replace(
            "ops = [\"user:bob@example.com\"]",
            "ops = [\"group:staff\"]",
        );
        let e = parse("m.toml", &cycle).unwrap_err();
        assert!(e.message.contains("contains itself"), "{e}");
        let v6 = MESH.replace("\"gateway:22\"", "\"fd00::1:22\"");
        let e = parse("m.toml", &v6).unwrap_err();
        assert!(e.message.contains("brackets"), "{e}");
    }
}
