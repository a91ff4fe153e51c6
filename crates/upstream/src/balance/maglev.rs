//! Consistent hashing by Maglev (Eisenbud et al., NSDI 2016): a lookup table of prime size `M`
//! where each endpoint owns about `M / n` slots; a key goes to `table[hash % M]`.
//!
//! Each endpoint walks its own permutation of the slots (`offset + j * skip mod M`, both derived
//! from hashing its id, so the table depends on endpoint *ids*, not their order); endpoints take
//! turns claiming their next free preferred slot until the table is full. When an endpoint joins
//! or leaves, the others keep almost all of their slots, so only about `1/n` of keys move (the
//! `remapping_*` tests print the measured figure). Building costs O(M log M) and happens once per
//! endpoint-set change; a lookup is one modulo and one load.
//!
//! Weights are honoured by giving an endpoint a turn in proportion to its weight.
//!
//! When the chosen endpoint is ineligible the lookup walks forward through the table: the next
//! slots belong to endpoints drawn by their own permutations, so a down endpoint's keys spread
//! over the others instead of all landing on one neighbour, and each key still lands somewhere
//! stable while the outage lasts.

use super::EndpointSpec;
use shardgate_common::hash::hash_bytes_seeded;

/// The default table size: prime, and ≥ 100 × any realistic group size, which keeps the slot
/// share of each endpoint within about 1 % of ideal.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

/// How many table slots an ineligible pick walks before scanning endpoints directly.
const FALLBACK_SLOTS: usize = 64;

const OFFSET_SEED: u64 = 0x4d61_676c_6576_0001;
const SKIP_SEED: u64 = 0x4d61_676c_6576_0002;

/// Why a Maglev table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaglevError {
    /// The table size must be prime for every skip to yield a full permutation.
    NotPrime(u32),
    /// The table must have more slots than there are endpoints (ideally ≥ 100×).
    TooSmall { table_size: u32, endpoints: usize },
}

impl std::fmt::Display for MaglevError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaglevError::NotPrime(m) => write!(f, "maglev table size {m} is not prime"),
            MaglevError::TooSmall {
                table_size,
                endpoints,
            } => write!(
                f,
                "maglev table size {table_size} is too small for {endpoints} endpoints"
            ),
        }
    }
}

impl std::error::Error for MaglevError {}

/// A built Maglev lookup table.
#[derive(Debug, Clone)]
pub struct Maglev {
    /// Endpoint index per slot; empty when there are no endpoints with weight.
    table: Vec<u16>,
    endpoints: usize,
}

/// Is `m` prime? (Trial division; runs once per table build.)
pub fn is_prime(m: u32) -> bool {
    if m < 2 {
        return false;
    }
    let m = u64::from(m);
    let mut d = 2u64;
    while d * d <= m {
        if m % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

impl Maglev {
    /// Build the table for `endpoints` (ids hashed, weights honoured, weight 0 gets no slot).
    pub fn build(endpoints: &[EndpointSpec<'_>], table_size: u32) -> Result<Self, MaglevError> {
        if !is_prime(table_size) {
            return Err(MaglevError::NotPrime(table_size));
        }
        let m = table_size as usize;
        let n = endpoints.len();
        if n >= m || n >= usize::from(u16::MAX) {
            return Err(MaglevError::TooSmall {
                table_size,
                endpoints: n,
            });
        }
        let max_weight = endpoints.iter().map(|e| e.weight).max().unwrap_or(0);
        if max_weight == 0 {
            return Ok(Maglev {
                table: Vec::new(),
                endpoints: n,
            });
        }
        // Per endpoint: current slot in its permutation, its skip, and its weight credit.
        let mut pos: Vec<usize> = Vec::with_capacity(n);
        let mut skip: Vec<usize> = Vec::with_capacity(n);
        for e in endpoints {
            let id = e.id.as_bytes();
            pos.push((hash_bytes_seeded(OFFSET_SEED, id) % m as u64) as usize);
            skip.push((hash_bytes_seeded(SKIP_SEED, id) % (m as u64 - 1)) as usize + 1);
        }
        // Take turns in id order, so the table is a function of the id set alone: every shard
        // and every gateway builds the same table whatever order the endpoints arrived in.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_unstable_by_key(|&i| endpoints[i].id);
        let mut credit = vec![0u64; n];
        let mut table = vec![u16::MAX; m];
        let mut filled = 0;
        'fill: loop {
            for &i in &order {
                credit[i] += u64::from(endpoints[i].weight);
                if credit[i] < u64::from(max_weight) {
                    continue;
                }
                credit[i] -= u64::from(max_weight);
                while table[pos[i]] != u16::MAX {
                    pos[i] = (pos[i] + skip[i]) % m;
                }
                table[pos[i]] = i as u16;
                pos[i] = (pos[i] + skip[i]) % m;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        Ok(Maglev {
            table,
            endpoints: n,
        })
    }

    /// Number of endpoints the table was built for.
    pub fn len(&self) -> usize {
        self.endpoints
    }

    /// True when built for no endpoints.
    pub fn is_empty(&self) -> bool {
        self.endpoints == 0
    }

    /// The endpoint `key` maps to when everything is eligible (`None` if no endpoint has weight).
    #[inline]
    pub fn lookup(&self, key: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        Some(usize::from(
            self.table[(key % self.table.len() as u64) as usize],
        ))
    }

    /// The endpoint for `key` among eligible ones: its own slot, else the next eligible slot
    /// within a short walk, else the first eligible endpoint scanning from `key % n`.
    pub fn pick(&self, key: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let m = self.table.len();
        let slot = (key % m as u64) as usize;
        for step in 0..FALLBACK_SLOTS.min(m) {
            let e = usize::from(self.table[(slot + step) % m]);
            if eligible(e) {
                return Some(e);
            }
        }
        let n = self.endpoints;
        let start = (key % n as u64) as usize;
        (0..n).map(|k| (start + k) % n).find(|&i| eligible(i))
    }

    /// How many slots each endpoint owns (for tests and the admin view).
    pub fn slot_counts(&self) -> Vec<u32> {
        let mut counts = vec![0; self.endpoints];
        for &e in &self.table {
            counts[usize::from(e)] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate_common::hash::hash_bytes;

    fn ids(range: std::ops::Range<u32>) -> Vec<String> {
        range.map(|i| format!("10.0.0.{i}:8080")).collect()
    }

    fn build(ids: &[String], m: u32) -> Maglev {
        let specs: Vec<EndpointSpec<'_>> = ids.iter().map(|id| EndpointSpec::new(id, 1)).collect();
        Maglev::build(&specs, m).unwrap()
    }

    /// Share of `keys` whose endpoint id differs between two tables.
    fn remapped(before: (&Maglev, &[String]), after: (&Maglev, &[String]), keys: u64) -> f64 {
        let moved = (0..keys)
            .filter(|k| {
                let h = hash_bytes(&k.to_le_bytes());
                let a = &before.1[before.0.lookup(h).unwrap()];
                let b = &after.1[after.0.lookup(h).unwrap()];
                a != b
            })
            .count();
        moved as f64 / keys as f64
    }

    #[test]
    fn table_size_validation() {
        let specs = [
            EndpointSpec::new("a", 1),
            EndpointSpec::new("b", 1),
            EndpointSpec::new("c", 1),
        ];
        assert_eq!(
            Maglev::build(&specs, 65_536).unwrap_err(),
            MaglevError::NotPrime(65_536)
        );
        assert_eq!(
            Maglev::build(&specs, 3).unwrap_err(),
            MaglevError::TooSmall {
                table_size: 3,
                endpoints: 3
            }
        );
        assert!(Maglev::build(&specs, 5).is_ok());
        for (m, want) in [
            (0, false),
            (1, false),
            (2, true),
            (9, false),
            (251, true),
            (65_537, true),
        ] {
            assert_eq!(is_prime(m), want, "{m}");
        }
    }

    #[test]
    fn slots_are_shared_evenly() {
        let t = build(&ids(0..10), DEFAULT_TABLE_SIZE);
        let ideal = DEFAULT_TABLE_SIZE / 10;
        for (i, c) in t.slot_counts().into_iter().enumerate() {
            assert!(
                c.abs_diff(ideal) <= ideal / 50,
                "endpoint {i}: {c} slots, ideal {ideal}"
            );
        }
    }

    #[test]
    fn weights_scale_slot_share() {
        let specs = [
            EndpointSpec::new("a", 3),
            EndpointSpec::new("b", 1),
            EndpointSpec::new("c", 0),
        ];
        let counts = Maglev::build(&specs, DEFAULT_TABLE_SIZE)
            .unwrap()
            .slot_counts();
        assert_eq!(counts[2], 0, "weight 0 owns nothing");
        let ratio = f64::from(counts[0]) / f64::from(counts[1]);
        assert!((2.9..3.1).contains(&ratio), "{counts:?}");
        let none = Maglev::build(&[EndpointSpec::new("a", 0)], 7).unwrap();
        assert_eq!(none.lookup(1), None);
        assert_eq!(none.pick(1, |_| true), None);
    }

    #[test]
    fn table_depends_on_ids_not_order() {
        let fwd = ids(0..5);
        let mut rev = fwd.clone();
        rev.reverse();
        let (a, b) = (build(&fwd, 251), build(&rev, 251));
        for key in 0..1000u64 {
            assert_eq!(fwd[a.lookup(key).unwrap()], rev[b.lookup(key).unwrap()]);
        }
    }

    #[test]
    fn remapping_when_one_of_ten_leaves_is_about_a_tenth() {
        let all = ids(0..10);
        let nine: Vec<String> = all
            .iter()
            .filter(|id| !id.ends_with(".3:8080"))
            .cloned()
            .collect();
        let (a, b) = (
            build(&all, DEFAULT_TABLE_SIZE),
            build(&nine, DEFAULT_TABLE_SIZE),
        );
        let share = remapped((&a, &all), (&b, &nine), 200_000);
        println!(
            "maglev remapping, 10 -> 9 endpoints: {:.2}% of keys moved (ideal 10.00%)",
            share * 100.0
        );
        assert!((0.095..0.12).contains(&share), "{share}");
    }

    #[test]
    fn remapping_when_an_eleventh_joins_is_about_an_eleventh() {
        let ten = ids(0..10);
        let eleven = ids(0..11);
        let (a, b) = (
            build(&ten, DEFAULT_TABLE_SIZE),
            build(&eleven, DEFAULT_TABLE_SIZE),
        );
        let share = remapped((&a, &ten), (&b, &eleven), 200_000);
        println!(
            "maglev remapping, 10 -> 11 endpoints: {:.2}% of keys moved (ideal 9.09%)",
            share * 100.0
        );
        assert!((0.085..0.11).contains(&share), "{share}");
    }

    #[test]
    fn ineligible_endpoint_keys_spread_and_others_stay_put() {
        let all = ids(0..10);
        let t = build(&all, DEFAULT_TABLE_SIZE);
        let mut moved_to = [0u32; 10];
        for k in 0..50_000u64 {
            let h = hash_bytes(&k.to_le_bytes());
            let home = t.lookup(h).unwrap();
            let got = t.pick(h, |i| i != 3).unwrap();
            if home == 3 {
                assert_ne!(got, 3);
                moved_to[got] += 1;
            } else {
                assert_eq!(got, home, "keys of healthy endpoints never move");
            }
            assert_eq!(t.pick(h, |i| i != 3), Some(got), "stable during the outage");
        }
        let receivers = moved_to.iter().filter(|&&c| c > 0).count();
        assert_eq!(receivers, 9, "spread over all others: {moved_to:?}");
    }

    #[test]
    fn fallback_scan_and_none() {
        let t = build(&ids(0..4), 251);
        assert_eq!(t.pick(17, |_| false), None);
        for key in 0..500 {
            assert_eq!(
                t.pick(key, |i| i == 2),
                Some(2),
                "only one eligible, always found"
            );
        }
    }
}
