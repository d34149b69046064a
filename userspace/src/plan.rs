//! The enforcement plan: a mesh file (with its includes applied) turned,
//! once, into everything `load`, `run` and `audit` need, checked before
//! anything touches the kernel or a link:
//!
//! 1. the policy compiled ([`crate::policy::compile`]), which also refuses
//!    AllowedIPs that two peers claim;
//! 2. the policy's own tests run ([`crate::policy::check::run_tests`]);
//! 3. with `private_key_file`, the wanted WireGuard state: key files read,
//!    endpoints resolved, the interface's addresses, MTU and routes.
//!
//! [`crate::enforce`] applies a plan; the daemon keeps the last one it
//! enforced for its drift checks.

use std::{collections::BTreeMap, path::Path};

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use wgbpf_common::{capacity, EventConfig};

use crate::{
    dataplane::{attach::AttachMode, peers::CounterIndexPlan, xdp_guard::GuardConfig},
    mesh::{GuardSpec, Mesh, WgSpec},
    policy::{
        check::run_tests,
        compile::{compile, Compiled},
    },
    source,
    wg::{
        kernel::link::{default_routes, routes_for},
        read_key_file,
        rotate::RotationWindow,
        BackendChoice, DeviceConfig, Endpoint, InterfaceSpec, Key, PeerConfig, WgError,
    },
};

/// Deny events per second and burst, per CPU, unless told otherwise.
pub const DEFAULT_EVENTS: EventConfig = EventConfig {
    per_second: 100,
    burst: 200,
};

/// How a plan is applied: chosen by the command line, not by the file.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How to attach when nothing is pinned yet.
    pub attach: AttachMode,
    /// Which WireGuard backend reaches the device.
    pub wg_backend: BackendChoice,
    /// Deny events per second and burst, per CPU.
    pub events: EventConfig,
    /// How long to wait for another controller applying to the same
    /// interface before refusing ([`crate::dataplane::lock`]).
    pub lock_wait: std::time::Duration,
}

/// How long a controller waits for another by default.
pub const DEFAULT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Settings {
    pub fn new(attach: AttachMode, wg_backend: BackendChoice) -> Settings {
        Settings {
            attach,
            wg_backend,
            events: DEFAULT_EVENTS,
            lock_wait: DEFAULT_LOCK_WAIT,
        }
    }
}

/// Everything one apply needs, validated.
#[derive(Debug)]
pub struct EnforcementPlan {
    pub mesh: Mesh,
    /// The policy compiled with the mesh's own peer numbering; the peers'
    /// counter indexes are assigned against the pinned maps by
    /// [`EnforcementPlan::compiled_for`].
    pub compiled: Compiled,
    /// `None` when the mesh file has no `private_key_file` (the device is
    /// managed elsewhere and only the policy is enforced).
    pub wireguard: Option<WireguardPlan>,
    /// The XDP guard on the underlay interfaces, when the file asks for it.
    pub guard: Option<GuardPlan>,
    pub settings: Settings,
}

/// The XDP guard's interfaces and settings, checked.
#[derive(Debug, Clone)]
pub struct GuardPlan {
    pub underlay: Vec<String>,
    pub config: GuardConfig,
}

/// The wanted WireGuard device and interface.
#[derive(Debug, Clone)]
pub struct WireguardPlan {
    pub desired: crate::wg::Desired,
    /// Addresses, MTU and routes (created only by the kernel backend).
    pub interface: InterfaceSpec,
    /// AllowedIPs that would need a default route, which is not added.
    pub default_routes_skipped: Vec<IpNet>,
    /// Peers whose endpoint names a host: the daemon resolves them again.
    pub dns_endpoints: BTreeMap<Key, Endpoint>,
}

impl EnforcementPlan {
    /// Reads the mesh file at `path` and builds its plan.
    pub fn from_file(path: &Path, settings: Settings) -> Result<EnforcementPlan> {
        let mesh = source::load(path)?;
        Self::build(mesh, settings).with_context(|| path.display().to_string())
    }

    /// Compiles the policy, runs its tests and builds the wanted WireGuard
    /// state. Touches neither the kernel nor a link.
    pub fn build(mesh: Mesh, settings: Settings) -> Result<EnforcementPlan> {
        let compiled = compile(&mesh.policy, capacity::PEERS).context("policy")?;
        let (_, failures) = run_tests(&mesh.policy, &mesh.tests);
        if !failures.is_empty() {
            let lines: Vec<String> = failures.iter().map(|f| f.to_string()).collect();
            bail!(
                "{} policy test(s) failed, nothing applied:\n{}",
                failures.len(),
                lines.join("\n")
            );
        }
        let wireguard = match &mesh.wg.private_key_file {
            Some(key_file) => Some(wireguard_plan(&mesh.wg, key_file).context("WireGuard")?),
            None => None,
        };
        let guard = mesh.guard.as_ref().map(guard_plan).transpose()?;
        Ok(EnforcementPlan {
            mesh,
            compiled,
            wireguard,
            guard,
            settings,
        })
    }

    pub fn interface(&self) -> &str {
        &self.mesh.interface
    }

    /// The peers' names, in the mesh's order.
    pub fn peer_names(&self) -> Vec<String> {
        self.mesh
            .policy
            .peers
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    /// The compiled policy with each peer's counter index from `indexes`
    /// (planned against the pinned maps, so peers keep their counters).
    pub fn compiled_for(&self, indexes: &CounterIndexPlan) -> Compiled {
        let by_index: BTreeMap<u32, u32> = self
            .mesh
            .policy
            .peers
            .iter()
            .map(|p| (p.index, indexes.indexes[&p.name]))
            .collect();
        self.compiled.with_counter_indexes(&by_index)
    }
}

/// The guard's settings: the defaults, with what the file overrides.
fn guard_plan(spec: &GuardSpec) -> Result<GuardPlan> {
    let mut config = GuardConfig::for_port(spec.listen_port);
    if let Some(r) = spec.handshake_rate {
        config.handshake_rate = r;
    }
    if let Some(b) = spec.handshake_burst {
        config.handshake_burst = b;
    }
    config.allowlist = spec.allow_sources.clone();
    config.to_kernel().context("guard")?;
    Ok(GuardPlan {
        underlay: spec.underlay.clone(),
        config,
    })
}

/// The device configuration `spec` describes: key files read (refused
/// when others may read them), endpoints resolved now, the interface's
/// routes as wg-quick chooses them. Errors name the file, or the peer and
/// the field.
fn wireguard_plan(spec: &WgSpec, key_file: &Path) -> Result<WireguardPlan, WgError> {
    // Clamped, as the device stores it, so that equal keys compare equal.
    let private_key = read_key_file(key_file)?.clamped();
    let own_public = private_key.public_key();
    let mut config = DeviceConfig {
        private_key: Some(private_key),
        listen_port: spec.listen_port,
        fwmark: spec.fwmark,
        peers: Vec::new(),
    };
    let mut names: BTreeMap<Key, String> = BTreeMap::new();
    let mut dns_endpoints = BTreeMap::new();
    let mut rotations = Vec::new();
    for p in &spec.peers {
        let perr = |field: &'static str, message: String| WgError::Peer {
            peer: p.name.clone(),
            field,
            message,
        };
        let public_key = p.public_key.clone().ok_or_else(|| {
            perr(
                "public_key",
                "missing: every peer needs one when the interface has private_key_file".into(),
            )
        })?;
        if public_key == own_public {
            return Err(perr(
                "public_key",
                "is the interface's own public key".into(),
            ));
        }
        if let Some(other) = names.get(&public_key) {
            return Err(perr(
                "public_key",
                format!("the same key as peer `{other}`"),
            ));
        }
        let preshared_key = match &p.preshared_key_file {
            Some(f) => {
                Some(read_key_file(f).map_err(|e| perr("preshared_key_file", e.to_string()))?)
            }
            None => None,
        };
        let endpoint = match &p.endpoint {
            Some(e) => {
                if e.is_dns_name() {
                    dns_endpoints.insert(public_key.clone(), e.clone());
                }
                Some(e.resolve().map_err(|m| perr("endpoint", m))?)
            }
            None => None,
        };
        names.insert(public_key.clone(), p.name.clone());
        if let Some(r) = &p.rotation {
            let old = &r.previous_public_key;
            if *old == own_public {
                return Err(perr(
                    "previous_public_key",
                    "is the interface's own public key".into(),
                ));
            }
            rotations.push(RotationWindow {
                peer: p.name.clone(),
                old: old.clone(),
                new: public_key.clone(),
                ends: r.ends,
            });
        }
        config.peers.push(PeerConfig {
            public_key,
            preshared_key,
            endpoint,
            persistent_keepalive: p.persistent_keepalive.filter(|k| *k != 0),
            allowed_ips: p.allowed_ips.clone(),
        });
    }
    // An old key may be no peer's current key, nor another rotation's.
    for w in &rotations {
        if let Some(other) = names.get(&w.old) {
            return Err(WgError::Peer {
                peer: w.peer.clone(),
                field: "previous_public_key",
                message: format!("the same key as peer `{other}`"),
            });
        }
    }
    for w in &rotations {
        names.insert(w.old.clone(), format!("{} (previous key)", w.peer));
    }
    let allowed: Vec<IpNet> = spec
        .peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter().copied())
        .collect();
    Ok(WireguardPlan {
        desired: crate::wg::Desired {
            config,
            names,
            rotations,
        },
        interface: InterfaceSpec {
            addresses: spec.addresses.clone(),
            mtu: spec.mtu,
            routes: routes_for(&spec.addresses, &allowed),
        },
        default_routes_skipped: default_routes(&allowed),
        dns_endpoints,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::OpenOptionsExt;

    use super::*;
    use crate::mesh::WgPeerSpec;

    fn key_file(dir: &Path, name: &str, mode: u32) -> (std::path::PathBuf, Key) {
        let k = Key::from_bytes([name.len() as u8 + 1; 32]);
        let p = dir.join(name);
        std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(mode)
            .open(&p)
            .and_then(|mut f| std::io::Write::write_all(&mut f, k.to_base64().as_bytes()))
            .unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        (p, k)
    }

    fn peer(name: &str, key: u8, ips: &[&str]) -> WgPeerSpec {
        WgPeerSpec {
            name: name.into(),
            public_key: Some(Key::from_bytes([key; 32])),
            allowed_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            endpoint: None,
            persistent_keepalive: None,
            preshared_key_file: None,
            rotation: None,
            address: Vec::new(),
            export_allowed_ips: None,
        }
    }

    #[test]
    fn wireguard_plan_reads_keys_resolves_endpoints_and_names_peer_and_field() {
        let dir = std::env::temp_dir().join(format!("wgbpf-plantest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (priv_file, private) = key_file(&dir, "gw.key", 0o600);
        let (psk_file, psk) = key_file(&dir, "alice.psk", 0o600);
        let mut spec = WgSpec {
            private_key_file: Some(priv_file.clone()),
            listen_port: Some(51820),
            addresses: vec!["10.0.0.1/24".parse().unwrap()],
            peers: vec![
                peer("alice", 10, &["10.0.0.2/32", "fd00::2/128"]),
                peer("bob", 11, &["10.0.1.0/24", "0.0.0.0/0"]),
            ],
            ..Default::default()
        };
        spec.peers[0].endpoint = Some(Endpoint::parse("localhost:51820").unwrap());
        spec.peers[0].preshared_key_file = Some(psk_file);
        spec.peers[0].persistent_keepalive = Some(25);
        spec.peers[1].endpoint = Some(Endpoint::parse("192.0.2.7:51820").unwrap());
        let w = wireguard_plan(&spec, &priv_file).unwrap();
        let d = &w.desired;
        assert!(d.config.private_key == Some(private.clamped()));
        assert_eq!(d.config.peers.len(), 2);
        assert_eq!(d.config.peers[0].preshared_key, Some(psk));
        assert_eq!(d.config.peers[0].endpoint.unwrap().port(), 51820);
        assert_eq!(d.names[&Key::from_bytes([11; 32])], "bob");
        // Only the name is resolved again later; the address is not.
        assert_eq!(
            w.dns_endpoints.keys().collect::<Vec<_>>(),
            [&Key::from_bytes([10; 32])]
        );
        // wg-quick's routes: 10.0.0.2 is on the interface's own /24, and
        // the default route is left out (and reported).
        let routes: Vec<String> = w.interface.routes.iter().map(|r| r.to_string()).collect();
        assert_eq!(routes, ["10.0.1.0/24", "fd00::2/128"]);
        assert_eq!(w.default_routes_skipped.len(), 1);

        let err = |spec: &WgSpec| {
            wireguard_plan(spec, spec.private_key_file.as_ref().unwrap())
                .unwrap_err()
                .to_string()
        };
        let mut s = spec.clone();
        s.peers[1].endpoint = Some(Endpoint::parse("no-such-host.invalid:51820").unwrap());
        let e = err(&s);
        assert!(e.starts_with("peer `bob`: endpoint:"), "{e}");

        let mut s = spec.clone();
        s.peers[1].public_key = None;
        assert!(err(&s).starts_with("peer `bob`: public_key: missing"));
        s.peers[1].public_key = spec.peers[0].public_key.clone();
        assert!(err(&s).contains("same key as peer `alice`"));
        s.peers[1].public_key = Some(private.clamped().public_key());
        assert!(err(&s).contains("the interface's own public key"));

        let (open_psk, _) = key_file(&dir, "open.psk", 0o644);
        let mut s = spec.clone();
        s.peers[1].preshared_key_file = Some(open_psk);
        let e = err(&s);
        assert!(
            e.contains("preshared_key_file") && e.contains("open.psk"),
            "{e}"
        );

        let (open_key, _) = key_file(&dir, "open.key", 0o640);
        let mut s = spec.clone();
        s.private_key_file = Some(open_key);
        let e = err(&s);
        assert!(e.starts_with("key file ") && e.contains("open.key"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn policy_tests_run_before_key_files_are_read() {
        // A failing test and an unreadable key file: the test is reported,
        // so nothing past the policy was looked at.
        let text = r#"
[interface]
name = "wg0"
addresses = ["10.0.0.1/24"]
private_key_file = "/nonexistent/wgbpf-plan-test.key"
[[peer]]
name = "alice"
public_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
allowed_ips = ["10.0.0.2/32"]
[[policy.test]]
src = "alice"
accept = ["gateway:22"]
"#;
        let mesh = crate::mesh::parse("t.toml", text).unwrap();
        let settings = Settings::new(AttachMode::Tcx, BackendChoice::Auto);
        let e = format!(
            "{:#}",
            EnforcementPlan::build(mesh.clone(), settings).unwrap_err()
        );
        assert!(e.contains("1 policy test(s) failed"), "{e}");
        let mut passing = mesh;
        passing.tests.clear();
        let e = format!(
            "{:#}",
            EnforcementPlan::build(passing, settings).unwrap_err()
        );
        assert!(
            e.contains("WireGuard") && e.contains("wgbpf-plan-test.key"),
            "{e}"
        );
    }
}
