//! Assigning each stream's shards to canonical nodes, and each node's per-epoch piece order.
//!
//! Per stream, shards are visited in a keyed order that depends only on `(seed, stream)` —
//! never on the epoch — and that visiting order is cut into `C` contiguous runs balanced by
//! sample count. A canonical node therefore keeps the same shards every epoch (its local cache
//! stays warm), and a shard is split at a row boundary only where a cut falls inside it, so at
//! most `C - 1` shards per stream are shared between two nodes.
//!
//! Nothing here is O(samples). The only O(shards) memory is the manifest-order prefix sum
//! (`ends`, built in place from the caller's sample counts) and, when shuffling, one
//! cumulative-count array per (node, stream) in that epoch's piece order, which turns "the
//! y-th sample of this node's stream sequence" into a binary search.

use super::feistel::{derive_key, tag, Feistel};

/// Per-stream data shared by every canonical node.
#[derive(Debug)]
pub(crate) struct StreamLayout {
    pub name: String,
    pub fingerprint: String,
    pub mix: super::Mix,
    /// `ends[i]` = samples in shards `0..=i` (inclusive prefix in manifest order).
    pub ends: Vec<u64>,
    /// `N_s`.
    pub samples: u64,
    /// Shards with at least one sample.
    pub nonempty_shards: u64,
    /// `T_s`, the stream's samples in this epoch.
    pub epoch_samples: u64,
    /// Full passes over the stream per epoch: `T_s / N_s`.
    pub copies: u64,
    /// Epoch-independent shard visiting order; `None` when shuffling is off (manifest order).
    pub shard_perm: Option<Feistel>,
}

impl StreamLayout {
    /// Builds the layout, turning `shard_samples` into its inclusive prefix sum in place so that
    /// a 16M-shard manifest costs no second array. The caller has checked the total fits u64.
    pub(crate) fn new(
        name: String,
        fingerprint: String,
        mix: super::Mix,
        mut shard_samples: Vec<u64>,
        seed: u64,
        stream: u32,
        shuffle: bool,
    ) -> Self {
        let mut total = 0u64;
        let mut nonempty = 0u64;
        for v in shard_samples.iter_mut() {
            if *v > 0 {
                nonempty += 1;
            }
            total = total.saturating_add(*v);
            *v = total;
        }
        let shards = shard_samples.len() as u64;
        let shard_perm = shuffle.then(|| {
            Feistel::new(
                shards,
                derive_key(&[tag::SHARD_ORDER, seed, u64::from(stream)]),
            )
        });
        StreamLayout {
            name,
            fingerprint,
            mix,
            ends: shard_samples,
            samples: total,
            nonempty_shards: nonempty,
            epoch_samples: 0,
            copies: 0,
            shard_perm,
        }
    }

    pub(crate) fn shard_count(&self) -> u64 {
        self.ends.len() as u64
    }

    /// Global index of the shard's first row.
    #[inline]
    pub(crate) fn shard_start(&self, shard: u64) -> u64 {
        match shard.checked_sub(1) {
            Some(prev) => self
                .ends
                .get(prev as usize)
                .copied()
                .unwrap_or(self.samples),
            None => 0,
        }
    }

    /// Samples in a shard.
    #[inline]
    pub(crate) fn shard_len(&self, shard: u64) -> u64 {
        let end = self
            .ends
            .get(shard as usize)
            .copied()
            .unwrap_or(self.samples);
        end - self.shard_start(shard).min(end)
    }

    /// Manifest shard at visiting position `p`.
    #[inline]
    pub(crate) fn shard_at(&self, p: u64) -> u64 {
        match &self.shard_perm {
            Some(perm) => perm.apply(p),
            None => p,
        }
    }

    /// `(shard, row)` of a manifest-order global index `< samples`.
    #[inline]
    pub(crate) fn locate_global(&self, global: u64) -> (u64, u64) {
        // First shard whose inclusive end is past `global`; empty shards are skipped naturally.
        let shard = self.ends.partition_point(|&e| e <= global) as u64;
        (shard, global - self.shard_start(shard))
    }
}

/// Positions processed per batch of random shard lookups.
const BLOCK: usize = 256;

/// A block of visiting positions with their shards and lengths.
///
/// Shard lengths are read in keyed-random order from a prefix array that, at 16M shards, is
/// far larger than any cache. Looking a whole block up in a tight loop of independent loads
/// lets the CPU keep many cache misses in flight instead of one per Feistel evaluation, which
/// makes the O(shards) passes several times faster.
pub(crate) struct Block {
    pub pos: [u64; BLOCK],
    pub shard: [u64; BLOCK],
    pub len: [u64; BLOCK],
    /// Only filled by [`Block::fill_bytes`].
    pub bytes: [u64; BLOCK],
}

impl Default for Block {
    fn default() -> Self {
        Block {
            pos: [0; BLOCK],
            shard: [0; BLOCK],
            len: [0; BLOCK],
            bytes: [0; BLOCK],
        }
    }
}

impl Block {
    /// Takes up to `BLOCK` positions from `positions`; returns how many were filled.
    pub(crate) fn fill(
        &mut self,
        stream: &StreamLayout,
        positions: impl Iterator<Item = u64>,
    ) -> usize {
        let mut n = 0;
        for (slot, p) in self.pos.iter_mut().zip(positions) {
            *slot = p;
            n += 1;
        }
        for (shard, &p) in self.shard.iter_mut().zip(&self.pos[..n]) {
            *shard = stream.shard_at(p);
        }
        for (len, &shard) in self.len.iter_mut().zip(&self.shard[..n]) {
            *len = stream.shard_len(shard);
        }
        n
    }

    /// Gathers the byte sizes of the first `n` shards (same batching, same reason).
    pub(crate) fn fill_bytes(&mut self, n: usize, shard_bytes: &[u64]) {
        for (bytes, &shard) in self.bytes.iter_mut().zip(&self.shard[..n]) {
            *bytes = shard_bytes.get(shard as usize).copied().unwrap_or(0);
        }
    }
}

/// One stream's share of one canonical node.
#[derive(Debug, Default)]
pub(crate) struct NodeStream {
    /// `n_{s,c}`: distinct samples of the stream owned by the node.
    pub owned: u64,
    /// `T_{s,c}`: samples the node delivers from this stream this epoch (`k*owned + partial`).
    pub epoch: u64,
    /// Offset of the node's run in the stream's visiting order (in samples).
    pub start: u64,
    /// First and last visiting positions of the node's pieces (inclusive), and the row range
    /// kept of those two (the only ones that can be partial shards).
    pub first_pos: u64,
    pub first_skip: u64,
    pub last_pos: u64,
    pub last_take: u64,
    /// Non-empty pieces and their bytes (split shards counted proportionally): for metrics.
    pub pieces: u64,
    pub bytes: u64,
    /// The node's pieces are visited in this epoch's keyed order (shuffling on), which the
    /// next three fields describe; otherwise in manifest order, and they are empty.
    pub shuffled: bool,
    /// Cumulative sample counts of the pieces in that order (`pieces + 1` entries).
    pub cum: Vec<u64>,
    /// The manifest shard of each piece in that order: what the order's two permutations
    /// (the pieces', then the stream's visiting order) give. Looking it up instead of
    /// evaluating both for every sample made batches 3× cheaper to plan, for 4 bytes per
    /// piece beside the 8 of `cum`.
    pub piece_shards: Vec<u32>,
    /// Index in that order of the piece at `first_pos` (the one `first_skip` applies to).
    pub first_piece: usize,
    /// Key for rotating each repeated copy; 0 (no rotation) when shuffling is off.
    pub copy_key: u64,
    pub rotate: bool,
}

impl NodeStream {
    /// Rows `[lo, hi)` of the shard at visiting position `p` that belong to this node.
    #[inline]
    pub(crate) fn piece_rows(&self, stream: &StreamLayout, p: u64, shard: u64) -> (u64, u64) {
        self.piece_rows_of_len(p, stream.shard_len(shard))
    }

    /// [`NodeStream::piece_rows`] for a shard of `len` rows already looked up.
    #[inline]
    fn piece_rows_of_len(&self, p: u64, len: u64) -> (u64, u64) {
        let lo = if p == self.first_pos {
            self.first_skip
        } else {
            0
        };
        let hi = if p == self.last_pos {
            self.last_take
        } else {
            len
        };
        (lo, hi.max(lo))
    }

    /// Builds this epoch's piece order: a keyed permutation of the node's pieces plus the
    /// cumulative sample counts in that order (O(pieces) time and memory).
    pub(crate) fn shuffle_pieces(&mut self, stream: &StreamLayout, key: u64) {
        if self.owned == 0 {
            return;
        }
        let count = self.last_pos - self.first_pos + 1;
        let perm = Feistel::new(count, key);
        let mut cum = Vec::with_capacity(count as usize + 1);
        let mut shards = Vec::with_capacity(count as usize);
        let mut acc = 0u64;
        cum.push(0);
        let mut block = Block::default();
        let mut i = 0;
        while i < count {
            let n = block.fill(stream, (i..count).map(|j| self.first_pos + perm.apply(j)));
            let filled = block.pos[..n]
                .iter()
                .zip(&block.shard[..n])
                .zip(&block.len[..n]);
            for ((&p, &shard), &len) in filled {
                if p == self.first_pos {
                    self.first_piece = shards.len();
                }
                let (lo, hi) = self.piece_rows_of_len(p, len);
                acc += hi - lo;
                cum.push(acc);
                // Manifests hold at most u32::MAX shards (checked when planning).
                shards.push(shard as u32);
            }
            i += n as u64;
        }
        self.cum = cum;
        self.piece_shards = shards;
        self.shuffled = true;
    }

    /// `(shard, row, global)` of the `y`-th sample (`y < owned`) of this node's stream run in
    /// this epoch's piece order.
    #[inline]
    pub(crate) fn sample(&self, stream: &StreamLayout, y: u64) -> (u64, u64, u64) {
        if self.shuffled {
            let pieces = self.piece_shards.len();
            let i = self
                .cum
                .partition_point(|&v| v <= y)
                .saturating_sub(1)
                .min(pieces.saturating_sub(1));
            let shard = u64::from(self.piece_shards[i]);
            let lo = if i == self.first_piece {
                self.first_skip
            } else {
                0
            };
            let row = y - self.cum[i] + lo;
            (shard, row, stream.shard_start(shard) + row)
        } else {
            // Unshuffled: the visiting order is the manifest order, so the run is a plain
            // range of global indices.
            let global = self.start + y;
            let (shard, row) = stream.locate_global(global);
            (shard, row, global)
        }
    }

    /// Position inside the node's run for element `x < epoch` of its epoch sequence: copy
    /// `x / owned`, rotated by a keyed offset so each copy (and a partial copy in particular)
    /// starts at a different place.
    #[inline]
    pub(crate) fn run_position(&self, x: u64) -> u64 {
        let copy = x / self.owned;
        let y = x % self.owned;
        if !self.rotate {
            return y;
        }
        let rot = super::feistel::mix64(self.copy_key ^ copy) % self.owned;
        // (y + rot) % owned without overflow.
        if y >= self.owned - rot {
            y - (self.owned - rot)
        } else {
            y + rot
        }
    }
}

/// Splits `total` into `parts` near-equal counts; the `total % parts` extra ones go to the
/// parts starting at `offset`, wrapping, so successive streams can continue where the last one
/// stopped and node totals stay within one of each other.
pub(crate) fn balanced_split(total: u64, parts: u32, offset: u32) -> Vec<u64> {
    let c = u64::from(parts);
    let base = total / c;
    let extra = total % c;
    (0..c)
        .map(|i| {
            let shifted = (i + c - u64::from(offset) % c) % c;
            base + u64::from(shifted < extra)
        })
        .collect()
}

/// Distributes `amount` units over nodes with capacities `caps`, raising the lowest current
/// `levels` first (water filling), remaining ties to lower node ids. Used to place a stream's
/// partial copy so that node epoch totals stay as even as the per-node capacities allow.
/// Requires `amount <= Σ caps`.
pub(crate) fn water_fill(levels: &[u64], caps: &[u64], amount: u64) -> Vec<u64> {
    let filled = |lambda: u64| -> u128 {
        levels
            .iter()
            .zip(caps)
            .map(|(&l, &cap)| u128::from(lambda.saturating_sub(l).min(cap)))
            .sum()
    };
    let amount128 = u128::from(amount);
    let mut lo = levels.iter().copied().min().unwrap_or(0);
    let mut hi = levels
        .iter()
        .zip(caps)
        .map(|(&l, &cap)| l.saturating_add(cap))
        .max()
        .unwrap_or(0)
        .max(lo);
    // Largest lambda in [lo, hi] with filled(lambda) <= amount; filled(lo) == 0.
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if filled(mid) <= amount128 {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let lambda = lo;
    let mut out: Vec<u64> = levels
        .iter()
        .zip(caps)
        .map(|(&l, &cap)| lambda.saturating_sub(l).min(cap))
        .collect();
    let mut left = amount.saturating_sub(out.iter().sum::<u64>());
    for ((o, &l), &cap) in out.iter_mut().zip(levels).zip(caps) {
        if left == 0 {
            break;
        }
        if l <= lambda && *o < cap {
            *o += 1;
            left -= 1;
        }
    }
    out
}

/// Cuts a stream's visiting order into the canonical nodes' runs (`owned` per node, in node
/// order) and records each node's first/last piece, piece count and bytes. One pass over the
/// shards: O(shards) time, O(C) memory.
pub(crate) fn cut_stream(
    stream: &StreamLayout,
    shard_bytes: &[u64],
    owned: &[u64],
) -> Vec<NodeStream> {
    let mut nodes: Vec<NodeStream> = Vec::with_capacity(owned.len());
    let mut start = 0u64;
    for &n in owned {
        nodes.push(NodeStream {
            owned: n,
            start,
            ..NodeStream::default()
        });
        start += n;
    }
    let mut seen = vec![false; owned.len()];
    let mut bytes = vec![0u128; owned.len()];
    let mut node = 0usize;
    let mut cum = 0u64;
    let mut block = Block::default();
    let shards = stream.shard_count();
    let mut next = 0u64;
    while next < shards {
        let n = block.fill(stream, next..shards);
        next += n as u64;
        block.fill_bytes(n, shard_bytes);
        let items = block.pos[..n]
            .iter()
            .zip(&block.len[..n])
            .zip(&block.bytes[..n]);
        for ((&p, &len), &bytes_of_shard) in items {
            if len == 0 {
                continue;
            }
            let shard_bytes = u128::from(bytes_of_shard);
            let mut lo = cum;
            let hi = cum + len;
            while lo < hi && node < nodes.len() {
                let end = nodes[node].start + nodes[node].owned;
                if end <= lo {
                    node += 1;
                    continue;
                }
                let take = hi.min(end);
                let ns = &mut nodes[node];
                if !seen[node] {
                    seen[node] = true;
                    ns.first_pos = p;
                    ns.first_skip = lo - cum;
                }
                ns.last_pos = p;
                ns.last_take = take - cum;
                ns.pieces += 1;
                bytes[node] += shard_bytes * u128::from(take - lo) / u128::from(len);
                lo = take;
            }
            cum = hi;
        }
    }
    for (ns, b) in nodes.iter_mut().zip(bytes) {
        ns.bytes = u64::try_from(b).unwrap_or(u64::MAX);
    }
    nodes
}

/// Per-epoch randomisation of one node's share of one stream.
pub(crate) fn prepare_epoch(
    ns: &mut NodeStream,
    stream: &StreamLayout,
    seed: u64,
    epoch: u64,
    node: u32,
    stream_index: u32,
    shuffle: bool,
) {
    if !shuffle || ns.epoch == 0 {
        return;
    }
    let ids = [u64::from(node), u64::from(stream_index)];
    ns.shuffle_pieces(
        stream,
        derive_key(&[tag::PIECE_ORDER, seed, epoch, ids[0], ids[1]]),
    );
    ns.copy_key = derive_key(&[tag::COPY_ROTATION, seed, epoch, ids[0], ids[1]]);
    ns.rotate = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_split_rotates_remainders() {
        assert_eq!(balanced_split(10, 4, 0), vec![3, 3, 2, 2]);
        assert_eq!(balanced_split(10, 4, 3), vec![3, 2, 2, 3]);
        assert_eq!(balanced_split(2, 4, 1), vec![0, 1, 1, 0]);
    }

    #[test]
    fn water_fill_levels_nodes() {
        assert_eq!(water_fill(&[4, 2, 3], &[5, 5, 5], 3), vec![0, 2, 1]);
        assert_eq!(water_fill(&[0, 0, 0], &[1, 1, 1], 2), vec![1, 1, 0]);
        // Capacities bind: node 1 can only take 1.
        assert_eq!(water_fill(&[0, 0], &[10, 1], 6), vec![5, 1]);
        assert_eq!(water_fill(&[0, 0], &[3, 3], 6), vec![3, 3]);
    }

    #[test]
    fn cut_stream_splits_at_row_boundaries() {
        let stream = StreamLayout::new(
            "s".into(),
            "f".into(),
            super::super::Mix::Repeat(1.0),
            vec![5, 0, 5],
            0,
            0,
            false,
        );
        let nodes = cut_stream(&stream, &[50, 0, 100], &balanced_split(10, 3, 0));
        // Owned 4, 3, 3: node 0 = shard 0 rows 0..4; node 1 = shard 0 row 4 + shard 2 rows 0..2;
        // node 2 = shard 2 rows 2..5.
        assert_eq!(
            (nodes[0].first_pos, nodes[0].last_pos, nodes[0].last_take),
            (0, 0, 4)
        );
        assert_eq!((nodes[1].first_pos, nodes[1].first_skip), (0, 4));
        assert_eq!((nodes[1].last_pos, nodes[1].last_take), (2, 2));
        assert_eq!((nodes[2].first_pos, nodes[2].first_skip), (2, 2));
        assert_eq!(nodes[1].pieces, 2);
        assert_eq!(nodes[0].bytes, 40);
        assert_eq!(nodes[1].bytes, 10 + 40);
    }
}
