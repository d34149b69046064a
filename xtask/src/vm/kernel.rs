//! Debian's kernel packages: resolve, download (only when missing) and
//! extract into the cache, with `depmod` run on the extracted tree.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// A kernel the VM test boots.
pub struct KernelSpec {
    /// What the user names it by (`--kernel 6.1`).
    pub label: &'static str,
    /// The Debian meta-package that depends on the current image package.
    pub meta: &'static str,
    /// The image package's name starts with this.
    pub prefix: &'static str,
    /// How wgbpf must attach on it by default.
    pub expect_attach: &'static str,
}

pub const KERNELS: [KernelSpec; 2] = [
    KernelSpec {
        label: "6.1",
        meta: "linux-image-cloud-amd64",
        prefix: "linux-image-6.1.",
        expect_attach: "clsact",
    },
    KernelSpec {
        label: "6.12",
        meta: "linux-image-6.12-cloud-amd64",
        prefix: "linux-image-6.12.",
        expect_attach: "tcx",
    },
];

/// An extracted kernel package.
pub struct Kernel {
    pub package: String,
    pub version: String,
    /// The kernel release (`uname -r`), the name of its modules directory.
    pub release: String,
    /// The extracted package root (has boot/ and lib/modules/).
    pub root: PathBuf,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("WGBPF_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/wgbpf-vm"))
}

/// The kernel for `spec`, downloaded and extracted if it is not in the
/// cache yet. Without package lists or network, falls back to the newest
/// kernel of that series already in the cache.
pub fn obtain(spec: &KernelSpec) -> Result<Kernel> {
    let kernels = cache_dir().join("kernels");
    std::fs::create_dir_all(&kernels).with_context(|| format!("creating {}", kernels.display()))?;
    let (package, version) = match resolve(spec) {
        Ok(pv) => pv,
        Err(e) => {
            return cached_fallback(&kernels, spec)
                .with_context(|| format!("resolving {}: {e:#}", spec.meta))
        }
    };
    let dir = kernels.join(format!("{package}_{}", version.replace(':', "%3a")));
    if !dir.join(".complete").exists() {
        fetch(&package, &version, &dir)?;
    }
    open(&dir, &package, &version)
}

/// (image package, version) that the meta-package currently points to.
/// Refreshes the package lists once if they do not know it.
fn resolve(spec: &KernelSpec) -> Result<(String, String)> {
    match resolve_once(spec) {
        Ok(pv) => Ok(pv),
        Err(_) => {
            eprintln!("vm: refreshing the package lists (apt-get update)");
            run_quiet(Command::new("apt-get").args(["update", "-qq"]))?;
            resolve_once(spec)
        }
    }
}

fn resolve_once(spec: &KernelSpec) -> Result<(String, String)> {
    let deps = output(Command::new("apt-cache").args(["depends", "--no-recommends", spec.meta]))?;
    let package = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with(spec.prefix) && !p.ends_with("-dbg"))
        .with_context(|| format!("{} depends on no {}* package", spec.meta, spec.prefix))?
        .to_string();
    let show = output(Command::new("apt-cache").args(["show", "--no-all-versions", &package]))?;
    let version = show
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("no version for {package}"))?;
    Ok((package, version))
}

fn fetch(package: &str, version: &str, dir: &Path) -> Result<()> {
    let debs = cache_dir().join("debs");
    std::fs::create_dir_all(&debs)?;
    eprintln!("vm: downloading {package} {version} (apt-get download)");
    let want = format!("{package}={version}");
    let download = |c: &mut Command| {
        run_quiet(
            c.current_dir(&debs)
                .args(["-o", "APT::Sandbox::User=root", "download", &want]),
        )
    };
    if download(&mut Command::new("apt-get")).is_err() {
        // Stale lists name a file the mirror no longer has.
        run_quiet(Command::new("apt-get").args(["update", "-qq"]))?;
        download(&mut Command::new("apt-get"))?;
    }
    let deb = std::fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        })
        .with_context(|| format!("apt-get download left no {package} .deb"))?;
    let tmp = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    run_quiet(Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp))?;
    let release = release_of(&tmp)?;
    // modules.dep & co. for modprobe --show-depends (made at install time,
    // not shipped in the package).
    run_quiet(Command::new("depmod").arg("-b").arg(&tmp).arg(&release))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir)?;
    std::fs::write(dir.join(".complete"), format!("{package} {version}\n"))?;
    std::fs::remove_file(&deb)?;
    Ok(())
}

fn cached_fallback(kernels: &Path, spec: &KernelSpec) -> Result<Kernel> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(kernels)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(".complete").exists())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(spec.prefix))
        })
        .collect();
    found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    let Some(dir) = found.pop() else {
        bail!("and no {}* kernel in {}", spec.prefix, kernels.display());
    };
    let stamp = std::fs::read_to_string(dir.join(".complete"))?;
    let mut it = stamp.split_whitespace();
    let (package, version) = (
        it.next().unwrap_or_default().to_string(),
        it.next().unwrap_or_default().to_string(),
    );
    eprintln!("vm: using the cached {package} {version}");
    open(&dir, &package, &version)
}

fn open(dir: &Path, package: &str, version: &str) -> Result<Kernel> {
    let k = Kernel {
        package: package.to_string(),
        version: version.to_string(),
        release: release_of(dir)?,
        root: dir.to_path_buf(),
    };
    if !k.vmlinuz().exists() {
        bail!("{} has no kernel image", k.vmlinuz().display());
    }
    Ok(k)
}

fn release_of(root: &Path) -> Result<String> {
    let modules = root.join("lib/modules");
    let mut rel = std::fs::read_dir(&modules)
        .with_context(|| format!("reading {}", modules.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok());
    let r = rel
        .next()
        .with_context(|| format!("nothing in {}", modules.display()))?;
    Ok(r)
}

/// The module files to insmod, in order, for `names` (dependencies first,
/// each once; built-in ones are skipped).
pub fn module_files(k: &Kernel, names: &[&str]) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = Vec::new();
    for name in names {
        let deps = output(Command::new("modprobe").arg("-d").arg(&k.root).args([
            "-S",
            &k.release,
            "--show-depends",
            name,
        ]))?;
        for l in deps.lines() {
            if let Some(p) = l.strip_prefix("insmod ") {
                let p = PathBuf::from(p.trim());
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
    Ok(out)
}

pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_quiet(cmd: &mut Command) -> Result<()> {
    output(cmd).map(|_| ())
}
