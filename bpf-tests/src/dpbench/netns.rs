//! Network namespaces of the benchmark: created under a name unique to the
//! process, deleted again on drop (and by the signal thread if need be).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::cleanup;

const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A namespace we created; dropping it deletes it.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `PREFIX<pid>-<role>`, loopback up, IPv6 off (no router
    /// solicitations or MLD reports in the measured interfaces' counters).
    pub fn create(role: &str) -> Result<Netns> {
        let name = format!("{}{}-{role}", cleanup::PREFIX, std::process::id());
        cleanup::register(&name);
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .context("running ip netns add")?;
        if !status.success() {
            cleanup::unregister(&name);
            bail!("ip netns add {name} failed");
        }
        let ns = Netns { name };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        ns.run(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command run in the namespace (`nsenter --net`, which keeps the
    /// host's /sys and bpffs).
    pub fn cmd(&self, program: &str) -> Command {
        netns_cmd(&self.name, program)
    }

    /// Runs `args` in the namespace; fails with its stderr.
    pub fn run(&self, args: &[&str]) -> Result<()> {
        run_in(&self.name, args)
    }

    /// Runs `f` on the calling thread inside the namespace.
    pub fn enter<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        enter(&self.name, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        cleanup::delete_netns(&self.name);
        cleanup::unregister(&self.name);
    }
}

pub fn netns_cmd(netns: &str, program: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/var/run/netns/{netns}"))
        .arg("--")
        .arg(program);
    cmd
}

/// Runs `args` (program first) in namespace `netns`.
pub fn run_in(netns: &str, args: &[&str]) -> Result<()> {
    let (program, rest) = args.split_first().context("no program")?;
    let out = cleanup::run_child(netns_cmd(netns, program).args(rest), COMMAND_TIMEOUT)?;
    match out.success {
        Some(true) => Ok(()),
        Some(false) => bail!("{args:?} in {netns}: {}", out.stderr.trim_end()),
        None => bail!("{args:?} in {netns}: no answer within {COMMAND_TIMEOUT:?}"),
    }
}

/// Runs `f` on the calling thread inside namespace `netns` (setns(2)
/// affects this thread only), then moves the thread back.
pub fn enter<T>(netns: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let home = File::open("/proc/thread-self/ns/net").context("opening our namespace")?;
    let path = format!("/var/run/netns/{netns}");
    let target = File::open(&path).with_context(|| format!("opening {path}"))?;
    setns(&target).with_context(|| format!("entering {netns}"))?;
    let out = f();
    // A thread left in the wrong namespace would quietly measure the
    // wrong thing: better to stop.
    setns(&home).expect("returning to our own network namespace");
    out
}

fn setns(ns: &File) -> Result<()> {
    // SAFETY: plain syscall on a valid fd; it affects only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Index of `ifname` in namespace `netns`.
pub fn ifindex(netns: &str, ifname: &str) -> Result<u32> {
    let c = std::ffi::CString::new(ifname)?;
    enter(netns, || {
        // SAFETY: `c` is a valid NUL-terminated string.
        match unsafe { libc::if_nametoindex(c.as_ptr()) } {
            0 => bail!("no interface {ifname} in {netns}"),
            i => Ok(i),
        }
    })
}
