//! One host of the mesh: a network namespace with a WireGuard interface.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::exec::{run_checked, COMMAND_TIMEOUT};
use crate::netns::netns_path;

#[derive(Debug, Clone)]
pub struct Host {
    /// "gateway" or the peer's name from the `TestbedSpec`.
    pub name: String,
    /// Network namespace, unique per run (pinned at /var/run/netns/NAME).
    pub netns: String,
    /// Tunnel interface inside `netns`, unique machine-wide, <= 15 chars.
    pub wg_if: String,
    pub tunnel_v4: Ipv4Addr,
    pub tunnel_v6: Ipv6Addr,
    /// WireGuard public key, base64.
    pub public_key: String,
    /// Index of `wg_if` inside `netns`.
    pub ifindex: u32,
}

impl Host {
    /// A command that runs `program` inside this host's network namespace.
    ///
    /// Uses `nsenter --net` rather than `ip netns exec`: the latter also
    /// remounts /sys, which hides the host's bpffs pins at /sys/fs/bpf.
    /// Note that /sys/class/net therefore still shows the *root* namespace's
    /// interfaces; ask `ip` instead. The command has no timeout of its own.
    pub fn cmd(&self, program: &str) -> Command {
        netns_cmd(&self.netns, program)
    }

    /// Runs `args` (program first) in the namespace; fails with its stderr
    /// unless it succeeds within 30 s. Returns stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        self.run_timeout(args, COMMAND_TIMEOUT)
    }

    /// [`Host::run`] with an explicit deadline.
    pub fn run_timeout(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let Some((program, rest)) = args.split_first() else {
            bail!("Host::run needs a program");
        };
        run_checked(self.cmd(program).args(rest), timeout)
    }
}

pub(crate) fn netns_cmd(netns: &str, program: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns_path(netns).display()))
        .arg("--")
        .arg(program);
    cmd
}
