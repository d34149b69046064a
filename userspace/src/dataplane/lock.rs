//! One controller at a time per interface: an exclusive `flock` on
//! `/run/wgbpf/IFACE.lock`, held by `enforce` from reading the device and
//! preparing the data plane to attaching, by `wgbpf load` and the daemon
//! alike. Two controllers writing the inactive policy slot at once could
//! zero what the other just made active, and both would end at the same
//! version. The lock is the kernel's: it goes away with its holder, even on
//! SIGKILL, so a crash never leaves the interface locked.

use std::{
    fs::File,
    io::{Read, Seek, Write},
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::PathBuf,
    time::{Duration, Instant},
};

use super::DataplaneError;

/// Where the lock files live (a tmpfs: they do not outlive a reboot, and
/// neither do the pins).
pub const LOCK_DIR: &str = "/run/wgbpf";

/// How often a waiting controller tries again.
const POLL: Duration = Duration::from_millis(50);

/// Held while it lives; dropping it unlocks.
#[derive(Debug)]
pub struct InterfaceLock {
    _file: File,
}

fn lock_path(iface: &str) -> PathBuf {
    PathBuf::from(LOCK_DIR).join(format!("{iface}.lock"))
}

impl InterfaceLock {
    /// Takes `iface`'s lock, waiting up to `wait` for another controller to
    /// finish; then refuses, naming the holder's pid.
    pub fn acquire(iface: &str, wait: Duration) -> Result<InterfaceLock, DataplaneError> {
        let path = lock_path(iface);
        let io = |what: &str, e: std::io::Error| DataplaneError::Lock {
            iface: iface.to_string(),
            message: format!("{what} {}: {e}", path.display()),
        };
        std::fs::create_dir_all(LOCK_DIR).map_err(|e| io("creating", e))?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| io("opening", e))?;
        let start = Instant::now();
        loop {
            // SAFETY: flock on our own open descriptor.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io("locking", e));
            }
            if start.elapsed() >= wait {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(DataplaneError::Lock {
                    iface: iface.to_string(),
                    message: format!(
                        "another wgbpf (pid {}) is applying a configuration; waited {:.0?}, \
                         refusing (nothing was changed)",
                        holder
                            .trim()
                            .parse::<u32>()
                            .map_or("unknown".into(), |p| p.to_string()),
                        wait
                    ),
                });
            }
            std::thread::sleep(POLL);
        }
        // Our pid, for the message a waiting controller gives.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(InterfaceLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_then_is_refused_with_the_first_ones_pid() {
        let iface = format!("wgblock{}", std::process::id() % 100_000);
        let first = InterfaceLock::acquire(&iface, Duration::ZERO).unwrap();
        // flock is per open file description: a second open in this process
        // conflicts just as another process would.
        let t = Instant::now();
        let e = InterfaceLock::acquire(&iface, Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(t.elapsed() >= Duration::from_millis(200), "did not wait");
        assert!(
            e.contains(&iface) && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        let again = InterfaceLock::acquire(&iface, Duration::ZERO).unwrap();
        drop(again);
        let _ = std::fs::remove_file(lock_path(&iface));
    }
}
