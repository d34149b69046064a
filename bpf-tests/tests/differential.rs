//! The kernel against the reference evaluator: random policies, thousands
//! of random, edge-case and malformed packets plus replies to earlier ones
//! and fragments of them (first fragments, later fragments after them,
//! overlapping ones), through the real programs with BPF_PROG_TEST_RUN. Every verdict, every
//! per-peer counter and every deny-map entry must agree with the model
//! (`wgbpf_bpf_tests::differential`, shared with the packet fuzzer).

use rand::Rng;
use wgbpf_bpf_tests::{
    differential::{load_options, Differential},
    harness::{meta, Harness},
    packets::{random_frame, Expected},
    policies::{pools_for, random_policy},
    traffic::Related,
};
use wgbpf_common::{DIR_EGRESS, DIR_INGRESS};

#[test]
fn kernel_agrees_with_reference_on_random_traffic() {
    let mut rng = wgbpf_bpf_tests::seeded_rng();
    let mut h = Harness::with_options(load_options()).expect("load");

    let first = random_policy(&mut rng, 12, 30);
    let mut diff = Differential::start(&mut h, first).expect("apply");
    let mut related = Related::default();

    for round in 0..10 {
        if round > 0 {
            // A new policy over the same peers: flows from the old one are
            // re-checked, not trusted.
            let rules = rng.gen_range(1..60);
            let policy = random_policy(&mut rng, 12, rules);
            diff.set_policy(&mut h, policy).expect("apply");
        }
        let pools = pools_for(diff.model.policy());
        for _ in 0..2000 {
            let gw = diff
                .model
                .policy()
                .local
                .iter()
                .map(|n| n.addr())
                .collect::<Vec<_>>();
            let frame = related
                .next(&mut rng, &gw, &pools)
                .unwrap_or_else(|| random_frame(&mut rng, &pools));
            let dir = if rng.gen_bool(0.5) {
                DIR_INGRESS
            } else {
                DIR_EGRESS
            };
            let view = meta(&frame).map(|m| match &frame.expected {
                Expected::Packet(p) => (m, p.len),
                Expected::Malformed => unreachable!(),
            });
            let label = format!("round {round}, {}", frame.label);
            if let Some(out) = diff.packet(&h, dir, &frame.bytes, view.clone(), &label) {
                if out.verdict.passes() {
                    related.passed.push(view.unwrap().0);
                }
            }
        }
    }
    let mix = diff.mix;
    eprintln!(
        "{} packets: {} malformed, {} denied, {} by the flow table, {} ICMP errors related to \
         a flow, {} later fragments matched to their first, {} overlapping it",
        mix.total,
        mix.malformed,
        mix.denied,
        mix.flow_decided,
        mix.related,
        mix.frag_matched,
        mix.frag_overlaps
    );
    // The run must have exercised every path, or it proves little.
    assert!(
        mix.malformed > 500
            && mix.denied > 1000
            && mix.flow_decided > 500
            && mix.related > 50
            && mix.frag_matched > 100
            && mix.frag_overlaps > 10,
        "weak mix"
    );
    diff.check_maps(&h);
}
