//! Deny events leave the kernel through the ring buffer, rate-limited in
//! the kernel by a per-CPU token bucket; what the bucket holds back is
//! counted as suppressed, never lost silently.

use std::net::IpAddr;

use aya::maps::RingBuf;
use wgbpf::{
    dataplane::{counters::unmap, LoadOptions},
    policy::model::{Action, Peer, Policy, PortRange, Rule, Selector},
};
use wgbpf_bpf_tests::{
    harness::{Harness, DROP, PASS},
    packets::Packet,
};
use wgbpf_common::{rule_id, severity, DenyEvent, EventConfig, DIR_INGRESS, PROTO_TCP};

fn policy() -> Policy {
    let alice = Peer {
        name: "alice".into(),
        index: 1,
        allowed_ips: vec!["10.77.0.2/32".parse().unwrap()],
    };
    let deny_ssh = Rule {
        name: "no-ssh".into(),
        action: Action::Deny,
        audit: false,
        src: Selector::Any,
        dst: Selector::Any,
        proto: Some(PROTO_TCP),
        ports: vec![PortRange::single(22)],
    };
    let audit_telnet = Rule {
        name: "audit-telnet".into(),
        action: Action::Deny,
        audit: true,
        ports: vec![PortRange::single(23)],
        ..deny_ssh.clone()
    };
    Policy {
        link_local: Default::default(),
        peers: vec![alice],
        local: vec!["10.77.0.1/32".parse().unwrap()],
        rules: vec![deny_ssh, audit_telnet],
        audit: false,
    }
}

fn drain(h: &mut Harness) -> Vec<DenyEvent> {
    let map = h.dp.maps.events.take().expect("events map");
    let mut ring = RingBuf::try_from(map).expect("ring buffer");
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), std::mem::size_of::<DenyEvent>());
        // SAFETY: the kernel wrote a DenyEvent of exactly this size.
        out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<DenyEvent>()) });
    }
    out
}

#[test]
fn deny_events_are_rate_limited_in_the_kernel() {
    let (burst, packets) = (5u32, 200u64);
    let mut h = Harness::with_options(LoadOptions {
        events: Some(EventConfig {
            per_second: 1,
            burst,
        }),
        ..Default::default()
    })
    .unwrap();
    h.apply(&policy()).unwrap();
    let (a, gw): (IpAddr, IpAddr) = ("10.77.0.2".parse().unwrap(), "10.77.0.1".parse().unwrap());
    let frame = Packet::tcp(a, gw, 40000, 22).build();
    for _ in 0..packets {
        assert_eq!(h.run(DIR_INGRESS, &frame.bytes).unwrap(), DROP);
    }
    let events = drain(&mut h);
    let stats = h.dp.maps.stats().unwrap();
    // One bucket per CPU: the runs may land on either CPU, each starts full;
    // at 1 token per second hardly anything refills during the loop.
    let cpus = aya::util::nr_cpus().unwrap() as u64;
    assert!(
        events.len() as u64 >= burst as u64,
        "{} events",
        events.len()
    );
    assert!(
        events.len() as u64 <= cpus * (burst as u64 + 1),
        "{} events",
        events.len()
    );
    assert_eq!(stats.events_sent, events.len() as u64);
    assert_eq!(stats.events_suppressed, packets - events.len() as u64);
    assert_eq!(stats.events_lost, 0);
    for e in &events {
        assert_eq!(unmap(&e.src), a);
        assert_eq!(unmap(&e.dst), gw);
        assert_eq!((e.sport, e.dport, e.proto), (40000, 22, PROTO_TCP));
        assert_eq!((e.rule, e.severity, e.src_peer), (0, severity::DENY, 1));
        assert_eq!(e.direction as usize, DIR_INGRESS);
    }
    // The deny map counted every packet, events or not.
    let denies = h.dp.maps.denies().unwrap();
    assert_eq!(denies.len(), 1);
    assert_eq!(denies[0].packets, packets);
}

#[test]
fn audit_and_default_deny_events_say_so() {
    let mut h = Harness::with_options(LoadOptions {
        events: Some(EventConfig {
            per_second: 1000,
            burst: 1000,
        }),
        ..Default::default()
    })
    .unwrap();
    h.apply(&policy()).unwrap();
    let (a, gw): (IpAddr, IpAddr) = ("10.77.0.2".parse().unwrap(), "10.77.0.1".parse().unwrap());
    let telnet = Packet::tcp(a, gw, 40000, 23).build();
    let http = Packet::tcp(a, gw, 40001, 80).build();
    assert_eq!(h.run(DIR_INGRESS, &telnet.bytes).unwrap(), PASS);
    assert_eq!(h.run(DIR_INGRESS, &http.bytes).unwrap(), DROP);
    let events = drain(&mut h);
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].dport, events[0].severity, events[0].rule),
        (23, severity::AUDIT, 1)
    );
    assert_eq!(
        (events[1].dport, events[1].severity, events[1].rule),
        (80, severity::DENY, rule_id::DEFAULT)
    );
}

#[test]
fn no_events_when_disabled() {
    let mut h = Harness::new().unwrap();
    h.apply(&policy()).unwrap();
    let frame = Packet::tcp(
        "10.77.0.2".parse().unwrap(),
        "10.77.0.1".parse().unwrap(),
        1,
        22,
    )
    .build();
    assert_eq!(h.run(DIR_INGRESS, &frame.bytes).unwrap(), DROP);
    assert!(drain(&mut h).is_empty());
    let stats = h.dp.maps.stats().unwrap();
    assert_eq!((stats.events_sent, stats.events_suppressed), (0, 0));
}
