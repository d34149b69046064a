//! The options every etcd command shares, as etcdctl spells them: the
//! prefix, TLS (`--cacert --cert --key`) and auth (`--user`, the password
//! from a file or the environment, never from the command line).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use wgbpf::fleet::{layout::DEFAULT_PREFIX, Auth, Connection, Layout, TlsFiles};

/// The environment variable a password may come from.
pub const PASSWORD_ENV: &str = "WGBPF_ETCD_PASSWORD";

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// The fleet's keys live under this prefix (docs/fleet.md).
    #[arg(long, value_name = "P", default_value = DEFAULT_PREFIX)]
    pub prefix: String,
    /// Trust the etcd servers' certificates signed by this CA (PEM); turns
    /// TLS on.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// This client's certificate (PEM), for servers that ask for one; with --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// etcd user name (etcd's own authentication). The password comes from
    /// --password-file or $WGBPF_ETCD_PASSWORD, never from the command line.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// A file holding the password (its first line), readable by its owner only.
    #[arg(long, value_name = "FILE", requires = "user")]
    pub password_file: Option<PathBuf>,
}

impl StoreArgs {
    pub fn layout(&self) -> Result<Layout> {
        Ok(Layout::new(&self.prefix)?)
    }

    /// The connection to `endpoints` with these options.
    pub fn connection(&self, endpoints: &str) -> Result<Connection> {
        let mut c = Connection::new(endpoints);
        if self.cacert.is_some() || self.cert.is_some() {
            c.tls = Some(TlsFiles {
                cacert: self.cacert.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
            });
        }
        if let Some(user) = &self.user {
            if user.contains(':') {
                bail!("--user {}: give the password with --password-file or ${PASSWORD_ENV}, not on the command line", user.split(':').next().unwrap_or_default());
            }
            let password = match &self.password_file {
                Some(f) => read_password(f)?,
                None => std::env::var(PASSWORD_ENV).with_context(|| {
                    format!("--user {user}: no password (--password-file or ${PASSWORD_ENV})")
                })?,
            };
            c.auth = Some(Auth {
                user: user.clone(),
                password,
            });
        }
        Ok(c)
    }
}

fn read_password(f: &std::path::Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(f).with_context(|| format!("--password-file {}", f.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "--password-file {}: others may read it (mode {:o}); chmod 600 it",
            f.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let text =
        std::fs::read_to_string(f).with_context(|| format!("--password-file {}", f.display()))?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// A runtime for one command's requests.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}
