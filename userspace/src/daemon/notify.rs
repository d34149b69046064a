//! systemd's notification protocol (`sd_notify(3)`), for `Type=notify`:
//! `READY=1` once the policy is enforced (so units ordered after wgbpf
//! start with the gateway filtered), `RELOADING=1` and `READY=1` around a
//! reload, `STATUS=` with what is enforced, `STOPPING=1`, and `WATCHDOG=1`
//! pings when the unit sets `WatchdogSec=`. One datagram per message to
//! `$NOTIFY_SOCKET`; without it (not under systemd) nothing is sent.

use std::{
    os::{linux::net::SocketAddrExt, unix::net::UnixDatagram},
    time::Duration,
};

/// Where to send notifications, if anywhere.
pub struct Notifier {
    target: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment systemd gives the service.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|s| {
            let s = s.to_string_lossy().into_owned();
            let addr = match s.strip_prefix('@') {
                Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()),
                None => std::os::unix::net::SocketAddr::from_pathname(&s),
            };
            match (UnixDatagram::unbound(), addr) {
                (Ok(sock), Ok(addr)) => Some((sock, addr)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(socket = %s, error = %e, "NOTIFY_SOCKET unusable; not notifying systemd");
                    None
                }
            }
        });
        Notifier {
            target,
            watchdog: watchdog_from_env(),
        }
    }

    /// Sends `message` (lines of `KEY=value`). A failure is logged, never
    /// fatal: enforcement does not depend on systemd hearing about it.
    pub fn send(&self, message: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
                tracing::warn!(error = %e, "notifying systemd");
            }
        }
    }

    /// How often to ping the watchdog: half of `WatchdogSec=`, as
    /// `sd_watchdog_enabled(3)` advises.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            crate::dataplane::flows::monotonic_ns() / 1000
        ));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }
}

/// `WATCHDOG_USEC`, when it is meant for this process (`WATCHDOG_PID`
/// unset or ours).
fn watchdog_from_env() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}
