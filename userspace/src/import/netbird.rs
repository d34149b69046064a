//! Netbird policies (the JSON of its management API): rules between groups,
//! with a protocol, ports and port ranges, accept or drop, optionally
//! bidirectional. Groups are the mesh file's groups; Netbird's `All` is every
//! peer. See docs/imports.md.

use serde::Deserialize;
use serde_json::{value::RawValue, Value};
use wgbpf_common::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

use super::{
    hujson, json_error, located::Located, special, ImportError, ImportedRule, Item, Source,
    Translated,
};
use crate::policy::model::{Action, PortRange};

#[derive(Deserialize)]
struct Policy {
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    source_posture_checks: Option<Located<Vec<Value>>>,
}

#[derive(Deserialize)]
struct Rule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    action: Located<String>,
    #[serde(default)]
    bidirectional: bool,
    #[serde(default)]
    protocol: Option<Located<String>>,
    #[serde(default)]
    ports: Vec<Located<Value>>,
    #[serde(default)]
    port_ranges: Vec<Located<PortRangeJson>>,
    #[serde(default)]
    sources: Vec<Located<Value>>,
    #[serde(default)]
    destinations: Vec<Located<Value>>,
    #[serde(default, rename = "sourceResource")]
    source_resource: Option<Located<Value>>,
    #[serde(default, rename = "destinationResource")]
    destination_resource: Option<Located<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortRangeJson {
    start: u16,
    end: u16,
}

fn yes() -> bool {
    true
}

/// Parses a Netbird policy file (one policy object or an array of them) and
/// translates its enabled rules.
pub fn translate(file: &str, text: &str) -> Result<Translated, ImportError> {
    let s = Source { file, text };
    let json = hujson::normalize(text).map_err(|e| s.err(e.offset, e.message))?;
    let raw: &RawValue = serde_json::from_str(&json).map_err(|e| json_error(&s, &e))?;
    let policies: Vec<Policy> = if raw.get().trim_start().starts_with('[') {
        serde_json::from_str(&json)
    } else {
        serde_json::from_str(&json).map(|p| vec![p])
    }
    .map_err(|e| json_error(&s, &e))?;
    let file_name = std::path::Path::new(file)
        .file_name()
        .map_or_else(|| file.to_string(), |n| n.to_string_lossy().into());
    let err = |v_offset: usize, msg: String| s.err(v_offset, msg);
    let mut t = Translated {
        file: file.to_string(),
        ..Default::default()
    };
    for p in &policies {
        if let Some(c) = p
            .source_posture_checks
            .as_ref()
            .filter(|c| !c.value.is_empty())
        {
            return Err(err(
                c.offset(&json),
                "source_posture_checks cannot be checked by a WireGuard gateway".into(),
            ));
        }
        if !p.enabled {
            t.notes.push(format!(
                "policy {} is disabled: not translated",
                p.name.as_deref().unwrap_or("(unnamed)")
            ));
            continue;
        }
        for r in &p.rules {
            for res in [&r.source_resource, &r.destination_resource]
                .into_iter()
                .flatten()
            {
                if !res.value.is_null() {
                    return Err(err(
                        res.offset(&json),
                        "resources are not imported: use sources and destinations (groups)".into(),
                    ));
                }
            }
            let action = match r.action.get().as_str() {
                "accept" => Action::Accept,
                "drop" => Action::Deny,
                other => {
                    return Err(err(
                        r.action.offset(&json),
                        format!("action `{other}`: expected \"accept\" or \"drop\""),
                    ))
                }
            };
            if !r.enabled {
                continue;
            }
            let protos: Option<Vec<u8>> = match r.protocol.as_ref().map(|p| (p, p.get().as_str())) {
                None | Some((_, "all")) => None,
                Some((_, "tcp")) => Some(vec![PROTO_TCP]),
                Some((_, "udp")) => Some(vec![PROTO_UDP]),
                Some((_, "icmp")) => Some(vec![PROTO_ICMP, PROTO_ICMPV6]),
                Some((p, other)) => {
                    return Err(err(
                        p.offset(&json),
                        format!("protocol `{other}`: expected all, tcp, udp or icmp"),
                    ))
                }
            };
            let mut ports: Vec<PortRange> = Vec::new();
            for p in &r.ports {
                let text = match p.get() {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => String::new(),
                };
                let parsed = super::tailscale::parse_ports(&text)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        err(
                            p.offset(&json),
                            format!("port `{text}`: expected 0-65535 or A-B"),
                        )
                    })?;
                ports.extend(parsed);
            }
            for pr in &r.port_ranges {
                if pr.value.start > pr.value.end {
                    return Err(err(
                        pr.offset(&json),
                        "port range: start is after end".into(),
                    ));
                }
                ports.push(PortRange::new(pr.value.start, pr.value.end));
            }
            ports.sort();
            ports.dedup();
            if !ports.is_empty()
                && !protos
                    .as_ref()
                    .is_some_and(|ps| ps.iter().all(|p| matches!(*p, PROTO_TCP | PROTO_UDP)))
            {
                let at = r
                    .ports
                    .first()
                    .map(|p| p.offset(&json))
                    .or_else(|| r.port_ranges.first().map(|p| p.offset(&json)))
                    .unwrap_or(0);
                return Err(err(at, "ports need protocol tcp or udp".into()));
            }
            let groups = |list: &[Located<Value>]| -> Result<Vec<Item>, ImportError> {
                let mut out = Vec::new();
                for g in list {
                    let name = match g.get() {
                        Value::String(s) => Some(s.as_str()),
                        Value::Object(o) => o.get("name").and_then(Value::as_str),
                        _ => None,
                    }
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        err(
                            g.offset(&json),
                            "expected a group name, or an object with its \"name\"".into(),
                        )
                    })?;
                    out.push(Item {
                        name: if name == "All" {
                            special::ALL_PEERS.to_string()
                        } else {
                            format!("group:{name}")
                        },
                        loc: s.loc(g.offset(&json)),
                    });
                }
                Ok(out)
            };
            let from = groups(&r.sources)?;
            let to = groups(&r.destinations)?;
            let loc = s.loc(r.action.offset(&json));
            let label = format!(
                "{file_name}:{} {}",
                loc.line,
                r.name.as_deref().or(p.name.as_deref()).unwrap_or("rule")
            );
            let mut directions = vec![(from.clone(), to.clone(), label.clone())];
            if r.bidirectional {
                directions.push((to, from, format!("{label} (reverse)")));
            }
            for (from, to, name) in directions {
                match &protos {
                    None => t.rules.push(ImportedRule {
                        name,
                        action,
                        from,
                        to,
                        proto: None,
                        ports: Vec::new(),
                        loc,
                    }),
                    Some(ps) => {
                        for &proto in ps {
                            t.rules.push(ImportedRule {
                                name: format!("{name} {}", crate::policy::model::proto_name(proto)),
                                action,
                                from: from.clone(),
                                to: to.clone(),
                                proto: Some(proto),
                                ports: ports.clone(),
                                loc,
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(t)
}
