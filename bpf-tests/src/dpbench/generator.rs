//! The packet generator: prebuilt frames written to an interface through
//! an AF_PACKET socket with sendmmsg(2), 64 frames per call, cycling over
//! all flows. It skips the sender's own UDP/IP stack and qdisc, so
//! the receiving side's path (and the filter in it) is what limits the rate.
//! On a veth, the receive path runs in the sender's own softirq; what the
//! receiver counts is what got through.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use anyhow::{bail, Result};

use super::netns;

const BATCH: usize = 64;
const ETH_P_IP: u16 = 0x0800;
const PACKET_QDISC_BYPASS: libc::c_int = 20;

pub struct Generator {
    fd: OwnedFd,
    ifindex: u32,
    frames: Vec<Vec<u8>>,
}

impl Generator {
    /// A sender on `ifname` in namespace `ns`. The socket is created
    /// inside it (and stays there); it receives nothing (protocol 0).
    pub fn open(ns: &str, ifname: &str, frames: Vec<Vec<u8>>) -> Result<Generator> {
        if frames.is_empty() {
            bail!("no frames to send");
        }
        let ifindex = netns::ifindex(ns, ifname)?;
        let fd = netns::enter(ns, || {
            // SAFETY: socket(2); the fd is owned below.
            let fd =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            // SAFETY: fd is a fresh, valid descriptor.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })?;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a pointer to a live c_int.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_QDISC_BYPASS,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        Ok(Generator {
            fd,
            ifindex,
            frames,
        })
    }

    /// Sends until `stop` is raised, adding the frames the kernel took to
    /// `sent` as it goes; `tid` gets the sending thread's id first (see
    /// [`thread_cpu_ns`]). Returns the frames sent in all.
    pub fn run(&self, stop: &AtomicBool, sent_so_far: &AtomicU64, tid: &AtomicI32) -> u64 {
        // SAFETY: gettid(2) has no preconditions.
        tid.store(unsafe { libc::gettid() }, Ordering::SeqCst);
        // SAFETY: all-zero is a valid sockaddr_ll; the fields are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_IP.to_be();
        addr.sll_ifindex = self.ifindex as i32;
        let mut iov: Vec<libc::iovec> = self
            .frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        // Pad to whole batches by wrapping around.
        let n = self.frames.len();
        let total = n.div_ceil(BATCH) * BATCH;
        for i in n..total {
            iov.push(iov[i % n]);
        }
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: all-zero is a valid msghdr; the pointers set here
                // point into `iov` and `addr`, which outlive `msgs`.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = &mut addr as *mut _ as *mut libc::c_void;
                h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                h.msg_hdr.msg_iov = v;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        let mut sent = 0u64;
        let mut at = 0;
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: `msgs[at..at + BATCH]` are valid, initialised headers.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs[at..].as_mut_ptr(),
                    BATCH as u32,
                    0,
                )
            };
            if r > 0 {
                sent += r as u64;
                sent_so_far.fetch_add(r as u64, Ordering::Relaxed);
            } else {
                // ENOBUFS and the like: the device is full, try again.
                std::thread::yield_now();
            }
            at = (at + BATCH) % total;
        }
        sent
    }
}
