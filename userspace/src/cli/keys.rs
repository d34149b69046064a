//! `wgbpf keys`: key management. `keys rotate` moves a peer to its new
//! public key with a window during which both keys work (see
//! `wgbpf::wg::rotate` and docs/wireguard.md).

use std::{io::Write, path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use wgbpf::{
    daemon::control::{self, Request},
    source, utc,
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
/// source of truth: `wgbpf load` would otherwise put the old key back.
///
/// With `wgbpf run` serving the interface, the rotation is declared in the
/// mesh file instead (the peer's `public_key` becomes the new key,
/// `previous_public_key` the old one, `rotation_ends` the end of the
/// window; comments and layout kept) and the daemon is asked to reload:
/// its drift repair then carries the rotation out, and removes the old
/// key when the window ends. A refused reload puts the file back.
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
    // The daemon's drift repair would undo a rotation done behind its
    // back: with a daemon running, the rotation goes into the file and
    // the daemon carries it out.
    if control::ask(&m.interface, Request::Status, Duration::from_secs(5)).is_ok() {
        return rotate_through_daemon(&a, &m.interface, &old, &new);
    }
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

/// The rotation with a daemon running: the peer's entry in the mesh file
/// gets the new key and the window, the daemon reloads and carries it out.
fn rotate_through_daemon(a: &RotateArgs, iface: &str, old: &Key, new: &Key) -> Result<()> {
    let path = &a.config;
    let before = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let ends = std::time::SystemTime::now() + Duration::from_secs(a.window);
    let after = declare_rotation(&before, &a.peer, old, new, ends)
        .with_context(|| format!("{}: peer `{}`", path.display(), a.peer))?;
    replace_file(path, &after)?;
    let reply = control::ask(iface, Request::Reload, Duration::from_secs(300));
    let refused = match &reply {
        Ok(r) if r.ok => None,
        Ok(r) => Some(r.error.clone().unwrap_or_default()),
        Err(e) => Some(e.to_string()),
    };
    if let Some(why) = refused {
        replace_file(path, &before)?;
        bail!(
            "the daemon refused the rotation ({why}); {} is as it was",
            path.display()
        );
    }
    let ends_text = utc::format(ends);
    if a.json {
        println!(
            "{}",
            json!({
                "interface": iface,
                "peer": a.peer,
                "via": "daemon",
                "old_public_key": old.to_base64(),
                "new_public_key": new.to_base64(),
                "rotation_ends": ends_text,
                "file": path.display().to_string(),
                "policy_version": reply.ok().and_then(|r| r.policy_version),
            })
        );
    } else {
        println!(
            "{iface}: peer `{}` rotates to {} until {ends_text}, carried out by the running \
             daemon: both keys are accepted, the peer's addresses follow the key it uses, and \
             the old key is removed at the end.",
            a.peer,
            new.to_base64()
        );
        println!(
            "{} now says so (public_key, previous_public_key, rotation_ends); the two \
             rotation fields can be removed after {ends_text}.",
            path.display()
        );
    }
    Ok(())
}

/// `text` with peer `name`'s entry declaring the rotation from `old` to
/// `new` until `ends`; everything else, comments included, as it was.
fn declare_rotation(
    text: &str,
    name: &str,
    old: &Key,
    new: &Key,
    ends: std::time::SystemTime,
) -> Result<String> {
    let mut doc: toml_edit::DocumentMut = text.parse()?;
    let peers = doc
        .get_mut("peer")
        .and_then(|p| p.as_array_of_tables_mut())
        .context("no [[peer]] entries in this file (is the peer in an included file? declare the rotation there by hand: docs/wireguard.md)")?;
    let entry = peers
        .iter_mut()
        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
        .context("not in this file (is it in an included file? declare the rotation there by hand: docs/wireguard.md)")?;
    if entry.get("public_key").and_then(|k| k.as_str()) != Some(old.to_base64().as_str()) {
        bail!("its public_key is not the key on record; edit the file by hand");
    }
    let ends: toml_edit::Datetime = utc::format(ends)
        .parse()
        .context("formatting rotation_ends")?;
    entry["public_key"] = toml_edit::value(new.to_base64());
    entry["previous_public_key"] = toml_edit::value(old.to_base64());
    entry["rotation_ends"] = toml_edit::value(ends);
    Ok(doc.to_string())
}

/// Replaces `path`'s contents in one rename, keeping its mode.
fn replace_file(path: &std::path::Path, text: &str) -> Result<()> {
    let mode = std::fs::metadata(path)
        .with_context(|| path.display().to_string())?
        .permissions();
    let tmp = path.with_extension("wgbpf-tmp");
    std::fs::write(&tmp, text).with_context(|| tmp.display().to_string())?;
    std::fs::set_permissions(&tmp, mode).with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, path).with_context(|| path.display().to_string())?;
    Ok(())
}
