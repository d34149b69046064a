//! `wgbpf import wg-quick | tailscale | netbird`: bring existing
//! configurations into a mesh file. Nothing here touches the kernel.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use wgbpf::{import, source};

#[derive(Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    command: ImportCommand,
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Write a mesh file from wg-quick configurations.
    ///
    /// The first FILE is the gateway's (its [Interface] and [Peer]s). Any
    /// further FILEs are the peers' own configurations: each names and
    /// completes the gateway's [Peer] whose PublicKey its PrivateKey derives,
    /// or whose AllowedIPs hold its Address (the peer is named after the file,
    /// alice.conf -> alice, unless a comment names it: `# alice` right before
    /// [Peer], or `# Name = alice` inside it).
    ///
    /// `# friendly_name = NAME` inside a [Peer] (the Prometheus WireGuard
    /// exporter's convention) names that peer exactly NAME: a name that is
    /// not valid in a mesh file, or used twice, is an error with its line.
    ///
    /// FILE may be `-` (standard input) or a pipe, e.g.
    /// `ssh gw cat /etc/wireguard/wg0.conf | wgbpf import wg-quick -`.
    ///
    /// Private and preshared keys are never copied: the mesh file gets a
    /// commented private_key_file / preshared_key_file to point at 0600 files.
    /// PostUp/PostDown (iptables, nftables) and DNS/Table lines are not
    /// translated; they are listed as comments. The policy has no rules:
    /// default deny, with a commented example rule. The output is checked
    /// with the mesh file parser before it is written.
    #[command(name = "wg-quick", verbatim_doc_comment)]
    WgQuick {
        /// The gateway's .conf first, then any peers' own .conf files
        /// (`-`: standard input).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the mesh file here (refuses to overwrite) instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The interface name (default: the first file's name without .conf).
        #[arg(long, value_parser = wgbpf::ifname::parse)]
        interface: Option<String>,
    },
    /// Translate a Tailscale/Headscale policy file (HuJSON) to mesh-file
    /// TOML, for review.
    ///
    /// Reads groups, tagOwners, hosts, ipsets, acls, the network part of
    /// grants (src, dst, ip) and tests, with field names in any case as
    /// Tailscale does ("ACLs", "Action", "Users", "Ports"…). Refuses what a
    /// gateway cannot enforce (via, srcPosture, postures), naming the line.
    ///
    /// Prints [policy.groups], [policy.hosts], [[policy.rule]] and
    /// [[policy.test]] blocks. To use the ACL file as it is, name it in a mesh
    /// file instead: [policy] tailscale = "acl.hujson". With -c MESH, the
    /// translation is also applied to that mesh file, its tests run, and
    /// autogroup:member is listed. See docs/imports.md for what is mapped
    /// and what is refused.
    #[command(verbatim_doc_comment)]
    Tailscale {
        /// The ACL file (HuJSON: JSON with comments and trailing commas);
        /// `-`: standard input.
        file: PathBuf,
        /// A mesh file to resolve the names against and run the tests in.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Translate a Netbird policy file (JSON) to mesh-file TOML, for review.
    ///
    /// Or name it in a mesh file: [policy] netbird = "policies.json".
    #[command(verbatim_doc_comment)]
    Netbird {
        /// The policy file (one policy object or an array of them); `-`:
        /// standard input.
        file: PathBuf,
        /// A mesh file to resolve the groups against and run the tests in.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
}

pub fn run(a: ImportArgs) -> Result<()> {
    match a.command {
        ImportCommand::WgQuick {
            files,
            output,
            interface,
        } => wg_quick(&files, output.as_deref(), interface.as_deref()),
        ImportCommand::Tailscale { file, config } => {
            policy(&file, config.as_deref(), import::tailscale::translate)
        }
        ImportCommand::Netbird { file, config } => {
            policy(&file, config.as_deref(), import::netbird::translate)
        }
    }
}

/// A file named on the command line (`-` is standard input), and the name
/// it goes by in messages.
fn read(path: &std::path::Path) -> Result<(String, String)> {
    let name = if path == std::path::Path::new("-") {
        import::STDIN_NAME.to_string()
    } else {
        path.display().to_string()
    };
    let text = import::read_input(path).map_err(|e| anyhow!("{name}: {e}"))?;
    Ok((name, text))
}

fn wg_quick(
    files: &[PathBuf],
    output: Option<&std::path::Path>,
    interface: Option<&str>,
) -> Result<()> {
    if files.iter().filter(|f| f.as_os_str() == "-").count() > 1 {
        bail!("`-` (standard input) can be named once");
    }
    let mut parsed = Vec::new();
    for f in files {
        let (name, text) = read(f)?;
        parsed.push(import::wgquick::parse(&name, &text)?);
    }
    let out = import::wgquick::to_mesh(&parsed, interface).map_err(|e| anyhow!(e))?;
    source::parse("(imported mesh file)", &out.toml)
        .context("the translated mesh file does not parse (a bug: please report it)")?;
    for w in &out.warnings {
        eprintln!("wgbpf: {w}");
    }
    match output {
        None => print!("{}", out.toml),
        Some(path) => {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| format!("{}: cannot create", path.display()))?;
            f.write_all(out.toml.as_bytes())?;
            eprintln!("wgbpf: wrote {}", path.display());
        }
    }
    Ok(())
}

fn policy(
    file: &std::path::Path,
    config: Option<&std::path::Path>,
    translate: fn(&str, &str) -> Result<import::Translated, import::ImportError>,
) -> Result<()> {
    let (name, text) = read(file)?;
    let t = translate(&name, &text)?;
    let Some(config) = config else {
        print!("{}", import::to_toml(&t, None));
        return Ok(());
    };
    let mut m = source::load(config)?;
    import::apply(&t, &mut m)?;
    print!("{}", import::to_toml(&t, Some(&m.directory)));
    let (checked, failures) = wgbpf::policy::check::run_tests(&m.policy, &m.tests);
    for f in &failures {
        eprintln!("{f}");
    }
    eprintln!(
        "wgbpf: {} with {}: {} rules, {} tests ({checked} checks), {} failed",
        file.display(),
        config.display(),
        m.policy.rules.len(),
        m.tests.len(),
        failures.len()
    );
    if !failures.is_empty() {
        bail!("{} policy test(s) failed", failures.len());
    }
    Ok(())
}
