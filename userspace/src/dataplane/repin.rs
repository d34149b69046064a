//! Handles on a pinned data plane, held so that pins removed under the
//! holder (the pin directory, or one pin) can be put back as they were:
//! the same maps (policy, version, counters), programs and tcx links. The
//! kernel keeps an object while a pin or an open fd refers to it, so
//! holding the links also keeps the programs attached in the meantime.

use aya::{
    maps::MapData,
    programs::{
        links::{FdLink, PinnedLink},
        SchedClassifier,
    },
};

use super::{attach::pinned_mode, hooks::HOOKS, maps::ALL_MAPS, pin_dir, replace, DataplaneError};

/// Everything pinned for one interface, opened.
pub struct Held {
    iface: String,
    maps: Vec<(&'static str, MapData)>,
    progs: Vec<(&'static str, SchedClassifier)>,
    /// By pin name; tcx only (clsact filters hold their programs).
    links: Vec<(&'static str, FdLink)>,
    build: Option<String>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("iface", &self.iface)
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl Held {
    /// Opens what is pinned for `iface`; `None` unless the data plane is
    /// pinned whole (maps and programs).
    pub fn open(iface: &str) -> Option<Held> {
        let mode = pinned_mode(iface)?;
        let dir = pin_dir(iface);
        let maps = ALL_MAPS
            .iter()
            .map(|n| MapData::from_pin(dir.join(n)).ok().map(|m| (*n, m)))
            .collect::<Option<Vec<_>>>()?;
        let progs = HOOKS
            .iter()
            .map(|h| {
                SchedClassifier::from_pin(dir.join(h.prog))
                    .ok()
                    .map(|p| (h.prog, p))
            })
            .collect::<Option<Vec<_>>>()?;
        let links = match mode {
            super::hooks::AttachMode::Tcx => HOOKS
                .iter()
                .filter_map(|h| {
                    PinnedLink::from_pin(dir.join(h.link_pin))
                        .ok()
                        .map(|l| (h.link_pin, FdLink::from(l)))
                })
                .collect(),
            super::hooks::AttachMode::Clsact => Vec::new(),
        };
        Some(Held {
            iface: iface.to_string(),
            maps,
            progs,
            links,
            build: replace::pinned_build(iface),
        })
    }

    /// Pins again each held object whose pin is gone; returns their names
    /// (empty when nothing was missing).
    pub fn repin_missing(&mut self) -> Result<Vec<&'static str>, DataplaneError> {
        let dir = pin_dir(&self.iface);
        let pin_err = |path: &std::path::Path, e: aya::pin::PinError| DataplaneError::Pin {
            path: path.to_path_buf(),
            source: e.into(),
        };
        let mut done = Vec::new();
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| DataplaneError::Pin {
                path: dir.clone(),
                source: e.into(),
            })?;
        }
        for (name, map) in &self.maps {
            let path = dir.join(name);
            if !path.exists() {
                map.pin(&path).map_err(|e| pin_err(&path, e))?;
                done.push(*name);
            }
        }
        for (name, prog) in &mut self.progs {
            let path = dir.join(*name);
            if !path.exists() {
                prog.pin(&path).map_err(|e| pin_err(&path, e))?;
                done.push(*name);
            }
        }
        for (name, link) in std::mem::take(&mut self.links) {
            let path = dir.join(name);
            if path.exists() {
                self.links.push((name, link));
                continue;
            }
            // (A pin that fails drops this handle: the link goes with it
            // unless pinned; bpffs refusing a pin leaves no better way.)
            let pinned = link.pin(&path).map_err(|e| pin_err(&path, e))?;
            self.links.push((name, pinned.into()));
            done.push(name);
        }
        if !done.is_empty() {
            if let Some(build) = &self.build {
                replace::mark_build(&dir, build).map_err(|e| DataplaneError::Pin {
                    path: dir.clone(),
                    source: e.into(),
                })?;
            }
        }
        Ok(done)
    }
}
