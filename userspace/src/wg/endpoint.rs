//! A peer's endpoint as people write it: `host:port`, `a.b.c.d:port` or
//! `[v6]:port`, the host possibly a DNS name. One parser for the mesh
//! file, the wg-quick importer and the configuration step.

use std::{
    collections::BTreeSet,
    net::{SocketAddr, ToSocketAddrs},
};

/// A checked endpoint: its syntax is valid and its port is 1-65535.
/// Resolving it (a DNS name) is a separate step, [`Endpoint::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint(String);

impl Endpoint {
    /// Checks the syntax; the error says what is expected.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let bad = || format!("endpoint `{text}`: expected host:port, a.b.c.d:port or [v6]:port");
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        if !port.parse::<u16>().is_ok_and(|p| p != 0) {
            return Err(bad());
        }
        let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(inner) => inner.parse::<std::net::Ipv6Addr>().is_ok(),
            None => {
                !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            }
        };
        if host_ok {
            Ok(Endpoint(text.to_string()))
        } else {
            Err(bad())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the host is a name rather than an address (names are
    /// resolved again by the daemon).
    pub fn is_dns_name(&self) -> bool {
        self.0.parse::<SocketAddr>().is_err()
    }

    /// The first address the host resolves to, now.
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        self.resolve_all()?
            .into_iter()
            .next()
            .ok_or_else(|| format!("`{}` resolves to no address", self.0))
    }

    /// Every address the host resolves to, now (in the resolver's order).
    pub fn resolve_all(&self) -> Result<Vec<SocketAddr>, String> {
        let addrs = self
            .0
            .to_socket_addrs()
            .map_err(|e| format!("`{}` does not resolve: {e}", self.0))?;
        let mut seen = BTreeSet::new();
        Ok(addrs.filter(|a| seen.insert(*a)).collect())
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax() {
        for ok in [
            "192.0.2.1:51820",
            "[2001:db8::1]:51820",
            "vpn.example.com:51820",
            "localhost:1",
        ] {
            assert!(Endpoint::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "192.0.2.1",
            "192.0.2.1:0",
            "192.0.2.1:65536",
            "2001:db8::1:51820",
            "[not-v6]:51820",
            ":51820",
            "a b:51820",
            "host:port",
        ] {
            let e = Endpoint::parse(bad).unwrap_err();
            assert!(e.contains(bad) && e.contains("expected host:port"), "{e}");
        }
    }

    #[test]
    fn names_are_told_from_addresses() {
        let e = |s: &str| Endpoint::parse(s).unwrap();
        assert!(!e("192.0.2.1:51820").is_dns_name());
        assert!(!e("[2001:db8::1]:51820").is_dns_name());
        assert!(e("vpn.example.com:51820").is_dns_name());
        assert!(e("localhost:51820").is_dns_name());
        assert_eq!(e("localhost:51820").resolve().unwrap().port(), 51820);
        assert!(e("no-such-host.invalid:1").resolve().is_err());
    }
}
