//! The keys of a fleet under its prefix (default `/wgbpf`):
//!
//! | key | value | written by |
//! | --- | --- | --- |
//! | `P/revision` | the fleet revision, a decimal number | `push`, in the same transaction as the parts |
//! | `P/shared` | the shared part: `[policy]` (groups, hosts, rules, tests) | `push` |
//! | `P/gateways/NAME` | gateway NAME's own part: `[interface]`, `[[peer]]`s | `push` |
//! | `P/status/NAME` | NAME's report (JSON), under its lease | the gateway |
//!
//! A gateway watches the range from `P/` up to `P/status/` (so not the
//! reports) and reads its three keys in one transaction.

use super::FleetError;

/// The keys of one fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

/// The prefix when none is given.
pub const DEFAULT_PREFIX: &str = "/wgbpf";

impl Layout {
    /// `prefix` without its trailing slashes; empty is refused (the keys
    /// would be the store's root).
    pub fn new(prefix: &str) -> Result<Layout, FleetError> {
        let p = prefix.trim_end_matches('/');
        if p.is_empty() {
            return Err(FleetError::BadValue {
                key: prefix.to_string(),
                message: "the prefix may not be empty or `/`".into(),
            });
        }
        Ok(Layout {
            prefix: p.to_string(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn revision(&self) -> String {
        format!("{}/revision", self.prefix)
    }

    pub fn shared(&self) -> String {
        format!("{}/shared", self.prefix)
    }

    pub fn gateways(&self) -> String {
        format!("{}/gateways/", self.prefix)
    }

    pub fn gateway(&self, name: &str) -> String {
        format!("{}{name}", self.gateways())
    }

    pub fn statuses(&self) -> String {
        format!("{}/status/", self.prefix)
    }

    pub fn status(&self, name: &str) -> String {
        format!("{}{name}", self.statuses())
    }

    /// The range a gateway watches: `[P/, P/status/)`, everything a push
    /// writes and none of the reports.
    pub fn watched(&self) -> (String, String) {
        (format!("{}/", self.prefix), self.statuses())
    }
}

/// A gateway's name: 1 to 63 of `A-Z a-z 0-9 . _ -`, not starting with a
/// dot (it is one path segment of a key).
pub fn check_gateway_name(name: &str) -> Result<(), FleetError> {
    let bad = |message: &str| FleetError::GatewayName {
        name: name.to_string(),
        message: message.to_string(),
    };
    if name.is_empty() || name.len() > 63 {
        return Err(bad("must be 1 to 63 characters"));
    }
    if name.starts_with('.') {
        return Err(bad("may not start with a dot"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(bad("only letters, digits, `.`, `_` and `-`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_under_the_prefix_and_the_watched_range_excludes_reports() {
        let l = Layout::new("/corp/wgbpf//").unwrap();
        assert_eq!(l.revision(), "/corp/wgbpf/revision");
        assert_eq!(l.gateway("eu-1"), "/corp/wgbpf/gateways/eu-1");
        assert_eq!(l.status("eu-1"), "/corp/wgbpf/status/eu-1");
        let (from, to) = l.watched();
        for k in [l.revision(), l.shared(), l.gateway("z")] {
            assert!(k >= from && k < to, "{k} outside the watched range");
        }
        assert!(l.status("a") >= to);
        assert!(Layout::new("/").is_err());
    }

    #[test]
    fn gateway_names_are_one_key_segment() {
        for ok in ["eu-1", "gw.a_b", "A9"] {
            check_gateway_name(ok).unwrap();
        }
        for bad in ["", "a/b", ".hidden", "sp ace", &"x".repeat(64)] {
            assert!(check_gateway_name(bad).is_err(), "{bad:?}");
        }
    }
}
