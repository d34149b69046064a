//! `wgbpf export wg-quick`: a peer's own configuration from the mesh file,
//! as text, a file, or a QR code (see `wgbpf::export`).

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use wgbpf::{
    export::{self, Secrets},
    source,
    wg::{self, read_key_file},
};

/// Write configurations for the mesh's peers.
#[derive(Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    format: ExportFormat,
}

#[derive(Subcommand)]
enum ExportFormat {
    WgQuick(WgQuickArgs),
}

/// A peer's wg-quick file: its address, DNS and MTU, and the gateway as its
/// peer (public key, `public_endpoint`, AllowedIPs from the policy,
/// keepalive).
///
/// Without --private-key-file the private (and preshared) key lines are
/// comments saying where the keys come from, and the text goes to stdout.
/// With it, the file holds secrets: it is written only with -o (created
/// 0600), --png or --qr, never printed as text.
#[derive(Args)]
pub struct WgQuickArgs {
    /// The gateway's mesh file.
    #[arg(short, long)]
    config: PathBuf,
    /// The peer's name in the mesh file.
    #[arg(long)]
    peer: String,
    /// The peer's private key file (owner-only, as `wg genkey` writes it):
    /// a complete configuration, with the preshared key if the peer has one.
    #[arg(long, value_name = "FILE")]
    private_key_file: Option<PathBuf>,
    /// Write the configuration to FILE (created 0600; see --force).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace FILE (-o, --png) if it exists.
    #[arg(long)]
    force: bool,
    /// Show it as a QR code on the terminal (for a phone's WireGuard app).
    #[arg(long)]
    qr: bool,
    /// Write it as a QR code in a PNG image (created 0600).
    #[arg(long, value_name = "FILE")]
    png: Option<PathBuf>,
}

pub fn run(a: ExportArgs) -> Result<()> {
    match a.format {
        ExportFormat::WgQuick(w) => wg_quick(w),
    }
}

fn wg_quick(a: WgQuickArgs) -> Result<()> {
    let mesh = source::load(&a.config)?;
    let gateway_public_key = match &mesh.wg.private_key_file {
        Some(f) => read_key_file(f)
            .with_context(|| format!("the gateway's private_key_file {}", f.display()))?
            .public_key(),
        None => wg::open_backend(
            &mesh.interface,
            wg::BackendChoice::from_env().map_err(anyhow::Error::msg)?,
        )
        .and_then(|b| b.get())
        .ok()
        .and_then(|s| s.public_key)
        .with_context(|| {
            format!(
                "the gateway's public key: the mesh file has no private_key_file and {} cannot be read here",
                mesh.interface
            )
        })?,
    };
    let peer = mesh
        .wg
        .peers
        .iter()
        .find(|p| p.name == a.peer)
        .with_context(|| format!("{}: no peer `{}`", a.config.display(), a.peer))?;
    let (private_key, preshared_key) = match &a.private_key_file {
        Some(f) => {
            let k =
                read_key_file(f).with_context(|| format!("--private-key-file {}", f.display()))?;
            let psk = peer
                .preshared_key_file
                .as_ref()
                .map(|p| {
                    read_key_file(p)
                        .with_context(|| format!("peer `{}`'s preshared_key_file", a.peer))
                })
                .transpose()?;
            (Some(k), psk)
        }
        None => (None, None),
    };
    let exported = export::wg_quick(
        &mesh,
        &a.config.display().to_string(),
        &a.peer,
        &Secrets {
            gateway_public_key,
            private_key,
            preshared_key,
        },
    )
    .with_context(|| a.config.display().to_string())?;
    let to_stdout = a.output.is_none() && a.png.is_none() && !a.qr;
    if to_stdout && exported.has_secrets {
        bail!(
            "the configuration holds the peer's private key: write it with -o FILE (created 0600), \
             --png FILE or --qr; it is not printed as text"
        );
    }
    if to_stdout {
        print!("{}", exported.text);
    }
    if let Some(path) = &a.output {
        write_private(path, exported.text.as_bytes(), a.force)?;
        eprintln!(
            "{}: peer `{}`'s configuration (0600)",
            path.display(),
            a.peer
        );
    }
    if let Some(path) = &a.png {
        let png = export::qr_png(&exported.text, 8).map_err(anyhow::Error::msg)?;
        write_private(path, &png, a.force)?;
        eprintln!(
            "{}: peer `{}`'s configuration as a QR code",
            path.display(),
            a.peer
        );
    }
    if a.qr {
        print!(
            "{}",
            export::qr_terminal(&exported.text)
                .context("the configuration is too long for a QR code")?
        );
        println!();
    }
    Ok(())
}

/// Creates `path` 0600 (no symlink followed), or replaces it with `force`.
fn write_private(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    if force {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| path.display().to_string()),
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| {
            format!(
                "{}{}",
                path.display(),
                if path.exists() {
                    " (exists: --force replaces it)"
                } else {
                    ""
                }
            )
        })?;
    f.write_all(bytes)
        .with_context(|| path.display().to_string())
}
