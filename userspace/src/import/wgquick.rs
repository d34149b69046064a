//! wg-quick configuration files to a mesh file. The first file is the
//! gateway's ([Interface] and its [Peer]s); more files are the peers' own
//! configurations, which name and complete the gateway's peers. Private and
//! preshared keys are never copied. See docs/imports.md.

use std::fmt::Write as _;

use ipnet::IpNet;

use super::{toml_comment, toml_string, ImportError, Loc, Source};
use crate::{
    ifname,
    wg::{Endpoint, Key},
};

/// One parsed wg-quick file. Holds no secret: a private key is kept only as
/// the public key it derives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WgQuick {
    pub file: String,
    pub interface: Option<Interface>,
    pub peers: Vec<PeerConf>,
    /// Lines read but not translated (hooks, DNS, Table…), with their line.
    pub untranslated: Vec<(usize, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub line: usize,
    /// The line of `PrivateKey`, when there is one (never the key).
    pub private_key_line: Option<usize>,
    /// The public key of the private key, base64.
    pub derived_public_key: Option<String>,
    pub addresses: Vec<IpNet>,
    pub listen_port: Option<u16>,
    pub mtu: Option<u32>,
    pub fwmark: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerConf {
    pub line: usize,
    /// From a comment: `# Name = alice` in the section, or a comment line
    /// right before `[Peer]` (made into a peer name).
    pub name: Option<String>,
    /// `# friendly_name = X` in the section (the Prometheus WireGuard
    /// exporter's convention) and its line: the peer's name as written,
    /// validated, never changed.
    pub friendly_name: Option<(String, usize)>,
    pub public_key: Option<String>,
    /// The line of `PresharedKey`, when there is one (never the key).
    pub preshared_key_line: Option<usize>,
    pub allowed_ips: Vec<IpNet>,
    pub endpoint: Option<String>,
    pub persistent_keepalive: Option<u16>,
}

#[derive(PartialEq)]
enum Section {
    None,
    Interface,
    Peer,
}

/// Parses one wg-quick file.
pub fn parse(file: &str, text: &str) -> Result<WgQuick, ImportError> {
    let s = Source { file, text };
    let err = |line: usize, msg: String| s.err_at(Loc { line, column: 1 }, msg);
    let mut out = WgQuick {
        file: file.to_string(),
        ..Default::default()
    };
    let mut section = Section::None;
    let mut comment_before: Option<String> = None;
    // Comment lines in a row: only a lone comment line names the next peer
    // (a longer block is prose).
    let mut comment_run = 0;
    for (i, raw_line) in text.lines().enumerate() {
        let n = i + 1;
        let (content, comment) = match raw_line.split_once('#') {
            Some((c, comment)) => (c.trim(), Some(comment.trim())),
            None => (raw_line.trim(), None),
        };
        if content.is_empty() {
            match comment {
                Some(c) => {
                    if let Some(value) = friendly_name(c) {
                        if section != Section::Peer {
                            return Err(err(
                                n,
                                "friendly_name outside a [Peer] section (it names the peer \
                                 whose section it is in)"
                                    .into(),
                            ));
                        }
                        let p = out.peers.last_mut().expect("in [Peer]");
                        if let Some((_, first)) = &p.friendly_name {
                            return Err(err(
                                n,
                                format!(
                                    "a second friendly_name in this [Peer] (first at line {first})"
                                ),
                            ));
                        }
                        check_peer_name(value)
                            .map_err(|e| err(n, format!("friendly_name: {e}")))?;
                        p.friendly_name = Some((value.to_string(), n));
                        comment_run += 1;
                        comment_before = None;
                        continue;
                    }
                    if section == Section::Peer {
                        if let Some(name) = name_setting(c) {
                            if let Some(p) = out.peers.last_mut() {
                                p.name = Some(name);
                            }
                        }
                    }
                    comment_run += 1;
                    comment_before = if comment_run == 1 { peer_name(c) } else { None };
                }
                None => {
                    comment_run = 0;
                    comment_before = None;
                }
            }
            continue;
        }
        comment_run = 0;
        if content.starts_with('[') {
            let name = content
                .strip_prefix('[')
                .and_then(|c| c.strip_suffix(']'))
                .map(str::trim)
                .unwrap_or("");
            if name.eq_ignore_ascii_case("interface") {
                if out.interface.is_some() {
                    return Err(err(n, "a second [Interface] section".into()));
                }
                section = Section::Interface;
                out.interface = Some(Interface {
                    line: n,
                    ..Default::default()
                });
            } else if name.eq_ignore_ascii_case("peer") {
                section = Section::Peer;
                out.peers.push(PeerConf {
                    line: n,
                    name: comment_before.take(),
                    ..Default::default()
                });
            } else {
                return Err(err(
                    n,
                    format!("`{content}`: expected [Interface] or [Peer]"),
                ));
            }
            comment_before = None;
            continue;
        }
        comment_before = None;
        let (key, value) = content
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| err(n, format!("`{}`: expected Key = Value", shorten(content))))?;
        let lkey = key.to_ascii_lowercase();
        match section {
            Section::None => {
                return Err(err(n, format!("`{key}` outside [Interface] or [Peer]")));
            }
            Section::Interface => {
                let iface = out.interface.as_mut().expect("in [Interface]");
                match lkey.as_str() {
                    "privatekey" => {
                        iface.derived_public_key =
                            Some(public_of(value).map_err(|e| err(n, format!("PrivateKey: {e}")))?);
                        iface.private_key_line = Some(n);
                    }
                    "address" => {
                        for a in list(value) {
                            iface.addresses.push(net(a).ok_or_else(|| {
                                err(n, format!("Address: `{a}` is not an address with a prefix"))
                            })?);
                        }
                    }
                    "listenport" => {
                        iface.listen_port = Some(value.parse().map_err(|_| {
                            err(n, format!("ListenPort: `{value}` is not a port 0-65535"))
                        })?)
                    }
                    "mtu" => {
                        iface.mtu = Some(
                            value
                                .parse()
                                .map_err(|_| err(n, format!("MTU: `{value}` is not a number")))?,
                        )
                    }
                    "fwmark" => {
                        iface.fwmark = if value.eq_ignore_ascii_case("off") {
                            None
                        } else {
                            Some(parse_u32(value).ok_or_else(|| {
                                err(n, format!("FwMark: `{value}` is not a number or off"))
                            })?)
                        }
                    }
                    "dns" | "table" | "preup" | "postup" | "predown" | "postdown"
                    | "saveconfig" => out
                        .untranslated
                        .push((n, format!("{key} = {}", redact_keys(value)))),
                    _ => return Err(err(n, format!("[Interface]: unknown key `{key}`"))),
                }
            }
            Section::Peer => {
                let peer = out.peers.last_mut().expect("in [Peer]");
                match lkey.as_str() {
                    "publickey" => {
                        check_key(value).map_err(|e| err(n, format!("PublicKey: {e}")))?;
                        peer.public_key = Some(value.to_string());
                    }
                    "presharedkey" => {
                        check_key(value).map_err(|e| err(n, format!("PresharedKey: {e}")))?;
                        peer.preshared_key_line = Some(n);
                    }
                    "allowedips" => {
                        for a in list(value) {
                            peer.allowed_ips.push(net(a).ok_or_else(|| {
                                err(n, format!("AllowedIPs: `{a}` is not an address or CIDR"))
                            })?);
                        }
                    }
                    "endpoint" => {
                        Endpoint::parse(value).map_err(|m| err(n, format!("Endpoint: {m}")))?;
                        peer.endpoint = Some(value.to_string());
                    }
                    "persistentkeepalive" => {
                        peer.persistent_keepalive = if value.eq_ignore_ascii_case("off") {
                            None
                        } else {
                            Some(value.parse().map_err(|_| {
                                err(
                                    n,
                                    format!("PersistentKeepalive: `{value}` is not 0-65535 or off"),
                                )
                            })?)
                        }
                    }
                    _ => return Err(err(n, format!("[Peer]: unknown key `{key}`"))),
                }
            }
        }
    }
    Ok(out)
}

/// Hides anything shaped like a WireGuard key (43 base64 characters and
/// `=`) in a line that is copied as a comment: a hook may hold a secret.
fn redact_keys(v: &str) -> String {
    let b = v.as_bytes();
    let is_b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    let mut out = String::new();
    let mut i = 0;
    let mut copied = 0;
    // Whatever comes before (a key may follow a `/` or letters): the window
    // that ends at the `=` is the key.
    while i + 44 <= b.len() {
        let window = &b[i..i + 44];
        if window[..43].iter().all(|c| is_b64(*c)) && window[43] == b'=' {
            out.push_str(&v[copied..i]);
            out.push_str("<key not copied>");
            i += 44;
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&v[copied..]);
    out
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|a| !a.is_empty())
}

fn net(v: &str) -> Option<IpNet> {
    v.parse::<IpNet>()
        .ok()
        .or_else(|| v.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

fn parse_u32(v: &str) -> Option<u32> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// `# Name = alice` / `# Name: alice` (any case).
fn name_setting(comment: &str) -> Option<String> {
    let lower = comment.to_ascii_lowercase();
    let rest = lower.strip_prefix("name")?;
    let rest = rest.trim_start();
    let sep = rest.strip_prefix('=').or_else(|| rest.strip_prefix(':'))?;
    let value = &comment[comment.len() - sep.len()..];
    sanitize(value)
}

/// `# friendly_name = X` (the exporter's convention; spaces around `=` are
/// optional): X, trimmed. `friendly_json` (extra labels) is not a name.
fn friendly_name(comment: &str) -> Option<&str> {
    let rest = comment.strip_prefix("friendly_name")?.trim_start();
    Some(rest.strip_prefix('=')?.trim())
}

/// A name written by hand for a peer is used as it is, so it must be one
/// the mesh file accepts and that rules can name: not empty, at most
/// [`wgbpf_common::PEER_NAME_MAX`] bytes, no control characters, not a
/// reserved word, not read as something else (`group:`, `tag:`, `user:`,
/// `host:`, an address or a CIDR).
pub fn check_peer_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > wgbpf_common::PEER_NAME_MAX {
        return Err(format!(
            "`{}` is longer than {} bytes",
            toml_comment(name),
            wgbpf_common::PEER_NAME_MAX
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("the name has control characters".into());
    }
    if name == "gateway" || name == "*" {
        return Err(format!("`{name}` is reserved"));
    }
    if ["group:", "tag:", "user:", "host:", "autogroup:"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        return Err(format!(
            "`{name}` would be read as a group, tag, user or host, not a peer"
        ));
    }
    if net(name).is_some() {
        return Err(format!("`{name}` would be read as an address, not a peer"));
    }
    Ok(())
}

/// A comment right before `[Peer]`: `# Name = alice` or `# alice` (a few
/// words at most: `# alice laptop` -> alice-laptop).
fn peer_name(comment: &str) -> Option<String> {
    name_setting(comment).or_else(|| {
        (comment.split_whitespace().count() <= 3 && comment.len() <= 63)
            .then(|| sanitize(comment))
            .flatten()
    })
}

/// A peer name for the mesh file: letters, digits, `.`, `_`, `@` and `-`
/// (anything else becomes `-`), at most 63 bytes, with a letter or digit.
fn sanitize(v: &str) -> Option<String> {
    let mut s: String = v
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    s = s.trim_matches('-').to_string();
    s.truncate(wgbpf_common::PEER_NAME_MAX);
    let ok = s.chars().any(|c| c.is_ascii_alphanumeric()) && s != "gateway";
    ok.then_some(s)
}

/// Checks a key without ever repeating it.
fn check_key(v: &str) -> Result<(), &'static str> {
    Key::from_base64(v).map(drop)
}

/// The public key of a base64 private key (the private key is zeroed when
/// dropped).
fn public_of(private: &str) -> Result<String, &'static str> {
    Ok(Key::from_base64(private)?.public_key().to_base64())
}

/// A file's name without `.conf`, when it says something: standard input
/// and pipes (`/dev/fd/63`) name nothing.
fn file_stem(file: &str) -> Option<String> {
    let path = std::path::Path::new(file);
    if file == super::STDIN_NAME || path.starts_with("/dev") || path.starts_with("/proc") {
        return None;
    }
    Some(path.file_stem()?.to_string_lossy().to_string())
}

/// The mesh file and what the operator must be told.
#[derive(Debug, Clone)]
pub struct Output {
    pub toml: String,
    /// Things to do by hand (store keys, translate hooks), for stderr.
    pub warnings: Vec<String>,
}

/// Writes the mesh file for `files` (the gateway's first). `interface`
/// defaults to the first file's name without `.conf`.
pub fn to_mesh(files: &[WgQuick], interface: Option<&str>) -> Result<Output, String> {
    let gw = files.first().ok_or("no wg-quick file")?;
    let iface = gw.interface.as_ref().ok_or_else(|| {
        format!(
            "{}: no [Interface] section (the first file is the gateway's)",
            gw.file
        )
    })?;
    let stem = file_stem(&gw.file).unwrap_or_default();
    let ifname = match interface {
        Some(n) => n.to_string(),
        None if ifname::check(&stem).is_ok() => stem.clone(),
        None => "wg0".to_string(),
    };
    ifname::check(&ifname)?;
    let mut warnings = Vec::new();
    let mut peers: Vec<PeerConf> = gw.peers.clone();
    // The other files: peers' own configurations.
    for other in &files[1..] {
        let Some(oi) = &other.interface else {
            warnings.push(format!("{}: no [Interface]: ignored", other.file));
            continue;
        };
        let stem = file_stem(&other.file).and_then(|s| sanitize(&s));
        let by_key = oi.derived_public_key.as_ref().and_then(|k| {
            peers
                .iter()
                .position(|p| p.public_key.as_deref() == Some(k.as_str()))
        });
        let by_addr = || {
            peers.iter().position(|p| {
                oi.addresses
                    .iter()
                    .any(|a| p.allowed_ips.iter().any(|n| n.contains(&a.addr())))
            })
        };
        match by_key.or_else(by_addr) {
            Some(i) => {
                let p = &mut peers[i];
                if p.name.is_none() {
                    p.name = stem;
                }
                if p.allowed_ips.is_empty() {
                    p.allowed_ips = oi.addresses.iter().map(|a| IpNet::from(a.addr())).collect();
                }
                if p.public_key.is_none() {
                    p.public_key = oi.derived_public_key.clone();
                }
            }
            None => {
                warnings.push(format!(
                    "{}: matches no [Peer] of {} (by public key or address): added as a new peer",
                    other.file, gw.file
                ));
                peers.push(PeerConf {
                    line: oi.line,
                    name: stem,
                    public_key: oi.derived_public_key.clone(),
                    allowed_ips: oi.addresses.iter().map(|a| IpNet::from(a.addr())).collect(),
                    ..Default::default()
                });
            }
        }
        if oi.private_key_line.is_some() {
            warnings.push(format!(
                "{}: its PrivateKey was read only to derive the public key, and not copied",
                other.file
            ));
        }
    }
    // Unique names. A friendly_name is the operator's own: it is kept as
    // written, two alike are an error, and other names make way for it.
    let mut friendly: std::collections::BTreeMap<&str, usize> = Default::default();
    for p in &peers {
        if let Some((name, line)) = &p.friendly_name {
            if let Some(first) = friendly.insert(name, *line) {
                return Err(format!(
                    "{}:{line}: friendly_name `{}` is already the name of the peer at line {first}",
                    gw.file,
                    toml_comment(name)
                ));
            }
        }
    }
    let mut used: std::collections::BTreeSet<String> =
        friendly.keys().map(|n| n.to_string()).collect();
    let mut names = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        if let Some((name, _)) = &p.friendly_name {
            names.push(name.clone());
            continue;
        }
        let base = p.name.clone().unwrap_or_else(|| format!("peer-{}", i + 1));
        let mut n = base.clone();
        let mut k = 2;
        while !used.insert(n.clone()) {
            let suffix = format!("-{k}");
            let mut b = base.clone();
            b.truncate(wgbpf_common::PEER_NAME_MAX - suffix.len());
            n = format!("{b}{suffix}");
            k += 1;
        }
        names.push(n);
    }

    // The mesh file refuses a peer whose AllowedIPs hold a gateway address
    // (it could send as the gateway): so does the import, saying where.
    for (p, name) in peers.iter().zip(&names) {
        for net in &p.allowed_ips {
            if let Some(a) = iface.addresses.iter().find(|a| net.contains(&a.addr())) {
                return Err(format!(
                    "{}: peer `{name}` ([Peer] at line {}): AllowedIPs {net} contains the \
                     gateway's address {}: that peer could send as the gateway; narrow its AllowedIPs",
                    gw.file,
                    p.line,
                    a.addr()
                ));
            }
        }
    }

    let mut t = String::new();
    let all: Vec<&str> = files.iter().map(|f| f.file.as_str()).collect();
    let _ = writeln!(
        t,
        "# Mesh file made by `wgbpf import wg-quick` from {}.\n#\n\
         # DEFAULT DENY: the policy below has no rules, so once loaded nothing\n\
         # passes between the peers or to the gateway until [[policy.rule]]\n\
         # blocks allow it (see the commented example at the end, and\n\
         # docs/mesh-file.md). Check it with `wgbpf policy check FILE`.",
        toml_comment(&super::and_list(&all))
    );
    let untranslated: Vec<String> = files
        .iter()
        .flat_map(|f| {
            f.untranslated.iter().map(move |(line, s)| {
                format!("#   {}:{line}: {}", toml_comment(&f.file), toml_comment(s))
            })
        })
        .collect();
    if !untranslated.is_empty() {
        let _ = writeln!(
            t,
            "#\n# Not translated (wg-quick hooks and settings; iptables/nftables rules\n\
             # are wgbpf's policy now: rewrite them as [[policy.rule]] blocks):"
        );
        for u in &untranslated {
            let _ = writeln!(t, "{u}");
        }
        warnings.push(format!(
            "{} wg-quick line(s) not translated (PostUp/PostDown hooks, DNS, Table…): \
             listed as comments at the top of the mesh file",
            untranslated.len()
        ));
    }
    let _ = writeln!(t, "\n[interface]\nname = {}", toml_string(&ifname));
    let addrs: Vec<String> = iface
        .addresses
        .iter()
        .map(|a| toml_string(&a.to_string()))
        .collect();
    let _ = writeln!(t, "addresses = [{}]", addrs.join(", "));
    let key_file = format!("/etc/wireguard/{ifname}.key");
    if let Some(line) = iface.private_key_line {
        let _ = writeln!(
            t,
            "# The PrivateKey of {}:{line} was NOT copied here. Store it in a file only\n\
             # root can read (umask 077; wg genkey style: one base64 line), e.g.\n\
             #   install -m 600 /dev/null {key_file} && editor {key_file}\n\
             # then uncomment this to let wgbpf configure WireGuard itself:\n\
             # private_key_file = {}",
            toml_comment(&gw.file),
            toml_string(&key_file)
        );
        warnings.push(format!(
            "{}:{line}: the PrivateKey was not copied: store it in a 0600 file such as {key_file} \
             and set private_key_file in [interface]",
            gw.file
        ));
    }
    if let Some(p) = iface.listen_port {
        let _ = writeln!(t, "listen_port = {p}");
    }
    if let Some(m) = iface.mtu {
        if (1280..=65535).contains(&m) {
            let _ = writeln!(t, "mtu = {m}");
        } else {
            let _ = writeln!(
                t,
                "# mtu = {m}   # outside 1280-65535, which wgbpf requires"
            );
            warnings.push(format!("MTU {m} is outside 1280-65535: left as a comment"));
        }
    }
    if let Some(f) = iface.fwmark {
        let _ = writeln!(t, "fwmark = {f}");
    }
    for (p, name) in peers.iter().zip(&names) {
        let _ = writeln!(t, "\n[[peer]]\nname = {}", toml_string(name));
        if let Some(k) = &p.public_key {
            let _ = writeln!(t, "public_key = {}", toml_string(k));
        }
        let ips: Vec<String> = p
            .allowed_ips
            .iter()
            .map(|a| toml_string(&a.to_string()))
            .collect();
        let _ = writeln!(t, "allowed_ips = [{}]", ips.join(", "));
        if let Some(e) = &p.endpoint {
            let _ = writeln!(t, "endpoint = {}", toml_string(e));
        }
        if let Some(k) = p.persistent_keepalive.filter(|k| *k != 0) {
            let _ = writeln!(t, "persistent_keepalive = {k}");
        }
        if let Some(line) = p.preshared_key_line {
            // A friendly_name may have spaces: not in a file name.
            let file_name = sanitize(name).unwrap_or_else(|| "peer".into());
            let psk = format!("/etc/wireguard/{ifname}-{file_name}.psk");
            let _ = writeln!(
                t,
                "# The PresharedKey of {}:{line} was NOT copied: store it in a 0600 file\n\
                 # preshared_key_file = {}",
                toml_comment(&gw.file),
                toml_string(&psk)
            );
            warnings.push(format!(
                "{}:{line}: the PresharedKey of peer {name} was not copied: store it in a 0600 \
                 file such as {psk} and set preshared_key_file",
                gw.file
            ));
        }
    }
    let example = names.first().map_or("alice", String::as_str);
    let _ = writeln!(
        t,
        "\n[policy]\n\
         # No rules: default deny. An example to start from:\n\
         #\n\
         # [[policy.rule]]\n\
         # name = \"ssh-to-gateway\"\n\
         # action = \"accept\"\n\
         # from = [{}]\n\
         # to = [\"gateway\"]\n\
         # proto = \"tcp\"\n\
         # ports = [22]",
        toml_string(example)
    );
    Ok(Output { toml: t, warnings })
}
