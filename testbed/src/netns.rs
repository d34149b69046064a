//! Entering a network namespace from Rust.
//!
//! setns(2) changes the namespace of the calling *thread* only, so work that
//! must happen inside a namespace runs on a dedicated thread that enters it
//! and then exits; the caller's threads never move. Sockets keep the
//! namespace they were created in, so they may be used from any thread
//! afterwards.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::thread;

use anyhow::{anyhow, bail, Context, Result};

/// Where `ip netns add` pins a named namespace.
pub(crate) fn netns_path(netns: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(netns)
}

/// Runs `f` on a fresh thread that has joined network namespace `netns`.
pub(crate) fn in_netns<T, F>(netns: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let path = netns_path(netns);
    let handle = thread::Builder::new()
        .name(format!("netns-{netns}"))
        .spawn(move || {
            enter(&path)?;
            f()
        })
        .context("spawning netns thread")?;
    handle
        .join()
        .map_err(|_| anyhow!("thread in netns {netns} panicked"))?
}

fn enter(path: &PathBuf) -> Result<()> {
    let ns = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: plain syscall on a valid fd; it affects only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "setns({}): {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Index of interface `ifname` inside namespace `netns`.
pub(crate) fn ifindex(netns: &str, ifname: &str) -> Result<u32> {
    let name = std::ffi::CString::new(ifname)?;
    let owned = ifname.to_owned();
    in_netns(netns, move || {
        // SAFETY: `name` is a valid NUL-terminated string.
        match unsafe { libc::if_nametoindex(name.as_ptr()) } {
            0 => bail!("no interface {owned}: {}", std::io::Error::last_os_error()),
            i => Ok(i),
        }
    })
}
