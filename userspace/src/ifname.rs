//! Interface names, checked as the kernel checks them (`dev_valid_name`):
//! 1 to 15 bytes, not `.` or `..`, no `/`, `:` or whitespace. One check for
//! the mesh file, the importers, `-i` and the pin paths built from a name.

/// The longest name the kernel accepts (`IFNAMSIZ` - 1).
pub const MAX_LEN: usize = 15;

/// `Ok` when the kernel would accept `name`; otherwise what is wrong.
pub fn check(name: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "`{}` is not an interface name: {why}",
            name.escape_debug()
        ))
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_LEN {
        return bad(&format!("longer than {MAX_LEN} bytes"));
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are not names");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return bad("`/`, `:`, whitespace and control characters are not allowed");
    }
    Ok(())
}

/// [`check`] as a command-line value parser (`-i IFACE`).
pub fn parse(name: &str) -> Result<String, String> {
    check(name).map(|()| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn kernel_rules() {
        for ok in ["wg0", "a", "wg-gw.1", "x".repeat(15).as_str(), "wg_=+"] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a b",
            "a:1",
            "a\tb",
            "a\nb",
            &"x".repeat(16),
        ] {
            let e = check(bad).unwrap_err();
            assert!(e.contains("is not an interface name"), "{e}");
        }
    }
}
