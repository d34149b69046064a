//! The kernel's WireGuard, over generic netlink (family "wireguard"):
//! `WG_CMD_GET_DEVICE` (a dump) reads the device, `WG_CMD_SET_DEVICE`
//! changes it. Blocking, one socket per call, each `SET` message
//! acknowledged before the next is sent (as wg(8) does).
//!
//! [`messages`] builds and reads the messages without a kernel (tested in
//! `userspace/tests/wg_kernel_messages.rs`); [`crate::netlink`] is the
//! socket, for generic netlink and rtnetlink alike. [`link`] creates the interface
//! itself as wg-quick would (`ip link add IFACE type wireguard`, its
//! addresses, MTU, routes). See docs/wireguard.md, "The kernel backend".

pub mod link;
pub mod messages;

use std::{
    io,
    sync::atomic::{AtomicUsize, Ordering},
};

use netlink_packet_core::NetlinkMessage;
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::WireguardMessage;

use self::messages::{device_from_dump, get_device_message, scrub, set_device_messages, to_bytes};
use super::{
    model::{ChangeSet, DeviceState},
    Backend, InterfaceSpec, WgError,
};
use crate::netlink::NlSocket;
use link::LinkReport;

/// The generic netlink family of the kernel's WireGuard.
pub const FAMILY: &str = "wireguard";
/// How often a dump that the device's changes interrupted is read again.
const DUMP_ATTEMPTS: usize = 5;

/// The kernel's generic netlink family id for WireGuard, `None` when the
/// kernel has no WireGuard (module not loaded and not loadable) or generic
/// netlink cannot be reached.
pub fn family_id() -> Option<u16> {
    NlSocket::generic().ok()?.family_id(FAMILY).ok()?
}

/// A kernel WireGuard interface, reached over generic netlink.
#[derive(Debug)]
pub struct KernelBackend {
    iface: String,
    family: u16,
    messages: AtomicUsize,
}

impl KernelBackend {
    /// The kernel backend for `iface`, if the kernel has WireGuard. Whether
    /// `iface` exists and is a WireGuard interface shows on the first call.
    pub fn open(iface: &str) -> Option<KernelBackend> {
        family_id().map(|family| KernelBackend::with_family(iface, family))
    }

    pub fn with_family(iface: &str, family: u16) -> KernelBackend {
        KernelBackend {
            iface: iface.to_string(),
            family,
            messages: AtomicUsize::new(0),
        }
    }

    /// How many `WG_CMD_SET_DEVICE` messages this handle has sent.
    pub fn set_messages(&self) -> usize {
        self.messages.load(Ordering::SeqCst)
    }

    fn err(&self, message: impl Into<String>) -> WgError {
        WgError::Device {
            iface: self.iface.clone(),
            backend: "kernel",
            message: message.into(),
        }
    }

    /// An errno from the kernel, said for people.
    fn errno(&self, what: &str, e: io::Error) -> WgError {
        let hint = match e.raw_os_error() {
            Some(libc::ENODEV) => format!(
                ": no such interface (create it first: ip link add {} type wireguard)",
                self.iface
            ),
            Some(libc::EOPNOTSUPP) => ": not a WireGuard interface".to_string(),
            Some(libc::EPERM) => ": needs CAP_NET_ADMIN".to_string(),
            _ => String::new(),
        };
        self.err(format!("{what}: {e}{hint}"))
    }

    fn socket(&self) -> Result<NlSocket, WgError> {
        NlSocket::generic().map_err(|e| self.errno("opening a generic netlink socket", e))
    }
}

impl Backend for KernelBackend {
    fn kind(&self) -> &'static str {
        "kernel"
    }

    fn interface(&self) -> &str {
        &self.iface
    }

    fn describe(&self) -> String {
        format!(
            "kernel generic netlink (family {FAMILY}, id {})",
            self.family
        )
    }

    fn get(&self) -> Result<DeviceState, WgError> {
        let mut sock = self.socket()?;
        for _ in 0..DUMP_ATTEMPTS {
            let mut req = GenlMessage::from_payload(get_device_message(&self.iface));
            req.set_resolved_family_id(self.family);
            let replies = sock
                .request(NetlinkMessage::from(req), messages::GET_FLAGS, true)
                .map_err(|e| self.errno("WG_CMD_GET_DEVICE", e))?;
            if replies.interrupted {
                continue;
            }
            let mut msgs: Vec<WireguardMessage> =
                replies.messages.into_iter().map(|m| m.payload).collect();
            let state = device_from_dump(&self.iface, &msgs).map_err(|m| self.err(m));
            scrub(&mut msgs);
            return state;
        }
        Err(self.err(format!(
            "the device changed during each of {DUMP_ATTEMPTS} reads (NLM_F_DUMP_INTR)"
        )))
    }

    fn apply(&self, changes: &ChangeSet) -> Result<(), WgError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut msgs = set_device_messages(&self.iface, changes);
        let total = msgs.len();
        let mut sock = self.socket()?;
        let mut result = Ok(());
        for (n, msg) in msgs.iter().enumerate() {
            let seq = sock.next_seq();
            let mut bytes = to_bytes(msg, self.family, messages::SET_FLAGS, seq);
            self.messages.fetch_add(1, Ordering::SeqCst);
            let sent = sock.request_bytes::<GenlMessage<WireguardMessage>>(&bytes, seq, false);
            zeroize::Zeroize::zeroize(&mut bytes);
            if let Err(e) = sent {
                let what = if total == 1 {
                    "WG_CMD_SET_DEVICE".to_string()
                } else {
                    format!(
                        "WG_CMD_SET_DEVICE message {} of {total} ({n} applied)",
                        n + 1
                    )
                };
                result = Err(self.errno(&what, e));
                break;
            }
        }
        scrub(&mut msgs);
        result
    }

    fn ensure_interface(&self, spec: &InterfaceSpec) -> Result<Option<LinkReport>, WgError> {
        link::ensure_link(&self.iface, spec).map(Some)
    }
}
