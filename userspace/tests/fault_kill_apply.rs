//! SIGKILL of the controller in the middle of applying a large
//! configuration: 10,000 peers on the WireGuard device (wireguard-go, UAPI)
//! and 10,000 rules. Three files, A, B and C, each with 500 peers of its
//! own and every rule naming another peer, are applied in a cycle (so the
//! inactive slot always holds another file and each apply rewrites it
//! whole). Each round starts a `wgbpf load` of the next file and kills it
//! (SIGKILL) at one point of the apply, then checks that the data plane
//! enforces the old file's policy or the new one's, whole:
//!
//! - the active slot: valid, at the old version (old policy) or above it;
//! - `wgbpf audit` against the file that version says: its policy is
//!   enforced entry for entry, the programs attached;
//! - real probes over the tunnel from alice and bob to the gateway, one
//!   port A, B and C open to different peers (a mixture shows as the wrong
//!   pair getting through), one port all open and one all closed (nothing
//!   enforced, or everything dropped, shows there).
//!
//! Then a `wgbpf load` of the same file converges (audit equal, WireGuard
//! included); the last round converges with `wgbpf run` instead.
//!
//! Kill points: half way through the WireGuard step (a fraction of the
//! time an uninterrupted apply took to reach the write), and points
//! signalled by the data plane itself, watched from the test: the moment
//! the inactive slot is invalidated (the write begins), the first entry
//! deleted from it, the first new entry inserted, and the moment the
//! active slot flips. The kills at the first delete and the first insert
//! must leave the inactive slot half written (they really landed
//! mid-write), and one kill the new policy.

mod common;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::IpAddr,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use common::{stop, wgbpf, wgbpf_command, TempDir, Unload};
use testbed::{udp_echo, udp_roundtrip, Host, Testbed, TestbedSpec};
use wgbpf::{dataplane, wg::Key};
use wgbpf_common::{PolicyKey, PolicyValue, SLOT_VALID};

/// Peers on the device in all (alice and bob included).
const PEERS: usize = 10_000;
/// Rules in each file.
const RULES: usize = 10_000;
/// Synthetic peers B has in place of A's (new keys, new addresses).
const REPLACED: usize = 500;
/// A allows alice here, B bob, C both.
const FLIP_PORT: u16 = 7000;
/// Both files allow alice and bob here.
const BOTH_PORT: u16 = 7001;
/// Neither file allows this port.
const NONE_PORT: u16 = 7002;
/// A probe is resent within this time until answered (a new session's
/// handshake included).
const PROBE: Duration = Duration::from_secs(2);

/// Three files, applied in a cycle: the inactive slot then always holds
/// the file before the last, so every apply rewrites the whole policy (two
/// files alternating would find their policy already in the slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum File {
    A,
    B,
    C,
}

impl File {
    fn next(self) -> File {
        match self {
            File::A => File::B,
            File::B => File::C,
            File::C => File::A,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Synthetic peer `i`'s key and address; `generation` 1 are B's
/// replacements for the first `REPLACED`.
fn synthetic(i: usize, generation: u8) -> (String, String) {
    let mut k = [0x5au8; 32];
    k[0] = generation;
    k[1..9].copy_from_slice(&(i as u64).to_le_bytes());
    let base = if generation == 0 {
        0x0a50_0000
    } else {
        0x0a60_0000
    };
    let addr = std::net::Ipv4Addr::from(base + i as u32);
    (Key::from_bytes(k).to_base64(), format!("{addr}/32"))
}

fn mesh_text(mesh: &Testbed, key_file: &Path, which: File) -> String {
    let gw = &mesh.gateway;
    let mut s = format!(
        "[interface]\nname = \"{}\"\naddresses = [\"{}/24\", \"{}/64\"]\n\
         private_key_file = \"{}\"\nlisten_port = 51820\n\n",
        gw.wg_if,
        gw.tunnel_v4,
        gw.tunnel_v6,
        key_file.display()
    );
    for p in &mesh.peers {
        let _ = write!(
            s,
            "[[peer]]\nname = \"{}\"\npublic_key = \"{}\"\nallowed_ips = [\"{}/32\"]\n\n",
            p.name, p.public_key, p.tunnel_v4
        );
    }
    let synthetic_peers = PEERS - mesh.peers.len();
    for i in 0..synthetic_peers {
        // B and C have other peers in place of A's first REPLACED.
        let generation = u8::from(which != File::A && i < REPLACED);
        let (key, addr) = synthetic(i, generation);
        let _ = write!(
            s,
            "[[peer]]\nname = \"s{i}\"\npublic_key = \"{key}\"\nallowed_ips = [\"{addr}\"]\n\n"
        );
    }
    s += "[policy]\n\n";
    let rule = |s: &mut String, from: &str, proto: &str, port: u16| {
        let _ = write!(
            s,
            "[[policy.rule]]\naction = \"accept\"\nfrom = [\"{from}\"]\nto = [\"gateway\"]\n\
             proto = \"{proto}\"\nports = [{port}]\n\n"
        );
    };
    let (alice_flip, bob_flip) = Seen::expected(which).flip;
    for (who, allowed) in [("alice", alice_flip), ("bob", bob_flip)] {
        if allowed {
            rule(&mut s, who, "udp", FLIP_PORT);
        }
    }
    rule(&mut s, "alice", "udp", BOTH_PORT);
    rule(&mut s, "bob", "udp", BOTH_PORT);
    // Every synthetic rule differs from one file to the next (rule k names
    // another peer), so each apply rewrites the whole policy.
    let shift = which.index();
    let fixed = s.matches("[[policy.rule]]").count();
    for k in 0..RULES - fixed {
        rule(
            &mut s,
            &format!("s{}", (k + shift) % synthetic_peers),
            "tcp",
            10_000 + (k % 8) as u16,
        );
    }
    s
}

/// What the probes saw: (alice, bob) on each port.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    flip: (bool, bool),
    both: (bool, bool),
    none: (bool, bool),
}

impl Seen {
    fn expected(f: File) -> Seen {
        Seen {
            flip: (f != File::B, f != File::A),
            both: (true, true),
            none: (false, false),
        }
    }
}

/// Six probes at once (three are denied and wait out their timeout).
fn probe(gw: &Host, alice: &Host, bob: &Host) -> Seen {
    let to = IpAddr::V4(gw.tunnel_v4);
    let results: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = [FLIP_PORT, BOTH_PORT, NONE_PORT]
            .iter()
            .flat_map(|port| [(alice, *port), (bob, *port)])
            .map(|(from, port)| {
                s.spawn(move || udp_roundtrip(from, to, port, PROBE).unwrap_or(false))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    Seen {
        flip: (results[0], results[1]),
        both: (results[2], results[3]),
        none: (results[4], results[5]),
    }
}

/// One slot's policy entries (keyed as in slot 0): every rule names
/// another peer from one file to the next, so these differ whole.
type Entries = BTreeMap<PolicyKey, PolicyValue>;

fn entries_of(maps: &dataplane::Maps, slot: u32) -> Entries {
    maps.policy
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, _)| k.slot as u32 == slot)
        .map(|(k, v)| (PolicyKey { slot: 0, ..k }, v))
        .collect()
}

/// The active slot (valid?, version, its entries) and whether the
/// inactive one is valid, with its entries.
fn slots(iface: &str) -> ((bool, u32, Entries), (bool, Entries)) {
    let maps = dataplane::open_maps(iface).expect("maps pinned");
    let (active, cfg) = maps.active_slot().unwrap();
    let other = maps.slot_config.get(&(1 - active), 0).unwrap();
    (
        (
            cfg.flags & SLOT_VALID != 0,
            cfg.version,
            entries_of(&maps, active),
        ),
        (other.flags & SLOT_VALID != 0, entries_of(&maps, 1 - active)),
    )
}

/// `wgbpf audit --json`: (data plane differences, WireGuard differences).
fn audit(gw: &Host, cfg: &str) -> (Vec<String>, Vec<String>) {
    let (_, out, err) = wgbpf(gw, &["audit", "-c", cfg, "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("audit json ({e}): {out}{err}"));
    let list = |k: &str| -> Vec<String> {
        v["audit"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    (list("dataplane"), list("wireguard"))
}

/// Where to kill the controller.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// This long after the start (before the policy write: reading the
    /// file, the WireGuard step).
    After(Duration),
    /// This long after the inactive slot is invalidated (the policy write
    /// has begun).
    WriteBegun(Duration),
    /// As soon as this entry (keyed as in slot 0), which the inactive slot
    /// holds and the target does not, is gone from it: the deletes have
    /// begun.
    Deleting(PolicyKey),
    /// As soon as this entry of the target, which the inactive slot lacks,
    /// appears in it: the inserts have begun.
    Inserting(PolicyKey),
    /// As soon as the active slot flips.
    Flipped,
}

impl KillAt {
    fn label(&self) -> String {
        match self {
            KillAt::After(d) => format!("{d:.2?} after the start"),
            KillAt::WriteBegun(d) => format!("{d:.2?} after the slot was invalidated"),
            KillAt::Deleting(_) => "the first delete".into(),
            KillAt::Inserting(_) => "the first insert".into(),
            KillAt::Flipped => "the switch".into(),
        }
    }
}

/// Watches a controller's apply from the data plane: when it invalidated
/// the inactive slot and when it flipped the active one (from the start);
/// kills it at `at` (`None`: lets it finish). Returns (write begun,
/// flipped, killed); a point that did not come before the controller
/// finished is `None`.
fn watch(
    child: &mut Child,
    iface: &str,
    at: Option<KillAt>,
) -> (Option<Duration>, Option<Duration>, bool) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    let maps = dataplane::open_maps(iface).unwrap();
    let (old_slot, old) = maps.active_slot().unwrap();
    let (mut begun, mut flipped) = (None, None);
    loop {
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        assert!(Instant::now() < deadline, "the apply did not finish");
        let now = start.elapsed();
        if begun.is_none() {
            let next = maps.slot_config.get(&(1 - old_slot), 0).unwrap();
            if next.flags == 0 && next.version > old.version {
                begun = Some(now);
            }
        }
        if flipped.is_none() && maps.active.get(&0, 0).unwrap() & 1 != old_slot {
            flipped = Some(now);
        }
        if exited {
            return (begun, flipped, false);
        }
        // Fine enough for a write of 20,000 entries; a tighter loop would
        // take a core from the controller.
        std::thread::sleep(Duration::from_micros(100));
        let reached = match at {
            None => false,
            Some(KillAt::After(d)) => now >= d,
            Some(KillAt::WriteBegun(d)) => begun.is_some_and(|b| now >= b + d),
            Some(KillAt::Deleting(k)) | Some(KillAt::Inserting(k)) => {
                let key = PolicyKey {
                    slot: (1 - old_slot) as u8,
                    ..k
                };
                let present = maps.policy.get(&key, 0).is_ok();
                present == matches!(at, Some(KillAt::Inserting(_)))
            }
            Some(KillAt::Flipped) => flipped.is_some(),
        };
        if reached {
            let _ = child.kill();
            let _ = child.wait();
            return (begun, flipped, true);
        }
    }
}

#[test]
fn sigkill_mid_apply_leaves_old_or_new_policy_whole() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice", "bob"])).expect("mesh");
    let (gw, alice, bob) = (&mesh.gateway, mesh.host("alice"), mesh.host("bob"));
    let dir = TempDir::create(std::env::temp_dir().join(format!("wgbpf-kill-{}", mesh.run_id())));
    let _unload = Unload(gw);
    let key = mesh.private_key_file(gw);
    let files: Vec<String> = [File::A, File::B, File::C]
        .iter()
        .map(|f| {
            let p = dir.0.join(format!("{f:?}.toml"));
            std::fs::write(&p, mesh_text(&mesh, &key, *f)).unwrap();
            p.to_str().unwrap().to_string()
        })
        .collect();
    let path = |f: File| files[f.index()].as_str();
    let _echo: Vec<_> = [FLIP_PORT, BOTH_PORT, NONE_PORT]
        .iter()
        .map(|p| udp_echo(gw, *p).unwrap())
        .collect();
    let load = |f: File| -> Duration {
        let t = Instant::now();
        let (ok, _, err) = wgbpf(gw, &["load", "-c", path(f)]);
        assert!(ok, "load {f:?}: {err}");
        t.elapsed()
    };
    let converged = |f: File, how: &str| {
        let (dp, wg) = audit(gw, path(f));
        assert!(dp.is_empty() && wg.is_empty(), "{how} {f:?}: {dp:?} {wg:?}");
    };

    let first = load(File::A);
    converged(File::A, "first load");
    assert_eq!(probe(gw, alice, bob), Seen::expected(File::A), "first load");
    let spawn = |f: File| {
        wgbpf_command(gw)
            .args(["load", "-c", path(f)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Each file's policy entries as enforced (to tell a slot written half
    // way from one holding a file).
    let mut entries: Vec<Entries> = vec![slots(&gw.wg_if).0 .2];
    for f in [File::B, File::C] {
        load(f);
        converged(f, "uninterrupted load");
        entries.push(slots(&gw.wg_if).0 .2);
    }
    assert!(entries[0] != entries[1] && entries[1] != entries[2] && entries[2] != entries[0]);
    // An uninterrupted apply (C to A: a whole slot rewritten), watched:
    // where the write begins and where the switch happens.
    let t = Instant::now();
    let mut child = spawn(File::A);
    let (begun, flipped, _) = watch(&mut child, &gw.wg_if, None);
    assert!(child.wait().unwrap().success());
    let full = t.elapsed();
    let (begun, flipped) = (begun.expect("write seen"), flipped.expect("flip seen"));
    converged(File::A, "uninterrupted load");
    eprintln!(
        "first apply (10,000 peers and rules): {first:?}; C to A: {full:?}, the write \
         from {begun:?} to the switch at {flipped:?}; {} policy entries",
        entries[0].len()
    );

    // The first entry a write of `target` over `held` deletes, and the
    // first new one it inserts (it deletes, then inserts, in key order).
    let first_deleted = |held: File, target: File| -> PolicyKey {
        *entries[held.index()]
            .keys()
            .find(|k| !entries[target.index()].contains_key(k))
            .unwrap()
    };
    // (A key the slot lacks: one it holds with another value is there
    // before the write.)
    let first_inserted = |target: File, held: File| -> PolicyKey {
        *entries[target.index()]
            .keys()
            .find(|k| !entries[held.index()].contains_key(k))
            .unwrap()
    };
    // Round r writes the file after the current one into a slot holding
    // the one after that: B over C, C over A, A over B, B over C, ...
    let points = [
        KillAt::After(begun.mul_f64(0.3)),
        KillAt::WriteBegun(Duration::ZERO),
        KillAt::Deleting(first_deleted(File::B, File::A)),
        KillAt::Inserting(first_inserted(File::B, File::C)),
        KillAt::Flipped,
    ];
    let mut current = File::A;
    let mut outcomes = Vec::new();
    let mut partial = 0;
    for (round, at) in points.iter().enumerate() {
        let target = current.next();
        let ((_, old_version, _), _) = slots(&gw.wg_if);
        let mut child = spawn(target);
        let (_, _, killed) = watch(&mut child, &gw.wg_if, Some(*at));
        let ((valid, version, _), (next_valid, next_entries)) = slots(&gw.wg_if);
        assert!(
            valid,
            "round {round} ({at:?}): the active slot is not valid"
        );

        // The version says which; the audit of that file says its policy
        // is enforced whole, programs attached.
        let enforced = if version == old_version {
            current
        } else {
            assert!(
                version > old_version,
                "round {round}: the version went back"
            );
            target
        };
        let (dp, _) = audit(gw, path(enforced));
        assert!(
            dp.is_empty(),
            "round {round} ({at:?}): version {version} but {enforced:?} is not enforced: {dp:?}"
        );
        // What the tunnel does agrees (a mixture, or nothing, differs).
        assert_eq!(
            probe(gw, alice, bob),
            Seen::expected(enforced),
            "round {round} ({at:?}): the probes disagree with {enforced:?}"
        );
        // The inactive slot: half written when it holds neither the file
        // it held before (the one after the target) nor the target.
        let half = !next_valid
            && next_entries != entries[target.index()]
            && next_entries != entries[target.next().index()];
        partial += usize::from(killed && half);
        let as_in = |f: File| {
            next_entries
                .iter()
                .filter(|(k, v)| entries[f.index()].get(*k) == Some(v))
                .count()
        };
        outcomes.push(format!(
            "{}: killed={killed} enforced={} inactive slot valid={next_valid} \
             half written={half}: of {} policy entries {} as the target has them, {} as the \
             file it held before",
            at.label(),
            if enforced == current { "old" } else { "new" },
            next_entries.len(),
            as_in(target),
            as_in(target.next()),
        ));

        // The next apply converges to the file.
        if round + 1 == points.len() {
            converge_with_run(gw, path(target), &dir.0);
        } else {
            load(target);
        }
        converged(target, "after the kill");
        current = target;
    }
    let report = outcomes.join("\n");
    eprintln!("kill points:\n{report}");
    assert!(
        partial >= 2,
        "the kills at the first delete and the first insert did not both land in the \
         middle of the write:\n{report}"
    );
    assert!(
        outcomes.iter().any(|o| o.contains("enforced=new")),
        "no kill left the new policy:\n{report}"
    );
}

/// `wgbpf run` converges to `cfg` (audit equal), then stops on SIGTERM.
fn converge_with_run(gw: &Host, cfg: &str, dir: &Path) {
    let log = std::fs::File::create(dir.join("run.log")).unwrap();
    let mut daemon = wgbpf_command(gw)
        .args(["run", "-c", cfg, "--no-metrics"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while audit(gw, cfg) != (vec![], vec![]) {
        if let Ok(Some(s)) = daemon.try_wait() {
            panic!(
                "wgbpf run exited ({s}): {}",
                std::fs::read_to_string(dir.join("run.log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "wgbpf run did not converge");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(stop(&mut daemon, Duration::from_secs(30)).is_some_and(|s| s.success()));
}
