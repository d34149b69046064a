//! Policy tests and explanations, answered by the reference evaluator: the
//! same definition the kernel is tested against.

use std::net::IpAddr;

use serde::Serialize;
use wgbpf_common::{rule_id, severity, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, TCP_SYN};

use super::{
    model::{proto_name, Policy, PolicyTest},
    reference::{evaluate, PacketMeta, Verdict},
};

/// What the policy decides for one packet, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: String,
    pub port: u16,
    /// "accept", "deny" or "audit" (passes, counted as a would-be deny).
    pub verdict: &'static str,
    /// The deciding rule's name, or "default deny".
    pub rule: String,
    /// Index of the deciding rule in the file, if a rule decided.
    pub rule_index: Option<u32>,
}

/// The first packet of a flow from `src` to `dst:port` (for ICMP, `port` is
/// the message type).
pub fn explain(policy: &Policy, src: IpAddr, dst: IpAddr, proto: u8, port: u16) -> Explanation {
    let icmp = matches!(proto, PROTO_ICMP | PROTO_ICMPV6);
    let pkt = PacketMeta {
        src,
        dst,
        proto,
        fragment: false,
        sport: if icmp { 0 } else { 40000 },
        dport: if icmp { 0 } else { port },
        icmp_type: if icmp { port as u8 } else { 0 },
        icmp_id: 0,
        tcp_flags: if proto == PROTO_TCP { TCP_SYN } else { 0 },
        frag: None,
        quoted: None,
    };
    describe(policy, &pkt, evaluate(policy, &pkt))
}

fn describe(policy: &Policy, pkt: &PacketMeta, v: Verdict) -> Explanation {
    let verdict = match v.severity {
        severity::ALLOW => "accept",
        severity::AUDIT => "audit",
        _ => "deny",
    };
    let (rule, rule_index) = match v.rule {
        rule_id::DEFAULT => ("default deny".to_string(), None),
        i => (
            policy
                .rules
                .get(i as usize)
                .map_or_else(|| format!("rule #{}", i + 1), |r| r.name.clone()),
            Some(i),
        ),
    };
    Explanation {
        src: pkt.src,
        dst: pkt.dst,
        proto: proto_name(pkt.proto),
        port: pkt.policy_port(),
        verdict,
        rule,
        rule_index,
    }
}

/// A test expectation the policy does not meet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TestFailure {
    /// `file:line:column` of the expectation.
    pub at: String,
    pub src: String,
    pub target: String,
    pub expected: &'static str,
    /// What the policy said; `None` when no source and destination address
    /// share a family, so nothing could be checked.
    pub got: Option<Explanation>,
}

impl std::fmt::Display for TestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.got {
            Some(g) => write!(
                f,
                "{}: test failed: {} -> {} should {} but {} {} -> {} {}/{} ({})",
                self.at,
                self.src,
                self.target,
                if self.expected == "accept" {
                    "be accepted"
                } else {
                    "be denied"
                },
                if g.verdict == "accept" {
                    "is accepted"
                } else {
                    "is denied"
                },
                g.src,
                g.dst,
                g.proto,
                g.port,
                g.rule
            ),
            None => write!(
                f,
                "{}: test cannot run: {} and {} have no addresses of the same family",
                self.at, self.src, self.target
            ),
        }
    }
}

/// Runs every `[[policy.test]]`: each source address against each address
/// of each destination of the same family (for ICMP, IPv4 only; for
/// ICMPv6, IPv6 only). An `accept` needs the policy to accept (audit mode
/// does not count: it would be denied once enforced); a `deny` needs a deny
/// or audit verdict.
pub fn run_tests(policy: &Policy, tests: &[PolicyTest]) -> (usize, Vec<TestFailure>) {
    let mut checked = 0;
    let mut failures = Vec::new();
    for t in tests {
        for e in &t.expect {
            let before = checked;
            for &src in &t.src_addrs {
                for &dst in &e.addrs {
                    // ICMP belongs to IPv4 and ICMPv6 to IPv6: a test of
                    // one checks only the address pairs of its family.
                    let family_ok = match t.proto {
                        PROTO_ICMP => src.is_ipv4(),
                        PROTO_ICMPV6 => src.is_ipv6(),
                        _ => true,
                    };
                    if src.is_ipv4() != dst.is_ipv4() || !family_ok {
                        continue;
                    }
                    checked += 1;
                    let got = explain(policy, src, dst, t.proto, e.port);
                    let ok = if e.accept {
                        got.verdict == "accept"
                    } else {
                        got.verdict != "accept"
                    };
                    if !ok {
                        failures.push(TestFailure {
                            at: e.at.clone(),
                            src: t.src.clone(),
                            target: format!("{}:{}", e.target, e.port),
                            expected: if e.accept { "accept" } else { "deny" },
                            got: Some(got),
                        });
                    }
                }
            }
            if checked == before {
                failures.push(TestFailure {
                    at: e.at.clone(),
                    src: t.src.clone(),
                    target: format!("{}:{}", e.target, e.port),
                    expected: if e.accept { "accept" } else { "deny" },
                    got: None,
                });
            }
        }
    }
    (checked, failures)
}
