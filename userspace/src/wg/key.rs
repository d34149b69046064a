//! WireGuard keys: 32 bytes, base64 for people and files, hex on the UAPI.
//!
//! A [`Key`] may be a private or preshared key, so it never shows itself:
//! `Debug` is redacted, there is no `Display`, and the bytes are zeroed when
//! it is dropped. Public keys are printed with [`Key::to_base64`], on
//! purpose. Private keys come only from files ([`read_key_file`]), which are
//! refused when group or others may read them, when they are symbolic
//! links, or when another user than root or this process's owns them.

use std::{
    fmt,
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

use base64::{engine::general_purpose::STANDARD, Engine};
use zeroize::Zeroize;

use super::WgError;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; 32]);

impl Key {
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 32 bytes from the kernel's random source (`getrandom`): a preshared
    /// key, or, [`Key::clamped`], a private key.
    pub fn random() -> std::io::Result<Key> {
        let mut k = [0u8; 32];
        let mut filled = 0;
        while filled < k.len() {
            // SAFETY: writes at most the rest of `k`.
            let n =
                unsafe { libc::getrandom(k[filled..].as_mut_ptr().cast(), k.len() - filled, 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            filled += n as usize;
        }
        Ok(Key(k))
    }

    /// The all-zero key, which WireGuard uses for "none".
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }

    /// Parses a base64 key (44 characters): the one key parser, for the
    /// mesh file, key files, the importers and the command line. The error
    /// never repeats the input, which may be a secret.
    pub fn from_base64(s: &str) -> Result<Key, &'static str> {
        if s.len() != 44 || !s.ends_with('=') {
            return Err("not a base64 WireGuard key (44 characters ending in '=')");
        }
        let mut buf = [0u8; 33];
        let n = STANDARD
            .decode_slice(s, &mut buf)
            .map_err(|_| "not valid base64")?;
        let out = if n == 32 {
            let mut k = [0u8; 32];
            k.copy_from_slice(&buf[..32]);
            Ok(Key(k))
        } else {
            Err("does not decode to 32 bytes")
        };
        buf.zeroize();
        out
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Lowercase hex, as the UAPI wants it.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
            s.push(char::from_digit((b & 15) as u32, 16).unwrap_or('0'));
        }
        s
    }

    pub fn from_hex(s: &str) -> Result<Key, &'static str> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return Err("hex key is not 64 characters");
        }
        let mut k = [0u8; 32];
        for (i, pair) in s.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16).ok_or("not hex")?;
            let lo = (pair[1] as char).to_digit(16).ok_or("not hex")?;
            k[i] = (hi * 16 + lo) as u8;
        }
        Ok(Key(k))
    }

    /// The public key of this private key (X25519 base point multiplication,
    /// with the usual clamping).
    pub fn public_key(&self) -> Key {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        Key(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    /// This key as a Curve25519 private key is stored by WireGuard
    /// implementations: clamped (`wg genkey` writes clamped keys already).
    /// Comparing clamped keys keeps an unclamped key file from looking
    /// different from the device on every load.
    pub fn clamped(&self) -> Key {
        let mut k = self.0;
        k[0] &= 248;
        k[31] = (k[31] & 127) | 64;
        Key(k)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Reads a base64 key from `path` (as `wg genkey` writes it). Refuses a
/// file that group or others may read or write, naming the file; the
/// file's contents never appear in an error.
pub fn read_key_file(path: &Path) -> Result<Key, WgError> {
    let err = |reason: String| WgError::KeyFile {
        path: path.to_path_buf(),
        reason,
    };
    // Opened once, without following a symlink, and checked on the open
    // file: what is checked is what is read.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                err("is a symbolic link; refusing (name the key file itself)".into())
            }
            _ => err(format!("cannot read: {e}")),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "mode {mode:04o} lets group or others access it; refusing (chmod 600 it)"
        )));
    }
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(err(format!(
            "owned by uid {}, neither root nor this process's user ({me}); refusing",
            meta.uid()
        )));
    }
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut text)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    let result = std::str::from_utf8(&text)
        .map_err(|_| "not text")
        .and_then(|t| Key::from_base64(t.trim()))
        .map_err(|why| err(format!("{why} (the file must hold one base64 key)")));
    text.zeroize();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    // RFC 7748 section 6.1: Alice's private and public keys.
    const PRIV_HEX: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const PUB_HEX: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

    #[test]
    fn hex_base64_and_public_key() {
        let k = Key::from_hex(PRIV_HEX).unwrap();
        assert_eq!(k.to_hex(), PRIV_HEX);
        assert_eq!(Key::from_base64(&k.to_base64()).unwrap(), k);
        assert_eq!(k.public_key().to_hex(), PUB_HEX);
        assert_eq!(format!("{k:?}"), "Key(<redacted>)");
        assert!(Key::from_base64("short").is_err());
        assert!(Key::from_base64(&"A".repeat(44)).is_err());
        assert!(Key::from_hex(&"g".repeat(64)).is_err());
        assert!(Key::from_bytes([0; 32]).is_zero());
        let c = Key::from_bytes([0xff; 32]).clamped();
        assert_eq!((c.as_bytes()[0], c.as_bytes()[31]), (0xf8, 0x7f));
        assert_eq!(c.public_key(), Key::from_bytes([0xff; 32]).public_key());
    }

    #[test]
    fn key_files_must_be_private_and_valid() {
        let dir = std::env::temp_dir().join(format!("wgbpf-keytest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, mode: u32, text: &str| {
            let p = dir.join(name);
            let _ = std::fs::remove_file(&p);
            std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(mode)
                .open(&p)
                .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
                .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let secret = Key::from_hex(PRIV_HEX).unwrap().to_base64();
        let good = write("good.key", 0o600, &format!("{secret}\n"));
        assert_eq!(read_key_file(&good).unwrap().to_hex(), PRIV_HEX);

        let open = write("open.key", 0o640, &secret);
        let e = read_key_file(&open).unwrap_err().to_string();
        assert!(e.contains("open.key") && e.contains("0640"), "{e}");
        assert!(!e.contains(&secret), "{e}");

        let bad = write("bad.key", 0o600, "not a key at all, but secret-ish");
        let e = read_key_file(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.key") && !e.contains("secret-ish"), "{e}");

        let e = read_key_file(&dir.join("missing.key"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.key"), "{e}");

        // A symlink is not followed, even to a good key: whoever controls
        // the link's directory would choose what is read.
        let link = dir.join("link.key");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&good, &link).unwrap();
        let e = read_key_file(&link).unwrap_err().to_string();
        assert!(e.contains("link.key") && e.contains("symbolic link"), "{e}");

        // A file owned by another user (not root) could be rewritten by it.
        let foreign = write("foreign.key", 0o600, &secret);
        std::os::unix::fs::chown(&foreign, Some(12345), None).unwrap();
        let e = read_key_file(&foreign).unwrap_err().to_string();
        assert!(e.contains("foreign.key") && e.contains("uid 12345"), "{e}");

        // A directory is not a key file.
        let e = read_key_file(&dir).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
