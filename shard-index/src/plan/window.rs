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
//!
//! # Warm-up
//!
//! With `warmup = k > 0` the node's first `W` positions are cut into `k + 1` smaller windows
//! that double in size — `[0, r)`, `[r, 2r)`, `[2r, 4r)`, …, `[2^(k-1)·r, W)` with
//! `r = W >> k` — and full windows follow. A loader must read every shard piece of a window
//! before it can hand out the window's first sample, so the first window's size is what the
//! time to first batch pays for: with the loader's 128 MiB window and `k = 6`, 2 MiB (about one
//! batch) instead of 128 MiB. The price is weaker mixing in the epoch's first `W` samples
//! only; `warmup = 0` gives plain windows throughout.

use super::feistel::{derive_key, mix64, tag, Feistel};
use super::partition::NodeStream;

/// Largest accepted `warmup` (the first window is `W >> warmup`, at least one sample).
pub const MAX_WARMUP: u32 = 32;

/// Where windows start and end in `x` (see the module docs): full windows of `len`, after
/// `warmup` doubling windows covering the first `len`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WindowShape {
    pub len: u64,
    pub warmup: u32,
}

impl WindowShape {
    /// The first window's length, `r = len >> warmup` (at least 1).
    fn first(&self) -> u64 {
        (self.len >> self.warmup).max(1)
    }

    /// `[lo, hi)` in `x` of window `j` (not clamped to the node's length).
    pub(crate) fn bounds(&self, j: u64) -> (u64, u64) {
        let w = self.len.max(1);
        let k = u64::from(self.warmup);
        if k > 0 && j <= k {
            let r = self.first();
            // Start of warm-up window m (m = k + 1 is the first full window, at w).
            let start = |m: u64| match m {
                0 => 0,
                m if m > k => w,
                m => (r << (m - 1)).min(w),
            };
            return (start(j), start(j + 1));
        }
        // Full windows: the warm-up ones (if any) took indices 0..=k and covered [0, w).
        let full = j - k;
        (
            full.saturating_mul(w),
            full.saturating_add(1).saturating_mul(w),
        )
    }

    /// The window containing `x`.
    pub(crate) fn index_of(&self, x: u64) -> u64 {
        let w = self.len.max(1);
        let k = u64::from(self.warmup);
        if k == 0 || x >= w {
            return k + x / w;
        }
        let r = self.first();
        if x < r {
            return 0;
        }
        // x in [r·2^(m-1), r·2^m) is window m; the last warm-up window ends at w.
        (u64::from((x / r).ilog2()) + 1).min(k)
    }
}

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
    pub(crate) fn locate(&self, i: u64, shape: WindowShape, shuffle: bool) -> (usize, u64) {
        self.window_at(i, shape, shuffle).locate(i)
    }

    /// The window holding node position `i < len`, ready to map each of its positions.
    ///
    /// A batch takes consecutive positions of a node, nearly always from one window, so the
    /// planner builds this once per window a batch touches instead of once per sample: the
    /// window search, the per-stream ranges and the permutation's round keys are the same for
    /// every position of the window.
    pub(crate) fn window_at(&self, i: u64, shape: WindowShape, shuffle: bool) -> WindowMap {
        // For the window j holding x = i, V(lo_j) <= lo_j <= i, so only forward steps can be
        // needed, and V(x) > x - S bounds them by S / (smallest window) + 1.
        let mut j = shape.index_of(i);
        let (lo, hi) = shape.bounds(j);
        let mut lo_x = lo.min(self.len);
        let mut hi_x = hi.min(self.len);
        let mut hi_v = self.boundary(hi_x);
        while hi_v <= i && hi_x < self.len {
            j += 1;
            lo_x = hi_x;
            hi_x = shape.bounds(j).1.min(self.len);
            hi_v = self.boundary(hi_x);
        }
        let lo_v = self.boundary(lo_x);
        let window_len = hi_v - lo_v;
        let perm = (shuffle && window_len > 1)
            .then(|| Feistel::new(window_len, mix64(self.window_key ^ j)));
        let ranges = self
            .streams
            .iter()
            .enumerate()
            .filter(|(_, ns)| ns.epoch > 0)
            .map(|(s, ns)| {
                let a = scaled(lo_x, ns.epoch, self.len);
                let b = scaled(hi_x, ns.epoch, self.len);
                (s, a, b - a)
            })
            .collect();
        WindowMap {
            start: lo_v,
            end: hi_v,
            perm,
            ranges,
        }
    }
}

/// One window of a node's sequence: which node positions it spans and where each of them
/// comes from (see [`NodeLayout::window_at`]).
#[derive(Debug)]
pub(crate) struct WindowMap {
    /// Node positions `[start, end)` of the window.
    pub start: u64,
    pub end: u64,
    /// The window's permutation; `None` when not shuffling or for a one-sample window.
    perm: Option<Feistel>,
    /// Per stream with samples this epoch, in stream order: `(stream, first x, count)` of the
    /// range of its node sequence the window takes. The ranges tile the window.
    ranges: Vec<(usize, u64, u64)>,
}

impl WindowMap {
    /// `(stream, x)` of node position `i`, which must lie in `[start, end)`.
    #[inline]
    pub(crate) fn locate(&self, i: u64) -> (usize, u64) {
        let mut off = i - self.start;
        if let Some(perm) = &self.perm {
            off = perm.apply(off);
        }
        for &(s, first, count) in &self.ranges {
            if off < count {
                return (s, first + off);
            }
            off -= count;
        }
        // Unreachable for i < end: the stream ranges tile the window.
        (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(len: u64, warmup: u32) -> WindowShape {
        WindowShape { len, warmup }
    }

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
                    let (s, x) = n.locate(i, shape(window, 0), shuffle);
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
                .filter(|&i| n.locate(i, shape(10, 0), true).0 == 0)
                .count();
            assert_eq!(zeros, 6);
        }
    }

    #[test]
    fn warm_up_windows_double_then_tile_like_full_windows() {
        let s = shape(64, 3);
        let bounds: Vec<_> = (0..7).map(|j| s.bounds(j)).collect();
        assert_eq!(
            bounds,
            [
                (0, 8),
                (8, 16),
                (16, 32),
                (32, 64),
                (64, 128),
                (128, 192),
                (192, 256)
            ]
        );
        for x in 0..300 {
            let (lo, hi) = s.bounds(s.index_of(x));
            assert!(lo <= x && x < hi, "x={x} in window {:?}", (lo, hi));
        }
        // A window smaller than 2^warmup: the first windows are one sample, some empty.
        let tiny = shape(5, 4);
        let mut at = 0;
        for j in 0..10 {
            let (lo, hi) = tiny.bounds(j);
            assert_eq!(lo, at, "windows are contiguous");
            assert!(hi >= lo);
            at = hi;
            if lo < hi {
                assert_eq!(tiny.bounds(tiny.index_of(lo)), (lo, hi));
            }
        }
        assert_eq!(shape(10, 0).bounds(3), (30, 40));
        assert_eq!(shape(10, 0).index_of(35), 3);
    }

    #[test]
    fn warm_up_tiles_every_stream_exactly_once_and_keeps_the_first_window_small() {
        for (epochs, window, warmup) in [
            (vec![10, 5], 4u64, 2u32),
            (vec![7, 0, 3, 1], 1, 5),
            (vec![100], 64, 6),
            (vec![3, 97, 50], 1000, 6),
            (vec![13, 29], 16, 3),
        ] {
            let n = node(&epochs);
            let mut seen: Vec<Vec<bool>> =
                epochs.iter().map(|&e| vec![false; e as usize]).collect();
            for i in 0..n.len {
                let (s, x) = n.locate(i, shape(window, warmup), true);
                assert!(!seen[s][x as usize], "{epochs:?}: ({s},{x}) twice");
                seen[s][x as usize] = true;
            }
            assert!(seen.iter().flatten().all(|&b| b));
        }
        // One stream of 1000, W = 64, warm-up 6: the first window is one sample, so the first
        // position is the stream's first element whatever the permutation.
        let n = node(&[1000]);
        assert_eq!(n.locate(0, shape(64, 6), true), (0, 0));
        // The first 8 positions with warm-up 3 (windows of 8, 8, 16, 32) come from x < 8.
        assert!((0..8).all(|i| n.locate(i, shape(64, 3), true).1 < 8));
    }
}
