//! The daemon's control socket, `/run/wgbpf/IFACE.sock`: what makes a
//! reload honest. SIGHUP cannot answer, so `systemctl reload` used to
//! report success for a file the daemon then refused; `wgbpf reload` (the
//! unit's `ExecReload`) asks over this socket instead and waits for the
//! outcome: the new policy version, or the refusal with its reason.
//!
//! One request line (`reload` or `status`), one JSON reply line; or
//! `monitor`, answered with a stream of decisions (`wgbpf monitor`). The
//! socket is 0600 in a 0700 directory: only root asks. A request is read
//! with a deadline and a size limit, so a client that connects and says
//! nothing cannot hold the daemon; requests reach the main loop one at a
//! time, like SIGHUPs.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt},
    net::UnixListener,
    sync::{broadcast, mpsc, oneshot},
};

use super::denylog::Decision;
use crate::dataplane::lock::LOCK_DIR;

/// The longest request line read.
const MAX_REQUEST: u64 = 64;
/// How long a client has to send its request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("another `wgbpf run` already serves {iface}: its control socket {path} answers; stop it first (nothing was applied)")]
    InUse { iface: String, path: PathBuf },
    #[error("no `wgbpf run` serves {iface}: {path}: {source}")]
    NoDaemon {
        iface: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no `wgbpf run` is serving any interface (no control socket in {dir})")]
    NoSockets { dir: String },
    #[error("several `wgbpf run` daemons serve interfaces ({0}); name one with -i")]
    Several(String),
    #[error("control socket {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("control socket {path}: the daemon's reply is not understood: {reason}")]
    BadReply { path: PathBuf, reason: String },
}

/// What a client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Read the mesh file again and enforce it (what SIGHUP does).
    Reload,
    /// The running daemon's state, changing nothing.
    Status,
    /// Stream the data plane's decisions, one JSON line each, until the
    /// client hangs up (`wgbpf monitor`).
    Monitor,
}

impl Request {
    fn as_str(self) -> &'static str {
        match self {
            Request::Reload => "reload",
            Request::Status => "status",
            Request::Monitor => "monitor",
        }
    }

    fn parse(line: &str) -> Option<Request> {
        match line.trim() {
            "reload" => Some(Request::Reload),
            "status" => Some(Request::Status),
            "monitor" => Some(Request::Monitor),
            _ => None,
        }
    }
}

/// The daemon's answer, one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    /// False when the request was refused (a reload whose file failed:
    /// the running policy stays).
    pub ok: bool,
    pub interface: String,
    pub file: String,
    /// The policy version enforced after the request.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub policy_version: Option<u64>,
    /// For a reload that worked: what the enforce step reported.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub enforced: Option<serde_json::Value>,
    /// Why the request was refused.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// Where `iface`'s daemon listens.
pub fn socket_path(iface: &str) -> PathBuf {
    PathBuf::from(LOCK_DIR).join(format!("{iface}.sock"))
}

/// A request from a client, with the way back.
pub type Incoming = (Request, oneshot::Sender<Reply>);

/// The daemon's end: removes the socket file when dropped (a clean exit);
/// after a SIGKILL the next daemon finds it dead and replaces it.
pub struct ControlSocket {
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl ControlSocket {
    /// Binds `iface`'s socket. A socket that still answers belongs to a
    /// running daemon: refused. One that does not is a dead daemon's.
    pub fn bind(iface: &str) -> Result<ControlSocket, ControlError> {
        let path = socket_path(iface);
        let io = |what, source| ControlError::Io {
            path: path.clone(),
            what,
            source,
        };
        std::fs::create_dir_all(LOCK_DIR).map_err(|e| io("creating its directory", e))?;
        std::fs::set_permissions(LOCK_DIR, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("restricting its directory", e))?;
        if path.symlink_metadata().is_ok() {
            if UnixStream::connect(&path).is_ok() {
                return Err(ControlError::InUse {
                    iface: iface.to_string(),
                    path,
                });
            }
            std::fs::remove_file(&path).map_err(|e| io("removing a dead daemon's socket", e))?;
        }
        let listener =
            std::os::unix::net::UnixListener::bind(&path).map_err(|e| io("binding", e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("restricting", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| io("configuring", e))?;
        // Inside the runtime: tokio registers the socket with its reactor.
        let listener = UnixListener::from_std(listener).map_err(|e| io("registering", e))?;
        Ok(ControlSocket {
            path,
            listener: Some(listener),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts clients until the receiver is dropped; each request is
    /// passed to `requests` and its reply written back; a `monitor`
    /// client gets the decisions sent to `monitors`.
    pub fn serve(
        &mut self,
        requests: mpsc::Sender<Incoming>,
        monitors: broadcast::Sender<Arc<Decision>>,
    ) -> tokio::task::JoinHandle<()> {
        let listener = self.listener.take().expect("served once");
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (requests, monitors) = (requests.clone(), monitors.clone());
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, requests, monitors).await {
                        tracing::debug!(error = %e, "control socket client");
                    }
                });
            }
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn answer(
    stream: tokio::net::UnixStream,
    requests: mpsc::Sender<Incoming>,
    monitors: broadcast::Sender<Arc<Decision>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
    tokio::time::timeout(REQUEST_DEADLINE, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let Some(request) = Request::parse(&line) else {
        let reply = serde_json::json!({
            "ok": false,
            "error": format!("unknown request {:?}: say `reload` or `status`", line.trim()),
        });
        write.write_all(format!("{reply}\n").as_bytes()).await?;
        return Ok(());
    };
    if request == Request::Monitor {
        return stream_decisions(monitors.subscribe(), write).await;
    }
    let (tx, rx) = oneshot::channel();
    if requests.send((request, tx)).await.is_err() {
        return Ok(());
    }
    if let Ok(reply) = rx.await {
        let text = serde_json::to_string(&reply).map_err(std::io::Error::other)?;
        write.write_all(format!("{text}\n").as_bytes()).await?;
    }
    Ok(())
}

/// What a `monitor` client reads: one JSON line per decision, or
/// `{"lost": N}` when it fell behind by N.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum MonitorLine {
    Lost { lost: u64 },
    Decision(Box<Decision>),
}

async fn stream_decisions(
    mut rx: broadcast::Receiver<Arc<Decision>>,
    mut write: tokio::net::unix::OwnedWriteHalf,
) -> std::io::Result<()> {
    loop {
        let line = match rx.recv().await {
            Ok(d) => serde_json::to_string(&*d),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                serde_json::to_string(&MonitorLine::Lost { lost: n })
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
        .map_err(std::io::Error::other)?;
        // A client that hung up ends the stream here.
        write.write_all(format!("{line}\n").as_bytes()).await?;
    }
}

/// A connection to `iface`'s daemon, if one serves it.
fn connect(iface: &str) -> Result<(PathBuf, UnixStream), ControlError> {
    let path = socket_path(iface);
    let stream = UnixStream::connect(&path).map_err(|source| ControlError::NoDaemon {
        iface: iface.to_string(),
        path: path.clone(),
        source,
    })?;
    Ok((path, stream))
}

/// Opens a decision stream from `iface`'s daemon, if one serves it.
pub fn monitor(iface: &str) -> Result<BufReader<UnixStream>, ControlError> {
    let (path, mut stream) = connect(iface)?;
    stream
        .write_all(b"monitor\n")
        .map_err(|source| ControlError::Io {
            path,
            what: "sending the request",
            source,
        })?;
    Ok(BufReader::new(stream))
}

/// The interface whose daemon to ask: `iface` if given, else the only
/// daemon running (a socket left by a killed daemon does not count: only
/// sockets that answer do).
pub fn find_daemon(iface: Option<&str>) -> Result<String, ControlError> {
    if let Some(i) = iface {
        return Ok(i.to_string());
    }
    let mut found: Vec<String> = std::fs::read_dir(LOCK_DIR)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".sock").map(str::to_string)
                })
                .filter(|i| UnixStream::connect(socket_path(i)).is_ok())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.len() {
        0 => Err(ControlError::NoSockets {
            dir: LOCK_DIR.to_string(),
        }),
        1 => Ok(found.remove(0)),
        _ => Err(ControlError::Several(found.join(", "))),
    }
}

/// Asks `iface`'s daemon and waits up to `timeout` for its reply.
pub fn ask(iface: &str, request: Request, timeout: Duration) -> Result<Reply, ControlError> {
    let (path, mut stream) = connect(iface)?;
    let io = |what, source| ControlError::Io {
        path: path.clone(),
        what,
        source,
    };
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| io("configuring", e))?;
    stream
        .write_all(format!("{}\n", request.as_str()).as_bytes())
        .map_err(|e| io("sending the request", e))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| io("waiting for the reply", e))?;
    if line.is_empty() {
        return Err(ControlError::BadReply {
            path,
            reason: "the daemon closed the connection without answering (did it exit?)".into(),
        });
    }
    serde_json::from_str(&line).map_err(|e| ControlError::BadReply {
        path,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_ones_are_refused() {
        for r in [Request::Reload, Request::Status, Request::Monitor] {
            assert_eq!(Request::parse(&format!("{}\n", r.as_str())), Some(r));
        }
        assert_eq!(Request::parse("reboot"), None);
        assert_eq!(Request::parse(""), None);
    }
}
