//! `N` bytes of a packet at an address already checked against the end of
//! the packet (by `Bytes::view` of the program that made it): the one
//! reader of header fields, for the TC programs and the XDP guard alike.

use wgbpf_common::{map_v4, Addr};

#[derive(Clone, Copy)]
pub struct View<const N: usize>(pub usize);

impl<const N: usize> View<N> {
    #[inline(always)]
    pub fn u8(&self, at: usize) -> u8 {
        unsafe { *((self.0 + at) as *const u8) }
    }

    #[inline(always)]
    pub fn be16(&self, at: usize) -> u16 {
        u16::from_be(unsafe { core::ptr::read_unaligned((self.0 + at) as *const u16) })
    }

    #[inline(always)]
    pub fn v4_addr(&self, at: usize) -> Addr {
        map_v4(unsafe { core::ptr::read_unaligned((self.0 + at) as *const [u8; 4]) })
    }

    /// Sixteen bytes as two 8-byte loads (no memcpy call).
    #[inline(always)]
    pub fn v6_addr(&self, at: usize) -> Addr {
        let hi = unsafe { core::ptr::read_unaligned((self.0 + at) as *const u64) };
        let lo = unsafe { core::ptr::read_unaligned((self.0 + at + 8) as *const u64) };
        unsafe { core::mem::transmute::<[u64; 2], Addr>([hi, lo]) }
    }
}
