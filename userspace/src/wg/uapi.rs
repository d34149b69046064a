//! The cross-platform userspace API of wireguard-go and boringtun: a text
//! protocol over a Unix socket, /var/run/wireguard/IFACE.sock.
//!
//! `get=1` answers `key=value` lines (device first, then each peer starting
//! with its `public_key`) and `errno=N`; `set=1` takes the same kind of lines
//! and answers `errno=N`. Keys travel in hex. Every operation ends with an
//! empty line. Each call opens its own connection, with timeouts.

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, SystemTime},
};

use ipnet::IpNet;

use super::{
    key::Key,
    model::{ChangeSet, DeviceState, PeerChange, PeerConfig, PeerState},
    Backend, WgError,
};

/// Where wireguard-go and boringtun put their sockets.
pub const SOCKET_DIR: &str = "/var/run/wireguard";
/// Bound on connecting, each read and each write.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub fn socket_path(iface: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{iface}.sock"))
}

/// A userspace WireGuard device reached over its UAPI socket.
#[derive(Debug)]
pub struct UapiBackend {
    iface: String,
    path: PathBuf,
    sets: AtomicUsize,
}

impl UapiBackend {
    /// The device `iface`, if its socket exists.
    pub fn open(iface: &str) -> Option<UapiBackend> {
        let path = socket_path(iface);
        path.exists().then(|| Self::at(iface, path))
    }

    /// A device whose socket is at `path`.
    pub fn at(iface: &str, path: PathBuf) -> UapiBackend {
        UapiBackend {
            iface: iface.to_string(),
            path,
            sets: AtomicUsize::new(0),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.path
    }

    /// How many `set=1` operations this handle has sent.
    pub fn set_operations(&self) -> usize {
        self.sets.load(Ordering::SeqCst)
    }

    fn err(&self, message: impl Into<String>) -> WgError {
        WgError::Device {
            iface: self.iface.clone(),
            backend: "uapi",
            message: message.into(),
        }
    }

    /// Sends `request` (ending with an empty line) and returns the answer's
    /// lines up to the empty line, `errno` checked and removed.
    fn exchange(&self, request: &str) -> Result<Vec<String>, WgError> {
        let io = |what: &str, e: std::io::Error| {
            self.err(format!("{what} {}: {e}", self.path.display()))
        };
        let mut stream = UnixStream::connect(&self.path).map_err(|e| io("connecting to", e))?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|_| stream.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(|e| io("configuring", e))?;
        stream
            .write_all(request.as_bytes())
            .map_err(|e| io("writing to", e))?;
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stream);
        loop {
            let mut line = String::new();
            let n = reader
                .read_line(&mut line)
                .map_err(|e| io("reading from", e))?;
            if n == 0 {
                return Err(self.err("the device closed the connection mid-answer"));
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                break;
            }
            lines.push(line.to_string());
        }
        match lines.pop() {
            Some(last) if last == "errno=0" => Ok(lines),
            Some(last) if last.starts_with("errno=") => Err(self.err(format!(
                "the device refused the operation ({last}; see its log)"
            ))),
            _ => Err(self.err("answer without errno")),
        }
    }
}

impl Backend for UapiBackend {
    fn kind(&self) -> &'static str {
        "uapi"
    }

    fn interface(&self) -> &str {
        &self.iface
    }

    fn describe(&self) -> String {
        format!("userspace UAPI at {}", self.path.display())
    }

    fn get(&self) -> Result<DeviceState, WgError> {
        let lines = self.exchange("get=1\n\n")?;
        parse_get(&self.iface, &lines).map_err(|m| self.err(m))
    }

    fn apply(&self, changes: &ChangeSet) -> Result<(), WgError> {
        if changes.is_empty() {
            return Ok(());
        }
        let request = set_request(changes);
        self.sets.fetch_add(1, Ordering::SeqCst);
        self.exchange(&request).map(|_| ())
    }
}

/// The `set=1` text for `changes`.
pub fn set_request(changes: &ChangeSet) -> String {
    let mut s = String::from("set=1\n");
    let mut line = |k: &str, v: &str| {
        s.push_str(k);
        s.push('=');
        s.push_str(v);
        s.push('\n');
    };
    if let Some(k) = &changes.private_key {
        line("private_key", &k.to_hex());
    }
    if let Some(p) = changes.listen_port {
        line("listen_port", &p.to_string());
    }
    if let Some(m) = changes.fwmark {
        line("fwmark", &m.to_string());
    }
    let zero = Key::from_bytes([0; 32]);
    for change in &changes.peers {
        match change {
            PeerChange::Remove(k) => {
                line("public_key", &k.to_hex());
                line("remove", "true");
            }
            PeerChange::Add(p) => {
                line("public_key", &p.public_key.to_hex());
                line(
                    "preshared_key",
                    &p.preshared_key.as_ref().unwrap_or(&zero).to_hex(),
                );
                if let Some(e) = p.endpoint {
                    line("endpoint", &e.to_string());
                }
                line(
                    "persistent_keepalive_interval",
                    &p.persistent_keepalive.unwrap_or(0).to_string(),
                );
                line("replace_allowed_ips", "true");
                for a in &p.allowed_ips {
                    line("allowed_ip", &a.to_string());
                }
            }
            PeerChange::Update(u) => {
                line("public_key", &u.public_key.to_hex());
                // Never create a peer by accident (it may have just gone).
                line("update_only", "true");
                if let Some(psk) = &u.preshared_key {
                    line("preshared_key", &psk.as_ref().unwrap_or(&zero).to_hex());
                }
                if let Some(e) = u.endpoint {
                    line("endpoint", &e.to_string());
                }
                if let Some(k) = u.persistent_keepalive {
                    line("persistent_keepalive_interval", &k.to_string());
                }
                if let Some(ips) = &u.allowed_ips {
                    line("replace_allowed_ips", "true");
                    for a in ips {
                        line("allowed_ip", &a.to_string());
                    }
                }
            }
        }
    }
    s.push('\n');
    s
}

/// Parses a `get=1` answer (without the errno line).
pub fn parse_get(iface: &str, lines: &[String]) -> Result<DeviceState, String> {
    let mut dev = DeviceState {
        interface: iface.to_string(),
        ..Default::default()
    };
    let mut peer: Option<(PeerState, u64, u64)> = None;
    let finish = |dev: &mut DeviceState, p: Option<(PeerState, u64, u64)>| {
        if let Some((mut p, secs, nsecs)) = p {
            if secs != 0 || nsecs != 0 {
                p.last_handshake = Some(
                    SystemTime::UNIX_EPOCH
                        + Duration::from_secs(secs)
                        + Duration::from_nanos(nsecs),
                );
            }
            dev.peers.push(p);
        }
    };
    for line in lines {
        let (k, v) = line
            .split_once('=')
            // Not echoed: it could be a garbled key.
            .ok_or_else(|| "malformed line (no `=`)".to_string())?;
        let bad = |what: &str| format!("{k}: {what}");
        let num = |v: &str| v.parse::<u64>().map_err(|_| bad("not a number"));
        let key = |v: &str| Key::from_hex(v).map_err(&bad);
        if k == "public_key" {
            finish(&mut dev, peer.take());
            peer = Some((
                PeerState {
                    config: PeerConfig::new(key(v)?),
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                },
                0,
                0,
            ));
            continue;
        }
        match (&mut peer, k) {
            (None, "private_key") => {
                let sk = key(v)?;
                if !sk.is_zero() {
                    dev.public_key = Some(sk.public_key());
                    dev.private_key = Some(sk);
                }
            }
            (None, "listen_port") => dev.listen_port = v.parse().map_err(|_| bad("not a port"))?,
            (None, "fwmark") => dev.fwmark = v.parse().map_err(|_| bad("not a number"))?,
            (Some((p, _, _)), "preshared_key") => {
                let psk = key(v)?;
                p.config.preshared_key = (!psk.is_zero()).then_some(psk);
            }
            (Some((p, _, _)), "endpoint") => {
                p.config.endpoint = Some(parse_endpoint(v).ok_or_else(|| bad("not ip:port"))?)
            }
            (Some((_, s, _)), "last_handshake_time_sec") => *s = num(v)?,
            (Some((_, _, n)), "last_handshake_time_nsec") => *n = num(v)?,
            (Some((p, _, _)), "rx_bytes") => p.rx_bytes = num(v)?,
            (Some((p, _, _)), "tx_bytes") => p.tx_bytes = num(v)?,
            (Some((p, _, _)), "persistent_keepalive_interval") => {
                let k: u16 = v.parse().map_err(|_| bad("not a number"))?;
                p.config.persistent_keepalive = (k != 0).then_some(k);
            }
            (Some((p, _, _)), "allowed_ip") => p
                .config
                .allowed_ips
                .push(v.parse::<IpNet>().map_err(|_| bad("not a prefix"))?),
            // protocol_version and whatever later versions add.
            _ => {}
        }
    }
    finish(&mut dev, peer.take());
    Ok(dev)
}

/// `ip:port` or `[v6]:port`; a link-local address's `%zone` is dropped
/// (std's SocketAddr has no zone names).
fn parse_endpoint(v: &str) -> Option<SocketAddr> {
    v.parse().ok().or_else(|| {
        let (start, end) = (v.find('%')?, v.find(']')?);
        format!("{}{}", &v[..start], &v[end..]).parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wg::model::PeerUpdate;

    fn k(b: u8) -> Key {
        Key::from_bytes([b; 32])
    }

    #[test]
    fn parses_a_get_answer() {
        let text = format!(
            "private_key={}\nlisten_port=51820\nfwmark=7\npublic_key={}\npreshared_key={}\n\
             protocol_version=1\nendpoint=[fd00::1]:51000\nlast_handshake_time_sec=1700000000\n\
             last_handshake_time_nsec=5\ntx_bytes=10\nrx_bytes=20\n\
             persistent_keepalive_interval=25\nallowed_ip=10.0.0.2/32\nallowed_ip=fd77::2/128\n\
             public_key={}\npreshared_key={}\nlast_handshake_time_sec=0\n\
             last_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n",
            k(1).to_hex(),
            k(2).to_hex(),
            k(3).to_hex(),
            k(4).to_hex(),
            k(0).to_hex()
        );
        let lines: Vec<String> = text.lines().map(String::from).collect();
        let d = parse_get("wg0", &lines).unwrap();
        assert_eq!(d.private_key, Some(k(1)));
        assert_eq!(d.public_key, Some(k(1).public_key()));
        assert_eq!((d.listen_port, d.fwmark), (51820, 7));
        assert_eq!(d.peers.len(), 2);
        let a = &d.peers[0];
        assert_eq!(a.config.preshared_key, Some(k(3)));
        assert_eq!(a.config.endpoint, Some("[fd00::1]:51000".parse().unwrap()));
        assert_eq!(a.config.persistent_keepalive, Some(25));
        assert_eq!((a.rx_bytes, a.tx_bytes), (20, 10));
        assert_eq!(
            a.last_handshake,
            Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5))
        );
        assert_eq!(a.config.allowed_ips.len(), 2);
        let b = &d.peers[1];
        assert_eq!(b.config.public_key, k(4));
        assert_eq!(b.config.preshared_key, None);
        assert_eq!(b.last_handshake, None);
        assert_eq!(b.config.persistent_keepalive, None);
        assert!(parse_get("wg0", &["nonsense".into()]).is_err());
        assert_eq!(
            parse_endpoint("[fe80::1%eth0]:51820"),
            Some("[fe80::1]:51820".parse().unwrap())
        );
    }

    #[test]
    fn set_request_touches_only_what_changes() {
        let cs = ChangeSet {
            listen_port: Some(1234),
            peers: vec![
                PeerChange::Remove(k(5)),
                PeerChange::Update(PeerUpdate {
                    public_key: k(6),
                    preshared_key: None,
                    endpoint: None,
                    persistent_keepalive: None,
                    allowed_ips: Some(vec!["10.0.0.0/24".parse().unwrap()]),
                }),
            ],
            ..Default::default()
        };
        let r = set_request(&cs);
        let want = format!(
            "set=1\nlisten_port=1234\npublic_key={}\nremove=true\npublic_key={}\n\
             update_only=true\nreplace_allowed_ips=true\nallowed_ip=10.0.0.0/24\n\n",
            k(5).to_hex(),
            k(6).to_hex()
        );
        assert_eq!(r, want);
        assert!(!r.contains("replace_peers"));
    }
}
