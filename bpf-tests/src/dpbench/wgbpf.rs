//! wgbpf as a filter of the benchmark: an instance with its own maps,
//! attached with tcx.

use std::time::Instant;

use anyhow::{Context, Result};
use aya::programs::{
    tc::{SchedClassifierLink, TcAttachOptions, TcAttachType},
    LinkOrder, SchedClassifier,
};
use wgbpf::{
    dataplane::{Dataplane, LoadOptions},
    policy::{compile::compile, model::Policy},
};
use wgbpf_common::{capacity, names, EventConfig};

use super::netns;

/// A wgbpf instance with its own maps, holding an N-rule policy.
pub fn load_wgbpf(n: usize, l2_hdr_len: u32, policy: &Policy) -> Result<Dataplane> {
    let t = Instant::now();
    let mut dp = Dataplane::load(&LoadOptions {
        l2_hdr_len,
        // The controller's defaults: deny events on, rate limited.
        events: Some(EventConfig {
            per_second: 100,
            burst: 200,
        }),
        ..Default::default()
    })
    .context("loading the eBPF object (are you root?)")?;
    let compiled = compile(policy, capacity::PEERS).context("compiling")?;
    dp.maps.apply(&compiled).context("applying the policy")?;
    eprintln!(
        "bench-dataplane: wgbpf rules={n}: loaded and applied in {:.2} s ({} policy entries)",
        t.elapsed().as_secs_f64(),
        compiled.policy.len()
    );
    Ok(dp)
}

/// Attaches both programs to `ifname` in `ns` (tcx, first in line);
/// dropping the links detaches them.
pub fn attach(dp: &mut Dataplane, ns: &str, ifname: &str) -> Result<Vec<SchedClassifierLink>> {
    let mut links = Vec::new();
    for (name, hook) in [
        (names::PROG_INGRESS, TcAttachType::Ingress),
        (names::PROG_EGRESS, TcAttachType::Egress),
    ] {
        let prog: &mut SchedClassifier = dp
            .ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?;
        let link = netns::enter(ns, || {
            let id = prog.attach_with_options(
                ifname,
                hook,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )?;
            Ok(prog.take_link(id)?)
        })
        .with_context(|| format!("attaching {name} to {ifname}"))?;
        links.push(link);
    }
    Ok(links)
}
