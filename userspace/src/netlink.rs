//! A blocking netlink socket: one request at a time, its replies read up to
//! the acknowledgement (or, for a dump, `NLMSG_DONE`). The one request
//! helper for every netlink protocol wgbpf speaks: generic netlink (the
//! kernel's `wireguard` family) and rtnetlink (the WireGuard link, its
//! addresses and routes; the data plane's clsact filters).

use std::{io, os::fd::AsRawFd, time::Duration};

use netlink_packet_core::{
    NetlinkBuffer, NetlinkDeserializable, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_generic::{
    ctrl::{nlas::GenlCtrlAttrs, GenlCtrl, GenlCtrlCmd},
    GenlMessage,
};
use netlink_sys::{
    protocols::{NETLINK_GENERIC, NETLINK_ROUTE},
    Socket, SocketAddr,
};
use zeroize::Zeroize;

/// A netlink message header's length.
pub const NLMSG_HDRLEN: usize = 16;

/// Bound on waiting for the kernel's answer.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// The replies to one request, in order, with their netlink flags.
pub struct Replies<T> {
    pub messages: Vec<T>,
    /// Some reply had `NLM_F_DUMP_INTR`: the object changed during the
    /// dump, which must be read again.
    pub interrupted: bool,
}

/// A blocking netlink socket of `protocol`, bound, with a receive timeout
/// so that no request waits forever.
fn open_socket(protocol: isize) -> io::Result<Socket> {
    let mut sock = Socket::new(protocol)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let tv = libc::timeval {
        tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: a valid timeval of the size given, on our own socket.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

pub struct NlSocket {
    sock: Socket,
    seq: u32,
}

impl NlSocket {
    /// A generic netlink socket.
    pub fn generic() -> io::Result<NlSocket> {
        Self::open(NETLINK_GENERIC)
    }

    /// An rtnetlink socket.
    pub fn route() -> io::Result<NlSocket> {
        Self::open(NETLINK_ROUTE)
    }

    fn open(protocol: isize) -> io::Result<NlSocket> {
        Ok(NlSocket {
            sock: open_socket(protocol)?,
            seq: 0,
        })
    }

    /// The id of generic netlink family `name` (`CTRL_CMD_GETFAMILY`);
    /// `None` when the kernel has no such family (`ENOENT`).
    pub fn family_id(&mut self, name: &str) -> io::Result<Option<u16>> {
        let msg = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(name.to_string())],
        });
        let replies = match self.request(NetlinkMessage::from(msg), NLM_F_REQUEST, false) {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(replies
            .messages
            .iter()
            .find_map(|m: &GenlMessage<GenlCtrl>| {
                m.payload.nlas.iter().find_map(|a| match a {
                    GenlCtrlAttrs::FamilyId(id) => Some(*id),
                    _ => None,
                })
            }))
    }

    /// Sends `msg` with `flags` and reads the replies: up to
    /// `NLMSG_DONE` when `dump`, else up to the first message (an answer or
    /// the acknowledgement of `NLM_F_ACK`). An `NLMSG_ERROR` with an errno is
    /// that errno. Received bytes are zeroed once parsed (they may hold
    /// keys).
    pub fn request<T>(
        &mut self,
        mut msg: NetlinkMessage<T>,
        flags: u16,
        dump: bool,
    ) -> io::Result<Replies<T>>
    where
        T: NetlinkSerializable + NetlinkDeserializable,
    {
        self.seq = self.seq.wrapping_add(1);
        msg.header.flags = flags;
        msg.header.sequence_number = self.seq;
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        let sent = self.sock.send(&buf, 0);
        buf.zeroize();
        sent?;
        self.receive(dump)
    }

    /// Sends an already serialized message (its sequence number is `seq`)
    /// and reads the replies as [`Self::request`] does.
    pub fn request_bytes<T>(&mut self, bytes: &[u8], seq: u32, dump: bool) -> io::Result<Replies<T>>
    where
        T: NetlinkDeserializable,
    {
        self.seq = seq;
        self.sock.send(bytes, 0)?;
        self.receive(dump)
    }

    /// The next sequence number a caller serializing itself should use.
    pub fn next_seq(&self) -> u32 {
        self.seq.wrapping_add(1)
    }

    fn receive<T: NetlinkDeserializable>(&mut self, dump: bool) -> io::Result<Replies<T>> {
        let mut out = Replies {
            messages: Vec::new(),
            interrupted: false,
        };
        loop {
            let (mut data, _) = self.sock.recv_from_full()?;
            let parsed = parse_all::<T>(&data);
            data.zeroize();
            for m in parsed? {
                if m.header.sequence_number != self.seq {
                    continue; // a stale answer to an earlier request
                }
                if m.header.flags & NLM_F_DUMP_INTR != 0 {
                    out.interrupted = true;
                }
                match m.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(out),
                        Some(_) => return Err(e.to_io()),
                    },
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(inner) => {
                        out.messages.push(inner);
                        if !dump {
                            // The answer; an ACK may follow, which the next
                            // request skips by its sequence number.
                            return Ok(out);
                        }
                    }
                    NetlinkPayload::Noop => {}
                    NetlinkPayload::Overrun(_) => {
                        return Err(io::Error::other("netlink overrun"));
                    }
                    _ => {}
                }
            }
        }
    }
}

fn parse_all<T: NetlinkDeserializable>(data: &[u8]) -> io::Result<Vec<NetlinkMessage<T>>> {
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
    split_datagram(data)
        .map_err(bad)?
        .into_iter()
        .map(|m| {
            NetlinkMessage::<T>::deserialize(m)
                .map_err(|e| bad(format!("malformed netlink reply: {e}")))
        })
        .collect()
}

/// The messages of one datagram, each slice exactly one message.
pub fn split_datagram(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < bytes.len() {
        let buf = NetlinkBuffer::new_checked(&bytes[off..])
            .map_err(|e| format!("malformed netlink message: {e}"))?;
        let len = buf.length() as usize;
        if len < NLMSG_HDRLEN {
            return Err(format!("malformed netlink message: length {len}"));
        }
        out.push(&bytes[off..off + len]);
        off += (len + 3) & !3;
    }
    Ok(out)
}
