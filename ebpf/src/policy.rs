//! Policy evaluation: at most four layers (exact source and destination
//! identities, and the wildcard combinations the compiler says exist), each
//! at most three hash lookups. The compiler has folded protocol and port
//! wildcards into the more specific keys, so the first hit in a layer is that
//! layer's answer; layers combine by severity (deny wins), then rule order.

use wgbpf_common::*;

use crate::{Verdict, POLICY, PORT_CLASS};

#[inline(always)]
pub fn evaluate(
    slot: u32,
    cfg: &SlotConfig,
    src: &Endpoint,
    dst: &Endpoint,
    proto: u8,
    port: u16,
    fragment: bool,
    ported: bool,
) -> Verdict {
    let class = if fragment {
        PORT_CLASS_FRAG
    } else if !ported {
        // No port known (ICMP of the other family): rules with ports or
        // types cannot match; the (pair, protocol, any) entry decides.
        PORT_CLASS_ANY
    } else {
        match ported_proto_block(proto) {
            Some(block) => {
                let index = slot * PORT_CLASS_ENTRIES + block * 65536 + port as u32;
                match PORT_CLASS.get(index) {
                    Some(c) => *c,
                    None => PORT_CLASS_ANY,
                }
            }
            None => PORT_CLASS_ANY,
        }
    };
    let slot = slot as u8;
    let mut best = layer(slot, src.identity, dst.identity, proto, class);
    if cfg.flags & SLOT_HAS_ANY_SRC != 0 {
        best = better(best, layer(slot, ID_ANY, dst.identity, proto, class));
    }
    if cfg.flags & SLOT_HAS_ANY_DST != 0 {
        best = better(best, layer(slot, src.identity, ID_ANY, proto, class));
    }
    if cfg.flags & SLOT_HAS_ANY_ANY != 0 {
        best = better(best, layer(slot, ID_ANY, ID_ANY, proto, class));
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
fn layer(slot: u8, src_id: u32, dst_id: u32, proto: u8, class: u16) -> Verdict {
    let mut key = PolicyKey {
        src_id,
        dst_id,
        port_class: PORT_CLASS_ANY,
        proto: PROTO_ANY,
        slot,
    };
    let Some(marker) = (unsafe { POLICY.get(&key) }) else {
        return Verdict {
            severity: severity::NONE,
            rule: rule_id::DEFAULT,
        };
    };
    let marker = *marker;
    // The marker says which lookups can hit; the others are skipped.
    let bit = proto_bit(proto);
    key.proto = proto;
    if class != PORT_CLASS_ANY && marker.class_protos & bit != 0 {
        key.port_class = class;
        if let Some(v) = unsafe { POLICY.get(&key) } {
            return Verdict {
                severity: v.severity,
                rule: v.rule,
            };
        }
        key.port_class = PORT_CLASS_ANY;
    }
    if marker.any_port_protos & bit != 0 {
        if let Some(v) = unsafe { POLICY.get(&key) } {
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
