//! wgbpf's programs run first on the interface's tcx hooks: a program that
//! accepts everything and ends the chain (`TCX_PASS`), attached before
//! wgbpf loads, must not let denied packets through; one attached ahead of
//! wgbpf later is reported by `wgbpf audit` and put behind wgbpf again by
//! `wgbpf load` (the daemon's drift repair does the same).

mod common;

use std::{net::IpAddr, path::PathBuf, time::Duration};

use aya::programs::{
    links::FdLink,
    tc::{SchedClassifier, TcAttachOptions, TcAttachType},
    LinkOrder,
};
use common::{in_netns, wgbpf_code as wgbpf, TempDir, Unload};
use testbed::{ping, Testbed, TestbedSpec};
use wgbpf::dataplane::test_programs::{TC_PASS, TC_PASS_OBJECT};

/// alice may reach the gateway over TCP only: her pings are denied.
const POLICY: &str = "[policy]\n\n[[policy.rule]]\naction = \"accept\"\nfrom = [\"alice\"]\n\
                      to = [\"gateway\"]\nproto = \"tcp\"\nports = [\"22\"]\n";

/// Attaches the pass-everything program first on both of `iface`'s tcx
/// hooks in `netns`, its links pinned under `pin` (so they stay after the
/// loader is gone).
fn attach_pass_first(netns: &str, iface: &str, pin: PathBuf) {
    let iface = iface.to_string();
    in_netns(netns, move || {
        let mut ebpf = aya::Ebpf::load(TC_PASS_OBJECT).map_err(std::io::Error::other)?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(TC_PASS)
            .expect("the test program")
            .try_into()
            .map_err(std::io::Error::other)?;
        prog.load().map_err(std::io::Error::other)?;
        std::fs::create_dir_all(&pin)?;
        for (hook, name) in [
            (TcAttachType::Ingress, "ingress"),
            (TcAttachType::Egress, "egress"),
        ] {
            let id = prog
                .attach_with_options(&iface, hook, TcAttachOptions::TcxOrder(LinkOrder::first()))
                .map_err(std::io::Error::other)?;
            let link: FdLink = prog
                .take_link(id)
                .map_err(std::io::Error::other)?
                .try_into()
                .map_err(std::io::Error::other)?;
            link.pin(pin.join(name)).map_err(std::io::Error::other)?;
        }
        Ok(())
    })
    .expect("attaching the pass program");
}

#[test]
fn wgbpf_runs_before_other_tcx_programs() {
    if aya::util::KernelVersion::current().is_ok_and(|v| v < aya::util::KernelVersion::new(6, 6, 0))
    {
        eprintln!("no tcx on this kernel: skipped");
        return;
    }
    let mesh = Testbed::up(&TestbedSpec::new(&["alice"])).expect("mesh");
    let (gw, alice) = (&mesh.gateway, mesh.host("alice"));
    let dir = std::env::temp_dir().join(format!("wgbpf-order-{}", mesh.run_id()));
    let _dir = TempDir::create(dir.clone());
    let pins = PathBuf::from(format!("/sys/fs/bpf/wgbpf-test-order-{}", mesh.run_id()));
    std::fs::create_dir_all(&pins).unwrap();
    let _pins = TempDir(pins.clone());
    let _unload = Unload(gw);
    let cfg = dir.join("mesh.toml");
    std::fs::write(&cfg, testbed::gateway_mesh_file(&mesh, POLICY)).unwrap();
    let cfg = cfg.to_str().unwrap();
    let gw_v4 = IpAddr::V4(gw.tunnel_v4);
    let wait = Duration::from_millis(800);

    // Without any filter alice's ping is answered; with another program
    // on the hook already, wgbpf still decides.
    assert!(ping(alice, gw_v4, wait).unwrap(), "no tunnel");
    attach_pass_first(&gw.netns, &gw.wg_if, pins.join("first"));
    let (code, _, err) = wgbpf(gw, &["load", "-c", cfg, "--attach", "tcx"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !ping(alice, gw_v4, wait).unwrap(),
        "a program attached before wgbpf let a denied ping through"
    );

    // Another program put ahead of wgbpf afterwards: audit says so, load
    // puts wgbpf first again, without detaching it in between.
    attach_pass_first(&gw.netns, &gw.wg_if, pins.join("later"));
    assert!(
        ping(alice, gw_v4, wait).unwrap(),
        "the test program is not ahead"
    );
    let (code, out, _) = wgbpf(gw, &["audit", "-c", cfg]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not first"), "{out}");
    let (code, out, err) = wgbpf(gw, &["load", "-c", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("first again"), "{out}");
    assert!(
        !ping(alice, gw_v4, wait).unwrap(),
        "wgbpf is not first again"
    );
    let (code, out, _) = wgbpf(gw, &["audit", "-c", cfg]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn programs_of_another_build_are_replaced_with_their_maps() {
    let mesh = Testbed::up(&TestbedSpec::new(&["alice"])).expect("mesh");
    let (gw, alice) = (&mesh.gateway, mesh.host("alice"));
    let dir = std::env::temp_dir().join(format!("wgbpf-upgrade-{}", mesh.run_id()));
    let _dir = TempDir::create(dir.clone());
    let _unload = Unload(gw);
    let cfg = dir.join("mesh.toml");
    std::fs::write(&cfg, testbed::gateway_mesh_file(&mesh, POLICY)).unwrap();
    let cfg = cfg.to_str().unwrap();
    let gw_v4 = IpAddr::V4(gw.tunnel_v4);
    let pins = wgbpf::dataplane::pin_dir(&gw.wg_if);
    let prog_id = || {
        aya::programs::ProgramInfo::from_pin(pins.join("wgbpf_ingress"))
            .unwrap()
            .id()
    };
    let denied = || {
        common::counter(
            &common::counters(gw, cfg),
            "alice",
            "ingress",
            "denied_packets",
        )
    };

    let (code, _, err) = wgbpf(gw, &["load", "-c", cfg]);
    assert_eq!(code, 0, "{err}");
    let this = wgbpf::dataplane::replace::build_id();
    assert_eq!(
        wgbpf::dataplane::replace::pinned_build(&gw.wg_if),
        Some(this.clone())
    );
    for _ in 0..3 {
        assert!(!ping(alice, gw_v4, Duration::from_millis(300)).unwrap());
    }
    let before = denied();
    assert!(before >= 3, "{before}");
    let old_id = prog_id();

    // As if an older wgbpf had pinned them.
    let old = "0123456789abcdef";
    std::fs::rename(
        pins.join(format!("build_{this}")),
        pins.join(format!("build_{old}")),
    )
    .unwrap();
    let (code, out, _) = wgbpf(gw, &["show", "-i", &gw.wg_if]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("wgbpf build: {old}, not this binary's")),
        "{out}"
    );

    let (code, out, err) = wgbpf(gw, &["load", "-c", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("another build's ({old})")), "{out}");
    assert_ne!(prog_id(), old_id, "the old program still enforces");
    assert_eq!(
        wgbpf::dataplane::replace::pinned_build(&gw.wg_if),
        Some(this)
    );
    // The maps came along: the counters continue, the policy holds.
    assert!(denied() >= before, "counters lost");
    assert!(!ping(alice, gw_v4, Duration::from_millis(300)).unwrap());
    assert!(denied() > before);
    let (code, out, _) = wgbpf(gw, &["audit", "-c", cfg]);
    assert_eq!(code, 0, "{out}");
    // The same build again: nothing replaced.
    let id = prog_id();
    let (code, out, _) = wgbpf(gw, &["load", "-c", cfg]);
    assert_eq!(code, 0);
    assert!(!out.contains("another build"), "{out}");
    assert_eq!(prog_id(), id);
}
