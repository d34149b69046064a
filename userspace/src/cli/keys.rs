//! `wgbpf keys`: key management. `keys rotate` moves a peer to its new
//! public key with a window during which both keys work (see
//! `wgbpf::wg::rotate` and docs/wireguard.md).

use std::{io::Write, path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use wgbpf::{
    source,
    wg::{self, rotate, Key},
};

/// Key management for the mesh's peers.
#[derive(Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    Rotate(RotateArgs),
}

/// Rotate a peer's key: accept its old and new public key for a window,
/// then remove the old one.
///
/// The new key is added as a second peer without AllowedIPs; the peer's
/// AllowedIPs follow whichever of its two keys has the latest handshake,
/// so the peer stays reachable on either; at the end of the window the new
/// key keeps them and the old key is removed. Other peers are not touched.
/// Afterwards put the new public key in the mesh file, which remains the
/// source of truth: `wgbpf load` (and `wgbpf run`'s drift repair) would
/// otherwise put the old key back.
#[derive(Args)]
pub struct RotateArgs {
    /// The mesh file (TOML): names the interface and the peer's current key.
    #[arg(short, long)]
    config: PathBuf,
    /// The peer's name in the mesh file.
    peer: String,
    /// The peer's new public key (base64).
    #[arg(
        long,
        conflicts_with = "new_public_key_file",
        required_unless_present = "new_public_key_file"
    )]
    new_public_key: Option<String>,
    /// A file with the peer's new public key (as `wg pubkey` writes it).
    #[arg(long)]
    new_public_key_file: Option<PathBuf>,
    /// Seconds during which both keys are accepted.
    #[arg(long, default_value_t = 300)]
    window: u64,
    /// Print a JSON report at the end instead of text as it goes.
    #[arg(long)]
    json: bool,
}

pub fn run(a: KeysArgs) -> Result<()> {
    match a.command {
        KeysCommand::Rotate(r) => rotate_cmd(r),
    }
}

fn rotate_cmd(a: RotateArgs) -> Result<()> {
    let text = match (&a.new_public_key, &a.new_public_key_file) {
        (Some(k), _) => k.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("new public key file {}", f.display()))?,
        (None, None) => bail!("give --new-public-key or --new-public-key-file"),
    };
    let new =
        Key::from_base64(text.trim()).map_err(|w| anyhow::anyhow!("the new public key: {w}"))?;
    let m = source::load(&a.config)?;
    let spec =
        m.wg.peers
            .iter()
            .find(|p| p.name == a.peer)
            .with_context(|| {
                format!(
                    "{}: no peer `{}` in the mesh file",
                    a.config.display(),
                    a.peer
                )
            })?;
    let old = spec.public_key.clone().with_context(|| {
        format!(
            "{}: peer `{}` has no public_key",
            a.config.display(),
            a.peer
        )
    })?;
    let old_text = old.to_base64();
    let backend = wg::open_backend(
        &m.interface,
        wg::BackendChoice::from_env().map_err(anyhow::Error::msg)?,
    )?;
    let json_out = a.json;
    if !json_out {
        println!(
            "{}: rotating peer `{}` via {}",
            m.interface,
            a.peer,
            backend.describe()
        );
    }
    let report = rotate::rotate(
        backend.as_ref(),
        &old,
        &new,
        Duration::from_secs(a.window),
        |e| {
            if !json_out {
                println!("[{:>7.2}s] {}", e.at, e.what);
                let _ = std::io::stdout().flush();
            }
        },
    )
    .with_context(|| format!("rotating the key of peer `{}`", a.peer))?;

    // Where the mesh file says the old key.
    let file_text = std::fs::read_to_string(&a.config).unwrap_or_default();
    let line = file_text
        .lines()
        .position(|l| l.contains(old_text.trim()))
        .map(|i| i + 1);
    let where_ = match line {
        Some(n) => format!("{}:{n}", a.config.display()),
        None => a.config.display().to_string(),
    };
    let managed = m.wg.private_key_file.is_some();
    let note = if managed {
        "the mesh file remains the source of truth: until it has the new key, `wgbpf load` \
         (and `wgbpf run`'s drift repair) would remove the new key and put the old key back"
    } else {
        "the mesh file remains the source of truth: update it (`wgbpf show -c` names peers \
         by their key in it, and once it has private_key_file `wgbpf load` would put the old \
         key back)"
    };
    if json_out {
        let mut v = serde_json::to_value(&report)?;
        v["peer"] = json!(a.peer);
        v["mesh_file_change"] = json!({
            "file": a.config.display().to_string(),
            "line": line,
            "peer": a.peer,
            "old": format!("public_key = \"{}\"", report.old_public_key),
            "new": format!("public_key = \"{}\"", report.new_public_key),
            "note": note,
        });
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!();
        println!("Now change peer `{}` in {where_}:", a.peer);
        println!("-public_key = \"{}\"", report.old_public_key);
        println!("+public_key = \"{}\"", report.new_public_key);
        println!("({note}.)");
    }
    Ok(())
}
