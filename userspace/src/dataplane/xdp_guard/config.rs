//! What the guard enforces, as the loader takes it and as the program
//! reads it.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use wgbpf_common::{
    map_v4,
    xdp::{
        XdpConfig, DEFAULT_HANDSHAKE_BURST, DEFAULT_HANDSHAKE_RATE, XDP_FLAG_ALLOWLIST,
        XDP_MAX_PORTS,
    },
    Addr,
};

use super::GuardError;

/// The highest handshake rate the program honours (per second per source).
pub const MAX_HANDSHAKE_RATE: u32 = 1_000_000;

/// What the guard enforces. Rewritten in place on reload (no detach).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuardConfig {
    /// WireGuard listen ports behind this underlay (1 to 4).
    pub ports: Vec<u16>,
    /// Handshake initiations per second per source address; 0 = no limit.
    pub handshake_rate: u32,
    /// Initiations one source may send at once (bucket size).
    pub handshake_burst: u32,
    /// `Some`: packets to the ports only from these prefixes.
    pub allowlist: Option<Vec<IpNet>>,
}

impl GuardConfig {
    /// The defaults for one listen port.
    pub fn for_port(port: u16) -> Self {
        Self {
            ports: vec![port],
            handshake_rate: DEFAULT_HANDSHAKE_RATE,
            handshake_burst: DEFAULT_HANDSHAKE_BURST,
            allowlist: None,
        }
    }

    /// The kernel's form, after checking the settings.
    pub fn to_kernel(&self) -> Result<XdpConfig, GuardError> {
        let bad = |m: String| Err(GuardError::Config(m));
        if self.ports.is_empty() || self.ports.len() > XDP_MAX_PORTS {
            return bad(format!(
                "1 to {XDP_MAX_PORTS} listen ports, not {}",
                self.ports.len()
            ));
        }
        if self.ports.contains(&0) {
            return bad("listen port 0".into());
        }
        if self.handshake_rate > MAX_HANDSHAKE_RATE {
            return bad(format!(
                "handshake rate {} is above {MAX_HANDSHAKE_RATE} per second",
                self.handshake_rate
            ));
        }
        if self.handshake_rate > 0 && self.handshake_burst == 0 {
            return bad("a handshake burst of 0 would refuse every initiation".into());
        }
        let mut ports = [0u16; XDP_MAX_PORTS];
        ports[..self.ports.len()].copy_from_slice(&self.ports);
        Ok(XdpConfig {
            clock_ns: 0,
            ports,
            handshake_rate: self.handshake_rate,
            handshake_burst: self.handshake_burst,
            flags: if self.allowlist.is_some() {
                XDP_FLAG_ALLOWLIST
            } else {
                0
            },
            _pad: 0,
        })
    }
}

/// The trie key of a prefix: IPv4 mapped into ::ffff:0:0/96, host bits
/// cleared.
pub(super) fn allow_key(net: &IpNet) -> (u32, Addr) {
    let net = net.trunc();
    match net.addr() {
        IpAddr::V4(a) => (96 + u32::from(net.prefix_len()), map_v4(a.octets())),
        IpAddr::V6(a) => (u32::from(net.prefix_len()), a.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let ok = GuardConfig::for_port(51820);
        let k = ok.to_kernel().unwrap();
        assert_eq!(k.ports, [51820, 0, 0, 0]);
        assert_eq!(k.flags, 0);
        let bad = |f: &dyn Fn(&mut GuardConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            c.to_kernel().is_err()
        };
        assert!(bad(&|c| c.ports.clear()));
        assert!(bad(&|c| c.ports = vec![1, 2, 3, 4, 5]));
        assert!(bad(&|c| c.ports = vec![0]));
        assert!(bad(&|c| c.handshake_burst = 0));
        assert!(bad(&|c| c.handshake_rate = MAX_HANDSHAKE_RATE + 1));
        let mut no_limit = ok.clone();
        no_limit.handshake_rate = 0;
        no_limit.handshake_burst = 0;
        assert!(no_limit.to_kernel().is_ok());
        let mut allow = ok.clone();
        allow.allowlist = Some(vec![]);
        assert_eq!(allow.to_kernel().unwrap().flags, XDP_FLAG_ALLOWLIST);
    }

    #[test]
    fn allowlist_keys_map_ipv4_and_clear_host_bits() {
        let (len, addr) = allow_key(&"192.0.2.77/24".parse().unwrap());
        assert_eq!(len, 120);
        assert_eq!(addr, map_v4([192, 0, 2, 0]));
        let (len, addr) = allow_key(&"2001:db8::1/32".parse().unwrap());
        assert_eq!(len, 32);
        assert_eq!(addr[..4], [0x20, 0x01, 0x0d, 0xb8]);
        assert!(addr[4..].iter().all(|b| *b == 0));
    }
}
