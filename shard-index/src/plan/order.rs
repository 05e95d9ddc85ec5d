//! The epoch's global sequence `S`: a round-robin interleave of the canonical nodes.
//!
//! Position `g` of `S` belongs to round `t` and, inside the round, to one of the nodes that
//! still have a `t`-th sample, in increasing node order. When all node lengths are within one
//! of each other and the longer nodes have the lowest ids (the usual case), this is simply
//! "node `g % C`, local position `g / C`" with the leftover tail going to the longer nodes.
//! Uneven lengths (possible with repeats, whose per-node copies cannot always be balanced)
//! are handled by bands: maximal runs of rounds with the same set of active nodes.
//!
//! `S` depends only on the canonical nodes, never on the physical topology, which is what
//! makes global batches identical for every topology and resumable across topologies.

/// A run of rounds `[lo, hi)` in which exactly the nodes with length `> lo` take part.
#[derive(Clone, Copy, Debug)]
struct Band {
    lo: u64,
    active: u64,
    /// Position in `S` of the band's first element.
    start: u64,
}

/// The interleaving of node sequences into `S` (O(C) memory, O(log C + C) queries).
#[derive(Clone, Debug)]
pub(crate) struct GlobalOrder {
    lens: Vec<u64>,
    bands: Vec<Band>,
    total: u64,
}

impl GlobalOrder {
    /// Builds the order for node lengths `lens` (`L_c`). The caller has checked that the total
    /// fits in u64.
    pub(crate) fn new(lens: Vec<u64>) -> Self {
        // Sorted lengths give "nodes with length >= level" by binary search: O(C log C) even
        // when every node has a different length.
        let mut sorted = lens.clone();
        sorted.sort_unstable();
        let mut levels: Vec<u64> = sorted.iter().copied().filter(|&l| l > 0).collect();
        levels.dedup();
        let mut bands = Vec::with_capacity(levels.len());
        let mut prev = 0u64;
        let mut pos = 0u64;
        for level in levels {
            let active = (sorted.len() - sorted.partition_point(|&l| l < level)) as u64;
            bands.push(Band {
                lo: prev,
                active,
                start: pos,
            });
            pos += (level - prev) * active;
            prev = level;
        }
        GlobalOrder {
            lens,
            bands,
            total: pos,
        }
    }

    #[cfg(test)]
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    pub(crate) fn lens(&self) -> &[u64] {
        &self.lens
    }

    fn band(&self, g: u64) -> Band {
        let i = self
            .bands
            .partition_point(|b| b.start <= g)
            .saturating_sub(1);
        // Only an empty order has no band, and callers never query one; a dummy avoids a panic.
        self.bands.get(i).copied().unwrap_or(Band {
            lo: 0,
            active: 1,
            start: 0,
        })
    }

    /// `out[c]` = how many of node `c`'s samples lie in `S[0, g)`. Because a node appears at
    /// most once per round and in local order, node `c`'s samples in `S[a, b)` are exactly its
    /// local positions `[F_c(a), F_c(b))`.
    pub(crate) fn counts_before(&self, g: u64, out: &mut Vec<u64>) {
        out.clear();
        if g >= self.total {
            out.extend_from_slice(&self.lens);
            return;
        }
        let band = self.band(g);
        let off = g - band.start;
        let full = off / band.active;
        let rem = off % band.active;
        let mut rank = 0u64;
        for &len in &self.lens {
            if len <= band.lo {
                out.push(len);
            } else {
                out.push(band.lo + full + u64::from(rank < rem));
                rank += 1;
            }
        }
    }

    /// `(node, local position)` of `S[g]`, `g < total`.
    pub(crate) fn locate(&self, g: u64) -> (usize, u64) {
        let band = self.band(g);
        let off = g - band.start;
        let round = band.lo + off / band.active;
        let mut want = off % band.active;
        for (c, &len) in self.lens.iter().enumerate() {
            if len > band.lo {
                if want == 0 {
                    return (c, round);
                }
                want -= 1;
            }
        }
        // Unreachable for g < total; answer something harmless rather than panic.
        (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(lens: &[u64]) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        let max = lens.iter().copied().max().unwrap_or(0);
        for t in 0..max {
            for (c, &l) in lens.iter().enumerate() {
                if l > t {
                    out.push((c, t));
                }
            }
        }
        out
    }

    #[test]
    fn matches_brute_force_interleave() {
        for lens in [
            vec![3, 3, 2, 2],
            vec![0, 5, 1, 3],
            vec![7],
            vec![2, 0, 0],
            vec![1, 4, 4, 2, 9],
        ] {
            let order = GlobalOrder::new(lens.clone());
            let expect = brute(&lens);
            assert_eq!(order.total(), expect.len() as u64);
            let mut counts = Vec::new();
            for (g, &want) in expect.iter().enumerate() {
                assert_eq!(order.locate(g as u64), want, "lens={lens:?} g={g}");
                order.counts_before(g as u64, &mut counts);
                for (c, &n) in counts.iter().enumerate() {
                    let brute_n = expect[..g].iter().filter(|e| e.0 == c).count() as u64;
                    assert_eq!(n, brute_n, "lens={lens:?} g={g} c={c}");
                }
            }
        }
    }
}
