//! Policies and configurations from elsewhere, turned into the mesh file's
//! language: Tailscale/Headscale ACL files (HuJSON), Netbird policy rules
//! (JSON) and wg-quick configuration files. See docs/imports.md.
//!
//! The ACL and policy imports first *translate* a file into mesh-language
//! names, rules and tests ([`Translated`], every item with its position in
//! the imported file), then either print that as mesh TOML for review
//! (`wgbpf import tailscale`), or *apply* it to a parsed mesh
//! ([`apply`], for `[policy] tailscale = "FILE"` / `netbird = "FILE"`),
//! where errors name the imported file, line and column.

pub mod hujson;
mod keycase;
mod located;
pub mod netbird;
mod prefixset;
pub mod tailscale;
pub mod wgquick;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use thiserror::Error;

use crate::{
    mesh::{Directory, IncludeKind, Mesh, MeshError, Resolved},
    policy::model::{proto_name, Action, Expectation, PolicyTest, PortRange, Rule, Selector},
};

/// An error in an imported file, with its position (1-based; 0 when the
/// file could not be read at all).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ImportError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl From<ImportError> for MeshError {
    fn from(e: ImportError) -> Self {
        MeshError {
            file: e.file,
            line: e.line,
            column: e.column,
            message: e.message,
        }
    }
}

/// A line and column (1-based, the column counted in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loc {
    pub line: usize,
    pub column: usize,
}

/// An imported file's name and text, to turn offsets into positions.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Source<'_> {
    pub fn loc(&self, offset: usize) -> Loc {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Loc {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }

    /// The offset of a 1-based line and byte column (serde_json's).
    pub fn offset_of(&self, line: usize, column: usize) -> usize {
        let mut start = 0;
        for _ in 1..line {
            match self.text[start..].find('\n') {
                Some(i) => start += i + 1,
                None => return self.text.len(),
            }
        }
        (start + column.saturating_sub(1)).min(self.text.len())
    }

    pub fn err_at(&self, loc: Loc, message: impl Into<String>) -> ImportError {
        ImportError {
            file: self.file.to_string(),
            line: loc.line,
            column: loc.column,
            message: message.into(),
        }
    }

    pub fn err(&self, offset: usize, message: impl Into<String>) -> ImportError {
        self.err_at(self.loc(offset), message)
    }
}

/// A name (in the mesh file's language) and where the imported file says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub name: String,
    pub loc: Loc,
}

/// Names the mesh language does not have, resolved by [`apply`] itself.
pub mod special {
    /// Every peer with a `user` (Tailscale's `autogroup:member`).
    pub const MEMBERS: &str = "autogroup:member";
    /// Every peer with at least one tag (Tailscale's `autogroup:tagged`).
    pub const TAGGED: &str = "autogroup:tagged";
    /// Every peer (Netbird's group `All`).
    pub const ALL_PEERS: &str = "autogroup:all-peers";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRule {
    pub name: String,
    pub action: Action,
    pub from: Vec<Item>,
    pub to: Vec<Item>,
    pub proto: Option<u8>,
    pub ports: Vec<PortRange>,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedTest {
    pub src: Item,
    pub proto: u8,
    /// (destination, port, must be accepted)
    pub expect: Vec<(Item, u16, bool)>,
}

/// An imported policy in the mesh file's language, before resolution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Translated {
    /// The imported file, as named in errors and rule names.
    pub file: String,
    /// Group -> members (`user:U`, `group:G`, `tag:T`, peer names).
    pub groups: Vec<(String, Vec<Item>)>,
    pub hosts: Vec<(String, IpNet, Loc)>,
    pub rules: Vec<ImportedRule>,
    pub tests: Vec<ImportedTest>,
    /// Tags the file declares (Tailscale's tagOwners): they exist even when
    /// no peer carries them (and then stand for nobody).
    pub declared_tags: BTreeSet<String>,
    /// Sections read but not translated, for the operator.
    pub notes: Vec<String>,
}

/// The largest imported file read (a policy is text, not a disk image).
pub const MAX_FILE: u64 = 8 << 20;

/// Reads an imported file: a regular file of at most [`MAX_FILE`] bytes, in
/// UTF-8.
pub fn read_file(path: &Path) -> Result<String, String> {
    if ["/proc", "/sys", "/dev"]
        .iter()
        .any(|p| path.starts_with(p))
    {
        return Err("not a regular file".into());
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE {
        return Err(format!("larger than {MAX_FILE} bytes"));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".into())
}

/// The name standard input goes by in messages.
pub const STDIN_NAME: &str = "<stdin>";

/// Reads a file named on the command line: `-` is standard input, and a
/// pipe (`<(...)`, /dev/stdin) is read as a file is, up to [`MAX_FILE`]
/// bytes. Includes named in a mesh file go through [`read_file`] instead: a
/// daemon must not wait on a pipe nobody writes.
pub fn read_input(path: &Path) -> Result<String, String> {
    use std::{io::Read, os::unix::fs::FileTypeExt};
    let capped = |r: &mut dyn Read| -> Result<String, String> {
        let mut bytes = Vec::new();
        r.take(MAX_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read: {e}"))?;
        if bytes.len() as u64 > MAX_FILE {
            return Err(format!("larger than {MAX_FILE} bytes"));
        }
        String::from_utf8(bytes).map_err(|_| "not UTF-8 text".into())
    };
    if path == Path::new("-") {
        return capped(&mut std::io::stdin().lock());
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    let stream = meta.file_type().is_fifo() || meta.file_type().is_socket();
    // /dev/stdin and /dev/fd/N name the command's own input, even when it
    // is a redirected regular file.
    let own_fd = path.starts_with("/dev/fd")
        || path.starts_with("/proc/self/fd")
        || path == Path::new("/dev/stdin");
    if stream || (own_fd && meta.is_file()) {
        let mut f = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
        return capped(&mut f);
    }
    read_file(path)
}

/// Reads, translates and applies the mesh's includes
/// ([`Mesh::includes`]), in order. Paths are relative to the mesh file.
pub fn apply_includes(mesh_file: &str, mesh: &mut Mesh) -> Result<(), MeshError> {
    for inc in std::mem::take(&mut mesh.includes) {
        let base = Path::new(mesh_file).parent().unwrap_or(Path::new(""));
        let path: PathBuf = base.join(&inc.path);
        let text = read_file(&path).map_err(|e| MeshError {
            file: mesh_file.to_string(),
            line: inc.line,
            column: inc.column,
            message: format!("{}: {e}", path.display()),
        })?;
        let name = path.display().to_string();
        let t = match inc.kind {
            IncludeKind::Tailscale => tailscale::translate(&name, &text)?,
            IncludeKind::Netbird => netbird::translate(&name, &text)?,
        };
        apply(&t, mesh)?;
    }
    Ok(())
}

/// Adds a translated policy to a mesh: its hosts and groups join the
/// directory (a group the mesh already has gains the new members), its rules
/// come after the mesh's own, its tests after the mesh's tests.
pub fn apply(t: &Translated, mesh: &mut Mesh) -> Result<(), ImportError> {
    let src = |loc: Loc, msg: String| ImportError {
        file: t.file.clone(),
        line: loc.line,
        column: loc.column,
        message: msg,
    };
    let d = &mut mesh.directory;
    for (name, net, loc) in &t.hosts {
        if d.peers.contains_key(name) || name == "gateway" {
            return Err(src(*loc, format!("host `{name}` has the name of a peer")));
        }
        match d.hosts.get(name) {
            Some(existing) if existing != net => {
                return Err(src(
                    *loc,
                    format!("host `{name}` is {existing} in the mesh file, {net} here"),
                ))
            }
            _ => {
                d.hosts.insert(name.clone(), *net);
            }
        }
    }
    for (name, members) in &t.groups {
        let kept: Vec<String> = members
            .iter()
            .filter(|m| known_or_leniently_empty(d, t, &m.name))
            .map(|m| m.name.clone())
            .collect();
        d.groups.entry(name.clone()).or_default().extend(kept);
    }
    for (name, members) in &t.groups {
        for m in members {
            if known_or_leniently_empty(d, t, &m.name) {
                d.resolve(&m.name).map_err(|e| src(m.loc, e))?;
            }
        }
        d.resolve(&format!("group:{name}"))
            .map_err(|e| src(members.first().map_or_else(Loc::default, |m| m.loc), e))?;
    }
    let d = &mesh.directory;
    let selector = |items: &[Item]| -> Result<Selector, ImportError> {
        let mut out = Vec::new();
        for i in items {
            match resolve(d, t, &i.name).map_err(|e| src(i.loc, e))? {
                Resolved::Any => return Ok(Selector::Any),
                Resolved::Prefixes(p) => out.extend(p),
            }
        }
        Ok(Selector::Prefixes(out))
    };
    let mut rules = Vec::new();
    let mut sources = Vec::new();
    for r in &t.rules {
        sources.push(crate::mesh::RuleSource {
            at: format!("{}:{}", t.file, r.loc.line),
            from: r.from.iter().map(|i| i.name.clone()).collect(),
            to: r.to.iter().map(|i| i.name.clone()).collect(),
        });
        rules.push(Rule {
            name: r.name.clone(),
            action: r.action,
            audit: false,
            src: selector(&r.from)?,
            dst: selector(&r.to)?,
            proto: r.proto,
            ports: r.ports.clone(),
        });
    }
    let mut tests = Vec::new();
    for test in &t.tests {
        let src_addrs = addresses(d, t, &test.src.name).map_err(|e| src(test.src.loc, e))?;
        let mut expect = Vec::new();
        for (item, port, accept) in &test.expect {
            expect.push(Expectation {
                at: format!("{}:{}:{}", t.file, item.loc.line, item.loc.column),
                accept: *accept,
                target: item.name.clone(),
                addrs: addresses(d, t, &item.name).map_err(|e| src(item.loc, e))?,
                port: *port,
            });
        }
        tests.push(PolicyTest {
            at: format!("{}:{}", t.file, test.src.loc.line),
            src: test.src.name.clone(),
            src_addrs,
            proto: test.proto,
            expect,
        });
    }
    mesh.policy.rules.extend(rules);
    mesh.rule_sources.extend(sources);
    mesh.tests.extend(tests);
    Ok(())
}

/// Whether a group member should be kept: users and declared tags without
/// any peer here are dropped (they stand for nobody on this gateway).
fn known_or_leniently_empty(d: &Directory, t: &Translated, name: &str) -> bool {
    if let Some(u) = name.strip_prefix("user:") {
        return d.users.contains_key(u);
    }
    if let Some(tag) = name.strip_prefix("tag:") {
        return d.tags.contains_key(tag) || !t.declared_tags.contains(tag);
    }
    true
}

/// A name of an imported policy: the mesh's names, plus the special ones,
/// and users or declared tags that no peer here has (nobody).
fn resolve(d: &Directory, t: &Translated, name: &str) -> Result<Resolved, String> {
    let peers: Option<BTreeSet<&String>> = match name {
        special::MEMBERS => Some(d.users.values().flatten().collect()),
        special::TAGGED => Some(d.tags.values().flatten().collect()),
        special::ALL_PEERS => Some(d.peers.keys().collect()),
        _ => None,
    };
    if let Some(peers) = peers {
        return Ok(Resolved::Prefixes(
            peers
                .into_iter()
                .flat_map(|p| d.peers.get(p).into_iter().flatten().copied())
                .collect(),
        ));
    }
    if let Some(u) = name.strip_prefix("user:") {
        if !d.users.contains_key(u) {
            return Ok(Resolved::Prefixes(Vec::new()));
        }
    }
    if let Some(tag) = name.strip_prefix("tag:") {
        if !d.tags.contains_key(tag) && t.declared_tags.contains(tag) {
            return Ok(Resolved::Prefixes(Vec::new()));
        }
    }
    d.resolve(name)
}

fn addresses(d: &Directory, t: &Translated, name: &str) -> Result<Vec<IpAddr>, String> {
    match resolve(d, t, name)? {
        Resolved::Any => Err(format!(
            "`{name}` is everyone: name a peer, host or address"
        )),
        Resolved::Prefixes(p) if p.is_empty() => Err(format!(
            "`{name}` names no address on this gateway (no peer has it)"
        )),
        Resolved::Prefixes(p) => Ok(p.iter().map(representative).collect()),
    }
}

/// As the mesh file's tests: the address itself, or a network's first host.
fn representative(net: &IpNet) -> IpAddr {
    match net.trunc() {
        IpNet::V4(n) if n.prefix_len() < 31 => IpAddr::V4((u32::from(n.network()) + 1).into()),
        IpNet::V6(n) if n.prefix_len() < 127 => IpAddr::V6((u128::from(n.network()) + 1).into()),
        other => other.addr(),
    }
}

/// Text for a TOML comment: control characters (which TOML forbids there,
/// and a newline would end the comment) become `?`.
pub(crate) fn toml_comment(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect()
}

/// TOML string (quoted and escaped).
pub(crate) fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The translated policy as mesh-file TOML, for review. The special names
/// become groups of their own; `directory` (the mesh's, if known) fills
/// them in, otherwise they are empty (nobody) with a comment.
pub fn to_toml(t: &Translated, directory: Option<&Directory>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Translated from {} by wgbpf: review before use, then paste into a mesh file\n\
         # (or include the file itself with [policy] tailscale = / netbird = \"FILE\").",
        toml_comment(&t.file)
    );
    for n in &t.notes {
        let _ = writeln!(out, "# note: {}", toml_comment(n));
    }
    let specials: BTreeSet<&str> = t
        .rules
        .iter()
        .flat_map(|r| r.from.iter().chain(&r.to))
        .chain(t.tests.iter().map(|t| &t.src))
        .map(|i| i.name.as_str())
        .filter(|n| n.starts_with("autogroup:"))
        .collect();
    let name = |n: &str| -> String {
        if n.starts_with("autogroup:") {
            format!("group:{}", n.replace(':', "-"))
        } else {
            n.to_string()
        }
    };
    // With the mesh known, names that stand for nobody there (users and
    // declared tags without a peer) are left out, as apply() does.
    let nobody = |n: &str| directory.is_some_and(|d| !known_or_leniently_empty(d, t, n));
    let list = |items: &[Item]| -> String {
        let v: Vec<String> = items
            .iter()
            .filter(|i| !nobody(&i.name))
            .map(|i| toml_string(&name(&i.name)))
            .collect();
        format!("[{}]", v.join(", "))
    };
    let omitted = |items: &[&Item]| -> Option<String> {
        let v: Vec<&str> = items
            .iter()
            .filter(|i| nobody(&i.name))
            .map(|i| i.name.as_str())
            .collect();
        (!v.is_empty())
            .then(|| format!("# left out, no peer here: {}", toml_comment(&v.join(", "))))
    };
    let _ = writeln!(out, "\n[policy]");
    if !t.groups.is_empty() || !specials.is_empty() {
        let _ = writeln!(out, "\n[policy.groups]");
        for (g, members) in &t.groups {
            if let Some(c) = omitted(&members.iter().collect::<Vec<_>>()) {
                let _ = writeln!(out, "{c}");
            }
            let _ = writeln!(out, "{} = {}", toml_string(g), list(members));
        }
        for s in &specials {
            let members: Vec<String> = match directory {
                Some(d) => {
                    let mut peers: BTreeSet<&String> = BTreeSet::new();
                    match *s {
                        special::MEMBERS => peers.extend(d.users.values().flatten()),
                        special::TAGGED => peers.extend(d.tags.values().flatten()),
                        _ => peers.extend(d.peers.keys()),
                    }
                    peers.iter().map(|p| toml_string(p)).collect()
                }
                None => {
                    let _ = writeln!(
                        out,
                        "# {s}: {}; list them here (empty = nobody)",
                        match *s {
                            special::MEMBERS => "every peer with a user",
                            special::TAGGED => "every peer with a tag",
                            _ => "every peer",
                        }
                    );
                    Vec::new()
                }
            };
            let _ = writeln!(
                out,
                "{} = [{}]",
                toml_string(&s.replace(':', "-")),
                members.join(", ")
            );
        }
    }
    if !t.hosts.is_empty() {
        let _ = writeln!(out, "\n[policy.hosts]");
        for (h, net, _) in &t.hosts {
            let _ = writeln!(
                out,
                "{} = {}",
                toml_string(h),
                toml_string(&net.to_string())
            );
        }
    }
    for r in &t.rules {
        let _ = writeln!(out, "\n[[policy.rule]]");
        let _ = writeln!(out, "name = {}", toml_string(&r.name));
        if let Some(c) = omitted(&r.from.iter().chain(&r.to).collect::<Vec<_>>()) {
            let _ = writeln!(out, "{c}");
        }
        let _ = writeln!(
            out,
            "action = {}",
            toml_string(if r.action == Action::Accept {
                "accept"
            } else {
                "deny"
            })
        );
        let _ = writeln!(out, "from = {}", list(&r.from));
        let _ = writeln!(out, "to = {}", list(&r.to));
        if let Some(p) = r.proto {
            let _ = writeln!(out, "proto = {}", toml_string(&proto_name(p)));
        }
        if !r.ports.is_empty() {
            let ports: Vec<String> = r
                .ports
                .iter()
                .map(|p| {
                    if p.first == p.last {
                        p.first.to_string()
                    } else {
                        toml_string(&p.to_string())
                    }
                })
                .collect();
            let _ = writeln!(out, "ports = [{}]", ports.join(", "));
        }
    }
    for test in &t.tests {
        let _ = writeln!(out, "\n[[policy.test]]");
        let _ = writeln!(out, "src = {}", toml_string(&name(&test.src.name)));
        let _ = writeln!(out, "proto = {}", toml_string(&proto_name(test.proto)));
        for (key, want) in [("accept", true), ("deny", false)] {
            let v: Vec<String> = test
                .expect
                .iter()
                .filter(|(_, _, a)| *a == want)
                .map(|(i, port, _)| toml_string(&target(&name(&i.name), *port)))
                .collect();
            if !v.is_empty() {
                let _ = writeln!(out, "{key} = [{}]", v.join(", "));
            }
        }
    }
    out
}

/// `name:port`, with IPv6 addresses in brackets.
fn target(name: &str, port: u16) -> String {
    if name.contains(':') && name.parse::<IpAddr>().is_ok() {
        format!("[{name}]:{port}")
    } else {
        format!("{name}:{port}")
    }
}

/// Translates a JSON error (line and byte column of the normalized text,
/// which has the layout of the original) into an import error.
pub(crate) fn json_error(s: &Source, e: &serde_json::Error) -> ImportError {
    let msg = e.to_string();
    let msg = msg
        .rsplit_once(" at line ")
        .map_or(msg.as_str(), |(m, _)| m)
        .to_string();
    if e.line() == 0 {
        return s.err(0, msg);
    }
    s.err(s.offset_of(e.line(), e.column()), msg)
}

/// Counts, for messages: "a, b and c".
pub(crate) fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Protocol names Tailscale and Netbird use, as numbers (`icmp` is both
/// ICMP and ICMPv6, as in Tailscale).
pub(crate) fn named_proto(s: &str) -> Option<Vec<u8>> {
    use wgbpf_common::*;
    Some(match s.to_ascii_lowercase().as_str() {
        "tcp" => vec![PROTO_TCP],
        "udp" => vec![PROTO_UDP],
        "sctp" => vec![PROTO_SCTP],
        "icmp" => vec![PROTO_ICMP, PROTO_ICMPV6],
        "icmpv6" | "ipv6-icmp" => vec![PROTO_ICMPV6],
        "igmp" => vec![2],
        "ipv4" | "ip-in-ip" => vec![4],
        "egp" => vec![8],
        "igp" => vec![9],
        "gre" => vec![47],
        "esp" => vec![50],
        "ah" => vec![51],
        n => vec![n.parse::<u8>().ok().filter(|p| *p != 0)?],
    })
}

/// Keeps the first appearance of each key, in order.
pub(crate) fn group_by_ports<T>(items: Vec<(Vec<PortRange>, T)>) -> Vec<(Vec<PortRange>, Vec<T>)> {
    let mut out: Vec<(Vec<PortRange>, Vec<T>)> = Vec::new();
    let mut index: BTreeMap<Vec<PortRange>, usize> = BTreeMap::new();
    for (ports, item) in items {
        match index.get(&ports) {
            Some(&i) => out[i].1.push(item),
            None => {
                index.insert(ports.clone(), out.len());
                out.push((ports, vec![item]));
            }
        }
    }
    out
}
