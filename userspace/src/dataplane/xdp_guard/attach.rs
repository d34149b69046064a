//! Attaching the guard to an interface (native, else generic), pinning,
//! adoption and re-attachment, removal, and what is pinned where.

use std::path::Path;

use aya::programs::{
    links::{FdLink, PinnedLink},
    ProgramInfo, Xdp, XdpMode,
};
use serde::Serialize;
use wgbpf_common::xdp::names;

use super::{pin_err, GuardConfig, GuardError, GuardLoadOptions, GuardMaps, GuardStats, XdpGuard};

/// The interfaces with a guard pinned under `root` (normally [`super::PIN_ROOT`]),
/// sorted: what `unload` removes, and what a reload compares with the
/// interfaces it wants guarded.
pub fn pinned_interfaces(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| pinned_mode(&e.path()).is_some())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort();
    out
}

/// How the guard runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardMode {
    /// In the driver, before any socket buffer exists.
    Native,
    /// Generic XDP in the network stack (drivers without XDP support).
    Generic,
}

impl GuardMode {
    fn link_pin(self) -> &'static str {
        match self {
            GuardMode::Native => "link_native",
            GuardMode::Generic => "link_generic",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GuardMode::Native => "native",
            GuardMode::Generic => "generic",
        }
    }
}

/// The result of [`install`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuardInstalled {
    pub iface: String,
    pub mode: GuardMode,
    /// A pinned guard was found and kept (its counters and buckets too).
    pub adopted: bool,
    /// The adopted guard was pinned but no longer attached, and was
    /// attached again.
    pub reattached: bool,
}

/// What is pinned in `dir`: the mode of its link, if any.
pub fn pinned_mode(dir: &Path) -> Option<GuardMode> {
    [GuardMode::Native, GuardMode::Generic]
        .into_iter()
        .find(|m| dir.join(m.link_pin()).exists())
}

/// Attaches the guard to `iface` with `cfg`, pinned in `dir` (normally
/// [`super::pin_dir`]`(iface)`), or adopts the guard pinned there: its settings are
/// rewritten in place, and if it was detached (its interface's XDP program
/// is another, or none) it is attached again in its mode. A fresh guard
/// tries native mode first and falls back to generic mode.
pub fn install(
    iface: &str,
    dir: &Path,
    cfg: &GuardConfig,
    buckets: Option<u32>,
) -> Result<GuardInstalled, GuardError> {
    cfg.to_kernel()?;
    if let Some(mode) = pinned_mode(dir) {
        let mut maps = GuardMaps::open_pinned(dir)?;
        maps.configure(cfg)?;
        let reattached = !is_attached(iface, dir)?;
        if reattached {
            reattach(iface, dir, mode)?;
        }
        return Ok(GuardInstalled {
            iface: iface.to_string(),
            mode,
            adopted: true,
            reattached,
        });
    }
    let result = install_fresh(iface, dir, cfg, buckets);
    if result.is_err() {
        // Leave nothing half-installed behind.
        let _ = remove(iface, dir);
    }
    result
}

fn install_fresh(
    iface: &str,
    dir: &Path,
    cfg: &GuardConfig,
    buckets: Option<u32>,
) -> Result<GuardInstalled, GuardError> {
    let mut guard = XdpGuard::load(&GuardLoadOptions {
        pin_dir: Some(dir.to_path_buf()),
        buckets,
        with_baselines: false,
    })?;
    // Configured before it sees a packet.
    guard.maps.configure(cfg)?;
    let prog = guard.program_mut(names::PROG_GUARD)?;
    let mode = attach_and_pin(prog, iface, dir)?;
    let prog_pin = dir.join(names::PROG_GUARD);
    prog.pin(&prog_pin).map_err(|e| GuardError::Pin {
        path: prog_pin.clone(),
        message: e.to_string(),
    })?;
    Ok(GuardInstalled {
        iface: iface.to_string(),
        mode,
        adopted: false,
        reattached: false,
    })
}

/// Attaches `prog` natively, else generically, and pins the link under the
/// mode's name.
fn attach_and_pin(prog: &mut Xdp, iface: &str, dir: &Path) -> Result<GuardMode, GuardError> {
    let attach_err = |message: String| GuardError::Attach {
        iface: iface.to_string(),
        message,
    };
    let (id, mode) = match prog.attach(iface, XdpMode::Driver) {
        Ok(id) => (id, GuardMode::Native),
        Err(native) => match prog.attach(iface, XdpMode::Skb) {
            Ok(id) => (id, GuardMode::Generic),
            Err(generic) => {
                return Err(attach_err(format!(
                    "native mode: {native}; generic mode: {generic}"
                )))
            }
        },
    };
    pin_link(prog, id, iface, dir, mode)?;
    Ok(mode)
}

/// Pins the link `id` of `prog` under the mode's name (through a temporary
/// name, so an existing pin is replaced, never missing).
fn pin_link(
    prog: &mut Xdp,
    id: aya::programs::xdp::XdpLinkId,
    iface: &str,
    dir: &Path,
    mode: GuardMode,
) -> Result<(), GuardError> {
    let attach_err = |message: String| GuardError::Attach {
        iface: iface.to_string(),
        message,
    };
    let link = prog.take_link(id).map_err(|e| attach_err(e.to_string()))?;
    let link: FdLink = link.try_into().map_err(|e| {
        attach_err(format!(
            "the kernel gave no bpf_link (needs Linux 5.9 or later): {e}"
        ))
    })?;
    let path = dir.join(mode.link_pin());
    // bpffs refuses dots in names.
    let tmp = dir.join(format!("{}_new", mode.link_pin()));
    let _ = std::fs::remove_file(&tmp);
    link.pin(&tmp).map_err(|e| GuardError::Pin {
        path: tmp.clone(),
        message: e.to_string(),
    })?;
    std::fs::rename(&tmp, &path).map_err(|e| pin_err(&path)(e.to_string()))
}

/// Attaches the guard again in `mode`: the object is loaded anew over the
/// pinned maps (settings, counters and buckets are kept), and its program
/// and link pins replace the old ones.
fn reattach(iface: &str, dir: &Path, mode: GuardMode) -> Result<(), GuardError> {
    let mut guard = XdpGuard::load(&GuardLoadOptions {
        pin_dir: Some(dir.to_path_buf()),
        buckets: None,
        with_baselines: false,
    })?;
    let prog = guard.program_mut(names::PROG_GUARD)?;
    let xdp_mode = match mode {
        GuardMode::Native => XdpMode::Driver,
        GuardMode::Generic => XdpMode::Skb,
    };
    let id = prog
        .attach(iface, xdp_mode)
        .map_err(|e| GuardError::Attach {
            iface: iface.to_string(),
            message: format!("{} mode: {e}", mode.as_str()),
        })?;
    pin_link(prog, id, iface, dir, mode)?;
    let prog_pin = dir.join(names::PROG_GUARD);
    let _ = std::fs::remove_file(&prog_pin);
    prog.pin(&prog_pin)
        .map_err(|e| pin_err(&prog_pin)(e.to_string()))
}

/// Whether the program pinned in `dir` is the XDP program of `iface` (in
/// the caller's network namespace), by program id.
pub fn is_attached(iface: &str, dir: &Path) -> Result<bool, GuardError> {
    let path = dir.join(names::PROG_GUARD);
    let pinned = ProgramInfo::from_pin(&path)
        .map_err(|e| pin_err(&path)(e.to_string()))?
        .id();
    Ok(attached_prog_id(iface)? == Some(pinned))
}

/// The id of `iface`'s XDP program and the mode it runs in, from the
/// kernel's `IFLA_XDP` attributes (`RTM_GETLINK`; no `ip` subprocess).
pub fn attached_prog(iface: &str) -> Result<Option<(u32, GuardMode)>, GuardError> {
    use netlink_packet_core::{NetlinkMessage, NLM_F_REQUEST};
    use netlink_packet_route::{
        link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
        RouteNetlinkMessage,
    };
    let err = |message: String| GuardError::Attach {
        iface: iface.to_string(),
        message,
    };
    let mut s = crate::netlink::NlSocket::route().map_err(|e| err(format!("rtnetlink: {e}")))?;
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(iface.to_string()));
    let replies = s
        .request(
            NetlinkMessage::from(RouteNetlinkMessage::GetLink(m)),
            NLM_F_REQUEST,
            false,
        )
        .map_err(|e| err(format!("reading the link: {e}")))?;
    let Some(RouteNetlinkMessage::NewLink(link)) = replies.messages.into_iter().next() else {
        return Err(err("no answer to RTM_GETLINK".into()));
    };
    let (mut mode, mut id) = (None, None);
    for a in &link.attributes {
        if let LinkAttribute::Xdp(xdp) = a {
            for x in xdp {
                match x {
                    LinkXdp::Attached(XdpAttached::Driver) => mode = Some(GuardMode::Native),
                    LinkXdp::Attached(XdpAttached::SocketBuffer) => mode = Some(GuardMode::Generic),
                    LinkXdp::ProgId(p) => id = Some(*p),
                    _ => {}
                }
            }
        }
    }
    Ok(mode.zip(id).map(|(m, i)| (i, m)))
}

fn attached_prog_id(iface: &str) -> Result<Option<u32>, GuardError> {
    Ok(attached_prog(iface)?.map(|(id, _)| id))
}

/// Detaches the guard pinned in `dir` from its interface and removes every
/// pin. Returns false when nothing was pinned there.
pub fn remove(_iface: &str, dir: &Path) -> Result<bool, GuardError> {
    if !dir.exists() {
        return Ok(false);
    }
    for mode in [GuardMode::Native, GuardMode::Generic] {
        let path = dir.join(mode.link_pin());
        if path.exists() {
            // Unpinning and dropping the last reference detaches the link.
            let link = PinnedLink::from_pin(&path).map_err(|e| pin_err(&path)(e.to_string()))?;
            drop(link.unpin());
        }
    }
    std::fs::remove_dir_all(dir).map_err(|e| pin_err(dir)(e.to_string()))?;
    Ok(true)
}

/// What `show` and the metrics report for one underlay interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuardStatus {
    pub iface: String,
    /// The mode it was attached in.
    pub mode: GuardMode,
    /// Whether it is still the interface's XDP program.
    pub attached: bool,
    /// Every counter by name (`xdp_stat::NAMES`), summed over CPUs.
    pub counters: Vec<(&'static str, u64)>,
}

/// The status of the guard pinned in `dir` for `iface` (looked up in the
/// caller's network namespace).
pub fn status(iface: &str, dir: &Path) -> Result<GuardStatus, GuardError> {
    let mode = pinned_mode(dir).ok_or_else(|| GuardError::NotLoaded(iface.to_string()))?;
    Ok(GuardStatus {
        iface: iface.to_string(),
        mode,
        attached: is_attached(iface, dir)?,
        counters: read_stats(dir)?.named().collect(),
    })
}

/// The counters of the guard pinned in `dir`.
pub fn read_stats(dir: &Path) -> Result<GuardStats, GuardError> {
    if pinned_mode(dir).is_none() {
        return Err(GuardError::NotLoaded(dir.display().to_string()));
    }
    GuardMaps::open_pinned(dir)?.stats()
}
