//! Traffic between the mesh's hosts, every call bounded by a timeout.
//!
//! Sockets are created by a thread that has entered the host's namespace
//! (see `netns::in_netns`); servers keep running on their own threads until
//! their [`Listener`] is dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::exec::run_with_timeout;
use crate::host::Host;
use crate::netns::in_netns;

/// How often server loops look at their stop flag.
const POLL: Duration = Duration::from_millis(20);
/// A server gives up on a silent client after this long.
const SERVER_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// UDP round trips resend their probe this often until the deadline.
const UDP_RESEND: Duration = Duration::from_millis(200);
/// Bound on `udp_send` as a whole (it only waits for local buffers).
const UDP_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP or UDP echo server running in a host's namespace. Dropping it
/// stops the server and closes its socket.
pub struct Listener {
    port: u16,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// The bound port (useful after asking for port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// TCP: connections accepted so far. UDP: datagrams received so far
    /// (counts what `udp_send` got through).
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    fn start<F>(port: u16, serve: F) -> Listener
    where
        F: FnOnce(Arc<AtomicBool>, Arc<AtomicUsize>) + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (s, c) = (stop.clone(), served.clone());
        let thread = thread::spawn(move || serve(s, c));
        Listener {
            port,
            stop,
            served,
            thread: Some(thread),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP echo server on all addresses (v4 and v6) of `host`, port `port`
/// (0 picks one). Each connection is served on its own thread: it echoes
/// whatever it reads until the client closes.
pub fn tcp_listen(host: &Host, port: u16) -> Result<Listener> {
    // [::] is dual-stack here: net.ipv6.bindv6only is per namespace and 0
    // in every namespace we create.
    let listener = in_netns(&host.netns, move || {
        let l = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
    .with_context(|| format!("tcp_listen on {}:{port}", host.name))?;
    let port = listener.local_addr()?.port();
    Ok(Listener::start(port, move |stop, served| {
        accept_loop(listener, stop, served)
    }))
}

fn accept_loop(listener: TcpListener, stop: Arc<AtomicBool>, served: Arc<AtomicUsize>) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                served.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || echo_stream(stream));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
    }
}

fn echo_stream(mut stream: TcpStream) {
    // Accepted sockets do not inherit O_NONBLOCK on Linux; the timeouts
    // bound the thread's life if a client stalls.
    let _ = stream.set_read_timeout(Some(SERVER_IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(SERVER_IO_TIMEOUT));
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// True iff a TCP connection from `from` to `to:port` is established within
/// `timeout` and a probe echoes back intact before it runs out. Refused,
/// reset, unreachable and timed-out connections are `false`.
pub fn tcp_connect(from: &Host, to: IpAddr, port: u16, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    in_netns(&from.netns, move || {
        Ok(tcp_roundtrip(SocketAddr::new(to, port), deadline).is_ok())
    })
}

fn tcp_roundtrip(addr: SocketAddr, deadline: Instant) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, remaining(deadline)?)?;
    let probe = probe_payload();
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    stream.write_all(&probe)?;
    let mut echo = vec![0u8; probe.len()];
    stream.set_read_timeout(Some(remaining(deadline)?))?;
    stream.read_exact(&mut echo)?;
    if echo == probe {
        Ok(())
    } else {
        Err(std::io::Error::new(ErrorKind::InvalidData, "echo mismatch"))
    }
}

/// Time left until `deadline`, as an error once it has passed (socket
/// timeouts of zero mean "forever" or are rejected).
fn remaining(deadline: Instant) -> std::io::Result<Duration> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(ErrorKind::TimedOut.into()),
    }
}

/// A payload unique enough that a stale echo cannot pass for this one.
fn probe_payload() -> Vec<u8> {
    format!("wgbpf-testbed {:016x}\n", rand::random::<u64>()).into_bytes()
}

/// A UDP echo server on all addresses (v4 and v6) of `host`: every
/// datagram is sent back to its sender.
pub fn udp_echo(host: &Host, port: u16) -> Result<Listener> {
    let socket = in_netns(&host.netns, move || {
        let s = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port))?;
        s.set_read_timeout(Some(POLL))?;
        Ok(s)
    })
    .with_context(|| format!("udp_echo on {}:{port}", host.name))?;
    let port = socket.local_addr()?.port();
    Ok(Listener::start(port, move |stop, served| {
        echo_datagrams(socket, stop, served)
    }))
}

/// A UDP sink: counts datagrams (see [`Listener::served`]), answers none,
/// so a test can count packets one way without replies in the other.
pub fn udp_sink(host: &Host, port: u16) -> Result<Listener> {
    let socket = in_netns(&host.netns, move || {
        let s = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port))?;
        s.set_read_timeout(Some(POLL))?;
        Ok(s)
    })
    .with_context(|| format!("udp_sink on {}:{port}", host.name))?;
    let port = socket.local_addr()?.port();
    Ok(Listener::start(port, move |stop, served| {
        serve_datagrams(socket, stop, served, false)
    }))
}

fn echo_datagrams(socket: UdpSocket, stop: Arc<AtomicBool>, served: Arc<AtomicUsize>) {
    serve_datagrams(socket, stop, served, true)
}

fn serve_datagrams(socket: UdpSocket, stop: Arc<AtomicBool>, served: Arc<AtomicUsize>, echo: bool) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((n, peer)) = socket.recv_from(&mut buf) {
            served.fetch_add(1, Ordering::SeqCst);
            if echo {
                let _ = socket.send_to(&buf[..n], peer);
            }
        }
    }
}

/// True iff a datagram from `from` to `to:port` is echoed back within
/// `timeout`. The probe is resent every 200 ms, so one lost packet does
/// not fail it; an ICMP port-unreachable answer ends it early with `false`.
pub fn udp_roundtrip(from: &Host, to: IpAddr, port: u16, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    in_netns(&from.netns, move || {
        let socket = UdpSocket::bind(unspecified(to))?;
        // Connected, so that ICMP errors are reported and only the echo
        // server's answers are received.
        socket.connect((to, port))?;
        Ok(udp_probe(&socket, deadline))
    })
}

fn udp_probe(socket: &UdpSocket, deadline: Instant) -> bool {
    let probe = probe_payload();
    let mut buf = [0u8; 512];
    while let Ok(left) = remaining(deadline) {
        match socket.send(&probe) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return false,
            _ => {}
        }
        let resend_at = Instant::now() + UDP_RESEND.min(left);
        while let Ok(wait) = remaining(resend_at) {
            let _ = socket.set_read_timeout(Some(wait));
            match socket.recv(&mut buf) {
                Ok(n) if buf[..n] == probe[..] => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => return false,
                Err(_) => {}
            }
        }
    }
    false
}

fn unspecified(to: IpAddr) -> SocketAddr {
    match to {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// Sends exactly `count` datagrams of `payload_len` bytes from `from` to
/// `to:port` without waiting for any answer. Fails only if they cannot be
/// handed to the local stack (within 10 s).
pub fn udp_send(
    from: &Host,
    to: IpAddr,
    port: u16,
    count: usize,
    payload_len: usize,
) -> Result<()> {
    let deadline = Instant::now() + UDP_SEND_TIMEOUT;
    in_netns(&from.netns, move || {
        // Unconnected: ICMP errors from earlier datagrams must not abort
        // the remaining sends.
        let socket = UdpSocket::bind(unspecified(to))?;
        let payload = vec![0x5au8; payload_len];
        for i in 0..count {
            send_one(&socket, &payload, (to, port).into(), deadline)
                .with_context(|| format!("udp_send datagram {i} of {count} to {to}:{port}"))?;
        }
        Ok(())
    })
}

/// Retries while the socket buffer is full (ENOBUFS / EAGAIN), so the
/// count stays exact.
fn send_one(socket: &UdpSocket, payload: &[u8], to: SocketAddr, deadline: Instant) -> Result<()> {
    loop {
        match socket.send_to(payload, to) {
            Ok(n) if n == payload.len() => return Ok(()),
            Ok(n) => bail!("short send: {n} of {} bytes", payload.len()),
            Err(e) if is_transient(&e) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
}

/// True iff `to` answers an ICMP(v6) echo from `from` within `timeout`.
/// Requests go out every 200 ms until the first reply, so a packet lost
/// while a handshake completes does not fail it.
pub fn ping(from: &Host, to: IpAddr, timeout: Duration) -> Result<bool> {
    // ping's own deadline (-w) takes whole seconds; the precise bound is
    // enforced by killing it.
    let secs = timeout.as_secs_f64().ceil().max(1.0) as u64;
    let family = if to.is_ipv4() { "-4" } else { "-6" };
    let mut cmd: Command = from.cmd("ping");
    cmd.args(["-n", "-q", family, "-c", "1", "-i", "0.2"])
        .args(["-w", &secs.to_string(), &to.to_string()]);
    // Unreachable or dropped is `false`, but a missing namespace is a bug.
    let ns = crate::netns::netns_path(&from.netns);
    if !ns.exists() {
        bail!("ping from {}: no namespace {}", from.name, ns.display());
    }
    let out = run_with_timeout(&mut cmd, timeout)?;
    Ok(out.success())
}
