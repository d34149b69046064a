//! The programs' own log (aya-log): the level they were loaded with. The
//! level is a read-only global of the object (`names::PROGRAM_LOG_LEVEL`),
//! so the verifier sees it as a constant: with the log off, the log calls
//! are dead code, dropped before the programs run (no cost per packet, and
//! none in the verifier's budget). Like the flow settings, the level is
//! recorded beside the pins as an empty directory `log_<level>`, and
//! programs loaded with another level are replaced gap-free by ones with
//! the file's ([`super::replace`]).

use std::{
    collections::BTreeSet,
    fmt,
    os::fd::{AsRawFd, RawFd},
    path::Path,
    str::FromStr,
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};
use aya::{maps::MapInfo, programs::ProgramInfo};
use wgbpf_common::names;

use super::{hooks::HOOKS, pin_dir};

/// aya-log's levels, as `aya_log_common::Level` numbers them; `Off` is 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum ProgramLog {
    #[default]
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl ProgramLog {
    pub const NAMES: [&'static str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

    /// The value the programs' global holds.
    pub fn as_global(self) -> u8 {
        self as u8
    }

    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Off,
            1 => Self::Error,
            2 => Self::Warn,
            3 => Self::Info,
            4 => Self::Debug,
            5 => Self::Trace,
            _ => return None,
        })
    }
}

impl fmt::Display for ProgramLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::NAMES[*self as usize])
    }
}

impl serde::Serialize for ProgramLog {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(Self::NAMES[*self as usize])
    }
}

impl FromStr for ProgramLog {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(s))
            .and_then(|i| Self::from_u8(i as u8))
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a log level (one of {})",
                    Self::NAMES.join(", ")
                )
            })
    }
}

const MARK: &str = "log_";

/// The level `iface`'s pinned programs were loaded with; a data plane
/// pinned before it was recorded has the log off (there was none).
pub fn pinned(iface: &str) -> ProgramLog {
    std::fs::read_dir(pin_dir(iface))
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .find_map(|n| n.strip_prefix(MARK)?.parse().ok())
        })
        .unwrap_or_default()
}

/// Records `level` as the pinned programs' log level.
pub(crate) fn mark(dir: &Path, level: ProgramLog) -> Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(MARK) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
    let mark = dir.join(format!("{MARK}{level}"));
    std::fs::create_dir(&mark)
        .with_context(|| format!("recording the programs' log level at {}", mark.display()))
}

/// One line of the programs' log.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LogLine {
    pub level: String,
    pub message: String,
}

/// Collects what aya-log decodes (it speaks through the `log` facade).
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<LogLine>>>);

impl log::Log for Collect {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(LogLine {
                level: record.level().as_str().to_ascii_lowercase(),
                message: record.args().to_string(),
            });
        }
    }
    fn flush(&self) {}
}

/// The log ring buffers of `iface`'s pinned programs, read as a consumer.
/// Both programs of one load share one buffer; after a one-hook
/// replacement they may not, so each distinct buffer is read once.
pub struct Reader {
    loggers: Vec<aya_log::EbpfLogger<Collect>>,
    lines: Collect,
}

impl Reader {
    pub fn open(iface: &str) -> Result<Self> {
        let dir = pin_dir(iface);
        let lines = Collect::default();
        let mut seen = BTreeSet::new();
        let mut loggers = Vec::new();
        for hook in &HOOKS {
            let path = dir.join(hook.prog);
            let prog = ProgramInfo::from_pin(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let ring = prog
                .map_ids()
                .with_context(|| format!("the maps of {}", hook.prog))?
                .unwrap_or_default()
                .into_iter()
                .find(|id| {
                    MapInfo::from_id(*id)
                        .is_ok_and(|m| m.name_as_str() == Some(names::PROGRAM_LOG_RING))
                })
                .with_context(|| {
                    format!(
                        "{} has no log buffer ({}): programs of a wgbpf built without one",
                        hook.prog,
                        names::PROGRAM_LOG_RING
                    )
                })?;
            if seen.insert(ring) {
                loggers.push(
                    aya_log::EbpfLogger::init_from_id_with_logger(prog.id(), lines.clone())
                        .with_context(|| format!("reading the log of {}", hook.prog))?,
                );
            }
        }
        Ok(Self { loggers, lines })
    }

    /// The log buffer of a loaded object not pinned anywhere (the tests').
    pub fn of_object(ebpf: &mut aya::Ebpf) -> Result<Self> {
        let lines = Collect::default();
        let logger = aya_log::EbpfLogger::init_with_logger(ebpf, lines.clone())
            .context("the object's log buffer")?;
        Ok(Self {
            loggers: vec![logger],
            lines,
        })
    }

    /// The descriptors to poll for new lines.
    pub fn fds(&self) -> Vec<RawFd> {
        self.loggers.iter().map(|l| l.as_raw_fd()).collect()
    }

    /// The lines logged since the last call.
    pub fn read(&mut self) -> Vec<LogLine> {
        for l in &mut self.loggers {
            l.flush();
        }
        self.lines
            .0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_read_back_and_match_aya_log() {
        for name in ProgramLog::NAMES {
            let l: ProgramLog = name.parse().unwrap();
            assert_eq!(l.to_string(), name);
            assert_eq!(l.to_string().to_uppercase().parse::<ProgramLog>(), Ok(l));
        }
        // aya-log-ebpf enables a statement when its level <= the global.
        assert_eq!(ProgramLog::Error.as_global(), 1);
        assert_eq!(ProgramLog::Trace.as_global(), 5);
        assert!("verbose"
            .parse::<ProgramLog>()
            .unwrap_err()
            .contains("off, error"));
    }
}
