//! What is measured (filters, traffic kinds), the samples of each case,
//! and the result lines.

use super::stats::median;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Filter {
    None,
    Wgbpf,
    NftRules,
    NftSet,
}

impl Filter {
    pub fn name(self) -> &'static str {
        match self {
            Filter::None => "none",
            Filter::Wgbpf => "wgbpf",
            Filter::NftRules => "nft_rules",
            Filter::NftSet => "nft_set",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Traffic {
    Allowed,
    Denied,
    /// Bulk TCP (tunnel only).
    Tcp,
}

impl Traffic {
    pub fn name(self) -> &'static str {
        match self {
            Traffic::Allowed => "allowed",
            Traffic::Denied => "denied",
            Traffic::Tcp => "tcp",
        }
    }
}

/// Samples of one case, by repetition.
pub struct Case {
    pub variant: &'static str,
    pub traffic: Traffic,
    pub filter: Filter,
    pub rules: usize,
    pub samples: Vec<f64>,
    /// CPU ns per packet (veth: the sender thread; tunnel: wireguard-go)
    /// or per KiB (TCP), by repetition.
    pub cpu: Vec<f64>,
    /// Why there is no figure (nft could not load the rules in time).
    pub missing: Option<String>,
}

pub fn baseline<'a>(cases: &'a [Case], c: &Case) -> &'a Case {
    cases
        .iter()
        .find(|b| b.variant == c.variant && b.traffic == c.traffic && b.filter == Filter::None)
        .expect("every traffic has a baseline")
}

pub fn report(cases: &[Case]) {
    for c in cases {
        let base = baseline(cases, c);
        // Ratios pair each sample with the baseline of the same repetition.
        let ratios: Vec<f64> = c
            .samples
            .iter()
            .zip(&base.samples)
            .map(|(x, b)| x / b)
            .collect();
        let (value, ratio) = (median(&c.samples), median(&ratios));
        let tail = c
            .missing
            .as_ref()
            .map(|m| format!(" {m}"))
            .unwrap_or_default();
        if c.traffic == Traffic::Tcp {
            println!(
                "dataplane_tcp variant={} filter={} rules={} mbit_s={:.0} ratio={:.3}{tail}",
                c.variant,
                c.filter.name(),
                c.rules,
                value / 1e6,
                ratio
            );
        } else {
            println!(
                "dataplane variant={} traffic={} filter={} rules={} pps={:.0} ratio={:.3}{tail}",
                c.variant,
                c.traffic.name(),
                c.filter.name(),
                c.rules,
                value,
                ratio
            );
        }
    }
    // The same cases by CPU time per packet (veth: the sender thread's;
    // tunnel: wireguard-go's) or per KiB (TCP).
    for c in cases {
        let base = baseline(cases, c);
        if !c.cpu.is_empty() {
            // As a rate ratio: baseline cost over this case's cost.
            let cpu_ratios: Vec<f64> = c.cpu.iter().zip(&base.cpu).map(|(x, b)| b / x).collect();
            if c.traffic == Traffic::Tcp {
                println!(
                    "dataplane_tcp_cpu variant={} filter={} rules={} ns_per_kbyte={:.0} ratio={:.3}",
                    c.variant,
                    c.filter.name(),
                    c.rules,
                    median(&c.cpu),
                    median(&cpu_ratios)
                );
            } else {
                println!(
                    "dataplane_cpu variant={} traffic={} filter={} rules={} ns_per_packet={:.0} ratio={:.3}",
                    c.variant,
                    c.traffic.name(),
                    c.filter.name(),
                    c.rules,
                    median(&c.cpu),
                    median(&cpu_ratios)
                );
            }
        }
    }
}
