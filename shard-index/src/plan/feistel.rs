//! Keyed hashing and keyed pseudo-random permutations over arbitrary domain sizes.
//!
//! The planner must shuffle sequences of up to 10^10 samples without ever materialising them,
//! so every shuffle is a *function* `position -> position` that can be evaluated in O(1):
//! a balanced Feistel network over the smallest even bit width covering the domain, made
//! exact for any domain size `n` by cycle-walking (re-encrypt until the value falls inside
//! `[0, n)`). Because the bit width is at most one bit more than needed on each half, the
//! covering domain is < 4n and the expected number of walks is below 4.
//!
//! The round function and key derivation use the SplitMix64 finaliser, a fast bijective
//! 64-bit mixer with full avalanche. We write our own instead of depending on `rand`: the
//! plan must be bit-for-bit reproducible forever (resume states outlive library upgrades),
//! so its randomness cannot depend on another crate's versioned algorithms.

/// Golden-ratio increment used by SplitMix64; separates successive inputs before mixing.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// Feistel rounds for domains of at least 2^SMALL_BITS values. Four rounds already give a
/// pseudo-random permutation when the halves are wide (Luby–Rackoff); six leave margin.
const ROUNDS: usize = 6;
/// Rounds for smaller domains: with halves of a few bits each round mixes little, and six
/// rounds leave a measurable bias (a 10-element domain mapped one element 12% too often).
const SMALL_ROUNDS: usize = 12;
const SMALL_BITS: u32 = 16;
// `encrypt` relies on an even round count to restore the half widths.
const _: () =
    assert!(ROUNDS.is_multiple_of(2) && SMALL_ROUNDS.is_multiple_of(2) && SMALL_ROUNDS >= ROUNDS);

/// SplitMix64 finaliser: a bijection on `u64` with good avalanche.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Derives a 64-bit key from a tuple of integers (domain tag first, by convention).
///
/// Each part is folded through the mixer so that `(a, b)` and `(b, a)` give unrelated keys;
/// callers always pass tuples of a fixed arity per domain tag, so no length prefix is needed.
#[inline]
pub(crate) fn derive_key(parts: &[u64]) -> u64 {
    let mut h: u64 = 0x243f_6a88_85a3_08d3; // pi digits: an arbitrary non-zero start
    for &part in parts {
        h = mix64(h.wrapping_add(GOLDEN) ^ part);
    }
    h
}

/// Domain tags so that keys for different purposes never coincide even with equal tuples.
pub(crate) mod tag {
    /// Per-stream shard order, stable across epochs: `(tag, seed, stream)`.
    pub const SHARD_ORDER: u64 = 0x5348_4152_445f_4f52;
    /// Per-epoch piece order inside a canonical node: `(tag, seed, epoch, node, stream)`.
    pub const PIECE_ORDER: u64 = 0x5049_4543_455f_4f52;
    /// Per-epoch rotation of each repeated copy: `(tag, seed, epoch, node, stream)`.
    pub const COPY_ROTATION: u64 = 0x434f_5059_5f52_4f54;
    /// Per-epoch window permutation base key: `(tag, seed, epoch, node)`; window index mixed in later.
    pub const WINDOW: u64 = 0x5749_4e44_4f57_5f5f;
}

/// A keyed permutation of `[0, n)`, evaluated pointwise.
///
/// The network works on the smallest bit width `b >= 2` with `2^b >= n`, split into halves of
/// `ceil(b/2)` and `floor(b/2)` bits (an unbalanced Feistel network whose halves swap widths
/// every round; an even round count restores the layout). Covering only `2^b < 2n` values keeps
/// the expected cycle walk below 2 steps for every `n`.
#[derive(Clone, Debug)]
pub(crate) struct Feistel {
    n: u64,
    left_bits: u32,
    right_bits: u32,
    rounds: usize,
    round_keys: [u64; SMALL_ROUNDS],
}

#[inline]
fn low_mask(bits: u32) -> u64 {
    // Widths are at most 32 here, so the shift never overflows.
    (1u64 << bits) - 1
}

impl Feistel {
    /// Permutation of `[0, n)` selected by `key`. `n` may be 0 or 1 (both trivially identity).
    pub(crate) fn new(n: u64, key: u64) -> Self {
        let bits = if n <= 1 {
            2
        } else {
            (64 - (n - 1).leading_zeros()).max(2)
        };
        let rounds = if bits < SMALL_BITS {
            SMALL_ROUNDS
        } else {
            ROUNDS
        };
        let mut round_keys = [0u64; SMALL_ROUNDS];
        for (i, rk) in round_keys.iter_mut().enumerate().take(rounds) {
            *rk = mix64(key ^ (i as u64 + 1).wrapping_mul(GOLDEN));
        }
        Feistel {
            n,
            left_bits: bits.div_ceil(2),
            right_bits: bits / 2,
            rounds,
            round_keys,
        }
    }

    /// Domain size.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.n
    }

    /// Image of `x` under the permutation; `x` must be `< n` (other values are returned as is,
    /// which keeps a caller bug from turning into an endless cycle walk).
    #[inline]
    pub(crate) fn apply(&self, x: u64) -> u64 {
        if self.n <= 1 || x >= self.n {
            return x;
        }
        // Cycle-walking: x lies on a cycle of the covering permutation, and that cycle returns
        // to x, so the walk meets a value < n after at most one full cycle.
        let mut v = x;
        loop {
            v = self.encrypt(v);
            if v < self.n {
                return v;
            }
        }
    }

    #[inline]
    fn encrypt(&self, v: u64) -> u64 {
        let (mut wl, mut wr) = (self.left_bits, self.right_bits);
        let mut left = v >> wr;
        let mut right = v & low_mask(wr);
        for &rk in &self.round_keys[..self.rounds] {
            // (L, R) -> (R, L ^ F(R)): invertible given R, whatever the widths.
            let next_right = left ^ (mix64(right ^ rk) & low_mask(wl));
            left = right;
            right = next_right;
            std::mem::swap(&mut wl, &mut wr);
        }
        // The round count is even, so the widths are back to (left_bits, right_bits).
        (left << wr) | right
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feistel_is_a_bijection_for_domains_up_to_2000() {
        for n in 1..=2000u64 {
            for key in [0u64, 1, 0xdead_beef, u64::MAX] {
                let perm = Feistel::new(n, key);
                assert_eq!(perm.len(), n);
                let mut seen = vec![false; n as usize];
                for x in 0..n {
                    let y = perm.apply(x);
                    assert!(y < n, "n={n} key={key} x={x} -> {y}");
                    assert!(!seen[y as usize], "n={n} key={key}: {y} hit twice");
                    seen[y as usize] = true;
                }
            }
        }
    }

    #[test]
    fn feistel_handles_huge_domains() {
        // Near the top of u64 the halves are 32 bits; make sure nothing overflows.
        let n = u64::MAX - 7;
        let perm = Feistel::new(n, 42);
        for x in [0, 1, n / 2, n - 1] {
            assert!(perm.apply(x) < n);
        }
    }

    #[test]
    fn different_keys_give_different_permutations() {
        let a = Feistel::new(1000, 1);
        let b = Feistel::new(1000, 2);
        let same = (0..1000).filter(|&x| a.apply(x) == b.apply(x)).count();
        // Two random permutations agree on ~1 point on average.
        assert!(same < 10, "{same} fixed agreements");
    }

    #[test]
    fn small_domains_are_close_to_uniform() {
        // Over many keys, every x should land on every y about equally often.
        let n = 10u64;
        let keys = 20_000u64;
        let mut hits = vec![vec![0u32; n as usize]; n as usize];
        for key in 0..keys {
            let perm = Feistel::new(n, derive_key(&[key]));
            for x in 0..n {
                hits[x as usize][perm.apply(x) as usize] += 1;
            }
        }
        // Pearson chi-square over the 10x10 table: ~81-100 for a uniform shuffle (sd ~13).
        // Six rounds on these 2-bit halves scored ~208; twelve score ~115.
        let expect = (keys / n) as f64;
        let chi: f64 = hits
            .iter()
            .flatten()
            .map(|&h| (f64::from(h) - expect).powi(2) / (expect * 0.9))
            .sum();
        assert!(chi < 150.0, "chi-square {chi}: {hits:?}");
        // Pairs too: (perm(0), perm(1)) over the 90 ordered pairs of distinct values.
        let mut pairs = vec![0u32; (n * n) as usize];
        for key in 0..keys {
            let perm = Feistel::new(n, derive_key(&[key, 1]));
            pairs[(perm.apply(0) * n + perm.apply(1)) as usize] += 1;
        }
        let expect = keys as f64 / 90.0;
        let chi: f64 = (0..n * n)
            .filter(|i| i / n != i % n)
            .map(|i| (f64::from(pairs[i as usize]) - expect).powi(2) / expect)
            .sum();
        assert!(chi < 150.0, "pair chi-square {chi}");
    }

    #[test]
    fn derive_key_is_order_sensitive() {
        assert_ne!(derive_key(&[1, 2]), derive_key(&[2, 1]));
        assert_ne!(derive_key(&[0]), derive_key(&[0, 0]));
    }
}
