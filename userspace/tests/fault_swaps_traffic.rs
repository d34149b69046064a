//! 1,000 policy swaps while real traffic flows between two pairs of peers
//! through the gateway (wireguard-go in network namespaces): alice → bob
//! and carol → dave, UDP probes carrying a sequence number, about one a
//! millisecond each. Swap k flips whether pair k % 2 may talk. The swaps
//! are `Maps::apply` on the pinned data plane (what `wgbpf load` and the
//! daemon run), from the test, under the interface lock, so that a
//! thousand fit in seconds.
//!
//! **Wrong version, defined.** The gateway judges a pair's probes in the
//! order they were sent (one UDP flow; wireguard-go keeps a peer's packets
//! in order), and counts each at ingress on the sender's counter index.
//! So the sender's ingress count (allowed + denied) read just before an
//! apply begins (`jb`) and just after it returns (`ja`) places every probe:
//! a probe judged at ingress as number `j` (its sequence number plus the
//! count before the senders started) with `j < jb` was judged before the
//! swap began and must have the old verdict; with `j >= ja`, after it
//! returned, the new one. Probes in `[jb, ja)` crossed the swap and may
//! have either, but in order: some old ones, then only new ones (never
//! new then old again). A probe outside that rule is one judged by the
//! wrong version; the test requires none. The receivers say what passed
//! (received or not); the counters must agree with them exactly: every
//! probe judged once at the sender's ingress, the receiver's egress
//! allowed count equal to what it received, the denied counts equal to
//! what it did not.

mod common;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use common::{in_netns, wgbpf, TempDir, Unload};
use rand::Rng;
use testbed::{gateway_mesh_file, Host, Testbed, TestbedSpec};
use wgbpf::{
    dataplane::{self, attach::AttachMode, counters::PeerTotals, lock::InterfaceLock, Maps},
    plan::{EnforcementPlan, Settings},
    policy::compile::Compiled,
    wg::BackendChoice,
};

const SWAPS: usize = 1_000;
const PORT: u16 = 6000;
/// (sender, receiver) of each pair.
const PAIRS: [(&str, &str); 2] = [("alice", "bob"), ("carol", "dave")];

fn policy(allowed: [bool; 2]) -> String {
    let mut s = String::from("[policy]\n\n");
    for (i, (from, to)) in PAIRS.iter().enumerate() {
        if allowed[i] {
            s += &format!(
                "[[policy.rule]]\naction = \"accept\"\nfrom = [\"{from}\"]\nto = [\"{to}\"]\n\
                 proto = \"udp\"\nports = [{PORT}]\n\n"
            );
        }
    }
    s
}

/// A receiver: the sequence numbers that arrived.
struct Receiver {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<u64>>>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(host: &Host) -> Receiver {
        let socket = in_netns(&host.netns, || {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT))?;
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
            Ok(s)
        })
        .unwrap();
        let stop: Arc<AtomicBool> = Default::default();
        let seen: Arc<Mutex<Vec<u64>>> = Default::default();
        let (s, v) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    if n >= 8 {
                        let seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
                        v.lock().unwrap().push(seq);
                    }
                }
            }
        });
        Receiver {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<u64> {
        self.halt();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A sender: probes numbered 0, 1, 2, ... about one a millisecond.
struct Sender {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    fn start(from: &Host, to: Ipv4Addr) -> Sender {
        let socket = in_netns(&from.netns, move || {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            s.connect((to, PORT))?;
            Ok(s)
        })
        .unwrap();
        let stop: Arc<AtomicBool> = Default::default();
        let sent: Arc<AtomicU64> = Default::default();
        let (s, n) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let mut seq = 0u64;
            let mut payload = [0u8; 32];
            while !s.load(Ordering::Relaxed) {
                payload[..8].copy_from_slice(&seq.to_le_bytes());
                // A refused send (an ICMP error met earlier) sent nothing:
                // the same number goes again.
                if socket.send(&payload).is_ok() {
                    seq += 1;
                    n.store(seq, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Sender {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.halt();
        self.sent.load(Ordering::Relaxed)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.halt();
    }
}

fn totals(maps: &Maps, idx: u32) -> PeerTotals {
    PeerTotals::sum(maps.peer_counters.get(&idx, 0).unwrap().iter().copied())
}

fn judged(t: &PeerTotals) -> u64 {
    t.ingress.allowed_packets + t.ingress.denied_packets + t.ingress.audited_packets
}

/// One swap of one pair: the sender's ingress count before the apply began
/// and after it returned, and whether the pair may talk after it.
#[derive(Clone, Copy)]
struct Swap {
    before: u64,
    after: u64,
    allowed: bool,
}

/// Probes judged by the wrong version (see the module comment), and how
/// many crossed a swap.
fn wrong_version(
    base: u64,
    sent: u64,
    received: &[bool],
    initially: bool,
    swaps: &[Swap],
) -> (Vec<String>, u64) {
    let mut wrong = Vec::new();
    let mut crossing = 0;
    let mut state = initially;
    let mut next = 0;
    // Within the current crossing window: the new verdict was seen.
    let mut new_seen = false;
    for seq in 0..sent {
        let j = base + seq;
        while next < swaps.len() && j >= swaps[next].after {
            state = swaps[next].allowed;
            next += 1;
            new_seen = false;
        }
        let got = received[seq as usize];
        if next < swaps.len() && j >= swaps[next].before {
            // Crossing swap `next`: old (`state`) then new, in order.
            crossing += 1;
            let new = swaps[next].allowed;
            if got == new && got != state {
                new_seen = true;
            } else if got == state && got != new && new_seen {
                wrong.push(format!("probe {seq}: old verdict after the new one"));
            }
        } else if got != state {
            wrong.push(format!(
                "probe {seq} (judged {j}): {} but the policy said {}",
                if got { "received" } else { "dropped" },
                if state { "allow" } else { "deny" }
            ));
        }
    }
    (wrong, crossing)
}

#[test]
fn thousand_swaps_under_traffic_judge_no_packet_by_the_wrong_version() {
    let spec = TestbedSpec::new(&["alice", "bob", "carol", "dave"]);
    let mesh = Testbed::up(&spec).expect("mesh");
    let gw = &mesh.gateway;
    let dir = TempDir::create(std::env::temp_dir().join(format!("wgbpf-swaps-{}", mesh.run_id())));
    let _unload = Unload(gw);

    // The data plane attached and pinned by the real binary, both pairs
    // allowed.
    let mut allowed = [true, true];
    let cfg = dir.0.join("mesh.toml");
    std::fs::write(&cfg, gateway_mesh_file(&mesh, &policy(allowed))).unwrap();
    let (ok, _, err) = wgbpf(gw, &["load", "-c", cfg.to_str().unwrap()]);
    assert!(ok, "{err}");

    let _lock = InterfaceLock::acquire(&gw.wg_if, Duration::from_secs(30)).unwrap();
    let mut maps = dataplane::open_loaded(&gw.wg_if).unwrap();
    // The four policies, compiled with the pinned counter indexes.
    let settings = Settings::new(AttachMode::best(), BackendChoice::Auto);
    let mut compiled: BTreeMap<[bool; 2], Compiled> = BTreeMap::new();
    let mut index = BTreeMap::new();
    for state in [[false, false], [false, true], [true, false], [true, true]] {
        let text = gateway_mesh_file(&mesh, &policy(state));
        let plan =
            EnforcementPlan::build(wgbpf::mesh::parse("swap.toml", &text).unwrap(), settings)
                .unwrap();
        let slots = maps.plan_counter_indexes(&plan.peer_names()).unwrap();
        index = slots.indexes.clone();
        compiled.insert(state, plan.compiled_for(&slots));
    }
    let idx = |name: &str| index[name];

    let receivers: Vec<Receiver> = PAIRS
        .iter()
        .map(|(_, to)| Receiver::start(mesh.host(to)))
        .collect();
    let start_totals: Vec<(PeerTotals, PeerTotals)> = PAIRS
        .iter()
        .map(|(from, to)| (totals(&maps, idx(from)), totals(&maps, idx(to))))
        .collect();
    let senders: Vec<Sender> = PAIRS
        .iter()
        .map(|(from, to)| Sender::start(mesh.host(from), mesh.host(to).tunnel_v4))
        .collect();

    let mut swaps: [Vec<Swap>; 2] = [Vec::new(), Vec::new()];
    let mut rng = rand::thread_rng();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    for k in 0..SWAPS {
        let pair = k % 2;
        allowed[pair] = !allowed[pair];
        let sender = idx(PAIRS[pair].0);
        let before = judged(&totals(&maps, sender));
        let report = maps.apply(&compiled[&allowed]).unwrap();
        let after = judged(&totals(&maps, sender));
        assert!(report.changed);
        swaps[pair].push(Swap {
            before,
            after,
            allowed: allowed[pair],
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(3..15)));
    }
    let swapping = started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let sent: Vec<u64> = senders.into_iter().map(Sender::finish).collect();
    // Let the last probes through the tunnels.
    std::thread::sleep(Duration::from_millis(500));
    let seen: Vec<Vec<u64>> = receivers.into_iter().map(Receiver::finish).collect();

    let mut summary = Vec::new();
    for (p, (from, to)) in PAIRS.iter().enumerate() {
        let n = sent[p];
        let mut received = vec![false; n as usize];
        for &s in &seen[p] {
            assert!(s < n, "{from}: probe {s} was never sent");
            assert!(!received[s as usize], "{from}: probe {s} arrived twice");
            received[s as usize] = true;
        }
        let got = received.iter().filter(|r| **r).count() as u64;
        // The counters agree with the receivers, exactly.
        let (s0, r0) = start_totals[p];
        let (s1, r1) = (totals(&maps, idx(from)), totals(&maps, idx(to)));
        assert_eq!(
            judged(&s1) - judged(&s0),
            n,
            "{from}: probes judged at ingress"
        );
        assert_eq!(
            r1.egress.allowed_packets - r0.egress.allowed_packets,
            got,
            "{to}: allowed at egress vs received"
        );
        assert_eq!(
            (s1.ingress.denied_packets - s0.ingress.denied_packets)
                + (r1.egress.denied_packets - r0.egress.denied_packets),
            n - got,
            "{from} → {to}: denied vs not received"
        );
        let (wrong, crossing) = wrong_version(judged(&s0), n, &received, true, &swaps[p]);
        assert!(
            wrong.is_empty(),
            "{from} → {to}: {} probes judged by the wrong version:\n{}",
            wrong.len(),
            wrong
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        // The check has teeth: the same probes against the swaps read the
        // wrong way round (each swap's verdict inverted) are mostly wrong.
        let inverted: Vec<Swap> = swaps[p]
            .iter()
            .map(|s| Swap {
                allowed: !s.allowed,
                ..*s
            })
            .collect();
        let (wrong, _) = wrong_version(judged(&s0), n, &received, false, &inverted);
        assert!(
            wrong.len() as u64 > (n - crossing) / 2,
            "{from}: the check is blind"
        );
        summary.push(format!(
            "{from} → {to}: {n} probes, {got} received, {crossing} crossed a swap, {} swaps",
            swaps[p].len()
        ));
    }
    eprintln!("{SWAPS} swaps in {swapping:?}; {}", summary.join("; "));
}
