//! Rotating a peer's key with a transition window: `wgbpf keys rotate`.
//!
//! WireGuard's cryptokey routing gives every AllowedIP to exactly one peer:
//! setting a prefix on a second peer moves it there (the last one set
//! wins). Outbound, the destination's prefix picks the peer; inbound, a
//! decrypted packet is dropped unless its source lies in the AllowedIPs of
//! the peer that sent it. A peer without AllowedIPs can still complete a
//! handshake, but none of its traffic passes. So two keys cannot both carry
//! one peer's addresses at the same time, and the procedure is:
//!
//! 1. **Start:** the new key is added as a second peer *without*
//!    AllowedIPs (the old peer's preshared key and endpoint copied, no
//!    keepalive yet). The old key keeps the addresses: nothing changes for
//!    traffic on the old key.
//! 2. **Window:** the device is polled ([`POLL`]); the addresses go to the
//!    key with the most recent handshake ([`holder_wanted`]). When the peer
//!    switches to its new key, its handshake on the new key is the newer
//!    one, and the AllowedIPs move to the new key (and the old key's
//!    persistent keepalive with them); should it come back on the old key,
//!    they move back. A move is one change set: first the new holder's
//!    AllowedIPs replaced (which moves each prefix, in both WireGuard
//!    implementations, without a gap), then the other key's replaced by
//!    none (which removes nothing more: the prefixes are no longer its).
//! 3. **End of the window:** the new key gets the AllowedIPs if it does not
//!    hold them yet, and the old key is removed.
//!
//! Packets the peer sends on the new key between its handshake and the next
//! poll are dropped (at most [`POLL`]); its retransmissions get through.
//! Other peers are never mentioned in a change set, so their sessions,
//! handshake times and counters stay. The policy of the data plane is
//! untouched: identities are addresses, and the addresses do not change.

use std::{
    net::SocketAddr,
    time::{Duration, Instant, SystemTime},
};

use ipnet::IpNet;
use serde::Serialize;

use super::{
    key::Key,
    model::{normalize, ChangeSet, DeviceConfig, DeviceState, PeerChange, PeerConfig, PeerUpdate},
    Backend, WgError,
};

/// How often the device is read during the window.
pub const POLL: Duration = Duration::from_millis(250);

/// Which key holds the peer's AllowedIPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Holder {
    Old,
    New,
}

/// What is carried over from the old key to the new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub old: Key,
    pub new: Key,
    pub allowed_ips: Vec<IpNet>,
    pub preshared_key: Option<Key>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
}

/// One step, for people and for the JSON report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RotateEvent {
    /// Seconds since the rotation started.
    pub at: f64,
    pub what: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RotateReport {
    pub interface: String,
    pub backend: &'static str,
    pub via: String,
    pub old_public_key: String,
    pub new_public_key: String,
    pub allowed_ips: Vec<IpNet>,
    pub window_seconds: u64,
    /// True when the new key already was on the device (a rotation that
    /// was interrupted and is now resumed).
    pub resumed: bool,
    /// Whether a handshake on the new key was seen before the old key was
    /// removed. False: the peer had not switched, and is cut off until it
    /// does.
    pub new_key_seen: bool,
    pub moves: usize,
    pub old_key_removed: bool,
    pub events: Vec<RotateEvent>,
}

fn dev_err(backend: &dyn Backend, message: String) -> WgError {
    WgError::Device {
        iface: backend.interface().to_string(),
        backend: backend.kind(),
        message,
    }
}

/// Checks the device and works out the rotation: the old key must be a
/// peer of the device, the new key neither the device's own nor another
/// peer's. `Ok((rotation, holder, resumed))`: when the new key already is
/// a peer (an interrupted rotation), `holder` says which key has the
/// AllowedIPs now.
pub fn plan(state: &DeviceState, old: &Key, new: &Key) -> Result<(Rotation, Holder, bool), String> {
    if old == new {
        return Err("the new public key is the peer's current one".into());
    }
    if state.public_key.as_ref() == Some(new) {
        return Err("the new public key is the interface's own public key".into());
    }
    let Some(o) = state.peer(old) else {
        return Err(format!(
            "the peer's public key {} (from the mesh file) is not on the device; if a rotation \
             already finished, put the new key in the mesh file",
            old.to_base64()
        ));
    };
    let n = state.peer(new);
    let resumed = n.is_some();
    let mut ips: Vec<IpNet> = normalize(&o.config.allowed_ips).into_iter().collect();
    let mut holder = Holder::Old;
    if let Some(n) = n {
        if !ips.is_empty() && !n.config.allowed_ips.is_empty() {
            return Err(format!(
                "the new public key {} already is a peer with AllowedIPs of its own",
                new.to_base64()
            ));
        }
        // Resuming: both keys are there; the addresses are the union (one
        // of them is empty unless something else changed them meanwhile).
        if ips.is_empty() && !n.config.allowed_ips.is_empty() {
            holder = Holder::New;
        }
        ips.extend(normalize(&n.config.allowed_ips));
        ips.sort();
        ips.dedup();
    }
    if ips.is_empty() {
        return Err("the peer has no AllowedIPs on the device: nothing to carry over".into());
    }
    Ok((
        Rotation {
            old: old.clone(),
            new: new.clone(),
            allowed_ips: ips,
            preshared_key: o.config.preshared_key.clone(),
            endpoint: o.config.endpoint,
            persistent_keepalive: o.config.persistent_keepalive.filter(|k| *k != 0),
        },
        holder,
        resumed,
    ))
}

/// Step 1: the new key as a peer without AllowedIPs.
pub fn start_changes(r: &Rotation) -> ChangeSet {
    let mut p = PeerConfig::new(r.new.clone());
    p.preshared_key = r.preshared_key.clone();
    p.endpoint = r.endpoint;
    ChangeSet {
        peers: vec![PeerChange::Add(p)],
        ..Default::default()
    }
}

/// Who should hold the AllowedIPs, given the two keys' latest handshakes:
/// the key with the more recent one; on a tie, or when neither has one,
/// the current holder stays.
pub fn holder_wanted(old: Option<SystemTime>, new: Option<SystemTime>, current: Holder) -> Holder {
    match (old, new) {
        (None, Some(_)) => Holder::New,
        (Some(_), None) => Holder::Old,
        (Some(o), Some(n)) if n > o => Holder::New,
        (Some(o), Some(n)) if o > n => Holder::Old,
        _ => current,
    }
}

fn update(key: &Key) -> PeerUpdate {
    PeerUpdate {
        public_key: key.clone(),
        preshared_key: None,
        endpoint: None,
        persistent_keepalive: None,
        allowed_ips: None,
    }
}

/// Step 2: the AllowedIPs (and the keepalive) to `to`. The new holder's
/// AllowedIPs are set first, which moves every prefix; then the other's are
/// cleared, which then removes nothing still in use.
pub fn move_changes(r: &Rotation, to: Holder) -> ChangeSet {
    let (gets, loses) = match to {
        Holder::New => (&r.new, &r.old),
        Holder::Old => (&r.old, &r.new),
    };
    let mut g = update(gets);
    g.allowed_ips = Some(r.allowed_ips.clone());
    if let Some(k) = r.persistent_keepalive {
        g.persistent_keepalive = Some(k);
    }
    let mut l = update(loses);
    l.allowed_ips = Some(Vec::new());
    if r.persistent_keepalive.is_some() {
        l.persistent_keepalive = Some(0);
    }
    ChangeSet {
        peers: vec![PeerChange::Update(g), PeerChange::Update(l)],
        ..Default::default()
    }
}

/// Step 3: the new key holds the AllowedIPs (if it does not yet), the old
/// key is removed.
pub fn finish_changes(r: &Rotation, holder: Holder) -> ChangeSet {
    let mut peers = Vec::new();
    if holder == Holder::Old {
        let mut g = update(&r.new);
        g.allowed_ips = Some(r.allowed_ips.clone());
        g.persistent_keepalive = r.persistent_keepalive;
        peers.push(PeerChange::Update(g));
    }
    peers.push(PeerChange::Remove(r.old.clone()));
    ChangeSet {
        peers,
        ..Default::default()
    }
}

/// A rotation declared in the mesh file (`previous_public_key`,
/// `rotation_ends`): the same procedure as [`rotate`], carried out by
/// whoever brings the device to the file (`wgbpf load`, and `wgbpf run`'s
/// drift repair every few seconds), so a running daemon performs the
/// rotation instead of undoing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationWindow {
    pub peer: String,
    pub old: Key,
    /// The key in the file's `public_key`.
    pub new: Key,
    pub ends: SystemTime,
}

/// `config` as wanted at `now` from a device in state `current`: for each
/// window still open, the peer's old key is wanted too, and the AllowedIPs
/// (with the keepalive) go to the key with the latest handshake
/// ([`holder_wanted`]; the key that holds them on the device keeps them
/// on a tie, the old key when neither holds them). The holder is listed
/// first, so the change set sets its AllowedIPs (moving each prefix)
/// before it clears the other's. Once a window has ended, the file's
/// configuration stands alone and the old key is removed as any peer not
/// in the file.
pub fn with_windows(
    config: &DeviceConfig,
    windows: &[RotationWindow],
    current: &DeviceState,
    now: SystemTime,
) -> DeviceConfig {
    let mut out = config.clone();
    for w in windows.iter().filter(|w| now < w.ends) {
        let Some(i) = out.peers.iter().position(|p| p.public_key == w.new) else {
            continue;
        };
        let declared = out.peers.remove(i);
        let (old_s, new_s) = (current.peer(&w.old), current.peer(&w.new));
        let holds = |s: Option<&super::model::PeerState>| {
            s.is_some_and(|s| !s.config.allowed_ips.is_empty())
        };
        let on_device = if holds(new_s) && !holds(old_s) {
            Holder::New
        } else {
            Holder::Old
        };
        let holder = holder_wanted(
            old_s.and_then(|s| s.last_handshake),
            new_s.and_then(|s| s.last_handshake),
            on_device,
        );
        let mut other = PeerConfig::new(w.old.clone());
        other.preshared_key = declared.preshared_key.clone();
        other.endpoint = declared.endpoint;
        let mut holding = declared;
        if holder == Holder::Old {
            holding.public_key = w.old.clone();
            other.public_key = w.new.clone();
        }
        out.peers.insert(i, other);
        out.peers.insert(i, holding);
    }
    out
}

/// Runs the whole rotation on `backend`: start, `window` of following the
/// handshakes, finish. `on_event` is called for each step as it happens.
pub fn rotate(
    backend: &dyn Backend,
    old: &Key,
    new: &Key,
    window: Duration,
    mut on_event: impl FnMut(&RotateEvent),
) -> Result<RotateReport, WgError> {
    let t0 = Instant::now();
    let state = backend.get()?;
    let (r, mut holder, resumed) = plan(&state, old, new).map_err(|m| dev_err(backend, m))?;
    let mut report = RotateReport {
        interface: backend.interface().to_string(),
        backend: backend.kind(),
        via: backend.describe(),
        old_public_key: old.to_base64(),
        new_public_key: new.to_base64(),
        allowed_ips: r.allowed_ips.clone(),
        window_seconds: window.as_secs(),
        resumed,
        new_key_seen: false,
        moves: 0,
        old_key_removed: false,
        events: Vec::new(),
    };
    let mut event = |report: &mut RotateReport, what: String| {
        let e = RotateEvent {
            at: (t0.elapsed().as_millis() as f64) / 1000.0,
            what,
        };
        on_event(&e);
        report.events.push(e);
    };
    let ips = r
        .allowed_ips
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if resumed {
        event(
            &mut report,
            format!(
                "resuming: the new key {} is already a peer; AllowedIPs ({ips}) on the {} key",
                new.to_base64(),
                if holder == Holder::New { "new" } else { "old" }
            ),
        );
    } else {
        backend.apply(&start_changes(&r))?;
        event(
            &mut report,
            format!(
                "added the new key {} as a peer without AllowedIPs; the old key {} keeps {ips}",
                new.to_base64(),
                old.to_base64()
            ),
        );
    }
    event(
        &mut report,
        format!(
            "accepting both keys for {}s; the AllowedIPs follow the key with the latest handshake",
            window.as_secs()
        ),
    );
    let deadline = t0 + window;
    let mut seen_at_start = state.peer(new).and_then(|p| p.last_handshake);
    loop {
        let s = backend.get()?;
        let (Some(o), Some(n)) = (s.peer(old), s.peer(new)) else {
            return Err(dev_err(
                backend,
                "a key of the rotation vanished from the device (changed by someone else?); \
                 nothing more done"
                    .into(),
            ));
        };
        if n.last_handshake.is_some() && n.last_handshake != seen_at_start {
            if !report.new_key_seen {
                event(&mut report, "handshake on the new key".into());
            }
            report.new_key_seen = true;
            seen_at_start = None;
        }
        let want = holder_wanted(o.last_handshake, n.last_handshake, holder);
        if want != holder {
            backend.apply(&move_changes(&r, want))?;
            report.moves += 1;
            event(
                &mut report,
                match want {
                    Holder::New => format!("moved {ips} to the new key (its handshake is newer)"),
                    Holder::Old => format!(
                        "moved {ips} back to the old key (it has the newer handshake again)"
                    ),
                },
            );
            holder = want;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
    backend.apply(&finish_changes(&r, holder))?;
    report.old_key_removed = true;
    let fine = report.new_key_seen || holder == Holder::New;
    event(
        &mut report,
        if fine {
            format!("window over: removed the old key {}", old.to_base64())
        } else {
            format!(
                "window over: removed the old key {}; WARNING: no handshake on the new key was \
                 seen, the peer is cut off until it uses its new key",
                old.to_base64()
            )
        },
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wg::model::PeerState;

    fn k(b: u8) -> Key {
        Key::from_bytes([b; 32])
    }

    fn peer(key: u8, ips: &[&str], hs: Option<u64>) -> PeerState {
        let mut c = PeerConfig::new(k(key));
        c.allowed_ips = ips.iter().map(|s| s.parse().unwrap()).collect();
        c.persistent_keepalive = Some(25);
        PeerState {
            config: c,
            last_handshake: hs.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
            rx_bytes: 0,
            tx_bytes: 0,
        }
    }

    #[test]
    fn declared_windows_follow_the_handshakes_and_end() {
        use crate::wg::changes_between;
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        // alice's file entry: key 9 (new), keepalive 25; old key 2.
        let mut alice = PeerConfig::new(k(9));
        alice.allowed_ips = vec!["10.0.0.2/32".parse().unwrap()];
        alice.persistent_keepalive = Some(25);
        let bob = peer(3, &["10.0.0.3/32"], Some(100));
        let config = DeviceConfig {
            peers: vec![alice.clone(), bob.config.clone()],
            ..Default::default()
        };
        let windows = [RotationWindow {
            peer: "alice".into(),
            old: k(2),
            new: k(9),
            ends: t(1000),
        }];
        let state = |peers: Vec<PeerState>| DeviceState {
            interface: "wg0".into(),
            peers,
            ..Default::default()
        };
        let keys = |c: &DeviceConfig| -> Vec<(Key, usize, Option<u16>)> {
            c.peers
                .iter()
                .map(|p| {
                    (
                        p.public_key.clone(),
                        p.allowed_ips.len(),
                        p.persistent_keepalive,
                    )
                })
                .collect()
        };

        // Only the old key on the device, with the addresses: it keeps
        // them, the new key is wanted without; bob untouched.
        let before = state(vec![peer(2, &["10.0.0.2/32"], Some(100)), bob.clone()]);
        let want = with_windows(&config, &windows, &before, t(500));
        assert_eq!(
            keys(&want),
            vec![(k(2), 1, Some(25)), (k(9), 0, None), (k(3), 1, Some(25))]
        );
        let cs = changes_between(&want, &before);
        assert_eq!(cs.peers.len(), 1, "{cs:?}");
        assert!(matches!(&cs.peers[0], PeerChange::Add(p) if p.public_key == k(9)));

        // The peer handshakes on its new key: the addresses move, set on
        // the new key before they are cleared from the old.
        let switched = state(vec![
            peer(2, &["10.0.0.2/32"], Some(100)),
            peer(9, &[], Some(200)),
            bob.clone(),
        ]);
        let want = with_windows(&config, &windows, &switched, t(500));
        assert_eq!(
            keys(&want),
            vec![(k(9), 1, Some(25)), (k(2), 0, None), (k(3), 1, Some(25))]
        );
        let cs = changes_between(&want, &switched);
        let order: Vec<(Key, bool)> = cs
            .peers
            .iter()
            .map(|c| match c {
                PeerChange::Update(u) => (
                    u.public_key.clone(),
                    u.allowed_ips.as_ref().is_some_and(|a| !a.is_empty()),
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(order, vec![(k(9), true), (k(2), false)]);

        // Neither key on the device (a fresh load inside the window): both
        // added, the old key holding until the peer shows up on the new.
        let want = with_windows(&config, &windows, &state(vec![]), t(500));
        assert_eq!(keys(&want)[..2], [(k(2), 1, Some(25)), (k(9), 0, None)]);

        // The window is over: the file alone, so the old key goes.
        let want = with_windows(&config, &windows, &switched, t(1000));
        assert_eq!(want, config);
        let cs = changes_between(&want, &switched);
        assert!(cs
            .peers
            .iter()
            .any(|c| matches!(c, PeerChange::Remove(key) if *key == k(2))));
    }

    #[test]
    fn holder_follows_the_latest_handshake() {
        let t = |s| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(holder_wanted(None, None, Holder::Old), Holder::Old);
        assert_eq!(holder_wanted(t(5), None, Holder::Old), Holder::Old);
        assert_eq!(holder_wanted(t(5), t(6), Holder::Old), Holder::New);
        assert_eq!(holder_wanted(t(7), t(6), Holder::New), Holder::Old);
        assert_eq!(holder_wanted(t(6), t(6), Holder::New), Holder::New);
        assert_eq!(holder_wanted(None, t(1), Holder::Old), Holder::New);
    }

    #[test]
    fn plan_and_changes() {
        let state = DeviceState {
            interface: "wg0".into(),
            public_key: Some(k(1)),
            peers: vec![
                peer(2, &["10.0.0.2/32", "fd00::2/128"], Some(100)),
                peer(3, &["10.0.0.3/32"], Some(100)),
            ],
            ..Default::default()
        };
        assert!(plan(&state, &k(2), &k(2)).is_err());
        assert!(plan(&state, &k(2), &k(1)).unwrap_err().contains("own"));
        assert!(plan(&state, &k(2), &k(3))
            .unwrap_err()
            .contains("AllowedIPs of its own"));
        assert!(plan(&state, &k(9), &k(8))
            .unwrap_err()
            .contains("not on the device"));
        let (r, h, resumed) = plan(&state, &k(2), &k(8)).unwrap();
        assert_eq!((h, resumed), (Holder::Old, false));
        assert_eq!(r.allowed_ips.len(), 2);
        assert_eq!(r.persistent_keepalive, Some(25));

        let s = start_changes(&r);
        match &s.peers[..] {
            [PeerChange::Add(p)] => {
                assert_eq!(p.public_key, k(8));
                assert!(p.allowed_ips.is_empty() && p.persistent_keepalive.is_none());
            }
            o => panic!("{o:?}"),
        }
        let m = move_changes(&r, Holder::New);
        match &m.peers[..] {
            [PeerChange::Update(g), PeerChange::Update(l)] => {
                assert_eq!(g.public_key, k(8));
                assert_eq!(g.allowed_ips.as_ref().unwrap().len(), 2);
                assert_eq!(g.persistent_keepalive, Some(25));
                assert_eq!(l.public_key, k(2));
                assert_eq!(l.allowed_ips, Some(vec![]));
                assert_eq!(l.persistent_keepalive, Some(0));
            }
            o => panic!("{o:?}"),
        }
        // Never another peer.
        for cs in [&s, &m, &finish_changes(&r, Holder::Old)] {
            assert!(cs.peers.iter().all(|c| c.public_key() != &k(3)));
        }
        assert_eq!(
            finish_changes(&r, Holder::New).peers,
            vec![PeerChange::Remove(k(2))]
        );
        let f = finish_changes(&r, Holder::Old);
        assert_eq!(f.peers.len(), 2);
        assert!(matches!(&f.peers[0], PeerChange::Update(u) if u.public_key == k(8)));
        assert_eq!(f.peers[1], PeerChange::Remove(k(2)));

        // Resuming an interrupted rotation: the addresses are on the new key.
        let mut st = state.clone();
        st.peers[0].config.allowed_ips.clear();
        st.peers
            .push(peer(8, &["10.0.0.2/32", "fd00::2/128"], Some(200)));
        let (r2, h2, resumed2) = plan(&st, &k(2), &k(8)).unwrap();
        assert_eq!((h2, resumed2), (Holder::New, true));
        assert_eq!(r2.allowed_ips, r.allowed_ips);
    }
}
