//! Which pinned programs are really attached to an interface, and attaching
//! a detached one again from its pin.
//!
//! A program can be detached while its pins stay: `tc filter del` removes
//! a clsact filter, `BPF_LINK_DETACH` (`bpftool link detach`) leaves a
//! pinned tcx link defunct. So attachment is checked by program id, not by
//! what is pinned ([`super::hooks::attachment`]).
//!
//! A detached program is attached again *as it is pinned*: the same program
//! with the same maps, so the policy, the flow table and the counters are
//! kept and the other direction is never touched. For tcx the new link is
//! pinned under a temporary name and renamed over the old (defunct) pin.
//! Nothing that still enforces is detached at any point, so re-attaching
//! adds no gap to the one the detach made.
//!
//! Used by the drift repair of `wgbpf run` and by `wgbpf load` when it
//! adopts the pinned data plane.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use aya::programs::{
    links::FdLink,
    tc::{self, SchedClassifier, TcAttachOptions},
    LinkOrder,
};

use super::{
    hooks::{attachment, AttachMode, Hook, HOOKS},
    pin_dir,
};

/// Why a pinned program was attached again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reattached {
    /// It was not attached at all.
    Detached,
    /// Another tcx program ran before it (and could end the chain with a
    /// pass): it is attached first again, then its old link released, so
    /// it never stops running in between.
    NotFirst,
}

/// Attaches again each pinned program of `iface` that is not really
/// attached, or not first on its tcx hook, as it is pinned (see the
/// module's comment), and returns those it attached, with why. tcx if tcx
/// links are pinned, clsact otherwise.
pub fn reattach_missing(iface: &str) -> Result<Vec<(&'static str, Reattached)>> {
    let mut done = Vec::new();
    reattach_missing_with(iface, |prog, _, why| done.push((prog, why)))?;
    Ok(done)
}

/// [`reattach_missing`], calling `each` with the program, the mode and why
/// as soon as one is attached again (so a later failure does not hide it).
pub fn reattach_missing_with(
    iface: &str,
    mut each: impl FnMut(&'static str, AttachMode, Reattached),
) -> Result<()> {
    let dir = pin_dir(iface);
    let states = attachment(iface)?;
    let any_link = HOOKS.iter().any(|h| dir.join(h.link_pin).exists());
    let mode = if any_link {
        AttachMode::Tcx
    } else {
        AttachMode::Clsact
    };
    for (hook, state) in HOOKS.iter().zip(states) {
        let why = match (state.attached(), state.first) {
            (true, true) => continue,
            (true, false) => Reattached::NotFirst,
            (false, _) => Reattached::Detached,
        };
        match why {
            Reattached::Detached => reattach(iface, &dir, hook, mode)?,
            // tcx refuses the same program twice on a hook: a new instance
            // goes first, then the old one is released.
            Reattached::NotFirst => {
                // With the settings the pinned programs run with.
                let settings = super::ProgramSettings::pinned(iface);
                super::replace::replace(iface, std::slice::from_ref(hook), mode, &settings)?
            }
        }
        each(hook.prog, mode, why);
    }
    Ok(())
}

/// Attaches the program pinned for `hook` again, in `mode`: the same
/// program and maps (policy, flows and counters stay). For tcx the new
/// link's pin replaces the old one by a rename, so a pin always exists.
fn reattach(iface: &str, dir: &Path, hook: &Hook, mode: AttachMode) -> Result<()> {
    let (prog_name, link_pin) = (hook.prog, hook.link_pin);
    let mut prog = SchedClassifier::from_pin(dir.join(prog_name))
        .with_context(|| format!("opening the pinned {prog_name}"))?;
    let (options, how) = match mode {
        AttachMode::Tcx => (TcAttachOptions::TcxOrder(LinkOrder::first()), "tcx"),
        AttachMode::Clsact => {
            // EEXIST is fine: the qdisc is still there.
            let _ = tc::qdisc_add_clsact(iface);
            (TcAttachOptions::Netlink(Default::default()), "clsact")
        }
    };
    let id = prog
        .attach_with_options(iface, hook.attach_type, options)
        .with_context(|| format!("attaching {prog_name} ({how})"))?;
    let link = prog.take_link(id)?;
    match mode {
        AttachMode::Tcx => {
            let link: FdLink = link.try_into().map_err(|e| anyhow!("{prog_name}: {e}"))?;
            let pin = dir.join(link_pin);
            // bpffs refuses dots in names.
            let tmp = dir.join(format!("{link_pin}_new"));
            let _ = std::fs::remove_file(&tmp);
            // Pinned, the link stays attached when this handle is dropped.
            link.pin(&tmp)
                .map_err(|e| anyhow!("pinning {}: {e}", tmp.display()))?;
            if std::fs::rename(&tmp, &pin).is_err() {
                // A bpffs without rename: drop the defunct pin first.
                let _ = std::fs::remove_file(&pin);
                std::fs::rename(&tmp, &pin)
                    .with_context(|| format!("renaming {} to {}", tmp.display(), pin.display()))?;
            }
        }
        // A netlink filter outlives the process; dropping the handle
        // would detach it.
        AttachMode::Clsact => std::mem::forget(link),
    }
    Ok(())
}
