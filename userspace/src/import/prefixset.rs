//! Sets of addresses built by adding and removing prefixes in order (as
//! Tailscale's `ipsets` do), written back as the fewest CIDR prefixes.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Disjoint, sorted, non-adjacent inclusive ranges, per family (IPv4 as
/// the low 32 bits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixSet {
    v4: Vec<(u128, u128)>,
    v6: Vec<(u128, u128)>,
}

fn range(net: &IpNet) -> (bool, u128, u128) {
    match net.trunc() {
        IpNet::V4(n) => (
            true,
            u32::from(n.network()) as u128,
            u32::from(n.broadcast()) as u128,
        ),
        IpNet::V6(n) => (false, u128::from(n.network()), u128::from(n.broadcast())),
    }
}

type Ranges = Vec<(u128, u128)>;

/// The union of two sorted lists of disjoint ranges, merged where they
/// overlap or touch: linear, so adding a large set to another stays cheap.
fn union(a: &[(u128, u128)], b: &[(u128, u128)]) -> Ranges {
    let mut all: Ranges = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let next = if j >= b.len() || (i < a.len() && a[i] <= b[j]) {
            i += 1;
            a[i - 1]
        } else {
            j += 1;
            b[j - 1]
        };
        match all.last_mut() {
            Some(last) if last.1.checked_add(1).is_none_or(|end| next.0 <= end) => {
                last.1 = last.1.max(next.1);
            }
            _ => all.push(next),
        }
    }
    all
}

/// `a` without `b` (both sorted and disjoint), linear.
fn difference(a: &[(u128, u128)], b: &[(u128, u128)]) -> Ranges {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &(mut lo, hi) in a {
        // Skip removals wholly before this range.
        while j < b.len() && b[j].1 < lo {
            j += 1;
        }
        let mut k = j;
        let mut alive = true;
        while k < b.len() && b[k].0 <= hi {
            if b[k].0 > lo {
                out.push((lo, b[k].0 - 1));
            }
            match b[k].1.checked_add(1) {
                Some(next) if next <= hi => lo = next,
                _ => {
                    alive = false;
                    break;
                }
            }
            k += 1;
        }
        if alive {
            out.push((lo, hi));
        }
    }
    out
}

impl PrefixSet {
    fn family(&mut self, v4: bool) -> &mut Ranges {
        if v4 {
            &mut self.v4
        } else {
            &mut self.v6
        }
    }

    pub fn add(&mut self, net: &IpNet) {
        let (v4, lo, hi) = range(net);
        let ranges = self.family(v4);
        *ranges = union(ranges, &[(lo, hi)]);
    }

    #[cfg(test)]
    pub fn remove(&mut self, net: &IpNet) {
        let (v4, lo, hi) = range(net);
        let ranges = self.family(v4);
        *ranges = difference(ranges, &[(lo, hi)]);
    }

    /// Adds every address of `other`.
    pub fn extend(&mut self, other: &PrefixSet) {
        self.v4 = union(&self.v4, &other.v4);
        self.v6 = union(&self.v6, &other.v6);
    }

    /// Removes every address of `other`.
    pub fn subtract(&mut self, other: &PrefixSet) {
        self.v4 = difference(&self.v4, &other.v4);
        self.v6 = difference(&self.v6, &other.v6);
    }

    /// The set as the fewest prefixes, IPv4 first, each family in order.
    pub fn prefixes(&self) -> Vec<IpNet> {
        let mut out = Vec::new();
        for &(a, b) in &self.v4 {
            split(a, b, 32, &mut |a, len| {
                out.push(IpNet::V4(
                    Ipv4Net::new(Ipv4Addr::from(a as u32), len).expect("len <= 32"),
                ))
            });
        }
        for &(a, b) in &self.v6 {
            split(a, b, 128, &mut |a, len| {
                out.push(IpNet::V6(
                    Ipv6Net::new(Ipv6Addr::from(a), len).expect("len <= 128"),
                ))
            });
        }
        out
    }

    /// How many ranges of addresses: a lower bound of [`count`](Self::count),
    /// found without splitting them.
    pub fn ranges(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// How many prefixes [`prefixes`](Self::prefixes) would return.
    pub fn count(&self) -> usize {
        let mut n = 0;
        for (ranges, bits) in [(&self.v4, 32), (&self.v6, 128)] {
            for &(a, b) in ranges {
                split(a, b, bits, &mut |_, _| n += 1);
            }
        }
        n
    }
}

/// The inclusive range [a, b] of a `bits`-bit family as aligned blocks
/// (start, prefix length), largest first from `a`: one step per block.
fn split(mut a: u128, b: u128, bits: u8, emit: &mut dyn FnMut(u128, u8)) {
    loop {
        // The block is limited by the alignment of `a` and by what is left.
        let align = a.trailing_zeros().min(bits as u32);
        let fits = match (b - a).checked_add(1) {
            Some(left) => 127 - left.leading_zeros(),
            None => 128,
        };
        let size_log = align.min(fits);
        emit(a, bits - size_log as u8);
        if size_log == 128 {
            return;
        }
        let last = a + ((1u128 << size_log) - 1);
        if last >= b {
            return;
        }
        a = last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn add_and_remove_in_order() {
        let mut s = PrefixSet::default();
        s.add(&"10.0.0.0/8".parse().unwrap());
        s.remove(&"10.1.0.0/16".parse().unwrap());
        s.remove(&"10.0.0.1/32".parse().unwrap());
        assert_eq!(
            s.prefixes(),
            nets(&[
                "10.0.0.0/32",
                "10.0.0.2/31",
                "10.0.0.4/30",
                "10.0.0.8/29",
                "10.0.0.16/28",
                "10.0.0.32/27",
                "10.0.0.64/26",
                "10.0.0.128/25",
                "10.0.1.0/24",
                "10.0.2.0/23",
                "10.0.4.0/22",
                "10.0.8.0/21",
                "10.0.16.0/20",
                "10.0.32.0/19",
                "10.0.64.0/18",
                "10.0.128.0/17",
                "10.2.0.0/15",
                "10.4.0.0/14",
                "10.8.0.0/13",
                "10.16.0.0/12",
                "10.32.0.0/11",
                "10.64.0.0/10",
                "10.128.0.0/9",
            ])
        );
        // Adding back what was removed folds the set into one prefix.
        s.add(&"10.1.0.0/16".parse().unwrap());
        s.add(&"10.0.0.1/32".parse().unwrap());
        assert_eq!(s.prefixes(), nets(&["10.0.0.0/8"]));
    }

    /// Random adds and removes over a small network, against a plain
    /// array of addresses: the same members, and no two prefixes that
    /// could have been one.
    #[test]
    fn random_operations_match_a_plain_set() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = rand::random();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let random_set = |rng: &mut rand::rngs::StdRng| {
            let mut set = PrefixSet::default();
            let mut plain = [false; 256];
            for _ in 0..rng.gen_range(1..12) {
                let len = rng.gen_range(24..=32u8);
                let host: u8 = rng.gen();
                let net: IpNet = format!("10.0.0.{host}/{len}").parse().unwrap();
                let (_, lo, hi) = range(&net);
                let add = rng.gen_bool(0.6);
                for a in lo..=hi {
                    plain[(a & 0xff) as usize] = add;
                }
                if add {
                    set.add(&net);
                } else {
                    set.remove(&net);
                }
            }
            (set, plain)
        };
        for round in 0..600 {
            let (mut set, mut plain) = random_set(&mut rng);
            // Half the rounds, a whole set is added or taken away.
            if round % 2 == 1 {
                let (other, other_plain) = random_set(&mut rng);
                let add = rng.gen_bool(0.5);
                for (p, o) in plain.iter_mut().zip(other_plain) {
                    *p = if add { *p || o } else { *p && !o };
                }
                if add {
                    set.extend(&other);
                } else {
                    set.subtract(&other);
                }
            }
            let prefixes = set.prefixes();
            assert_eq!(set.count(), prefixes.len());
            for (i, member) in plain.iter().enumerate() {
                let a: std::net::IpAddr = format!("10.0.0.{i}").parse().unwrap();
                let n = prefixes.iter().filter(|p| p.contains(&a)).count();
                assert_eq!(n, usize::from(*member), "seed {seed}: {a} in {prefixes:?}");
            }
            for w in prefixes.windows(2) {
                let (a, b) = (w[0], w[1]);
                let siblings = a.prefix_len() == b.prefix_len()
                    && a.supernet().is_some_and(|s| Some(s) == b.supernet());
                assert!(!siblings, "seed {seed}: {a} and {b} are one prefix");
            }
        }
    }

    #[test]
    fn whole_families_and_edges() {
        let mut s = PrefixSet::default();
        s.add(&"::/0".parse().unwrap());
        s.add(&"0.0.0.0/0".parse().unwrap());
        assert_eq!(s.prefixes(), nets(&["0.0.0.0/0", "::/0"]));
        s.remove(&"255.255.255.255/32".parse().unwrap());
        s.remove(&"::/128".parse().unwrap());
        let p = s.prefixes();
        assert_eq!(p.len(), 32 + 128);
        assert!(p.contains(&"0.0.0.0/1".parse().unwrap()));
        assert!(p.contains(&"8000::/1".parse().unwrap()));
        assert!(p.contains(&"::1/128".parse().unwrap()));
        // Host bits are ignored, as in a CIDR.
        let mut t = PrefixSet::default();
        t.add(&"192.0.2.77/24".parse().unwrap());
        assert_eq!(t.prefixes(), nets(&["192.0.2.0/24"]));
    }
}
