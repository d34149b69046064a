//! `wgbpf monitor`: the data plane's decisions as they happen, as
//! `cilium monitor --type drop` shows them: from the running daemon (its
//! control socket fans the deny events out, so the daemon's deny log loses
//! nothing), or, with no daemon, from the pinned ring buffer directly.

use std::{
    io::BufRead,
    os::fd::AsRawFd,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::maps::{MapData, RingBuf};
use clap::Args;
use wgbpf::{
    daemon::{
        control::{self, MonitorLine},
        denylog::{self, Decision, LogContext},
    },
    dataplane::{self, counters::unmap, peers::peer_label, program_log},
    policy::model::proto_name,
    source,
};
use wgbpf_common::{severity, FlowKey, FlowValue};

/// Show the data plane's decisions as they happen: denied packets,
/// packets passed by a deny in audit mode, and with --allows the allowed
/// connections (sampled from the flow table once a second). From the running daemon when
/// one serves the interface, otherwise straight from the data plane's
/// ring buffer (then a daemon started meanwhile would compete for the
/// events). The kernel rate-limits events (docs/dataplane.md); the
/// counters stay exact.
#[derive(Args)]
pub struct MonitorArgs {
    #[arg(short, long, value_parser = wgbpf::ifname::parse)]
    interface: String,
    /// The mesh file, to name peers and rules when no daemon runs.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Only decisions about this peer (as source or destination); repeat
    /// for several.
    #[arg(long, value_name = "NAME")]
    peer: Vec<String>,
    /// Only this destination port (ICMP: type); repeat for several.
    #[arg(long, value_name = "PORT")]
    port: Vec<u16>,
    /// Only denies, only audits, or only allows (with --allows).
    #[arg(long, value_parser = ["deny", "audit", "allow"])]
    action: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Stop after this many decisions.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Also show allowed connections: each flow the data plane opened
    /// since the last look (the flow table is read every second, so a
    /// connection opened and gone in between is missed: a sample).
    #[arg(long)]
    allows: bool,
    /// Show the programs' own log instead of decisions (aya-log: malformed
    /// packets, overlapping fragments, flows over budget), read from the
    /// programs' log buffer. Off unless the mesh file sets `program_log`
    /// in [interface] (then loaded programs log at that level; off, the
    /// log costs nothing per packet). --count and --duration apply.
    #[arg(long, conflicts_with_all = ["allows", "peer", "port", "action", "config"])]
    program_log: bool,
}

impl MonitorArgs {
    fn wants(&self, d: &Decision) -> bool {
        (self.peer.is_empty()
            || self
                .peer
                .iter()
                .any(|p| *p == d.src_peer || *p == d.dst_peer))
            && (self.port.is_empty() || self.port.contains(&d.port))
            && self.action.as_ref().is_none_or(|a| *a == d.action)
            && (self.allows || d.action != "allow")
    }

    fn show(&self, d: &Decision) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string(d)?);
        } else {
            println!(
                "{} {} {} {} {}:{} -> {} {}:{} {} rule \"{}\"",
                d.time,
                d.action,
                d.direction,
                d.src_peer,
                d.src,
                d.sport,
                d.dst_peer,
                d.dst,
                d.port,
                d.proto,
                d.rule
            );
        }
        Ok(())
    }
}

/// New flows since the last look at the flow table: the allowed
/// connections, sampled once a second.
struct Allows {
    maps: dataplane::Maps,
    ctx: Arc<LogContext>,
    seen: std::collections::HashSet<FlowKey>,
    next: Instant,
}

impl Allows {
    fn new(a: &MonitorArgs) -> Result<Option<Allows>> {
        if !a.allows {
            return Ok(None);
        }
        let maps = dataplane::open(&a.interface)
            .context("the data plane")?
            .with_context(|| format!("{}: no data plane loaded (wgbpf load)", a.interface))?;
        let ctx = Arc::new(context(a, &maps)?);
        // Connections open already are not news.
        let seen = maps
            .flow_entries_all()?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        Ok(Some(Allows {
            maps,
            ctx,
            seen,
            next: Instant::now() + Duration::from_secs(1),
        }))
    }

    /// The flows opened since the last call, once a second.
    fn poll(&mut self) -> Result<Vec<Decision>> {
        if Instant::now() < self.next {
            return Ok(Vec::new());
        }
        self.next = Instant::now() + Duration::from_secs(1);
        let now = self.maps.flow_entries_all()?;
        let mut out = Vec::new();
        let mut keys = std::collections::HashSet::with_capacity(now.len());
        for (k, v) in now {
            if !self.seen.contains(&k) && v.severity == severity::ALLOW {
                out.push(allow_decision(&self.ctx, &k, &v));
            }
            keys.insert(k);
        }
        self.seen = keys;
        Ok(out)
    }
}

/// An allowed connection as a decision: from the side that opened it.
fn allow_decision(ctx: &LogContext, k: &FlowKey, v: &FlowValue) -> Decision {
    let (src, sport, spk, dst, dport, dpk) = if v.opener == 0 {
        (&k.a, k.a_port, v.peer_a, &k.b, k.b_port, v.peer_b)
    } else {
        (&k.b, k.b_port, v.peer_b, &k.a, k.a_port, v.peer_a)
    };
    let (src, dst) = (unmap(src), unmap(dst));
    let name = |slot: u32, addr| match slot {
        0 => ctx.name_of(addr),
        i => peer_label(&ctx.slots, i),
    };
    Decision {
        time: wgbpf::utc::format_millis(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i128),
        ),
        interface: ctx.interface.clone(),
        action: "allow".into(),
        direction: "-".into(),
        src,
        src_peer: name(spk, src),
        sport,
        dst,
        dst_peer: name(dpk, dst),
        proto: proto_name(k.proto).to_string(),
        port: dport,
        rule: ctx.rule_name(v.rule),
        rule_index: (v.rule < wgbpf_common::rule_id::FLOW).then_some(v.rule),
    }
}

/// Names for decisions: from the mesh file if given, else the peer slots.
fn context(a: &MonitorArgs, maps: &dataplane::Maps) -> Result<LogContext> {
    let slots = maps.counter_owners().unwrap_or_default();
    Ok(match &a.config {
        Some(c) => LogContext::new(&source::load(c)?, slots),
        None => LogContext {
            interface: a.interface.clone(),
            slots,
            ..Default::default()
        },
    })
}

/// Counts shown decisions and says when to stop.
struct Until {
    shown: u64,
    count: Option<u64>,
    deadline: Option<Instant>,
}

impl Until {
    fn done(&self) -> bool {
        self.count.is_some_and(|c| self.shown >= c)
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

pub fn run(a: MonitorArgs) -> Result<()> {
    let mut until = Until {
        shown: 0,
        count: a.count,
        deadline: a
            .duration
            .filter(|d| d.is_finite() && *d >= 0.0)
            .map(|d| Instant::now() + Duration::from_secs_f64(d)),
    };
    if a.program_log {
        return program_log(&a, &mut until);
    }
    let mut allows = Allows::new(&a)?;
    match control::monitor(&a.interface) {
        Ok(stream) => from_daemon(&a, stream, &mut until, &mut allows),
        Err(control::ControlError::NoDaemon { .. }) => from_ring(&a, &mut until, &mut allows),
        Err(e) => Err(e.into()),
    }
}

/// Shows the allowed connections due, if asked for; true when done.
fn show_allows(a: &MonitorArgs, allows: &mut Option<Allows>, until: &mut Until) -> Result<bool> {
    if let Some(al) = allows {
        for d in al.poll()? {
            if a.wants(&d) {
                a.show(&d)?;
                until.shown += 1;
                if until.done() {
                    return Ok(true);
                }
            }
        }
    }
    Ok(until.done())
}

fn from_daemon(
    a: &MonitorArgs,
    mut stream: std::io::BufReader<std::os::unix::net::UnixStream>,
    until: &mut Until,
    allows: &mut Option<Allows>,
) -> Result<()> {
    eprintln!("{}: decisions from the running daemon", a.interface);
    // Wake up now and then to honour --duration.
    stream
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut line = String::new();
    while !until.done() {
        if show_allows(a, allows, until)? {
            break;
        }
        line.clear();
        match stream.read_line(&mut line) {
            Ok(0) => bail!("the daemon closed the stream (it stopped?)"),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e).context("reading from the daemon"),
        }
        match serde_json::from_str::<MonitorLine>(&line) {
            Ok(MonitorLine::Decision(d)) if a.wants(&d) => {
                a.show(&d)?;
                until.shown += 1;
            }
            Ok(MonitorLine::Decision(_)) => {}
            Ok(MonitorLine::Lost { lost }) => {
                eprintln!("wgbpf monitor: fell behind, {lost} decisions not shown")
            }
            Err(e) => bail!("the daemon sent something else: {e}: {line}"),
        }
    }
    Ok(())
}

fn from_ring(a: &MonitorArgs, until: &mut Until, allows: &mut Option<Allows>) -> Result<()> {
    let mut maps = dataplane::open(&a.interface)
        .context("the data plane")?
        .with_context(|| format!("{}: no data plane loaded (wgbpf load)", a.interface))?;
    let events = maps
        .events
        .take()
        .with_context(|| format!("{}: the data plane sends no events", a.interface))?;
    let ctx = context(a, &maps)?;
    eprintln!(
        "{}: decisions from the data plane's ring buffer (no daemon runs)",
        a.interface
    );
    let mut ring: RingBuf<MapData> = RingBuf::try_from(events)?;
    let ctx = Arc::new(ctx);
    while !until.done() {
        if show_allows(a, allows, until)? {
            break;
        }
        while let Some(item) = ring.next() {
            let Some(ev) = denylog::parse(&item) else {
                continue;
            };
            drop(item);
            let d = Decision::new(&ctx, &ev);
            if a.wants(&d) {
                a.show(&d)?;
                until.shown += 1;
                if until.done() {
                    return Ok(());
                }
            }
        }
        let mut pfd = libc::pollfd {
            fd: ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 200) };
    }
    Ok(())
}

/// `--program-log`: the programs' own log lines as they come.
fn program_log(a: &MonitorArgs, until: &mut Until) -> Result<()> {
    let level = program_log::pinned(&a.interface);
    if !dataplane::attach::programs_pinned(&a.interface) {
        bail!("{}: no data plane loaded (wgbpf load)", a.interface);
    }
    let mut reader = program_log::Reader::open(&a.interface)?;
    if level == program_log::ProgramLog::Off {
        eprintln!(
            "{}: the programs' log is off: set program_log = \"debug\" (or error, warn, info, \
             trace) in the mesh file's [interface] and load it",
            a.interface
        );
    } else {
        eprintln!("{}: the programs' log, at level {level}", a.interface);
    }
    while !until.done() {
        for line in reader.read() {
            // The time it was read (aya-log records carry none).
            let time = wgbpf::utc::format_millis(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i128),
            );
            if a.json {
                let mut v = serde_json::to_value(&line)?;
                v["time"] = serde_json::Value::String(time);
                println!("{v}");
            } else {
                println!("{time} {:<5} {}", line.level, line.message);
            }
            until.shown += 1;
            if until.done() {
                return Ok(());
            }
        }
        let mut pfds: Vec<libc::pollfd> = reader
            .fds()
            .into_iter()
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: valid pollfds, their count given.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 200) };
    }
    Ok(())
}
