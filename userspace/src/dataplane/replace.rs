//! Putting a new instance of the programs in place of the pinned ones,
//! with no gap, the maps carried over: the policy, flows and counters stay.
//! Two reasons to: the pinned programs come from another build of wgbpf
//! (an upgrade: adoption would otherwise keep the old eBPF code enforcing),
//! or another tcx program got ahead of ours (tcx refuses the same program
//! twice on a hook, so moving ours first needs a new instance).
//!
//! Per hook: the new program is attached first (tcx) or as another filter
//! (clsact), then its pins replace the old ones by renames, then the old
//! link or filter is released. For that instant both run, the new one
//! first: a packet may be counted twice, never judged by neither.
//!
//! The build is identified by a hash of the embedded object
//! ([`build_id`]), recorded beside the pins as an empty directory
//! `build_<id>` (the bpf filesystem holds only pins and directories).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use aya::programs::{
    links::FdLink,
    tc::{self, SchedClassifier, TcAttachOptions},
    LinkOrder, ProgramInfo,
};

use super::{
    hooks::{remove_clsact_filter_of, AttachMode, Hook},
    pin_dir, Dataplane, LoadOptions, ProgramSettings, OBJECT,
};

/// This binary's eBPF build: FNV-1a over the embedded object, in hex.
pub fn build_id() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in OBJECT {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

const MARK: &str = "build_";

/// The build recorded for `iface`'s pinned programs; `None` for a data
/// plane pinned before builds were recorded.
pub fn pinned_build(iface: &str) -> Option<String> {
    std::fs::read_dir(pin_dir(iface))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find_map(|n| n.strip_prefix(MARK).map(str::to_string))
}

/// Records `build` as the pinned programs' build.
pub(crate) fn mark_build(dir: &Path, build: &str) -> Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(MARK) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
    let mark = dir.join(format!("{MARK}{build}"));
    std::fs::create_dir(&mark).with_context(|| format!("recording the build at {}", mark.display()))
}

/// Replaces the pinned programs of `hooks` on `iface` by new instances from
/// this binary with `settings`, sharing the pinned maps (see the module's
/// comment), and records this build and those settings.
pub fn replace(
    iface: &str,
    hooks: &[Hook],
    mode: AttachMode,
    settings: &ProgramSettings,
) -> Result<()> {
    let dir = pin_dir(iface);
    let opts = LoadOptions {
        pin_dir: Some(dir.clone()),
        flows: settings.flows,
        program_log: settings.log,
        ..Default::default()
    };
    // Reuses the pinned maps; refuses if this build's maps do not fit them.
    let mut dp =
        Dataplane::load(&opts).context("loading this build's programs over the pinned maps")?;
    for hook in hooks {
        replace_hook(&mut dp.ebpf, iface, &dir, hook, mode)?;
    }
    mark_build(&dir, &build_id())?;
    settings.mark(&dir)
}

fn replace_hook(
    ebpf: &mut aya::Ebpf,
    iface: &str,
    dir: &Path,
    hook: &Hook,
    mode: AttachMode,
) -> Result<()> {
    let name = hook.prog;
    let old_id = ProgramInfo::from_pin(dir.join(name))
        .with_context(|| format!("opening the pinned {name}"))?
        .id();
    let prog: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing"))?
        .try_into()?;
    let options = match mode {
        AttachMode::Tcx => TcAttachOptions::TcxOrder(LinkOrder::first()),
        AttachMode::Clsact => {
            let _ = tc::qdisc_add_clsact(iface);
            TcAttachOptions::Netlink(Default::default())
        }
    };
    let id = prog
        .attach_with_options(iface, hook.attach_type, options)
        .with_context(|| format!("attaching the new {name}"))?;
    let link = prog.take_link(id)?;
    // The program's pin first (the drift checks look it up by id), then
    // the link's, whose rename releases the old link.
    let tmp = dir.join(format!("{name}_new"));
    let _ = std::fs::remove_file(&tmp);
    prog.pin(&tmp)
        .with_context(|| format!("pinning {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name)).with_context(|| format!("renaming {}", tmp.display()))?;
    match mode {
        AttachMode::Tcx => {
            let link: FdLink = link.try_into().map_err(|e| anyhow!("{name}: {e}"))?;
            let pin = dir.join(hook.link_pin);
            let tmp = dir.join(format!("{}_new", hook.link_pin));
            let _ = std::fs::remove_file(&tmp);
            link.pin(&tmp)
                .map_err(|e| anyhow!("pinning {}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, &pin)
                .with_context(|| format!("renaming {} to {}", tmp.display(), pin.display()))?;
        }
        AttachMode::Clsact => {
            // The new filter outlives us; the old one goes.
            std::mem::forget(link);
            remove_clsact_filter_of(iface, hook, old_id);
        }
    }
    Ok(())
}
