//! CPU time of threads and processes, from /proc (ns, schedstat's first
//! field). The kernel here has no IRQ time accounting, so softirq work done
//! in a thread's context (on a veth: the whole receive path, filter
//! included; through the tunnel: what follows wireguard-go's writes to its
//! TUN device) counts as that thread's time.

use anyhow::{bail, Context, Result};

/// CPU time of thread `tid` of this process.
pub fn thread_cpu_ns(tid: i32) -> Result<u64> {
    schedstat(&format!("/proc/self/task/{tid}/schedstat"))
}

/// CPU time of every thread of process `pid` (threads that exited are
/// missed; wireguard-go's threads live as long as it does).
pub fn process_cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("process {pid} is gone"))?
        .flatten()
    {
        // A thread may exit between the listing and the read.
        total += schedstat(&t.path().join("schedstat").to_string_lossy()).unwrap_or(0);
    }
    Ok(total)
}

fn schedstat(path: &str) -> Result<u64> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Ok(s.split_whitespace()
        .next()
        .with_context(|| format!("empty {path}"))?
        .parse()?)
}

/// The process whose command line is exactly `args`.
pub fn find_process(args: &[&str]) -> Result<u32> {
    let want: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want) {
            return Ok(pid);
        }
    }
    bail!("no process {args:?}")
}
