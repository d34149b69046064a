//! Which pinned programs are really attached to an interface, and attaching
//! a detached one again from its pin.
//!
//! A program can be detached while its pins stay: `tc filter del` removes
//! a clsact filter, `BPF_LINK_DETACH` (`bpftool link detach`) leaves a
//! pinned tcx link defunct. So attachment is checked by program id, not by
//! what is pinned: in the interface's tcx program list (tcx) or among its
//! `tc` filters (clsact).
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

use std::{collections::BTreeSet, ffi::CString, path::Path};

use anyhow::{anyhow, Context, Result};
use aya::programs::{
    links::FdLink,
    tc::{self, SchedClassifier, TcAttachOptions, TcAttachType},
    LinkOrder, ProgramInfo,
};

use super::{
    attach::{clsact_filters, AttachMode, Hook, HOOKS},
    pin_dir,
};

/// Whether one pinned program is attached to `iface`, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookState {
    /// "ingress" or "egress".
    pub direction: &'static str,
    /// In the interface's tcx program list.
    pub tcx: bool,
    /// One of the interface's clsact filters.
    pub clsact: bool,
}

impl HookState {
    pub fn attached(&self) -> bool {
        self.tcx || self.clsact
    }
}

/// Where each pinned program of `iface` is really attached (ingress, then
/// egress), checked by program id against the interface's tcx lists and
/// clsact filters. Errors when the programs are not pinned or cannot be
/// read.
pub fn attachment(iface: &str) -> Result<[HookState; 2]> {
    let dir = pin_dir(iface);
    let mut out = HOOKS.map(|h| HookState {
        direction: h.direction,
        tcx: false,
        clsact: false,
    });
    for (state, hook) in out.iter_mut().zip(&HOOKS) {
        let id = pinned_prog_id(&dir.join(hook.prog))?;
        state.tcx = tcx_prog_ids(iface, hook.attach_type)?.contains(&id);
        if !state.tcx {
            state.clsact = clsact_prog_ids(iface, hook.direction)?.contains(&u64::from(id));
        }
    }
    Ok(out)
}

/// Attaches again each pinned program of `iface` that is not really
/// attached, as it is pinned (see the module's comment), and returns the
/// names of those it attached. tcx if tcx links are pinned, clsact
/// otherwise.
pub fn reattach_missing(iface: &str) -> Result<Vec<&'static str>> {
    let mut done = Vec::new();
    reattach_missing_with(iface, |prog, _| done.push(prog))?;
    Ok(done)
}

/// [`reattach_missing`], calling `each` with the program and the mode as
/// soon as one is attached again (so a later failure does not hide it).
pub fn reattach_missing_with(
    iface: &str,
    mut each: impl FnMut(&'static str, AttachMode),
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
        if state.attached() {
            continue;
        }
        reattach(iface, &dir, hook, mode)?;
        each(hook.prog, mode);
    }
    Ok(())
}

/// The id of the program pinned at `path`.
fn pinned_prog_id(path: &Path) -> Result<u32> {
    Ok(ProgramInfo::from_pin(path)
        .with_context(|| format!("opening {}", path.display()))?
        .id())
}

/// Program ids in `iface`'s tcx list of one direction (`BPF_PROG_QUERY`).
/// Only the ids: `SchedClassifier::query_tcx` also opens each program by
/// id, which needs CAP_SYS_ADMIN, and the daemon runs without it. Empty on
/// kernels without tcx.
fn tcx_prog_ids(iface: &str, hook: TcAttachType) -> Result<BTreeSet<u32>> {
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_TCX_INGRESS: u32 = 46;
    const BPF_TCX_EGRESS: u32 = 47;
    let name = CString::new(iface)?;
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(std::io::Error::last_os_error()).context(format!("interface {iface}"));
    }
    let mut ids = [0u32; 64];
    // union bpf_attr, `query`: target_ifindex (u32) at 0, attach_type (u32)
    // at 4, prog_ids (u64 pointer) at 16, prog_cnt (u32) at 24.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&ifindex.to_ne_bytes());
    let t = if hook == TcAttachType::Ingress {
        BPF_TCX_INGRESS
    } else {
        BPF_TCX_EGRESS
    };
    attr[4..8].copy_from_slice(&t.to_ne_bytes());
    attr[16..24].copy_from_slice(&(ids.as_mut_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&(ids.len() as u32).to_ne_bytes());
    // SAFETY: attr is a zeroed bpf_attr with a pointer to `ids` and its
    // length; the kernel writes at most that many ids.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            // No tcx in this kernel.
            Some(libc::EINVAL) => Ok(BTreeSet::new()),
            _ => Err(e).context("BPF_PROG_QUERY (tcx)"),
        };
    }
    let mut cnt = [0u8; 4];
    cnt.copy_from_slice(&attr[24..28]);
    let n = (u32::from_ne_bytes(cnt) as usize).min(ids.len());
    Ok(ids[..n].iter().copied().collect())
}

/// Program ids of `iface`'s clsact filters in one direction (`tc -j filter
/// show`); empty when it lists none or there is no clsact qdisc.
fn clsact_prog_ids(iface: &str, direction: &str) -> Result<BTreeSet<u64>> {
    Ok(clsact_filters(iface, direction)?
        .iter()
        .filter_map(|f| f["options"]["prog"]["id"].as_u64())
        .collect())
}

/// Attaches the program pinned for `hook` again, in `mode`: the same
/// program and maps (policy, flows and counters stay). For tcx the new
/// link's pin replaces the old one by a rename, so a pin always exists.
fn reattach(iface: &str, dir: &Path, hook: &Hook, mode: AttachMode) -> Result<()> {
    let (prog_name, link_pin) = (hook.prog, hook.link_pin);
    let mut prog = SchedClassifier::from_pin(dir.join(prog_name))
        .with_context(|| format!("opening the pinned {prog_name}"))?;
    let (options, how) = match mode {
        AttachMode::Tcx => (TcAttachOptions::TcxOrder(LinkOrder::default()), "tcx"),
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
