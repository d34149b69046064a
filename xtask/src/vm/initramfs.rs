//! The guest's initramfs: an uncompressed newc cpio archive written here
//! (no cpio tool, and /dev/console needs no mknod on the host).

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use super::kernel::{output, Kernel};

enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev(u32, u32),
}

#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    fn dirs_for(&mut self, path: &str) {
        let mut p = Path::new(path).parent();
        while let Some(d) = p {
            let s = d.to_string_lossy().trim_start_matches('/').to_string();
            if s.is_empty() {
                break;
            }
            self.entries.entry(s).or_insert(Entry::Dir);
            p = d.parent();
        }
    }

    fn put(&mut self, path: &str, e: Entry) {
        self.dirs_for(path);
        self.entries
            .insert(path.trim_start_matches('/').to_string(), e);
    }

    pub fn dir(&mut self, path: &str) {
        self.put(path, Entry::Dir);
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.put(path, Entry::File { data, mode });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.put(path, Entry::Symlink(target.to_string()));
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        self.put(path, Entry::CharDev(major, minor));
    }

    /// A host file, at the same path in the guest (symlinks followed).
    pub fn host_file(&mut self, host: &Path, guest: &str) -> Result<()> {
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        self.file(guest, data, 0o755);
        Ok(())
    }

    /// A dynamically linked host binary and every shared library it needs
    /// (found with ldd), at their host paths.
    pub fn binary(&mut self, host: &Path, guest: &str) -> Result<()> {
        self.host_file(host, guest)?;
        for lib in shared_libs(host)? {
            let g = lib.to_string_lossy().into_owned();
            if !self.entries.contains_key(g.trim_start_matches('/')) {
                self.host_file(&lib, &g)?;
            }
        }
        Ok(())
    }

    /// A release binary without its debug info (a third of the size).
    pub fn stripped_binary(&mut self, host: &Path, guest: &str) -> Result<()> {
        let name = host.file_name().unwrap_or_default().to_string_lossy();
        let stripped = std::env::temp_dir().join(format!("wgbpf-vm-{}-{name}", std::process::id()));
        let ok = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&stripped)
            .arg(host)
            .status()
            .is_ok_and(|s| s.success());
        let r = self.binary(if ok { &stripped } else { host }, guest);
        let _ = std::fs::remove_file(&stripped);
        r
    }

    /// The archive in the kernel's "newc" format. Parents come before their
    /// children (BTreeMap order: "a" < "a/b").
    pub fn to_newc(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (name, e)) in (1u32..).zip(&self.entries) {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match e {
                Entry::Dir => (0o040755, &[], (0, 0)),
                Entry::File { data, mode } => (0o100000 | mode, data, (0, 0)),
                Entry::Symlink(t) => (0o120777, t.as_bytes(), (0, 0)),
                Entry::CharDev(ma, mi) => (0o020600, &[], (*ma, *mi)),
            };
            header(&mut out, ino, mode, data.len(), rdev, name);
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        header(&mut out, 0, 0, 0, (0, 0), "TRAILER!!!");
        out
    }
}

fn header(out: &mut Vec<u8>, ino: u32, mode: u32, size: usize, rdev: (u32, u32), name: &str) {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .with_context(|| format!("ldd {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || !out.status.success() {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        let path = match l.split_once("=>") {
            Some((_, rhs)) => rhs.trim(),
            None => l,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        } else if l.contains("not found") {
            bail!("{}: {l}", bin.display());
        }
    }
    Ok(libs)
}

/// What goes into the guest besides the kernel.
pub struct Contents<'a> {
    pub kernel: &'a Kernel,
    pub wgbpf: &'a Path,
    /// userspace/examples/smoke: loads the programs, prints the verifier's
    /// instruction counts.
    pub smoke: Option<&'a Path>,
    pub init: &'a Path,
    pub label: &'a str,
    pub expect_attach: &'a str,
}

/// Modules the guest loads, with their dependencies.
const MODULES: [&str; 4] = ["wireguard", "veth", "sch_ingress", "cls_bpf"];

pub fn build(c: &Contents) -> Result<Vec<u8>> {
    let mut a = Archive::default();
    for d in [
        "dev", "proc", "sys", "run", "tmp", "etc", "root", "sbin", "usr/bin",
    ] {
        a.dir(d);
    }
    a.symlink("var/run", "/run");
    a.char_dev("dev/console", 5, 1);
    a.char_dev("dev/null", 1, 3);
    a.binary(&which("busybox")?, "/bin/busybox")?;
    a.symlink("bin/sh", "busybox");
    a.file("init", std::fs::read(c.init)?, 0o755);
    a.file(
        "etc/wgbpf-vm.conf",
        format!("LABEL={}\nEXPECT_ATTACH={}\n", c.label, c.expect_attach).into_bytes(),
        0o644,
    );
    for (tool, guest) in [
        ("ip", "/usr/sbin/ip"),
        ("tc", "/usr/sbin/tc"),
        ("wg", "/usr/bin/wg"),
    ] {
        a.binary(&which(tool)?, guest)?;
    }
    a.file(
        "etc/wgbpf-vm/peers-10k.txt",
        scale_peers(SCALE_PEERS).into_bytes(),
        0o644,
    );
    a.stripped_binary(c.wgbpf, "/usr/local/bin/wgbpf")?;
    if let Some(smoke) = c.smoke {
        a.stripped_binary(smoke, "/usr/local/bin/wgbpf-smoke")?;
    }

    let mut order = String::new();
    for (i, m) in super::kernel::module_files(c.kernel, &MODULES)?
        .iter()
        .enumerate()
    {
        let file = m.file_name().unwrap().to_string_lossy().into_owned();
        let plain = file.strip_suffix(".xz").unwrap_or(&file);
        let name = format!("{i:02}-{plain}");
        a.file(&format!("lib/modules/wgbpf/{name}"), read_module(m)?, 0o644);
        order.push_str(&name);
        order.push('\n');
    }
    a.file("lib/modules/wgbpf/order", order.into_bytes(), 0o644);
    Ok(a.to_newc())
}

/// Peers of the guest's scale check (vmtest/init.sh, "at scale").
const SCALE_PEERS: u32 = 10_000;

/// `NAME PUBLIC_KEY ADDRESS/32` for `n` synthetic peers: s1 … sN, keys
/// made from their number (a peer's public key is any 32 bytes to the
/// kernel; made here, since 10,000 `wg genkey` under TCG would take
/// minutes), addresses 10.100.0.2 on.
fn scale_peers(n: u32) -> String {
    let mut out = String::new();
    for i in 1..=n {
        let mut key = [0x5au8; 32];
        key[..4].copy_from_slice(&i.to_le_bytes());
        let addr = std::net::Ipv4Addr::from(0x0a64_0001 + i);
        out.push_str(&format!("s{i} {} {addr}/32\n", base64(&key)));
    }
    out
}

/// Standard base64 with padding (RFC 4648), as WireGuard writes keys.
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ABC[(v >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A module file, decompressed (busybox insmod takes plain .ko files).
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    if name.ends_with(".xz") {
        let mut child = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("running xz")?;
        let mut data = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut data)?;
        if !child.wait()?.success() {
            bail!("xz -d {name} failed");
        }
        Ok(data)
    } else if name.ends_with(".zst") || name.ends_with(".gz") {
        let tool = if name.ends_with(".zst") {
            "zstd"
        } else {
            "gzip"
        };
        let out = Command::new(tool).arg("-dc").arg(path).output()?;
        if !out.status.success() {
            bail!("{tool} -d {name} failed");
        }
        Ok(out.stdout)
    } else {
        Ok(std::fs::read(path)?)
    }
}

fn which(tool: &str) -> Result<PathBuf> {
    let out = output(Command::new("sh").args(["-c", &format!("command -v {tool}")]))
        .with_context(|| format!("{tool} is not installed (run scripts/setup.sh)"))?;
    Ok(PathBuf::from(out.trim()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_is_the_standard_one() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(super::base64(&[0xff; 32]).len(), 44);
    }

    #[test]
    fn scale_peers_are_distinct_and_inside_the_subnet() {
        let text = super::scale_peers(10_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10_000);
        assert_eq!(lines[0].split(' ').nth(2), Some("10.100.0.2/32"));
        assert_eq!(lines[9_999].split(' ').nth(2), Some("10.100.39.17/32"));
        let keys: std::collections::BTreeSet<&str> =
            lines.iter().map(|l| l.split(' ').nth(1).unwrap()).collect();
        assert_eq!(keys.len(), 10_000);
    }
}
