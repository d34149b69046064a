//! Policy evaluation: at most four layers (exact source and destination
//! identities, and the wildcard combinations the compiler says exist), each
//! at most three hash lookups. The compiler has folded protocol and port
//! wildcards into the more specific keys, so the first hit in a layer is that
//! layer's answer; layers combine by severity (deny wins), then rule order.

use aya_ebpf::maps::{Array, HashMap};
use wgbpf_common::*;

use crate::{Verdict, POLICY_0, POLICY_1, PORTCLASS_0, PORTCLASS_1};

#[inline(always)]
pub fn evaluate(
    slot: u32,
    cfg: &SlotConfig,
    src: &Endpoint,
    dst: &Endpoint,
    proto: u8,
    port: u16,
    fragment: bool,
) -> Verdict {
    if slot == 0 {
        eval_in(&POLICY_0, &PORTCLASS_0, cfg, src, dst, proto, port, fragment)
    } else {
        eval_in(&POLICY_1, &PORTCLASS_1, cfg, src, dst, proto, port, fragment)
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn eval_in(
    policy: &HashMap<PolicyKey, PolicyValue>,
    classes: &Array<u16>,
    cfg: &SlotConfig,
    src: &Endpoint,
    dst: &Endpoint,
    proto: u8,
    port: u16,
    fragment: bool,
) -> Verdict {
    let class = if fragment {
        PORT_CLASS_FRAG
    } else {
        match ported_proto_block(proto) {
            Some(block) => match classes.get(block * 65536 + port as u32) {
                Some(c) => *c,
                None => PORT_CLASS_ANY,
            },
            None => PORT_CLASS_ANY,
        }
    };
    let mut best = layer(policy, src.identity, dst.identity, proto, class);
    if cfg.flags & SLOT_HAS_ANY_SRC != 0 {
        best = better(best, layer(policy, ID_ANY, dst.identity, proto, class));
    }
    if cfg.flags & SLOT_HAS_ANY_DST != 0 {
        best = better(best, layer(policy, src.identity, ID_ANY, proto, class));
    }
    if cfg.flags & SLOT_HAS_ANY_ANY != 0 {
        best = better(best, layer(policy, ID_ANY, ID_ANY, proto, class));
    }
    best
}

#[inline(always)]
fn better(a: Verdict, b: Verdict) -> Verdict {
    if b.severity > a.severity || (b.severity == a.severity && b.rule < a.rule) {
        b
    } else {
        a
    }
}

/// One (source, destination) layer. The compiler writes a marker entry
/// (any protocol, any port) for every pair it has entries for, so a pair
/// with no rules costs one lookup.
#[inline(always)]
fn layer(
    policy: &HashMap<PolicyKey, PolicyValue>,
    src_id: u32,
    dst_id: u32,
    proto: u8,
    class: u16,
) -> Verdict {
    let mut key = PolicyKey {
        src_id,
        dst_id,
        port_class: PORT_CLASS_ANY,
        proto: PROTO_ANY,
        _pad: 0,
    };
    let Some(marker) = (unsafe { policy.get(&key) }) else {
        return Verdict {
            severity: severity::NONE,
            rule: rule_id::DEFAULT,
        };
    };
    let marker = *marker;
    key.proto = proto;
    if class != PORT_CLASS_ANY {
        key.port_class = class;
        if let Some(v) = unsafe { policy.get(&key) } {
            return Verdict {
                severity: v.severity,
                rule: v.rule,
            };
        }
        key.port_class = PORT_CLASS_ANY;
    }
    if proto != PROTO_ANY {
        if let Some(v) = unsafe { policy.get(&key) } {
            return Verdict {
                severity: v.severity,
                rule: v.rule,
            };
        }
    }
    Verdict {
        severity: marker.severity,
        rule: marker.rule,
    }
}
