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
    dataplane, source,
};

/// Show the data plane's decisions as they happen: denied packets, and
/// packets passed by a deny in audit mode. From the running daemon when
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
    /// Only denies, or only audits.
    #[arg(long, value_parser = ["deny", "audit"])]
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
    match control::monitor(&a.interface) {
        Ok(stream) => from_daemon(&a, stream, &mut until),
        Err(control::ControlError::NoDaemon { .. }) => from_ring(&a, &mut until),
        Err(e) => Err(e.into()),
    }
}

fn from_daemon(
    a: &MonitorArgs,
    mut stream: std::io::BufReader<std::os::unix::net::UnixStream>,
    until: &mut Until,
) -> Result<()> {
    eprintln!("{}: decisions from the running daemon", a.interface);
    // Wake up now and then to honour --duration.
    stream
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut line = String::new();
    while !until.done() {
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

fn from_ring(a: &MonitorArgs, until: &mut Until) -> Result<()> {
    let mut maps = dataplane::open(&a.interface)
        .context("the data plane")?
        .with_context(|| format!("{}: no data plane loaded (wgbpf load)", a.interface))?;
    let events = maps
        .events
        .take()
        .with_context(|| format!("{}: the data plane sends no events", a.interface))?;
    let slots = maps.counter_owners().unwrap_or_default();
    let ctx = match &a.config {
        Some(c) => LogContext::new(&source::load(c)?, slots),
        None => LogContext {
            interface: a.interface.clone(),
            slots,
            ..Default::default()
        },
    };
    eprintln!(
        "{}: decisions from the data plane's ring buffer (no daemon runs)",
        a.interface
    );
    let mut ring: RingBuf<MapData> = RingBuf::try_from(events)?;
    let ctx = Arc::new(ctx);
    while !until.done() {
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
