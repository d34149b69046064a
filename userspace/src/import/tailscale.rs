//! Tailscale / Headscale policy files (HuJSON): `groups`, `tagOwners`,
//! `hosts`, `ipsets`, `acls`, the network part of `grants`, and `tests`,
//! translated into the mesh file's language. Field names are matched in any
//! case, as Tailscale does. What is mapped and what is refused:
//! docs/imports.md.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde::{de::IgnoredAny, Deserialize};
use serde_json::Value;
use wgbpf_common::{PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

use super::{
    group_by_ports, hujson, json_error,
    keycase::{self, Shape},
    located::Located,
    named_proto,
    prefixset::PrefixSet,
    special, ImportError, ImportedRule, ImportedTest, Item, Loc, Source, Translated,
};
use crate::policy::model::{Action, PortRange};

/// The fields of the file and of its entries, for [`keycase`]: Tailscale
/// reads them in any case. Keep in step with the structs below.
const ACL_SHAPE: Shape = Shape::Object(&[
    ("action", Shape::Any),
    ("src", Shape::Any),
    ("users", Shape::Any),
    ("dst", Shape::Any),
    ("ports", Shape::Any),
    ("proto", Shape::Any),
    ("srcPosture", Shape::Any),
]);
const GRANT_SHAPE: Shape = Shape::Object(&[
    ("src", Shape::Any),
    ("dst", Shape::Any),
    ("ip", Shape::Any),
    ("app", Shape::Any),
    ("via", Shape::Any),
    ("srcPosture", Shape::Any),
]);
const TEST_SHAPE: Shape = Shape::Object(&[
    ("src", Shape::Any),
    ("proto", Shape::Any),
    ("accept", Shape::Any),
    ("deny", Shape::Any),
]);
const FILE_SHAPE: Shape = Shape::Object(&[
    ("groups", Shape::Any),
    ("tagOwners", Shape::Any),
    ("hosts", Shape::Any),
    ("ipsets", Shape::Any),
    ("acls", Shape::Array(&ACL_SHAPE)),
    ("grants", Shape::Array(&GRANT_SHAPE)),
    ("tests", Shape::Array(&TEST_SHAPE)),
    ("postures", Shape::Any),
    ("defaultSrcPosture", Shape::Any),
    ("ssh", Shape::Any),
    ("sshTests", Shape::Any),
    ("nodeAttrs", Shape::Any),
    ("autoApprovers", Shape::Any),
    ("derpMap", Shape::Any),
    ("disableIPv4", Shape::Any),
    ("randomizeClientPort", Shape::Any),
    ("OneCGNATRoute", Shape::Any),
]);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclFile {
    #[serde(default)]
    groups: BTreeMap<String, Located<Vec<Located<String>>>>,
    #[serde(default, rename = "tagOwners")]
    tag_owners: BTreeMap<String, Located<IgnoredAny>>,
    #[serde(default)]
    hosts: BTreeMap<String, Located<String>>,
    /// `"ipset:NAME": ["add 10.0.0.0/8", "remove 10.1.0.0/16", ...]`.
    #[serde(default)]
    ipsets: BTreeMap<String, Located<Vec<Located<String>>>>,
    #[serde(default)]
    acls: Vec<Acl>,
    #[serde(default)]
    grants: Vec<Grant>,
    #[serde(default)]
    tests: Vec<Test>,
    /// Refused when not empty: device posture cannot be checked here.
    #[serde(default)]
    postures: Option<Located<BTreeMap<String, IgnoredAny>>>,
    #[serde(default, rename = "defaultSrcPosture")]
    default_src_posture: Option<Located<Vec<IgnoredAny>>>,
    // Not about which packets pass: read and ignored.
    #[serde(default)]
    ssh: Option<IgnoredAny>,
    #[serde(default, rename = "sshTests")]
    ssh_tests: Option<IgnoredAny>,
    #[serde(default, rename = "nodeAttrs")]
    node_attrs: Option<IgnoredAny>,
    #[serde(default, rename = "autoApprovers")]
    auto_approvers: Option<IgnoredAny>,
    #[serde(default, rename = "derpMap")]
    derp_map: Option<IgnoredAny>,
    #[serde(default, rename = "disableIPv4")]
    disable_ipv4: Option<IgnoredAny>,
    #[serde(default, rename = "randomizeClientPort")]
    randomize_client_port: Option<IgnoredAny>,
    #[serde(default, rename = "OneCGNATRoute")]
    one_cgnat_route: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Acl {
    action: Located<String>,
    #[serde(default)]
    src: Vec<Located<String>>,
    /// The legacy name of `src`.
    #[serde(default)]
    users: Vec<Located<String>>,
    #[serde(default)]
    dst: Vec<Located<String>>,
    /// The legacy name of `dst`.
    #[serde(default)]
    ports: Vec<Located<String>>,
    #[serde(default)]
    proto: Option<Located<Value>>,
    #[serde(default, rename = "srcPosture")]
    src_posture: Option<Located<Vec<IgnoredAny>>>,
}

/// A grant: its network part (`src`, `dst`, `ip`) is a rule; `app` does
/// not decide which packets pass; `via` and `srcPosture` narrow it in ways a
/// gateway cannot check, so they are refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Grant {
    src: Located<Vec<Located<String>>>,
    dst: Vec<Located<String>>,
    #[serde(default)]
    ip: Option<Located<Vec<Located<String>>>>,
    #[serde(default)]
    app: Option<Located<IgnoredAny>>,
    #[serde(default)]
    via: Option<Located<Vec<IgnoredAny>>>,
    #[serde(default, rename = "srcPosture")]
    src_posture: Option<Located<Vec<IgnoredAny>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Test {
    src: Located<String>,
    #[serde(default)]
    proto: Option<Located<Value>>,
    #[serde(default)]
    accept: Vec<Located<String>>,
    #[serde(default)]
    deny: Vec<Located<String>>,
}

/// Parses a Tailscale ACL file (HuJSON) and translates it. `file` names it
/// in errors and rule names.
pub fn translate(file: &str, text: &str) -> Result<Translated, ImportError> {
    let s = Source { file, text };
    let json = hujson::normalize(text).map_err(|e| s.err(e.offset, e.message))?;
    let json = keycase::canonicalize(json, &FILE_SHAPE);
    let acl: AclFile = serde_json::from_str(&json).map_err(|e| json_error(&s, &e))?;
    Tr {
        s,
        json: &json,
        acl: &acl,
    }
    .run()
}

struct Tr<'a> {
    s: Source<'a>,
    /// The normalized text, which the spans point into.
    json: &'a str,
    acl: &'a AclFile,
}

/// The protocols a rule without `proto` allows (Tailscale: TCP, UDP and
/// ICMP, ports applying to TCP and UDP only).
const DEFAULT_PROTOS: [u8; 4] = [PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_ICMPV6];

impl Tr<'_> {
    fn loc<T>(&self, v: &Located<T>) -> Loc {
        self.s.loc(v.offset(self.json))
    }

    fn err<T>(&self, v: &Located<T>, msg: impl Into<String>) -> ImportError {
        self.s.err_at(self.loc(v), msg)
    }

    fn run(&self) -> Result<Translated, ImportError> {
        let a = self.acl;
        if let Some(p) = a.postures.as_ref().filter(|p| !p.value.is_empty()) {
            return Err(self.err(p, "postures cannot be checked by a WireGuard gateway"));
        }
        if let Some(p) = a
            .default_src_posture
            .as_ref()
            .filter(|p| !p.value.is_empty())
        {
            return Err(self.err(p, "postures cannot be checked by a WireGuard gateway"));
        }
        let mut t = Translated {
            file: self.s.file.to_string(),
            ..Default::default()
        };
        let ignored: Vec<&str> = [
            ("ssh", a.ssh.is_some()),
            ("sshTests", a.ssh_tests.is_some()),
            ("nodeAttrs", a.node_attrs.is_some()),
            ("autoApprovers", a.auto_approvers.is_some()),
            ("derpMap", a.derp_map.is_some()),
            ("disableIPv4", a.disable_ipv4.is_some()),
            ("randomizeClientPort", a.randomize_client_port.is_some()),
            ("OneCGNATRoute", a.one_cgnat_route.is_some()),
        ]
        .iter()
        .filter(|(_, present)| *present)
        .map(|(n, _)| *n)
        .collect();
        if !ignored.is_empty() {
            t.notes.push(format!(
                "{} not translated (not about which packets pass)",
                super::and_list(&ignored)
            ));
        }
        for (tag, owners) in &a.tag_owners {
            let name = tag.strip_prefix("tag:").filter(|n| valid_name(n));
            match name {
                Some(n) => {
                    t.declared_tags.insert(n.to_string());
                }
                None => {
                    return Err(self.err(
                        owners,
                        format!("tagOwners: `{tag}` is not a tag (expected tag:NAME)"),
                    ))
                }
            }
        }
        for (name, addr) in &a.hosts {
            if !valid_name(name) || name.contains(':') || name.contains('@') {
                return Err(self.err(addr, format!("hosts: `{name}` is not a host name")));
            }
            let net = parse_net(addr.get()).ok_or_else(|| {
                self.err(
                    addr,
                    format!("hosts: `{}` is not an IP address or CIDR", addr.get()),
                )
            })?;
            t.hosts.push((name.clone(), net, self.loc(addr)));
        }
        for (g, members) in &a.groups {
            let name = g
                .strip_prefix("group:")
                .filter(|n| valid_name(n))
                .ok_or_else(|| {
                    self.err(
                        members,
                        format!("groups: `{g}` is not a group (expected group:NAME)"),
                    )
                })?;
            // ipsets become the groups `ipset:NAME`: a group of that name
            // would add members to an ipset.
            if name.starts_with("ipset:") {
                return Err(self.err(
                    members,
                    format!("groups: `{g}`: group names starting with ipset: are reserved"),
                ));
            }
            let mut items = Vec::new();
            for m in &members.value {
                let v = m.get().as_str();
                let item = if let Some(inner) = v.strip_prefix("group:") {
                    if !a.groups.contains_key(v) {
                        return Err(self.err(m, format!("unknown group `{inner}`")));
                    }
                    v.to_string()
                } else if v.contains('@') && !v.contains(':') {
                    format!("user:{v}")
                } else {
                    return Err(self.err(
                        m,
                        format!("group member `{v}`: expected a user (email) or group:NAME"),
                    ));
                };
                items.push(Item {
                    name: item,
                    loc: self.loc(m),
                });
            }
            t.groups.push((name.to_string(), items));
        }
        for (name, set) in self.ipsets()? {
            let loc = self.loc(&a.ipsets[&name]);
            let members = set
                .prefixes()
                .iter()
                .map(|n| Item {
                    name: n.to_string(),
                    loc,
                })
                .collect();
            t.groups.push((name, members));
        }
        for acl in &a.acls {
            self.acl(acl, &mut t)?;
        }
        for grant in &a.grants {
            self.grant(grant, &mut t)?;
        }
        for test in &a.tests {
            self.test(test, &mut t)?;
        }
        Ok(t)
    }

    /// A source or destination alias (without ports), in mesh language.
    fn alias(&self, v: &str, at: &Located<String>) -> Result<String, ImportError> {
        let a = self.acl;
        if v == "*" {
            return Ok("*".into());
        }
        if v == special::MEMBERS || v == special::TAGGED {
            return Ok(v.into());
        }
        if v.starts_with("autogroup:") {
            return Err(self.err(
                at,
                format!(
                    "`{v}` is not supported (autogroup:member and autogroup:tagged are; \
                     write the others out as users, groups or tags)"
                ),
            ));
        }
        if let Some(set) = v.strip_prefix("ipset:") {
            if !a.ipsets.contains_key(v) {
                return Err(self.err(at, format!("unknown ipset `{set}` (not in ipsets)")));
            }
            // An ipset is a group of prefixes (see run).
            return Ok(format!("group:{v}"));
        }
        if v.starts_with("svc:") {
            return Err(self.err(
                at,
                format!(
                    "`{v}`: Tailscale services are not supported (name the hosts or addresses)"
                ),
            ));
        }
        if let Some(g) = v.strip_prefix("group:") {
            if !a.groups.contains_key(v) {
                return Err(self.err(at, format!("unknown group `{g}` (not in groups)")));
            }
            return Ok(v.into());
        }
        if let Some(tag) = v.strip_prefix("tag:") {
            if !a.tag_owners.contains_key(v) {
                return Err(self.err(at, format!("tag `{tag}` is not in tagOwners")));
            }
            return Ok(v.into());
        }
        if v.contains('@') && !v.contains(':') {
            return Ok(format!("user:{v}"));
        }
        if a.hosts.contains_key(v) {
            return Ok(format!("host:{v}"));
        }
        if let Some(net) = parse_net(v) {
            return Ok(net.to_string());
        }
        Err(self.err(
            at,
            format!(
                "unknown alias `{v}` (expected *, a user's email, group:NAME, tag:NAME, \
                 ipset:NAME, a name from hosts, an IP address or CIDR, or autogroup:member)"
            ),
        ))
    }

    fn protos(&self, proto: &Option<Located<Value>>) -> Result<Option<Vec<u8>>, ImportError> {
        let Some(p) = proto else { return Ok(None) };
        let found = match p.get() {
            Value::String(s) => named_proto(s),
            Value::Number(n) => n
                .as_u64()
                .filter(|n| (1..=255).contains(n))
                .map(|n| vec![n as u8]),
            _ => None,
        };
        found.map(Some).ok_or_else(|| {
            self.err(
                p,
                "proto: expected tcp, udp, sctp, icmp, ipv6-icmp, igmp, ipv4, egp, igp, gre, \
                 esp, ah or a protocol number 1-255",
            )
        })
    }

    fn acl(&self, acl: &Acl, t: &mut Translated) -> Result<(), ImportError> {
        if acl.action.get() != "accept" {
            return Err(self.err(
                &acl.action,
                format!(
                    "action `{}`: Tailscale ACLs only accept (everything else is denied)",
                    acl.action.get()
                ),
            ));
        }
        if let Some(p) = acl.src_posture.as_ref().filter(|p| !p.value.is_empty()) {
            return Err(self.err(p, "srcPosture cannot be checked by a WireGuard gateway"));
        }
        let loc = self.loc(&acl.action);
        let file_name = std::path::Path::new(self.s.file)
            .file_name()
            .map_or_else(|| self.s.file.to_string(), |n| n.to_string_lossy().into());
        let protos = self.protos(&acl.proto)?;
        let mut from = Vec::new();
        for s in acl.src.iter().chain(&acl.users) {
            from.push(Item {
                name: self.alias(s.get(), s)?,
                loc: self.loc(s),
            });
        }
        let mut dsts = Vec::new();
        for d in acl.dst.iter().chain(&acl.ports) {
            let (alias, ports) = split_dst(d.get())
                .ok_or_else(|| self.err(d, format!("dst `{}`: expected alias:ports", d.get())))?;
            let ports =
                parse_ports(ports).map_err(|e| self.err(d, format!("dst `{}`: {e}", d.get())))?;
            if !ports.is_empty() {
                if let Some(ps) = &protos {
                    if let Some(p) = ps
                        .iter()
                        .find(|p| !matches!(**p, PROTO_TCP | PROTO_UDP | PROTO_SCTP))
                    {
                        return Err(self.err(
                            d,
                            format!(
                                "dst `{}`: ports need proto tcp, udp or sctp (proto {} takes \"*\")",
                                d.get(),
                                crate::policy::model::proto_name(*p)
                            ),
                        ));
                    }
                }
            }
            dsts.push((
                ports,
                Item {
                    name: self.alias(alias, d)?,
                    loc: self.loc(d),
                },
            ));
        }
        let protos = protos.unwrap_or_else(|| DEFAULT_PROTOS.to_vec());
        for (ports, to) in group_by_ports(dsts) {
            for &proto in &protos {
                let ported = matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP);
                t.rules.push(ImportedRule {
                    name: format!(
                        "{file_name}:{} {}",
                        loc.line,
                        crate::policy::model::proto_name(proto)
                    ),
                    action: Action::Accept,
                    from: from.clone(),
                    to: to.clone(),
                    proto: Some(proto),
                    // Tailscale matches ICMP (and protocols without ports)
                    // on addresses only.
                    ports: if ported { ports.clone() } else { Vec::new() },
                    loc,
                });
            }
        }
        Ok(())
    }

    /// The file's name without its directory, for rule names.
    fn file_name(&self) -> String {
        std::path::Path::new(self.s.file)
            .file_name()
            .map_or_else(|| self.s.file.to_string(), |n| n.to_string_lossy().into())
    }

    /// A grant's network part as rules: one per protocol its `ip` allows.
    fn grant(&self, g: &Grant, t: &mut Translated) -> Result<(), ImportError> {
        let loc = self.loc(&g.src);
        let at = format!("{}:{}", self.s.file, loc.line);
        if let Some(v) = g.via.as_ref().filter(|v| !v.value.is_empty()) {
            return Err(self.err(
                v,
                "via (which exit node, subnet router or app connector carries the traffic) \
                 cannot be enforced by a WireGuard gateway's packet filter",
            ));
        }
        if let Some(p) = g.src_posture.as_ref().filter(|p| !p.value.is_empty()) {
            return Err(self.err(p, "srcPosture cannot be checked by a WireGuard gateway"));
        }
        let Some(ip) = &g.ip else {
            if g.app.is_some() {
                // App capabilities alone give no network access in Tailscale.
                t.notes.push(format!(
                    "{at}: a grant of app capabilities only: no network access, nothing to translate"
                ));
                return Ok(());
            }
            return Err(self.err(&g.src, "a grant needs ip (or app)"));
        };
        if g.app.is_some() {
            t.notes.push(format!(
                "{at}: app capabilities not translated (applications enforce them; \
                 the grant's ip part is translated)"
            ));
        }
        let mut from = Vec::new();
        for s in &g.src.value {
            from.push(Item {
                name: self.alias(s.get(), s)?,
                loc: self.loc(s),
            });
        }
        let mut to = Vec::new();
        for d in &g.dst {
            let name = self.alias(d.get(), d).map_err(|e| {
                // `tag:web:443` as in acls: say where the ports go.
                match split_dst(d.get()).map(|(alias, _)| self.alias(alias, d)) {
                    Some(Ok(_)) => self.err(
                        d,
                        format!(
                            "dst `{}`: a grant's dst has no ports; write them in ip \
                             (e.g. \"tcp:443\")",
                            d.get()
                        ),
                    ),
                    _ => e,
                }
            })?;
            to.push(Item {
                name,
                loc: self.loc(d),
            });
        }
        // Protocol -> ports (None: every port).
        let mut allowed: BTreeMap<u8, Option<BTreeSet<PortRange>>> = BTreeMap::new();
        for entry in &ip.value {
            for (proto, ports) in self.ip_entry(entry)? {
                let slot = allowed
                    .entry(proto)
                    .or_insert_with(|| Some(BTreeSet::new()));
                match (slot.as_mut(), ports) {
                    (Some(set), Some(p)) => set.extend(p),
                    _ => *slot = None,
                }
            }
        }
        let file_name = self.file_name();
        for (proto, ports) in allowed {
            t.rules.push(ImportedRule {
                name: format!(
                    "{file_name}:{} {}",
                    loc.line,
                    crate::policy::model::proto_name(proto)
                ),
                action: Action::Accept,
                from: from.clone(),
                to: to.clone(),
                proto: Some(proto),
                ports: ports.map(|p| p.into_iter().collect()).unwrap_or_default(),
                loc,
            });
        }
        Ok(())
    }

    /// One `ip` entry of a grant (Tailscale's syntax): `*` (TCP, UDP and
    /// ICMP, every port), `PORTS` (TCP and UDP on them, and ICMP),
    /// `PROTO:*` or `PROTO:PORTS`. Ports: `*`, `N`, `N-M`. Returns
    /// (protocol, ports or None for every port).
    fn ip_entry(&self, entry: &Located<String>) -> Result<Vec<ProtoPorts>, ImportError> {
        let v = entry.get().as_str();
        let bad = |msg: String| self.err(entry, format!("ip `{v}`: {msg}"));
        let (proto, ports) = match v.rsplit_once(':') {
            None => ("*", v),
            Some((p, ports)) => (p, ports),
        };
        if v == "*" {
            return Ok(DEFAULT_PROTOS.iter().map(|p| (*p, None)).collect());
        }
        let ports = parse_ports(ports).map_err(bad)?;
        let ports = (!ports.is_empty()).then_some(ports);
        if proto == "*" {
            return Ok(DEFAULT_PROTOS
                .iter()
                .map(|&p| {
                    // Tailscale matches ICMP on addresses only.
                    let ported = matches!(p, PROTO_TCP | PROTO_UDP);
                    (p, if ported { ports.clone() } else { None })
                })
                .collect());
        }
        let protos = named_proto(proto).ok_or_else(|| {
            bad(format!(
                "unknown protocol `{proto}` (expected tcp, udp, sctp, icmp, ipv6-icmp, igmp, \
                 ipv4, egp, igp, gre, esp, ah or a number 1-255)"
            ))
        })?;
        if ports.is_some() {
            if let Some(p) = protos
                .iter()
                .find(|p| !matches!(**p, PROTO_TCP | PROTO_UDP | PROTO_SCTP))
            {
                return Err(bad(format!(
                    "ports need tcp, udp or sctp (write {}:*)",
                    crate::policy::model::proto_name(*p)
                )));
            }
        }
        Ok(protos.into_iter().map(|p| (p, ports.clone())).collect())
    }

    /// Every ipset, resolved to a set of prefixes, by name.
    fn ipsets(&self) -> Result<BTreeMap<String, PrefixSet>, ImportError> {
        let mut done = BTreeMap::new();
        for name in self.acl.ipsets.keys() {
            self.ipset(name, &mut done, &mut Vec::new())?;
        }
        Ok(done)
    }

    /// One ipset: its operations in order, from the empty set.
    fn ipset(
        &self,
        name: &str,
        done: &mut BTreeMap<String, PrefixSet>,
        stack: &mut Vec<String>,
    ) -> Result<PrefixSet, ImportError> {
        if let Some(set) = done.get(name) {
            return Ok(set.clone());
        }
        let ops = &self.acl.ipsets[name];
        if !name
            .strip_prefix("ipset:")
            .is_some_and(|n| valid_name(n) && !n.contains(':'))
        {
            return Err(self.err(
                ops,
                format!("ipsets: `{name}` is not an ipset (expected ipset:NAME)"),
            ));
        }
        if stack.iter().any(|s| s == name) {
            return Err(self.err(
                ops,
                format!(
                    "ipset `{name}` contains itself (through {})",
                    stack.join(", ")
                ),
            ));
        }
        stack.push(name.to_string());
        // Tailscale: the operation may be left out only when all are adds.
        let any_remove = ops.value.iter().any(|o| o.get().starts_with("remove "));
        let mut set = PrefixSet::default();
        for op in &ops.value {
            let v = op.get().as_str();
            let (remove, target) = match (v.strip_prefix("add "), v.strip_prefix("remove ")) {
                (Some(t), _) => (false, t.trim()),
                (_, Some(t)) => (true, t.trim()),
                _ if any_remove => {
                    return Err(self.err(
                        op,
                        format!(
                            "`{v}`: write `add {v}` (in an ipset with a remove, every \
                             operation is named)"
                        ),
                    ))
                }
                _ => (false, v.trim()),
            };
            let part = if target.starts_with("ipset:") {
                if !self.acl.ipsets.contains_key(target) {
                    return Err(self.err(op, format!("unknown ipset `{target}`")));
                }
                self.ipset(target, done, stack)?
            } else {
                let net = self.ipset_target(target, op)?;
                let mut one = PrefixSet::default();
                one.add(&net);
                one
            };
            if remove {
                set.subtract(&part);
            } else {
                set.extend(&part);
            }
            // Cheap on every operation (each range is a prefix at least);
            // exact once the set is complete.
            if set.ranges() > MAX_IPSET_PREFIXES {
                return Err(self.err(
                    op,
                    format!("ipset `{name}` is more than {MAX_IPSET_PREFIXES} prefixes"),
                ));
            }
        }
        if set.count() > MAX_IPSET_PREFIXES {
            return Err(self.err(
                ops,
                format!("ipset `{name}` is more than {MAX_IPSET_PREFIXES} prefixes"),
            ));
        }
        stack.pop();
        done.insert(name.to_string(), set.clone());
        Ok(set)
    }

    /// An address, a CIDR or a name from hosts (what an ipset may hold,
    /// besides other ipsets).
    fn ipset_target(&self, target: &str, op: &Located<String>) -> Result<IpNet, ImportError> {
        if target == "autogroup:internet" {
            return Err(self.err(
                op,
                "autogroup:internet is not supported (write the networks out)",
            ));
        }
        if target.contains('@')
            || ["tag:", "group:", "autogroup:"]
                .iter()
                .any(|p| target.starts_with(p))
        {
            return Err(self.err(
                op,
                format!("`{target}`: an ipset holds addresses, networks, hosts and ipsets, not users, groups or tags"),
            ));
        }
        if let Some(h) = self.acl.hosts.get(target) {
            if let Some(net) = parse_net(h.get()) {
                return Ok(net);
            }
        }
        parse_net(target).ok_or_else(|| {
            self.err(
                op,
                format!("`{target}`: expected an address, a CIDR, a name from hosts or ipset:NAME"),
            )
        })
    }

    fn test(&self, test: &Test, t: &mut Translated) -> Result<(), ImportError> {
        let proto = match self.protos(&test.proto)? {
            None => PROTO_TCP,
            Some(ps) => ps[0],
        };
        let src = Item {
            name: self.alias(test.src.get(), &test.src)?,
            loc: self.loc(&test.src),
        };
        let mut expect = Vec::new();
        for (list, accept) in [(&test.accept, true), (&test.deny, false)] {
            for d in list {
                let (alias, port) = split_dst(d.get()).ok_or_else(|| {
                    self.err(d, format!("`{}`: expected destination:port", d.get()))
                })?;
                let port = port.parse::<u16>().map_err(|_| {
                    self.err(
                        d,
                        format!("`{}`: `{port}` is not one port number 0-65535", d.get()),
                    )
                })?;
                expect.push((
                    Item {
                        name: self.alias(alias, d)?,
                        loc: self.loc(d),
                    },
                    port,
                    accept,
                ));
            }
        }
        t.tests.push(ImportedTest { src, proto, expect });
        Ok(())
    }
}

/// A protocol and its ports (None: every port).
type ProtoPorts = (u8, Option<Vec<PortRange>>);

/// The most prefixes one ipset may stand for (the data plane's tables are
/// bounded; a longer list is a mistake).
const MAX_IPSET_PREFIXES: usize = 4096;

/// A group, tag or host name: non-empty, printable, no spaces.
fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 253 && n.chars().all(|c| c.is_ascii_graphic())
}

fn parse_net(v: &str) -> Option<IpNet> {
    v.parse::<IpNet>()
        .ok()
        .or_else(|| v.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// `alias:ports`, `[v6]:ports` (an IPv6 CIDR may also go without brackets:
/// the ports are after the last colon).
pub fn split_dst(v: &str) -> Option<(&str, &str)> {
    if let Some(rest) = v.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        return Some((inner, after.strip_prefix(':')?));
    }
    let (alias, ports) = v.rsplit_once(':')?;
    (!alias.is_empty()).then_some((alias, ports))
}

/// `*`, `22`, `80,443`, `1000-2000` (and lists of both). Empty is any.
pub fn parse_ports(v: &str) -> Result<Vec<PortRange>, String> {
    if v == "*" {
        return Ok(Vec::new());
    }
    let num = |s: &str| -> Result<u16, String> {
        s.trim()
            .parse::<u16>()
            .map_err(|_| format!("`{s}` is not a port number 0-65535"))
    };
    let mut out = BTreeSet::new();
    for part in v.split(',') {
        let range = match part.split_once('-') {
            Some((a, b)) => PortRange::new(num(a)?, num(b)?),
            None => PortRange::single(num(part)?),
        };
        if range.first > range.last {
            return Err(format!("port range `{part}` is empty"));
        }
        out.insert(range);
    }
    Ok(out.into_iter().collect())
}
