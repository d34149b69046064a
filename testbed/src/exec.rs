//! Running external commands with a deadline, so a wedged tool can never hang
//! a test.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Default bound for configuration commands (`ip`, `wg`, `sysctl`).
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What a finished command left behind. `status` is `None` when it was
/// killed at the deadline.
pub(crate) struct Outcome {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Runs `cmd` to completion or kills it after `timeout`.
pub(crate) fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Outcome> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", describe(cmd)))?;
    // Drain both pipes concurrently: a child blocked on a full pipe would
    // otherwise never exit.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_deadline(&mut child, Instant::now() + timeout)?;
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok(Outcome {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Runs `cmd` and fails unless it exits successfully in time; returns stdout.
pub(crate) fn run_checked(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let out = run_with_timeout(cmd, timeout)?;
    match out.status {
        Some(s) if s.success() => Ok(out.stdout),
        Some(s) => bail!(
            "`{}` failed ({s}): {}",
            describe(cmd),
            out.stderr.trim_end()
        ),
        None => bail!(
            "`{}` did not finish within {timeout:?}: {}",
            describe(cmd),
            out.stderr.trim_end()
        ),
    }
}

/// Polls `child` until it exits or `deadline` passes (`None`).
pub(crate) fn wait_deadline(child: &mut Child, deadline: Instant) -> Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Human-readable command line for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}
