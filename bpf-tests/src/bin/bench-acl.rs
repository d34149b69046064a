//! Per-packet cost of the ACL verdict, on the real programs in the kernel
//! (BPF_PROG_TEST_RUN with `repeat`, JIT on), for policies of 10, 1000 and
//! 100000 rules over 10000 peers. The aim: the cost does not depend on the
//! number of rules.
//!
//! Cases, per policy size:
//! - `acl_verdict`: a TCP SYN from a peer with rules to a gateway port the
//!   policy does not allow. It never enters the flow table, so every run
//!   parses, does the two trie lookups, misses the flow table, evaluates the
//!   whole policy (port class, then 4 layers of 3 hash lookups each, all of
//!   which the benchmark checks are present) and updates the deny counters.
//! - `acl_established`: an allowed TCP packet of a flow already in the flow
//!   table (the first run creates the entry).
//!
//! Memory: `acl_memory` is what the kernel charges (`memlock`) for one
//! case's maps, default capacities, with the policy applied.
//!
//! Yardsticks, run under the same harness, frame and repeat count
//! (ebpf/src/acl_probe.rs):
//! - `acl_floor`: a program that returns at once.
//! - `acl_probe case=allowed|denied`: the least a per-peer-port ACL can do,
//!   one LPM lookup on the source and one hash lookup on (identity,
//!   protocol, port), with 100,000 entries in each map.
//!
//! One program instance (with private maps) per policy size, all loaded at
//! once, and samples interleaved across sizes and cases, so the ratios come
//! from one run. Results on stdout; everything else on stderr.

use std::{
    net::IpAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use wgbpf::policy::{
    compile::{compile, Compiled},
    model::Policy,
    reference,
};
use wgbpf_bpf_tests::{
    bench_policies::{
        bench_policy, probe_addrs, ALLOWED_PORT, BASE_RULES, DENIED_PORT, PROBE_PEER,
    },
    dpbench::{args::flag_values, stats::median as median_f64},
    harness::{meta, Harness, DROP, PASS},
    packets::Packet,
};
use wgbpf_common::{
    capacity, names, rule_id, severity, EventConfig, PolicyKey, DIR_INGRESS, ID_ANY,
    PORT_CLASS_ANY, PROTO_ANY, PROTO_TCP, SLOT_HAS_ANY_ANY, SLOT_HAS_ANY_DST, SLOT_HAS_ANY_SRC,
};

const USAGE: &str = "usage: bench-acl [--repeat R] [--samples S] [--rules N,N,...] [--peers M]";

struct Args {
    repeat: u32,
    samples: u32,
    rules: Vec<usize>,
    peers: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        repeat: 1_000_000,
        samples: 7,
        rules: vec![10, 1000, 100_000],
        peers: 10_000,
    };
    for (flag, value) in flag_values(USAGE)? {
        let bad = |e: &dyn std::fmt::Display| anyhow::anyhow!("{flag} {value}: {e}\n{USAGE}");
        match flag.as_str() {
            "--repeat" => args.repeat = value.parse().map_err(|e| bad(&e))?,
            "--samples" => args.samples = value.parse().map_err(|e| bad(&e))?,
            "--peers" => args.peers = value.parse().map_err(|e| bad(&e))?,
            "--rules" => {
                args.rules = value
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(&e))?
            }
            _ => bail!("unknown argument {flag}\n{USAGE}"),
        }
    }
    if args.repeat == 0 || args.samples == 0 || args.rules.is_empty() {
        bail!("--repeat, --samples and --rules must not be zero or empty\n{USAGE}");
    }
    if let Some(n) = args.rules.iter().find(|n| **n < BASE_RULES) {
        bail!("--rules {n}: the benchmark policy needs at least {BASE_RULES} rules");
    }
    if args.peers < 100 || args.peers >= capacity::PEERS as usize {
        bail!("--peers must be in 100..{}", capacity::PEERS);
    }
    Ok(args)
}

/// One policy size: its own program instance and maps.
struct Case {
    rules: usize,
    harness: Harness,
    verdict_frame: Vec<u8>,
    established_frame: Vec<u8>,
    verdict_ns: Vec<u64>,
    established_ns: Vec<u64>,
    /// Wall time of each test_run syscall over `repeat` (cross-check only).
    verdict_wall: Vec<f64>,
    established_wall: Vec<f64>,
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Longest-prefix match on the compiled trie contents.
fn lpm(c: &Compiled, addr: IpAddr) -> (u32, u32) {
    let a = u128::from_be_bytes(match addr {
        IpAddr::V4(v4) => wgbpf_common::map_v4(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    });
    c.ipcache
        .iter()
        .filter(|(p, len, _)| {
            let mask = u128::MAX.checked_shl(128 - *len).unwrap_or(0);
            a & mask == u128::from_be_bytes(*p) & mask
        })
        .max_by_key(|(_, len, _)| *len)
        .map_or((wgbpf_common::ID_WORLD, 0), |(_, _, ep)| {
            (ep.identity, ep.peer)
        })
}

/// Checks, on the compiled maps, that the verdict probe takes the longest
/// path: a port class of its own, and in each of the four layers a marker
/// entry but neither a (tcp, class) nor a (tcp, any port) entry.
fn check_full_path(c: &Compiled, src: IpAddr, dst: IpAddr) -> Result<()> {
    let want = SLOT_HAS_ANY_SRC | SLOT_HAS_ANY_DST | SLOT_HAS_ANY_ANY;
    if c.flags & want != want {
        bail!("the policy lacks a wildcard layer (flags {:#x})", c.flags);
    }
    let (sid, speer) = lpm(c, src);
    let (did, _) = lpm(c, dst);
    if speer != PROBE_PEER as u32 + 1 {
        bail!(
            "probe source {src} is not peer {} in the trie",
            PROBE_PEER + 1
        );
    }
    let class = c.port_classes[DENIED_PORT as usize]; // TCP block is 0
    if class == PORT_CLASS_ANY {
        bail!("port {DENIED_PORT} has no port class");
    }
    // Matched field by field (not by whole key) so that fields other than
    // these four (padding, slot) do not matter.
    let has = |s: u32, d: u32, proto: u8, port_class: u16| {
        c.policy.keys().any(|k: &PolicyKey| {
            k.src_id == s && k.dst_id == d && k.proto == proto && k.port_class == port_class
        })
    };
    for (s, d) in [(sid, did), (ID_ANY, did), (sid, ID_ANY), (ID_ANY, ID_ANY)] {
        if !has(s, d, PROTO_ANY, PORT_CLASS_ANY) {
            bail!("layer ({s}, {d}) has no entries: the probe would stop early");
        }
        if has(s, d, PROTO_TCP, class) || has(s, d, PROTO_TCP, PORT_CLASS_ANY) {
            bail!("layer ({s}, {d}) has an entry for the probe: it would stop early");
        }
    }
    Ok(())
}

fn jit_check() {
    match std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable") {
        Ok(s) if s.trim() == "1" => eprintln!("bench-acl: JIT on (bpf_jit_enable = 1)"),
        Ok(s) => eprintln!(
            "bench-acl: WARNING: /proc/sys/net/core/bpf_jit_enable is {} (not 1): figures are not representative",
            s.trim()
        ),
        Err(e) => eprintln!("bench-acl: WARNING: cannot read bpf_jit_enable ({e}); JIT state unknown"),
    }
}

fn setup(n: usize, peers: usize) -> Result<Case> {
    let t = Instant::now();
    let policy: Policy = bench_policy(peers, n, 0x5eed_0000 + n as u64);
    let t_gen = t.elapsed();

    let t = Instant::now();
    let compiled = compile(&policy, capacity::PEERS).context("compiling the benchmark policy")?;
    let t_compile = t.elapsed();

    let (src, dst) = probe_addrs();
    check_full_path(&compiled, src, dst).with_context(|| format!("rules={n}"))?;

    let mut harness = Harness::new()?;
    // Deny events on, at the controller's defaults, so the deny path is the
    // production one (after the burst: the per-CPU rate limiter suppresses).
    harness
        .dp
        .maps
        .event_config
        .set(
            0,
            EventConfig {
                per_second: 100,
                burst: 200,
            },
            0,
        )
        .context("setting the event rate")?;
    let t = Instant::now();
    let report = harness
        .dp
        .maps
        .apply(&compiled)
        .context("applying the policy")?;
    let t_apply = t.elapsed();
    eprintln!(
        "bench-acl: rules={n} peers={peers}: generate {}, compile {}, apply {} \
         ({} identities, {} trie entries, {} policy entries; {} trie + {} policy writes)",
        ms(t_gen),
        ms(t_compile),
        ms(t_apply),
        compiled.identities,
        compiled.ipcache.len(),
        compiled.policy.len(),
        report.ipcache_writes,
        report.policy_writes,
    );

    // The probes, checked against the reference evaluator and the kernel.
    let verdict = Packet::tcp(src, dst, 40000, DENIED_PORT).build();
    let established = Packet::tcp(src, dst, 40001, ALLOWED_PORT).build();
    let v = reference::evaluate(&policy, &meta(&verdict).context("probe parse")?);
    if v.severity != severity::DENY || v.rule != rule_id::DEFAULT {
        bail!("rules={n}: the verdict probe is not default-denied by the reference ({v:?})");
    }
    let v = reference::evaluate(&policy, &meta(&established).context("probe parse")?);
    if v.severity != severity::ALLOW {
        bail!("rules={n}: the established probe is not allowed by the reference ({v:?})");
    }
    Ok(Case {
        rules: n,
        harness,
        verdict_frame: verdict.bytes,
        established_frame: established.bytes,
        verdict_ns: Vec::new(),
        established_ns: Vec::new(),
        verdict_wall: Vec::new(),
        established_wall: Vec::new(),
    })
}

/// Runs each probe a little and checks what the kernel did: the verdict
/// probe is dropped, never a flow hit, counted as denied; the established
/// probe passes from the flow table.
fn check_kernel(case: &Case) -> Result<()> {
    const N: u32 = 1000;
    let h = &case.harness;
    let peer = PROBE_PEER as u32 + 1;
    let stats0 = h.dp.maps.stats()?;
    let peer0 = h.dp.maps.peer_totals(peer)?;
    let (rv, _) = h.run_repeat(DIR_INGRESS, &case.verdict_frame, N)?;
    let stats1 = h.dp.maps.stats()?;
    let peer1 = h.dp.maps.peer_totals(peer)?;
    if rv != DROP {
        bail!(
            "rules={}: the verdict probe returned {rv}, not DROP",
            case.rules
        );
    }
    if stats1.flow_hits != stats0.flow_hits || stats1.flow_rechecks != stats0.flow_rechecks {
        bail!(
            "rules={}: the verdict probe touched the flow table",
            case.rules
        );
    }
    if peer1.ingress.denied_packets - peer0.ingress.denied_packets != N as u64 {
        bail!(
            "rules={}: the verdict probe was not counted as denied",
            case.rules
        );
    }
    // First run creates the flow, the next ones hit it.
    let (rv, _) = h.run_repeat(DIR_INGRESS, &case.established_frame, 1)?;
    if rv != PASS {
        bail!(
            "rules={}: the established probe returned {rv}, not PASS",
            case.rules
        );
    }
    let stats2 = h.dp.maps.stats()?;
    let (rv, _) = h.run_repeat(DIR_INGRESS, &case.established_frame, N)?;
    let stats3 = h.dp.maps.stats()?;
    if rv != PASS {
        bail!(
            "rules={}: the established probe returned {rv}, not PASS",
            case.rules
        );
    }
    if stats3.flow_hits - stats2.flow_hits != N as u64 {
        bail!(
            "rules={}: the established probe did not hit the flow table",
            case.rules
        );
    }
    Ok(())
}

/// Entries in each of the reference ACL's maps.
const PROBE_ENTRIES: u32 = 100_000;
/// The source (by index) and ports the reference probes use.
const PROBE_SOURCE: u32 = 54_321;
const PROBE_ALLOWED_PORT: u16 = 443;
const PROBE_DENIED_PORT: u16 = 444;

/// The yardsticks: the floor and the reference ACL, loaded once.
struct Yardsticks {
    ebpf: aya::Ebpf,
    allowed: Vec<u8>,
    denied: Vec<u8>,
    floor_ns: Vec<u64>,
    allowed_ns: Vec<u64>,
    denied_ns: Vec<u64>,
}

fn probe_source(i: u32) -> [u8; 4] {
    [10, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

fn setup_yardsticks() -> Result<Yardsticks> {
    use aya::maps::{lpm_trie::Key, HashMap, LpmTrie};
    use aya::programs::SchedClassifier;
    use wgbpf_common::AclProbeKey;

    let mut ebpf = aya::Ebpf::load(wgbpf::dataplane::ACL_PROBE_OBJECT)
        .context("loading the reference ACL object")?;
    for name in [names::ACL_FLOOR, names::ACL_PROBE] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing"))?
            .try_into()?;
        prog.load().with_context(|| format!("loading {name}"))?;
    }
    let t = Instant::now();
    let mut sources: LpmTrie<_, [u8; 4], u32> = ebpf
        .map_mut(names::ACL_PROBE_SOURCES)
        .context("sources map")?
        .try_into()?;
    for i in 0..PROBE_ENTRIES {
        sources.insert(&Key::new(32, probe_source(i)), i, 0)?;
    }
    let mut ports: HashMap<_, AclProbeKey, u32> = ebpf
        .map_mut(names::ACL_PROBE_PORTS)
        .context("ports map")?
        .try_into()?;
    for i in 0..PROBE_ENTRIES {
        let key = AclProbeKey {
            identity: i,
            port: PROBE_ALLOWED_PORT,
            proto: PROTO_TCP,
            _pad: 0,
        };
        ports.insert(key, 1, 0)?;
    }
    eprintln!(
        "bench-acl: reference ACL filled ({PROBE_ENTRIES} prefixes, {PROBE_ENTRIES} ports) in {}",
        ms(t.elapsed())
    );
    let src = IpAddr::from(probe_source(PROBE_SOURCE));
    let dst = IpAddr::from([10, 255, 255, 1]);
    Ok(Yardsticks {
        ebpf,
        allowed: Packet::tcp(src, dst, 40000, PROBE_ALLOWED_PORT)
            .build()
            .bytes,
        denied: Packet::tcp(src, dst, 40000, PROBE_DENIED_PORT)
            .build()
            .bytes,
        floor_ns: Vec::new(),
        allowed_ns: Vec::new(),
        denied_ns: Vec::new(),
    })
}

impl Yardsticks {
    fn run(&self, name: &str, frame: &[u8], repeat: u32, want: u32) -> Result<u64> {
        use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
        let prog: &SchedClassifier = self
            .ebpf
            .program(name)
            .with_context(|| format!("program {name} missing"))?
            .try_into()?;
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })?;
        if r.return_value != want {
            bail!("{name} returned {}, expected {want}", r.return_value);
        }
        Ok(r.duration.as_nanos() as u64)
    }

    /// One sample of each yardstick.
    fn sample(&mut self, repeat: u32) -> Result<()> {
        let ns = self.run(names::ACL_FLOOR, &self.allowed, repeat, PASS)?;
        self.floor_ns.push(ns);
        let ns = self.run(names::ACL_PROBE, &self.allowed, repeat, PASS)?;
        self.allowed_ns.push(ns);
        let ns = self.run(names::ACL_PROBE, &self.denied, repeat, DROP)?;
        self.denied_ns.push(ns);
        Ok(())
    }
}

/// The bytes the kernel charges for every BPF map this process holds open
/// (`memlock` in /proc/self/fdinfo): measured before and after a case is
/// set up, the difference is that case's data plane (its maps at their
/// capacities, with the policy in them).
fn maps_memlock() -> Result<u64> {
    let mut total = 0;
    for fd in std::fs::read_dir("/proc/self/fdinfo")? {
        let Ok(info) = std::fs::read_to_string(fd?.path()) else {
            continue;
        };
        if !info.contains("map_type:") {
            continue;
        }
        if let Some(line) = info.lines().find(|l| l.starts_with("memlock:")) {
            total += line["memlock:".len()..].trim().parse::<u64>().unwrap_or(0);
        }
    }
    Ok(total)
}

/// One timed test_run: (kernel mean ns per run, wall ns per run).
fn sample(h: &Harness, frame: &[u8], repeat: u32, want: u32) -> Result<(u64, f64)> {
    let t = Instant::now();
    let (rv, ns) = h.run_repeat(DIR_INGRESS, frame, repeat)?;
    let wall = t.elapsed().as_nanos() as f64 / repeat as f64;
    if rv != want {
        bail!("verdict changed during the benchmark: {rv}, expected {want}");
    }
    Ok((ns, wall))
}

fn median_u64(xs: &[u64]) -> f64 {
    median_f64(&xs.iter().map(|&x| x as f64).collect::<Vec<_>>())
}

fn run() -> Result<()> {
    let args = parse_args()?;
    jit_check();
    let mut cases = Vec::new();
    let mut memory = Vec::new();
    for &n in &args.rules {
        let before = maps_memlock()?;
        cases.push(setup(n, args.peers)?);
        memory.push((n, maps_memlock()? - before));
    }
    let mut yard = setup_yardsticks()?;
    for case in &cases {
        check_kernel(case)?;
        let prog = case.harness.dp.program(names::PROG_INGRESS)?;
        let info = prog.info()?;
        if info.size_jitted() == 0 {
            eprintln!(
                "bench-acl: WARNING: rules={}: the program is not JIT-compiled",
                case.rules
            );
        } else if case.rules == cases[0].rules {
            eprintln!(
                "bench-acl: ingress program id {}: {} bytes JIT code, {} bytes xlated",
                info.id(),
                info.size_jitted(),
                info.size_translated().unwrap_or(0)
            );
        }
    }

    // Warm up, then interleave: every sample round runs every case, the
    // starting case rotating, so drift (frequency, other load) hits all alike.
    let warm = args.repeat.min(100_000);
    for case in &cases {
        sample(&case.harness, &case.verdict_frame, warm, DROP)?;
        sample(&case.harness, &case.established_frame, warm, PASS)?;
    }
    yard.sample(warm)?;
    (yard.floor_ns, yard.allowed_ns, yard.denied_ns) = Default::default();
    let t = Instant::now();
    let k = cases.len();
    for s in 0..args.samples as usize {
        for j in 0..k {
            let case = &mut cases[(s + j) % k];
            let (ns, wall) = sample(&case.harness, &case.verdict_frame, args.repeat, DROP)?;
            case.verdict_ns.push(ns);
            case.verdict_wall.push(wall);
            let (ns, wall) = sample(&case.harness, &case.established_frame, args.repeat, PASS)?;
            case.established_ns.push(ns);
            case.established_wall.push(wall);
        }
        yard.sample(args.repeat)?;
    }
    eprintln!(
        "bench-acl: {} samples x {} cases x repeat {} in {:.1} s",
        args.samples,
        2 * k,
        args.repeat,
        t.elapsed().as_secs_f64()
    );

    for case in &cases {
        eprintln!(
            "bench-acl: rules={}: verdict samples {:?} ns (wall/run median {:.1}); \
             established samples {:?} ns (wall/run median {:.1})",
            case.rules,
            case.verdict_ns,
            median_f64(&case.verdict_wall),
            case.established_ns,
            median_f64(&case.established_wall),
        );
    }
    eprintln!(
        "bench-acl: floor samples {:?} ns; probe allowed {:?} ns, denied {:?} ns",
        yard.floor_ns, yard.allowed_ns, yard.denied_ns
    );
    let floor = median_u64(&yard.floor_ns);
    let probe_allowed = median_u64(&yard.allowed_ns);
    println!("acl_floor ns_per_packet={floor:.1}");
    println!("acl_probe case=allowed ns_per_packet={probe_allowed:.1}");
    println!(
        "acl_probe case=denied ns_per_packet={:.1}",
        median_u64(&yard.denied_ns)
    );
    for case in &cases {
        println!(
            "acl_verdict rules={} peers={} ns_per_packet={:.1}",
            case.rules,
            args.peers,
            median_u64(&case.verdict_ns)
        );
    }
    for case in &cases {
        println!(
            "acl_established rules={} peers={} ns_per_packet={:.1}",
            case.rules,
            args.peers,
            median_u64(&case.established_ns)
        );
    }
    let smallest = cases.iter().min_by_key(|c| c.rules).unwrap();
    let largest = cases.iter().max_by_key(|c| c.rules).unwrap();
    let lo = median_u64(&smallest.verdict_ns);
    let hi = median_u64(&largest.verdict_ns);
    let ratio = if lo > 0.0 { hi / lo } else { f64::NAN };
    println!("acl_flatness largest_over_smallest={ratio:.2}");
    for (n, bytes) in &memory {
        println!(
            "acl_memory rules={n} peers={} memlock_bytes={bytes} mib={:.1}",
            args.peers,
            *bytes as f64 / (1 << 20) as f64
        );
    }
    // Ratios to the reference ACL's allowed packet (the aims: an
    // established flow at most 1.2, a full verdict at most 3).
    if probe_allowed > 0.0 {
        for case in &cases {
            println!(
                "acl_vs_probe rules={} established={:.2} verdict={:.2}",
                case.rules,
                median_u64(&case.established_ns) / probe_allowed,
                median_u64(&case.verdict_ns) / probe_allowed
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-acl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
