//! A canonical node's epoch sequence: mixing windows, each shuffled by a keyed permutation.
//!
//! The node's sequence (length `L = Σ_s T_s`, with `T_s` the node's epoch samples of stream
//! `s`) is cut into windows of `W` positions. Window `j` takes from every stream the contiguous
//! range `[floor(jW·T_s/L), floor((j+1)W·T_s/L))` of that stream's node sequence, concatenates
//! those ranges in stream order and permutes the result with a Feistel permutation keyed by
//! `(seed, epoch, node, j)`. So every window holds each stream in proportion (±1 sample), the
//! order within a window is random, and a loader only needs the shards of one window at a time.
//!
//! Because floors lose less than one sample per stream, window `j` actually spans node
//! positions `[V(jW), V(min((j+1)W, L)))` with `V(x) = Σ_s floor(x·T_s/L)` and
//! `x - S < V(x) <= x`; locating a position takes O(S) arithmetic, no tables.

use super::feistel::{derive_key, mix64, tag, Feistel};
use super::partition::NodeStream;

/// One canonical node: its per-stream shares and its window keying.
#[derive(Debug)]
pub(crate) struct NodeLayout {
    /// `L_c`, the node's sequence length this epoch.
    pub len: u64,
    /// Per stream, in stream order.
    pub streams: Vec<NodeStream>,
    /// Base key of this node's window permutations this epoch.
    pub window_key: u64,
}

/// `floor(x * t / l)` without overflow.
#[inline]
fn scaled(x: u64, t: u64, l: u64) -> u64 {
    (u128::from(x) * u128::from(t) / u128::from(l)) as u64
}

impl NodeLayout {
    pub(crate) fn new(streams: Vec<NodeStream>, seed: u64, epoch: u64, node: u32) -> Self {
        let len = streams.iter().map(|s| s.epoch).sum();
        NodeLayout {
            len,
            streams,
            window_key: derive_key(&[tag::WINDOW, seed, epoch, u64::from(node)]),
        }
    }

    /// `V(x)`: node positions before window boundary `x`.
    #[inline]
    fn boundary(&self, x: u64) -> u64 {
        if x >= self.len {
            return self.len;
        }
        self.streams
            .iter()
            .map(|s| scaled(x, s.epoch, self.len))
            .sum()
    }

    /// Maps node position `i < len` to `(stream, x)`: the `x`-th element of that stream's
    /// epoch sequence on this node.
    pub(crate) fn locate(&self, i: u64, window: u64, shuffle: bool) -> (usize, u64) {
        let w = window.max(1);
        // V(jW) <= jW <= i for j = i / W, so only forward steps can be needed, and V(x) > x - S
        // bounds them by S / W + 1.
        let mut j = i / w;
        let mut lo_x = j.saturating_mul(w);
        let mut hi_x = lo_x.saturating_add(w).min(self.len);
        let mut hi_v = self.boundary(hi_x);
        while hi_v <= i && hi_x < self.len {
            j += 1;
            lo_x = hi_x;
            hi_x = hi_x.saturating_add(w).min(self.len);
            hi_v = self.boundary(hi_x);
        }
        let lo_v = self.boundary(lo_x);
        let window_len = hi_v - lo_v;
        let mut off = i - lo_v;
        if shuffle && window_len > 1 {
            off = Feistel::new(window_len, mix64(self.window_key ^ j)).apply(off);
        }
        for (s, ns) in self.streams.iter().enumerate() {
            if ns.epoch == 0 {
                continue;
            }
            let a = scaled(lo_x, ns.epoch, self.len);
            let b = scaled(hi_x, ns.epoch, self.len);
            if off < b - a {
                return (s, a + off);
            }
            off -= b - a;
        }
        // Unreachable for i < len: the stream ranges tile the window.
        (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(epochs: &[u64]) -> NodeLayout {
        let streams = epochs
            .iter()
            .map(|&e| NodeStream {
                owned: e.max(1),
                epoch: e,
                ..NodeStream::default()
            })
            .collect();
        NodeLayout::new(streams, 1, 2, 3)
    }

    #[test]
    fn windows_tile_every_stream_exactly_once() {
        for (epochs, window) in [
            (vec![10, 5], 4u64),
            (vec![7, 0, 3, 1], 1),
            (vec![100], 7),
            (vec![3, 97, 50], 1000),
            (vec![13, 29], 6),
        ] {
            for shuffle in [false, true] {
                let n = node(&epochs);
                let mut seen: Vec<Vec<bool>> =
                    epochs.iter().map(|&e| vec![false; e as usize]).collect();
                for i in 0..n.len {
                    let (s, x) = n.locate(i, window, shuffle);
                    assert!(
                        !seen[s][x as usize],
                        "{epochs:?} w={window}: ({s},{x}) twice"
                    );
                    seen[s][x as usize] = true;
                }
                assert!(seen.iter().flatten().all(|&b| b));
            }
        }
    }

    #[test]
    fn windows_are_proportional() {
        let n = node(&[600, 400]);
        // Each window of 10 positions holds 6 of stream 0 and 4 of stream 1.
        for j in 0..100 {
            let zeros = (j * 10..(j + 1) * 10)
                .filter(|&i| n.locate(i, 10, true).0 == 0)
                .count();
            assert_eq!(zeros, 6);
        }
    }
}
