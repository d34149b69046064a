//! The receiver: UDP sockets bound to every port the traffic uses and
//! never read, their receive buffers at the minimum. Once a buffer is full
//! (after a few packets) every datagram that reaches the socket is counted
//! as a socket drop (`drops` in /proc/net/udp): that count is what the
//! filter let through. The interface's rx_packets counts what entered the
//! receiving side before any filter (on a veth: what the sender's veth
//! handed over; on a TUN: what wireguard-go wrote); the difference is what
//! the filter (or the stack) dropped.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;

use anyhow::{bail, Context, Result};

use super::netns;

pub struct Receiver {
    netns: String,
    ifname: String,
    ports: Vec<u16>,
    _sockets: Vec<UdpSocket>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Packets the interface took in.
    pub rx_packets: u64,
    /// Datagrams that reached our sockets.
    pub arrived: u64,
}

impl Counts {
    pub fn since(&self, before: &Counts) -> Counts {
        Counts {
            rx_packets: self.rx_packets.wrapping_sub(before.rx_packets),
            arrived: self.arrived.wrapping_sub(before.arrived),
        }
    }
}

impl Receiver {
    pub fn bind(netns: &str, ifname: &str, ports: &[u16]) -> Result<Receiver> {
        let sockets = netns::enter(netns, || {
            ports
                .iter()
                .map(|&p| {
                    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, p))
                        .with_context(|| format!("binding udp port {p}"))?;
                    let zero: libc::c_int = 0;
                    // SAFETY: setsockopt with a pointer to a live c_int;
                    // the kernel raises 0 to its minimum.
                    unsafe {
                        libc::setsockopt(
                            s.as_raw_fd(),
                            libc::SOL_SOCKET,
                            libc::SO_RCVBUF,
                            &zero as *const _ as *const libc::c_void,
                            std::mem::size_of::<libc::c_int>() as u32,
                        )
                    };
                    Ok(s)
                })
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(Receiver {
            netns: netns.to_string(),
            ifname: ifname.to_string(),
            ports: ports.to_vec(),
            _sockets: sockets,
        })
    }

    pub fn counts(&self) -> Result<Counts> {
        let (dev, udp) = netns::enter(&self.netns, || {
            Ok((
                std::fs::read_to_string("/proc/thread-self/net/dev")?,
                std::fs::read_to_string("/proc/thread-self/net/udp")?,
            ))
        })?;
        Ok(Counts {
            rx_packets: rx_packets(&dev, &self.ifname)?,
            arrived: socket_drops(&udp, &self.ports)?,
        })
    }
}

fn rx_packets(dev: &str, ifname: &str) -> Result<u64> {
    for line in dev.lines() {
        if let Some((name, rest)) = line.split_once(':') {
            if name.trim() == ifname {
                let f: Vec<&str> = rest.split_whitespace().collect();
                return f
                    .get(1)
                    .context("short /proc/net/dev line")?
                    .parse()
                    .context("rx_packets");
            }
        }
    }
    bail!("no {ifname} in /proc/net/dev")
}

/// The sum of `drops` over the sockets bound to `ports`.
fn socket_drops(udp: &str, ports: &[u16]) -> Result<u64> {
    let mut total = 0;
    let mut seen = 0;
    for line in udp.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(local) = f.get(1) else { continue };
        let Some((_, port)) = local.split_once(':') else {
            continue;
        };
        let port = u16::from_str_radix(port, 16).context("port in /proc/net/udp")?;
        if ports.contains(&port) {
            total += f.last().context("drops")?.parse::<u64>().context("drops")?;
            seen += 1;
        }
    }
    if seen != ports.len() {
        bail!("{} of our {} sockets in /proc/net/udp", seen, ports.len());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let dev = "Inter-|   Receive\n face |bytes    packets errs drop\n    lo: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n   rx0: 600 10 0 3 0 0 0 0 0 0 0 0 0 0 0 0\n";
        assert_eq!(rx_packets(dev, "rx0").unwrap(), 10);
        assert!(rx_packets(dev, "rx1").is_err());
        let udp = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
          1: 00000000:2710 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 5\n\
          2: 00000000:4E20 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 7\n\
          3: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 100\n";
        assert_eq!(socket_drops(udp, &[10000, 20000]).unwrap(), 12);
        assert!(socket_drops(udp, &[10001]).is_err());
    }
}
