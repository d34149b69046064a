//! Attaching to an interface, pinning, adopting and removing.
//!
//! tcx (kernel 6.6 and later): the links are pinned, so they stay when the
//! controller exits. clsact (older kernels): netlink filters stay by
//! themselves; the programs are pinned so `unload` can find ours.

use std::path::Path;

use aya::programs::{
    links::{FdLink, PinnedLink},
    tc::{self, SchedClassifier, TcAttachOptions},
    LinkOrder,
};
use serde::Serialize;

use super::{
    flow_settings,
    hooks::{remove_clsact_filters, Hook, HOOKS},
    pin_dir,
    reattach::Reattached,
    replace, Dataplane, DataplaneError, LoadOptions, Maps, ProgramSettings,
};

pub use super::hooks::AttachMode;

#[derive(Debug, Serialize)]
pub struct Installed {
    pub mode: AttachMode,
    /// True when a pinned data plane was found and adopted as it was.
    pub adopted: bool,
    /// Pinned programs of an adopted data plane that were not attached and
    /// were attached again ([`Prepared::attach_reattaching`]); empty
    /// otherwise.
    pub reattached: Vec<&'static str>,
    /// Pinned programs another tcx program had got ahead of, attached
    /// first again (likewise).
    pub reordered: Vec<&'static str>,
    /// Set when the adopted programs ran with other flow lifetimes or
    /// budget than the file's and were replaced, gap-free, by programs
    /// with the file's ([`super::flow_settings`]).
    pub flow_settings_changed: bool,
    /// Set when the adopted programs ran with another log level than the
    /// file's `program_log` and were replaced likewise.
    pub program_log_changed: bool,
    /// The programs' log level now in force.
    pub program_log: super::program_log::ProgramLog,
    /// The build of the programs now enforcing ([`super::replace::build_id`]).
    pub build: String,
    /// Set when the adopted programs came from another build and were
    /// replaced by this one's, gap-free: the build they came from (`None`:
    /// not recorded, pinned by a wgbpf before builds were).
    pub upgraded_from: Option<Option<String>>,
}

/// What is pinned for an interface, if anything.
pub fn pinned_mode(iface: &str) -> Option<AttachMode> {
    let dir = pin_dir(iface);
    if HOOKS.iter().all(|h| dir.join(h.link_pin).exists()) {
        Some(AttachMode::Tcx)
    } else if programs_pinned(iface) {
        Some(AttachMode::Clsact)
    } else {
        None
    }
}

/// Removes our clsact filters that do not run the pinned programs (see
/// [`super::hooks::remove_stale_clsact_filters`]).
pub fn remove_stale_clsact_filters(iface: &str) -> anyhow::Result<()> {
    super::hooks::remove_stale_clsact_filters(iface)
}

/// Whether both programs are pinned for an interface.
pub fn programs_pinned(iface: &str) -> bool {
    let dir = pin_dir(iface);
    HOOKS.iter().all(|h| dir.join(h.prog).exists())
}

/// The data plane of an interface, loaded or adopted, with its programs
/// attached or not yet.
pub struct Prepared {
    pub maps: Maps,
    /// The freshly loaded object, still to be attached; `None` if adopted.
    ebpf: Option<aya::Ebpf>,
    iface: String,
    mode: AttachMode,
    /// The flow lifetimes and budget, and the log level, wanted.
    settings: ProgramSettings,
}

/// Loads the data plane for `iface` without attaching it, or adopts the one
/// pinned there as it is (no detach, no gap, counters kept). `mode` applies
/// to a new attachment only. The caller writes the policy, then calls
/// [`Prepared::attach`]: programs never see an empty policy.
pub fn prepare(
    iface: &str,
    opts: &LoadOptions,
    mode: AttachMode,
) -> Result<Prepared, DataplaneError> {
    let dir = pin_dir(iface);
    if let Some(mode) = pinned_mode(iface) {
        let maps = Maps::open_pinned(&dir)?;
        flow_settings::check_table_size(iface, &maps, opts.capacities.flows)?;
        return Ok(Prepared {
            maps,
            ebpf: None,
            iface: iface.to_string(),
            mode,
            settings: ProgramSettings::of(opts),
        });
    }
    let opts = LoadOptions {
        l2_hdr_len: 0,
        pin_dir: Some(dir),
        ..opts.clone()
    };
    let dp = Dataplane::load(&opts)?;
    // Maps left pinned without programs are reused whatever their size.
    flow_settings::check_table_size(iface, &dp.maps, opts.capacities.flows)?;
    Ok(Prepared {
        maps: dp.maps,
        ebpf: Some(dp.ebpf),
        iface: iface.to_string(),
        mode,
        settings: ProgramSettings::of(&opts),
    })
}

impl Prepared {
    /// Attaches and pins the programs if they were loaded fresh. On failure
    /// everything pinned for the interface is removed again. An adopted
    /// data plane is left as it is.
    pub fn attach(self) -> Result<(Maps, Installed), DataplaneError> {
        self.attach_with(false)
    }

    /// [`Prepared::attach`], and if the data plane was adopted, attaches
    /// again each pinned program that is not really attached (gap-free, see
    /// [`super::reattach`]), listed in [`Installed::reattached`].
    pub fn attach_reattaching(self) -> Result<(Maps, Installed), DataplaneError> {
        self.attach_with(true)
    }

    fn attach_with(self, reattach: bool) -> Result<(Maps, Installed), DataplaneError> {
        let Some(mut ebpf) = self.ebpf else {
            let attach_err = |what: &str, e: anyhow::Error| DataplaneError::Attach {
                iface: self.iface.clone(),
                message: format!("{what}: {e:#}"),
            };
            // Programs from another build, or with other flow settings or
            // log level, are replaced first, whatever else.
            let build = replace::build_id();
            let pinned = replace::pinned_build(&self.iface);
            let other_build = pinned.as_deref() != Some(build.as_str());
            let pinned_settings = ProgramSettings::pinned(&self.iface);
            let flow_settings_changed = pinned_settings.flows != self.settings.flows;
            let program_log_changed = pinned_settings.log != self.settings.log;
            let upgraded_from = if other_build || flow_settings_changed || program_log_changed {
                let why = if other_build {
                    format!(
                        "replacing the programs of another build ({}) by this one's ({build})",
                        pinned.as_deref().unwrap_or("not recorded")
                    )
                } else if flow_settings_changed {
                    "replacing the programs to apply the file's flow lifetimes and budget".into()
                } else {
                    format!(
                        "replacing the programs to set their log to {} (was {})",
                        self.settings.log, pinned_settings.log
                    )
                };
                replace::replace(&self.iface, &HOOKS, self.mode, &self.settings).map_err(|e| {
                    attach_err(
                        &format!(
                            "{why}; the old ones still enforce. If this build's maps \
                             differ from the pinned ones, `wgbpf unload -i {}` then \
                             `wgbpf load` installs it afresh (a gap; counters restart)",
                            self.iface
                        ),
                        e,
                    )
                })?;
                other_build.then_some(pinned)
            } else {
                None
            };
            let done = if reattach {
                super::reattach::reattach_missing(&self.iface).map_err(|e| {
                    DataplaneError::Attach {
                        iface: self.iface.clone(),
                        message: format!("attaching detached programs again: {e:#}"),
                    }
                })?
            } else {
                Vec::new()
            };
            let which = |w: Reattached| done.iter().filter(|d| d.1 == w).map(|d| d.0).collect();
            return Ok((
                self.maps,
                Installed {
                    mode: self.mode,
                    adopted: true,
                    reattached: which(Reattached::Detached),
                    reordered: which(Reattached::NotFirst),
                    flow_settings_changed,
                    program_log_changed,
                    program_log: self.settings.log,
                    build,
                    upgraded_from,
                },
            ));
        };
        let dir = pin_dir(&self.iface);
        let build = replace::build_id();
        let attached = attach_all(&mut ebpf, &self.iface, &dir, self.mode).and_then(|()| {
            replace::mark_build(&dir, &build)
                .and_then(|()| self.settings.mark(&dir))
                .map_err(|e| DataplaneError::Attach {
                    iface: self.iface.clone(),
                    message: format!("{e:#}"),
                })
        });
        if let Err(e) = attached {
            // Leave nothing half-attached behind.
            let _ = remove(&self.iface);
            return Err(e);
        }
        Ok((
            self.maps,
            Installed {
                mode: self.mode,
                adopted: false,
                reattached: Vec::new(),
                reordered: Vec::new(),
                flow_settings_changed: false,
                program_log_changed: false,
                program_log: self.settings.log,
                build,
                upgraded_from: None,
            },
        ))
    }

    /// Gives up a fresh load: removes its pins. Nothing to do if adopted.
    pub fn abandon(self) {
        if self.ebpf.is_some() {
            drop(self.maps);
            let _ = remove(&self.iface);
        }
    }
}

fn attach_all(
    ebpf: &mut aya::Ebpf,
    iface: &str,
    dir: &Path,
    mode: AttachMode,
) -> Result<(), DataplaneError> {
    let err = |message: String| DataplaneError::Attach {
        iface: iface.to_string(),
        message,
    };
    if mode == AttachMode::Clsact {
        // EEXIST is fine: someone (maybe us) added it before.
        let _ = tc::qdisc_add_clsact(iface);
    }
    for Hook {
        prog: name,
        attach_type: hook,
        link_pin,
        ..
    } in HOOKS
    {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| err(format!("program {name} missing")))?
            .try_into()
            .map_err(|e| err(format!("{name}: {e}")))?;
        let options = match mode {
            // First: a program before wgbpf's could end the chain with a
            // pass, and the policy would never see the packet.
            AttachMode::Tcx => TcAttachOptions::TcxOrder(LinkOrder::first()),
            AttachMode::Clsact => TcAttachOptions::Netlink(Default::default()),
        };
        let id = prog
            .attach_with_options(iface, hook, options)
            .map_err(|e| err(format!("{name}: {e}")))?;
        let link = prog
            .take_link(id)
            .map_err(|e| err(format!("{name}: {e}")))?;
        let prog_pin = dir.join(name);
        prog.pin(&prog_pin).map_err(|e| DataplaneError::Pin {
            path: prog_pin.clone(),
            source: e.into(),
        })?;
        match mode {
            AttachMode::Tcx => {
                let fd_link: FdLink = link.try_into().map_err(|e| err(format!("{name}: {e}")))?;
                let path = dir.join(link_pin);
                fd_link.pin(&path).map_err(|e| DataplaneError::Pin {
                    path,
                    source: e.into(),
                })?;
            }
            // A netlink filter outlives the process; dropping the link
            // handle would detach it, so let it go.
            AttachMode::Clsact => std::mem::forget(link),
        }
    }
    Ok(())
}

/// Detaches the programs from `iface` and removes every pin. Returns false
/// when there was nothing to remove.
pub fn remove(iface: &str) -> Result<bool, DataplaneError> {
    let dir = pin_dir(iface);
    if !dir.exists() {
        return Ok(false);
    }
    for hook in HOOKS {
        let path = dir.join(hook.link_pin);
        if path.exists() {
            // Unpinning and dropping the last reference detaches the link.
            let link = PinnedLink::from_pin(&path).map_err(|e| DataplaneError::Pin {
                path: path.clone(),
                source: e.into(),
            })?;
            drop(link.unpin());
        } else {
            remove_clsact_filters(iface, &hook);
        }
    }
    std::fs::remove_dir_all(&dir).map_err(|e| DataplaneError::Pin {
        path: dir.clone(),
        source: e.into(),
    })?;
    Ok(true)
}
