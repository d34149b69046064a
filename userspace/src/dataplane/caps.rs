//! The capabilities the data plane needs, checked before anything is
//! touched: without CAP_PERFMON the verifier treats the programs as
//! untrusted and refuses their packet-pointer arithmetic, without CAP_BPF
//! no map or program can be made, without CAP_NET_ADMIN nothing can be
//! attached. The kernel's own refusal is a page of verifier log that names
//! none of this; this check names what is missing.

use super::DataplaneError;

/// Capability bit numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process (`CapEff` in
/// /proc/self/status); `None` when it cannot be read.
fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The capabilities of `eff` that loading and attaching lack, by name
/// (CAP_SYS_ADMIN stands for CAP_BPF and CAP_PERFMON, as on kernels
/// before 5.8).
pub fn missing(eff: u64) -> Vec<&'static str> {
    let has = |c: u32| eff & (1u64 << c) != 0;
    let admin = has(CAP_SYS_ADMIN);
    let mut out = Vec::new();
    if !(has(CAP_BPF) || admin) {
        out.push("CAP_BPF");
    }
    if !(has(CAP_PERFMON) || admin) {
        out.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) {
        out.push("CAP_NET_ADMIN");
    }
    out
}

/// Errors, naming each missing capability, unless this process can load
/// and attach the data plane. An unreadable set is not an error: the
/// kernel still has the last word.
pub fn check() -> Result<(), DataplaneError> {
    match effective().map(missing) {
        Some(m) if !m.is_empty() => Err(DataplaneError::Capabilities(m.join(", "))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        let set = |caps: &[u32]| caps.iter().fold(0u64, |a, c| a | 1 << c);
        assert!(missing(set(&[CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN])).is_empty());
        assert!(missing(set(&[CAP_SYS_ADMIN, CAP_NET_ADMIN])).is_empty());
        assert_eq!(missing(set(&[CAP_BPF, CAP_NET_ADMIN])), vec!["CAP_PERFMON"]);
        assert_eq!(
            missing(set(&[CAP_NET_ADMIN])),
            vec!["CAP_BPF", "CAP_PERFMON"]
        );
        assert_eq!(missing(set(&[CAP_BPF, CAP_PERFMON])), vec!["CAP_NET_ADMIN"]);
    }
}
