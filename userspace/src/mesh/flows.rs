//! `[interface.flows]`: the flow table's size, lifetimes, per-peer budget
//! and the daemon's sweep interval, checked against their bounds with the
//! position of the offending value.

use std::time::Duration;

use toml::Spanned;
use wgbpf_common::{capacity, FlowConfig};

use super::{raw::FlowsSection, Ctx, MeshError};

/// Entries in the flow table: at least a few per-CPU LRU batches, at most
/// what stays near a couple of GiB of kernel memory (about 128 bytes an
/// entry).
pub const TABLE_SIZE: (i64, i64) = (1024, 1 << 24);
/// New flows per peer per second: `rate × 10 s` must fit the kernel's
/// token arithmetic (nanoseconds × rate in 64 bits).
pub const NEW_PER_SECOND: (i64, i64) = (0, 1_000_000);
pub const NEW_BURST: (i64, i64) = (1, 10_000_000);
/// Lifetimes, seconds: up to a week.
pub const LIFETIME: (i64, i64) = (1, 7 * 24 * 3600);
/// Seconds between sweeps; 0 turns the sweep off.
pub const SWEEP_INTERVAL: (i64, i64) = (0, 3600);

/// Seconds between sweeps unless the file says otherwise.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The flow table as the file wants it (defaults where it says nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSpec {
    /// Entries (the map's `max_entries`, fixed when the data plane is
    /// first loaded).
    pub table_size: u32,
    /// Lifetimes and the budget (the programs' read-only global).
    pub config: FlowConfig,
    /// How often `wgbpf run` sweeps dead entries; `None`: never.
    pub sweep_interval: Option<Duration>,
}

impl Default for FlowSpec {
    fn default() -> Self {
        Self {
            table_size: capacity::FLOWS,
            config: FlowConfig::DEFAULT,
            sweep_interval: Some(DEFAULT_SWEEP_INTERVAL),
        }
    }
}

pub(super) fn flows(ctx: &Ctx, raw: Option<&Spanned<FlowsSection>>) -> Result<FlowSpec, MeshError> {
    let mut spec = FlowSpec::default();
    let Some(raw) = raw else {
        return Ok(spec);
    };
    let f = raw.get_ref();
    let get = |v: &Option<Spanned<i64>>, name: &str, (lo, hi): (i64, i64), unit: &str| {
        v.as_ref()
            .map(|v| {
                let n = *v.get_ref();
                if (lo..=hi).contains(&n) {
                    Ok(n as u64)
                } else {
                    Err(ctx.err(
                        v.span(),
                        format!("flows: {name} = {n}: must be {lo} to {hi}{unit}"),
                    ))
                }
            })
            .transpose()
    };
    if let Some(n) = get(&f.table_size, "table_size", TABLE_SIZE, " entries")? {
        spec.table_size = n as u32;
    }
    if let Some(n) = get(&f.new_per_second, "new_per_second", NEW_PER_SECOND, "")? {
        spec.config.new_per_second = n as u32;
    }
    if let Some(n) = get(&f.new_burst, "new_burst", NEW_BURST, "")? {
        spec.config.new_burst = n as u32;
    }
    let c = &mut spec.config;
    for (v, name, field) in [
        (&f.tcp_opening, "tcp_opening", &mut c.tcp_opening_ns),
        (
            &f.tcp_established,
            "tcp_established",
            &mut c.tcp_established_ns,
        ),
        (&f.tcp_closing, "tcp_closing", &mut c.tcp_closing_ns),
        (&f.other_opening, "other_opening", &mut c.other_opening_ns),
        (
            &f.other_established,
            "other_established",
            &mut c.other_established_ns,
        ),
    ] {
        if let Some(s) = get(v, name, LIFETIME, " seconds")? {
            *field = s * 1_000_000_000;
        }
    }
    if let Some(s) = get(
        &f.sweep_interval,
        "sweep_interval",
        SWEEP_INTERVAL,
        " seconds (0: off)",
    )? {
        spec.sweep_interval = (s > 0).then(|| Duration::from_secs(s));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::parse;

    const HEAD: &str = "[interface]\nname = \"wg0\"\n";

    #[test]
    fn defaults_without_the_section() {
        let m = parse("t.toml", HEAD).unwrap();
        assert_eq!(m.flows, FlowSpec::default());
        assert_eq!(m.flows.table_size, capacity::FLOWS);
        assert_eq!(m.flows.sweep_interval, Some(Duration::from_secs(10)));
    }

    #[test]
    fn every_value_is_read_into_its_place() {
        let m = parse(
            "t.toml",
            &format!(
                "{HEAD}[interface.flows]\ntable_size = 4096\nnew_per_second = 50\n\
                 new_burst = 100\ntcp_opening = 5\ntcp_established = 600\ntcp_closing = 2\n\
                 other_opening = 3\nother_established = 60\nsweep_interval = 0\n"
            ),
        )
        .unwrap();
        const S: u64 = 1_000_000_000;
        assert_eq!(
            m.flows,
            FlowSpec {
                table_size: 4096,
                config: FlowConfig {
                    tcp_opening_ns: 5 * S,
                    tcp_established_ns: 600 * S,
                    tcp_closing_ns: 2 * S,
                    other_opening_ns: 3 * S,
                    other_established_ns: 60 * S,
                    new_per_second: 50,
                    new_burst: 100,
                    fragment_ns: FlowConfig::DEFAULT.fragment_ns,
                },
                sweep_interval: None,
            }
        );
        // Unset values keep their defaults.
        let m = parse(
            "t.toml",
            &format!("{HEAD}[interface.flows]\nnew_burst = 7\n"),
        )
        .unwrap();
        assert_eq!(m.flows.config.new_burst, 7);
        assert_eq!(
            m.flows.config.new_per_second,
            FlowConfig::DEFAULT.new_per_second
        );
        assert_eq!(m.flows.table_size, capacity::FLOWS);
    }

    /// The example in docs/mesh-file.md spells out the defaults.
    #[test]
    fn the_documented_example_is_the_defaults() {
        let doc = include_str!("../../../docs/mesh-file.md");
        let start = doc
            .find("```toml\n[interface.flows]\n")
            .expect("the example")
            + 8;
        let example = &doc[start..start + doc[start..].find("```").unwrap()];
        let m = parse("t.toml", &format!("{HEAD}{example}")).unwrap();
        assert_eq!(m.flows, FlowSpec::default());
    }

    #[test]
    fn values_out_of_bounds_are_refused_where_they_are_written() {
        for (line, bound) in [
            ("table_size = 1023", "1024 to 16777216 entries"),
            ("table_size = 16777217", "1024 to 16777216"),
            ("table_size = -1", "1024 to"),
            ("new_per_second = 1000001", "0 to 1000000"),
            ("new_burst = 0", "1 to 10000000"),
            ("tcp_established = 0", "1 to 604800 seconds"),
            ("other_opening = 604801", "1 to 604800 seconds"),
            ("sweep_interval = 3601", "0 to 3600 seconds (0: off)"),
        ] {
            let text = format!("{HEAD}[interface.flows]\ntcp_closing = 5\n{line}\n");
            let e = parse("t.toml", &text).expect_err(line);
            let name = line.split(' ').next().unwrap();
            assert!(
                e.message.contains(&format!("flows: {name}")) && e.message.contains(bound),
                "{line}: {e}"
            );
            assert_eq!((e.file.as_str(), e.line), ("t.toml", 5), "{line}: {e}");
            assert!(e.column > name.len(), "{line}: the value's column, {e}");
        }
        // Unknown keys and non-numbers are refused with their position too.
        let e = parse("t.toml", &format!("{HEAD}[interface.flows]\nsize = 5\n")).unwrap_err();
        assert!(e.message.contains("size") && e.line == 4, "{e}");
        let e = parse(
            "t.toml",
            &format!("{HEAD}[interface.flows]\ntable_size = \"big\"\n"),
        )
        .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
    }
}
