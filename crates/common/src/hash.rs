//! Fast, stable, non-cryptographic hashing for consistent-hash keys, and a tiny PRNG.
//!
//! The hash is part of the wire behaviour of a fleet: gateways (and shards) must agree on which
//! endpoint a key maps to, so the output for a given input is pinned by a test and must never
//! change silently. It is not DoS-resistant; a client can choose keys that collide, which only
//! concentrates that client's own traffic on one endpoint.

use std::net::IpAddr;

// Fractional parts of sqrt(2), sqrt(3), sqrt(5), sqrt(7) (odd, well mixed, no magic).
const K0: u64 = 0x6a09_e667_f3bc_c909;
const K1: u64 = 0xbb67_ae85_84ca_a73b;
const K2: u64 = 0x3c6e_f372_fe94_f82b;
const K3: u64 = 0xa54f_f53a_5f1d_36f1;
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// 64×64→128 multiply, folded: the high half carries the mixing of every input bit.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// The splitmix64 finalizer: a bijection with full avalanche.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash bytes (a header value, a cookie, an endpoint id) to a u64. Stable across releases.
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    hash_bytes_seeded(0, bytes)
}

/// [`hash_bytes`] with a seed, for independent hash functions over the same input (Maglev needs
/// two per endpoint).
pub fn hash_bytes_seeded(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ K0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = fold_mul(h ^ u64::from_le_bytes(word), K1);
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    // The length enters the last multiply so "a" and "a\0" differ.
    h = fold_mul(
        h ^ u64::from_le_bytes(tail) ^ K2,
        K3 ^ (bytes.len() as u64).wrapping_mul(GOLDEN),
    );
    mix64(h)
}

/// Hash a client IP (v4 and v6 never collide by construction: the lengths differ).
pub fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => hash_bytes(&v4.octets()),
        IpAddr::V6(v6) => hash_bytes(&v6.octets()),
    }
}

/// A deterministic splitmix64 generator: one u64 of state, seeded per shard, no dependency.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose sequence is fixed by `seed` (use the shard index, mixed with anything).
    pub fn new(seed: u64) -> Self {
        Rng {
            state: mix64(seed ^ K2),
        }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// A number in `0..n` (`n > 0`), by multiply-shift; the bias is below 2^-32 for any
    /// endpoint count a gateway will see.
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn regression_hash_values_are_stable_across_releases() {
        // Fleets rely on every gateway mapping a key to the same endpoint; if this changes,
        // a rolling upgrade reshuffles every sticky session.
        let pinned: &[(&[u8], u64)] = &[
            (b"", 0x800e_44c8_0268_ee35),
            (b"a", 0xe0e1_b989_fa87_7290),
            (b"user-42", 0xab05_7a0d_3b91_ecec),
            (b"203.0.113.7 and more than eight", 0x588b_f723_7532_3cc3),
        ];
        for (input, want) in pinned {
            assert_eq!(
                hash_bytes(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn hash_distinguishes_length_padding_and_seed() {
        let cases: &[&[u8]] = &[
            b"",
            b"a",
            b"a\0",
            b"\0",
            b"abcdefgh",
            b"abcdefgh\0",
            b"abcdefgi",
        ];
        let set: HashSet<u64> = cases.iter().map(|c| hash_bytes(c)).collect();
        assert_eq!(set.len(), cases.len());
        assert_ne!(hash_bytes_seeded(1, b"x"), hash_bytes_seeded(2, b"x"));
    }

    #[test]
    fn hash_spreads_sequential_keys_evenly_over_buckets() {
        let buckets = 16;
        let n = 64_000;
        let mut counts = vec![0u32; buckets];
        for i in 0..n {
            let key = format!("session-{i}");
            counts[(hash_bytes(key.as_bytes()) % buckets as u64) as usize] += 1;
        }
        let expected = n / buckets as u32;
        for (b, &c) in counts.iter().enumerate() {
            assert!(
                c.abs_diff(expected) < expected / 20,
                "bucket {b} got {c}, expected ~{expected}"
            );
        }
    }

    #[test]
    fn hash_ip_separates_v4_from_mapped_v6() {
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let v6: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_ne!(hash_ip(v4), hash_ip(v6));
        assert_eq!(hash_ip(v4), hash_ip("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn rng_is_deterministic_per_seed_and_below_stays_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let mut c = Rng::new(8);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..4).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[a.below(3)] += 1;
        }
        for c in counts {
            assert!(c.abs_diff(10_000) < 500, "{counts:?}");
        }
    }
}
