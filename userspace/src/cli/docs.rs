//! `wgbpf completions SHELL` and `wgbpf manpage`: generated from the same
//! clap definitions as the command itself, so they never drift from it.
//! Each command's page adds EXIT STATUS and FILES, written here from what
//! the command modules do.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Command};
use clap_complete::Shell;

/// Print a shell completion script (e.g. `wgbpf completions bash >
/// /etc/bash_completion.d/wgbpf`).
#[derive(Args)]
pub struct CompletionsArgs {
    shell: Shell,
}

pub fn completions(a: CompletionsArgs, mut cmd: Command) -> Result<()> {
    clap_complete::generate(a.shell, &mut cmd, "wgbpf", &mut std::io::stdout());
    Ok(())
}

/// Print the man pages (roff), one after the other, or write one file per
/// command with --dir (`wgbpf manpage --dir /usr/local/share/man/man8`).
#[derive(Args)]
pub struct ManpageArgs {
    /// Write wgbpf.8, wgbpf-load.8, wgbpf-policy-check.8… into DIR (created
    /// if missing; existing pages are replaced) instead of printing them.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn manpage(a: ManpageArgs, cmd: Command) -> Result<()> {
    let mut cmd = cmd
        .name("wgbpf")
        .bin_name("wgbpf")
        .disable_help_subcommand(true);
    // Gives every subcommand its page name (wgbpf-policy-check) and its
    // synopsis name (wgbpf policy check).
    cmd.build();
    let mut pages = Vec::new();
    collect(&cmd, &mut pages)?;
    match a.dir {
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            for (_, page) in &pages {
                out.write_all(page)?;
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
            for (name, page) in &pages {
                let path = dir.join(name);
                std::fs::write(&path, page)
                    .with_context(|| format!("{}: cannot write", path.display()))?;
            }
            eprintln!("wgbpf: wrote {} pages to {}", pages.len(), dir.display());
        }
    }
    Ok(())
}

/// The page of `cmd` and of every subcommand below it, as (file name, roff).
fn collect(cmd: &Command, pages: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .source(format!("wgbpf {}", env!("CARGO_PKG_VERSION")))
        .manual("System Manager's Manual");
    let mut page = Vec::new();
    man.render(&mut page)?;
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    page.extend(extra_sections(name).into_bytes());
    pages.push((man.get_filename(), page));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, pages)?;
    }
    Ok(())
}

/// Text for roff: backslashes escaped, hyphens as minus signs (so options
/// can be searched and copied), no line starting as a request.
fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// A `.SH` section of tagged paragraphs.
fn section(title: &str, items: &[(&str, &str)]) -> String {
    let mut out = format!(".SH \"{title}\"\n");
    for (tag, text) in items {
        out += &format!(".TP\n\\fB{}\\fR\n{}\n", roff_text(tag), roff_text(text));
    }
    out
}

/// The files a command reads or writes.
mod files {
    pub const MESH: (&str, &str) = (
        "/etc/wgbpf/IFACE.toml",
        "The mesh file of interface IFACE, as the template unit wgbpf@IFACE reads it \
         (-c names any file). Tailscale and Netbird files it includes are read relative to it.",
    );
    pub const ENV: (&str, &str) = (
        "/etc/wgbpf/IFACE.env",
        "Environment of wgbpf@IFACE (e.g. WGBPF_METRICS_ADDR), optional.",
    );
    pub const KEYS: (&str, &str) = (
        "private_key_file, preshared_key_file",
        "Key files named in the mesh file (e.g. /etc/wireguard/wg0.key): one base64 key, \
         readable by root only (0600). Their content is never printed.",
    );
    pub const PINS: (&str, &str) = (
        "/sys/fs/bpf/wgbpf/IFACE/",
        "The interface's pinned programs, maps and links: enforcement outlives the command \
         that installed it. The XDP guard's are under /sys/fs/bpf/wgbpf-xdp/.",
    );
    pub const LOCK: (&str, &str) = (
        "/run/wgbpf/IFACE.lock",
        "Held while a command changes the interface's data plane: one writer at a time.",
    );
    pub const VERSION: (&str, &str) = (
        "/var/lib/wgbpf/IFACE.version",
        "The last policy version given on the interface, so that versions only grow, \
         across wgbpf unload and reboots too. Kept by unload.",
    );
    pub const SOCK: (&str, &str) = (
        "/run/wgbpf/IFACE.sock",
        "The daemon's control socket (wgbpf reload, status).",
    );
    pub const UAPI: (&str, &str) = (
        "/var/run/wireguard/IFACE.sock",
        "The UAPI socket of a userspace WireGuard (wireguard-go); the kernel's is reached \
         over netlink.",
    );
    pub const ETCD: (&str, &str) = (
        "--cacert, --cert, --key, --password-file",
        "PEM files for TLS to etcd (the CA, this client's certificate and key) and the etcd \
         user's password (first line, mode 0600; or $WGBPF_ETCD_PASSWORD). The password is \
         never printed.",
    );
    pub const PARTS: (&str, &str) = (
        "FILE, --shared FILE",
        "A gateway's own part of the fleet's mesh ([interface], [[peer]]s) and the shared \
         part ([policy]); see docs/fleet.md.",
    );
    pub const WG_QUICK: (&str, &str) = (
        "/etc/wireguard/IFACE.conf",
        "A wg-quick configuration, the usual input of wgbpf import wg-quick.",
    );
    pub const KEY_OUT: (&str, &str) = (
        "OUT",
        "Given a path, the key is written to a new file of mode 0600 (never over an existing \
         one); otherwise to standard output.",
    );
    pub const STDOUT: (&str, &str) = (
        "(none)",
        "It reads and writes no file: standard output only.",
    );
}

const OK: (&str, &str) = ("0", "Success.");
const FAILED: (&str, &str) = (
    "1",
    "Failure: the reason is on standard error (with --json, also a JSON object \
     {\"ok\": false, \"error\": ...} on standard output).",
);
const USAGE: (&str, &str) = ("2", "Bad or missing arguments (the usage is printed).");

/// EXIT STATUS and FILES for the page `name` (wgbpf, wgbpf-load, …), as the
/// command modules under src/cli/ exit and what they touch.
fn extra_sections(name: &str) -> String {
    use files::*;
    let sub = name.strip_prefix("wgbpf-").unwrap_or("");
    let exit: Vec<(&str, &str)> = match sub {
        "" => vec![
            OK,
            FAILED,
            USAGE,
            (
                "other",
                "wgbpf audit exits 2 when it cannot compare; see each command's page.",
            ),
        ],
        "audit" => vec![
            ("0", "The interface is as the mesh file says."),
            ("1", "It differs: each difference is printed."),
            (
                "2",
                "The comparison failed (the reason is on standard error), or bad arguments.",
            ),
        ],
        "policy" | "policy-check" => vec![
            ("0", "The file is valid, compiles, and every test passes."),
            (
                "1",
                "The file (or a file it includes) is invalid, named with its line and column, \
                 or does not compile, or a test fails (each failure is printed).",
            ),
            USAGE,
        ],
        "reload" => vec![
            (
                "0",
                "The daemon reloaded the file (or, with status, is enforcing it).",
            ),
            (
                "1",
                "The daemon refused the file and keeps its running policy (the reason is \
                 printed), or no daemon answers on the control socket.",
            ),
            USAGE,
        ],
        "run" => vec![
            (
                "0",
                "Stopped by SIGTERM or SIGINT; the data plane keeps enforcing the last policy.",
            ),
            (
                "1",
                "It could not start (the file is refused, the metrics port or the control \
                 socket is in use, another daemon holds the interface) and changed nothing, or \
                 a fatal error.",
            ),
            USAGE,
        ],
        "push" => vec![
            (
                "0",
                "The revision was written (or, with --dry-run, the diff shown).",
            ),
            (
                "1",
                "A part is invalid (named with its file, line and column), does not compile, \
                 or a policy test fails: nothing was written. Or another push landed first, or \
                 etcd did not answer.",
            ),
            USAGE,
        ],
        "fleet" | "fleet-status" => vec![
            (
                "0",
                "Every gateway of the fleet enforces its latest revision.",
            ),
            (
                "1",
                "A gateway is behind, refused the revision or has no report (each is \
                 named), or etcd did not answer.",
            ),
            USAGE,
        ],
        s if s == "import" || s.starts_with("import-") => vec![
            OK,
            (
                "1",
                "The input is invalid (named with its file, line and column; `<stdin>` for \
                 standard input), the output file exists, or with -c a policy test fails.",
            ),
            USAGE,
        ],
        _ => vec![OK, FAILED, USAGE],
    };
    let files: Vec<(&str, &str)> = match sub {
        "" => vec![MESH, ENV, KEYS, PINS, LOCK, VERSION, SOCK, UAPI],
        "load" => vec![MESH, KEYS, PINS, LOCK, VERSION, UAPI],
        "unload" => vec![PINS, LOCK, VERSION],
        "run" => vec![MESH, ENV, KEYS, PINS, LOCK, VERSION, SOCK, UAPI, ETCD],
        "push" => vec![PARTS, ETCD],
        s if s == "fleet" || s.starts_with("fleet-") => vec![ETCD],
        "reload" => vec![SOCK, MESH],
        "audit" => vec![MESH, KEYS, PINS, UAPI],
        "show" | "counters" => vec![PINS, UAPI],
        s if s == "policy" || s.starts_with("policy-") => vec![MESH],
        s if s == "import" || s.starts_with("import-") => vec![WG_QUICK, MESH],
        // With a daemon running, rotate writes the mesh file and asks the
        // daemon over its socket.
        s if s == "keys" || s.starts_with("keys-") => vec![MESH, SOCK, UAPI],
        "monitor" => vec![SOCK, PINS, MESH],
        "doctor" => vec![MESH, PINS],
        s if s == "export" || s.starts_with("export-") => vec![MESH, KEYS],
        "genkey" | "genpsk" => vec![KEY_OUT],
        _ => vec![STDOUT],
    };
    let mut out = section("EXIT STATUS", &exit);
    out += &section("FILES", &files);
    if !sub.is_empty() {
        out += ".SH \"SEE ALSO\"\n\\fBwgbpf\\fR(8)\n";
    }
    out
}
