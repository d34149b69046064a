//! Where the data plane's two programs hook into an interface, and where
//! they really are: by program id in the interface's tcx lists
//! (`BPF_PROG_QUERY`) and its clsact filters (rtnetlink `RTM_GETTFILTER`),
//! not by what is pinned. No subprocess: `tc` is not a runtime dependency.

use std::{ffi::CString, io, path::Path};

use anyhow::{Context, Result};
use aya::{
    programs::{tc::TcAttachType, ProgramInfo},
    util::KernelVersion,
};
use netlink_packet_core::{NetlinkMessage, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::{
    tc::{TcAttribute, TcFilterBpfOption, TcHandle, TcMessage, TcOption},
    RouteNetlinkMessage,
};
use serde::Serialize;
use wgbpf_common::names;

use super::pin_dir;
use crate::netlink::NlSocket;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// tcx links (kernel 6.6 and later), pinned.
    Tcx,
    /// clsact direct-action filters over netlink (any kernel).
    Clsact,
}

impl AttachMode {
    /// tcx where the kernel has it, clsact otherwise.
    pub fn best() -> Self {
        if KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)) {
            AttachMode::Tcx
        } else {
            AttachMode::Clsact
        }
    }
}

/// One direction of the data plane.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    /// The program's name, also its pin name.
    pub prog: &'static str,
    pub attach_type: TcAttachType,
    /// The pin name of its tcx link.
    pub link_pin: &'static str,
    /// "ingress" or "egress": the direction's name.
    pub direction: &'static str,
    /// The clsact parent's minor number for this direction.
    clsact_minor: u16,
}

/// The programs of both directions, and where they are pinned and
/// attached: the one list.
pub const HOOKS: [Hook; 2] = [
    Hook {
        prog: names::PROG_INGRESS,
        attach_type: TcAttachType::Ingress,
        link_pin: "link_ingress",
        direction: "ingress",
        clsact_minor: TcHandle::MIN_INGRESS,
    },
    Hook {
        prog: names::PROG_EGRESS,
        attach_type: TcAttachType::Egress,
        link_pin: "link_egress",
        direction: "egress",
        clsact_minor: TcHandle::MIN_EGRESS,
    },
];

/// Whether one pinned program is attached to `iface`, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookState {
    /// "ingress" or "egress".
    pub direction: &'static str,
    /// In the interface's tcx program list.
    pub tcx: bool,
    /// First in that list: no other tcx program runs before it (and could
    /// end the chain with a pass). Always true for clsact.
    pub first: bool,
    /// One of the interface's clsact filters.
    pub clsact: bool,
}

impl HookState {
    pub fn attached(&self) -> bool {
        self.tcx || self.clsact
    }
}

/// Where each pinned program of `iface` is really attached (ingress, then
/// egress). Errors when the programs are not pinned or cannot be read.
pub fn attachment(iface: &str) -> Result<[HookState; 2]> {
    let dir = pin_dir(iface);
    let mut out = HOOKS.map(|h| HookState {
        direction: h.direction,
        tcx: false,
        first: true,
        clsact: false,
    });
    for (state, hook) in out.iter_mut().zip(&HOOKS) {
        let id = pinned_prog_id(&dir.join(hook.prog))?;
        let tcx = tcx_prog_ids(iface, hook.attach_type)?;
        state.tcx = tcx.contains(&id);
        state.first = !state.tcx || tcx.first() == Some(&id);
        if !state.tcx {
            state.clsact = clsact_filters(iface, hook)?
                .iter()
                .any(|f| f.prog_id == Some(id));
        }
    }
    Ok(out)
}

/// The id of the program pinned at `path`.
pub(crate) fn pinned_prog_id(path: &Path) -> Result<u32> {
    Ok(ProgramInfo::from_pin(path)
        .with_context(|| format!("opening {}", path.display()))?
        .id())
}

fn ifindex(iface: &str) -> Result<u32> {
    let name = CString::new(iface)?;
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error()).context(format!("interface {iface}"));
    }
    Ok(ifindex)
}

/// Program ids in `iface`'s tcx list of one direction (`BPF_PROG_QUERY`),
/// in the order they run.
/// Only the ids: `SchedClassifier::query_tcx` also opens each program by
/// id, which needs CAP_SYS_ADMIN, and the daemon runs without it. Empty on
/// kernels without tcx.
fn tcx_prog_ids(iface: &str, hook: TcAttachType) -> Result<Vec<u32>> {
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_TCX_INGRESS: u32 = 46;
    const BPF_TCX_EGRESS: u32 = 47;
    let ifindex = ifindex(iface)?;
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
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            // No tcx in this kernel.
            Some(libc::EINVAL) => Ok(Vec::new()),
            _ => Err(e).context("BPF_PROG_QUERY (tcx)"),
        };
    }
    let mut cnt = [0u8; 4];
    cnt.copy_from_slice(&attr[24..28]);
    let n = (u32::from_ne_bytes(cnt) as usize).min(ids.len());
    Ok(ids[..n].to_vec())
}

/// One filter on a clsact hook, as the kernel lists it.
#[derive(Clone, Debug)]
pub(crate) struct ClsactFilter {
    /// The header as listed: index, parent, handle and `info` (priority
    /// and protocol), which is what deleting it needs.
    header: netlink_packet_route::tc::TcHeader,
    kind: Option<String>,
    /// A BPF filter's program id and name.
    pub prog_id: Option<u32>,
    pub prog_name: Option<String>,
}

fn filter_request(iface: &str, hook: &Hook) -> Result<TcMessage> {
    let mut m = TcMessage::default();
    m.header.index = ifindex(iface)? as i32;
    m.header.parent = TcHandle {
        major: u16::MAX,
        minor: hook.clsact_minor,
    };
    Ok(m)
}

/// `iface`'s filters on one clsact hook (`RTM_GETTFILTER` dump); empty when
/// the interface has no clsact qdisc.
pub(crate) fn clsact_filters(iface: &str, hook: &Hook) -> Result<Vec<ClsactFilter>> {
    let m = filter_request(iface, hook)?;
    let mut s = NlSocket::route().context("rtnetlink socket")?;
    let replies = match s.request(
        NetlinkMessage::from(RouteNetlinkMessage::GetTrafficFilter(m)),
        NLM_F_REQUEST | NLM_F_DUMP,
        true,
    ) {
        Ok(r) => r,
        // No clsact qdisc: no filters.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => {
            return Ok(Vec::new())
        }
        Err(e) => {
            return Err(e).context(format!("listing the {} filters of {iface}", hook.direction))
        }
    };
    let mut out = Vec::new();
    for r in replies.messages {
        let RouteNetlinkMessage::NewTrafficFilter(f) = r else {
            continue;
        };
        let mut filter = ClsactFilter {
            header: f.header.clone(),
            kind: None,
            prog_id: None,
            prog_name: None,
        };
        for a in &f.attributes {
            match a {
                TcAttribute::Kind(k) => filter.kind = Some(k.clone()),
                TcAttribute::Options(opts) => {
                    for o in opts {
                        match o {
                            TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => {
                                filter.prog_id = Some(*id)
                            }
                            TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => {
                                filter.prog_name = Some(n.clone())
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        // A dump lists each filter's chain head too (no options): skip it.
        if filter.prog_id.is_some() {
            out.push(filter);
        }
    }
    Ok(out)
}

/// Deletes our clsact filters (found by program name) from one hook of
/// `iface` (`RTM_DELTFILTER`). Best effort: `wgbpf unload` removes the
/// pins whatever happens here.
pub(crate) fn remove_clsact_filters(iface: &str, hook: &Hook) {
    remove_clsact_filters_where(iface, hook, |f| {
        f.prog_name
            .as_deref()
            .is_some_and(|n| n.starts_with(hook.prog))
    })
}

/// Deletes our clsact filters (by program name) that do not run the
/// program pinned for their direction: left by a data plane whose pins
/// were removed, they would go on judging with that data plane's maps.
pub(crate) fn remove_stale_clsact_filters(iface: &str) -> Result<()> {
    let dir = pin_dir(iface);
    for hook in &HOOKS {
        let id = pinned_prog_id(&dir.join(hook.prog))?;
        remove_clsact_filters_where(iface, hook, |f| {
            f.prog_id != Some(id)
                && f.prog_name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(hook.prog))
        });
    }
    Ok(())
}

/// Deletes the clsact filter of program `id` from one hook of `iface`.
pub(crate) fn remove_clsact_filter_of(iface: &str, hook: &Hook, id: u32) {
    remove_clsact_filters_where(iface, hook, |f| f.prog_id == Some(id))
}

fn remove_clsact_filters_where(iface: &str, hook: &Hook, ours: impl Fn(&ClsactFilter) -> bool) {
    let Ok(filters) = clsact_filters(iface, hook) else {
        return;
    };
    let Ok(mut s) = NlSocket::route() else {
        return;
    };
    for f in filters {
        if !ours(&f) {
            continue;
        }
        let mut m = TcMessage::default();
        m.header = f.header.clone();
        if let Some(k) = f.kind {
            m.attributes.push(TcAttribute::Kind(k));
        }
        let _ = s.request(
            NetlinkMessage::from(RouteNetlinkMessage::DelTrafficFilter(m)),
            NLM_F_REQUEST | NLM_F_ACK,
            false,
        );
    }
}
