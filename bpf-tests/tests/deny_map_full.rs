//! The deny map when more distinct denies arrive than it holds (issue 12,
//! exhaustion of a traffic-driven map): a peer sends 70,000 packets to
//! distinct destination ports, each a new deny key, into a map of 65,536.
//! Every packet is still dropped and counted exactly in the peer's
//! counters; the map stays within its size (LRU: old keys evicted, new ones
//! kept), with nothing refused and no error.

use std::net::IpAddr;

use wgbpf::policy::model::{Peer, Policy};
use wgbpf_bpf_tests::{
    harness::{Harness, DROP},
    packets::Packet,
};
use wgbpf_common::{capacity, DIR_INGRESS};

#[test]
fn a_full_deny_map_evicts_old_keys_and_counts_every_packet() {
    let mut h = Harness::new().unwrap();
    let alice = Peer {
        name: "alice".into(),
        index: 1,
        allowed_ips: vec!["10.77.0.2/32".parse().unwrap()],
    };
    // No rule: everything alice sends is a default deny.
    h.apply(&Policy {
        link_local: Default::default(),
        peers: vec![alice],
        local: vec!["10.77.0.1/32".parse().unwrap()],
        rules: vec![],
        audit: false,
    })
    .unwrap();
    let a: IpAddr = "10.77.0.2".parse().unwrap();
    let total: u32 = 70_000;
    let key = |i: u32| -> (IpAddr, u16) {
        // Distinct (destination, port) keys across two destinations.
        let dst = if i < 65_535 { "10.77.0.1" } else { "10.77.0.9" };
        (dst.parse().unwrap(), (i % 65_535) as u16 + 1)
    };
    for i in 0..total {
        let (dst, port) = key(i);
        let frame = Packet::udp(a, dst, 40000, port).build();
        assert_eq!(
            h.run(DIR_INGRESS, &frame.bytes).unwrap(),
            DROP,
            "packet {i}"
        );
    }
    let totals = h.dp.maps.peer_totals(1).unwrap();
    assert_eq!(
        totals.ingress.denied_packets,
        u64::from(total),
        "every packet counted"
    );
    let denies = h.dp.maps.denies().unwrap();
    assert!(
        denies.len() <= capacity::DENIES as usize,
        "{} keys in a map of {}",
        denies.len(),
        capacity::DENIES
    );
    assert!(
        denies.len() as u64 >= u64::from(capacity::DENIES) * 9 / 10,
        "the map is used up to its size: {}",
        denies.len()
    );
    // The newest keys are kept (LRU), most of the oldest are gone.
    let present = |i: u32| {
        let (dst, port) = key(i);
        denies.iter().any(|d| d.dst == dst && d.port == port)
    };
    let newest = (total - 1000..total).filter(|i| present(*i)).count();
    let oldest = (0..1000).filter(|i| present(*i)).count();
    assert!(newest >= 990, "only {newest} of the newest 1000 keys kept");
    assert!(oldest < newest, "old keys {oldest}, new keys {newest}");
    let stats = h.dp.maps.stats().unwrap();
    assert_eq!(stats.malformed, 0);
}
