//! `wgbpf genkey`, `pubkey`, `genpsk`: as wg(8)'s, one base64 key per line
//! on stdout (`pubkey` reads a private key on stdin), or, given a path, into
//! a new file only its owner can read (never over an existing one).

use std::{
    io::{Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use clap::Args;
use wgbpf::wg::Key;
use zeroize::Zeroize;

/// Generate a private key (base64, clamped), like `wg genkey`.
#[derive(Args)]
pub struct GenkeyArgs {
    /// Write it to this new file (mode 0600) instead of stdout.
    out: Option<PathBuf>,
}

/// Generate a preshared key (base64), like `wg genpsk`.
#[derive(Args)]
pub struct GenpskArgs {
    /// Write it to this new file (mode 0600) instead of stdout.
    out: Option<PathBuf>,
}

/// Read a private key on stdin and print its public key, like `wg pubkey`.
#[derive(Args)]
pub struct PubkeyArgs {}

pub fn genkey(a: GenkeyArgs) -> Result<()> {
    let k = Key::random().context("reading random bytes")?.clamped();
    emit(&k, a.out.as_deref())
}

pub fn genpsk(a: GenpskArgs) -> Result<()> {
    let k = Key::random().context("reading random bytes")?;
    emit(&k, a.out.as_deref())
}

pub fn pubkey(_: PubkeyArgs) -> Result<()> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading the private key on stdin")?;
    let private = Key::from_base64(text.trim()).map_err(|w| anyhow::anyhow!("stdin: {w}"));
    text.zeroize();
    println!("{}", private?.public_key().to_base64());
    Ok(())
}

/// A secret key to stdout, or to a new 0600 file.
fn emit(k: &Key, out: Option<&Path>) -> Result<()> {
    let mut line = k.to_base64() + "\n";
    let result = match out {
        None => std::io::stdout()
            .write_all(line.as_bytes())
            .context("writing to stdout"),
        Some(path) => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()).and_then(|()| f.sync_all()))
            .with_context(|| format!("writing {} (it must not exist yet)", path.display())),
    };
    line.zeroize();
    result
}
