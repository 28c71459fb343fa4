//! The key/value cache of incremental decoding.
//!
//! Slots are shared by the batch: slot `j` of every row was written by the same forward call.
//! Which slots hold a real token is tracked per row on the host (`valid`), so left-padded
//! prompts and rows that were copied or forked need no special cases. The operations the
//! rollout engine and tree branching need are [`KvCache::select_rows`] (copy rows, repeating a
//! row to share a prompt's KV across samples), [`KvCache::truncate`] (keep a prefix) and
//! [`KvCache::gather`] (rows of several caches, prefixes of different lengths, in one batch).
//!
//! Keys and values are written in place: each layer's tensors have room for `capacity` slots,
//! of which the first `len()` are used. Decoding writes one slot per step into that room instead
//! of concatenating a new, one-slot-longer tensor (which copied the whole cache every step).
//! Attention runs over all `capacity` slots with the unused ones masked out. [`KvCache::reserve`]
//! sets the room up front (the rollout engine reserves up to 64 slots at a time, see its
//! `KV_ROOM_STEP`); otherwise it doubles when full.

use burn::prelude::*;
use burn::tensor::TensorCreationOptions;

#[derive(Debug, Clone)]
pub struct KvCache {
    /// Per layer: keys and values `[batch, kv_heads, capacity, head_dim]`, RoPE already applied.
    /// `None` until the first forward call writes the layer.
    pub(crate) layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// Row-major `[batch, slots]`: true where the slot holds a real (non-pad) token.
    valid: Vec<bool>,
    batch: usize,
    /// Slots in use (the same for every row).
    slots: usize,
    /// Slots the layers' tensors have room for (>= `slots`).
    capacity: usize,
}

impl KvCache {
    pub fn new(num_layers: usize, batch: usize) -> Self {
        KvCache {
            layers: vec![None; num_layers],
            valid: Vec::new(),
            batch,
            slots: 0,
            capacity: 0,
        }
    }

    /// Slots the cache has room for before it must grow.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Makes room for at least `additional` more slots. Growing copies the cache once; writes
    /// into reserved room are in place.
    pub fn reserve(&mut self, additional: usize) {
        let needed = self.slots + additional;
        if needed <= self.capacity {
            return;
        }
        self.grow_to(needed);
    }

    /// Room for `additional` more slots, doubling the capacity when it must grow (decode loops
    /// that never call [`KvCache::reserve`] copy the cache O(log n) times, not every step).
    pub(crate) fn reserve_amortized(&mut self, additional: usize) {
        let needed = self.slots + additional;
        if needed <= self.capacity {
            return;
        }
        let doubled = if self.slots == 0 {
            0
        } else {
            2 * self.capacity
        };
        self.grow_to(needed.max(doubled));
    }

    fn grow_to(&mut self, capacity: usize) {
        for layer in self.layers.iter_mut() {
            if let Some((k, v)) = layer.take() {
                let extend = |t: Tensor<4>| {
                    let [b, h, cap, d] = t.dims();
                    let room = Tensor::<4>::zeros(
                        [b, h, capacity - cap, d],
                        TensorCreationOptions::new(t.device()).with_dtype(t.dtype()),
                    );
                    Tensor::cat(vec![t, room], 2)
                };
                *layer = Some((extend(k), extend(v)));
            }
        }
        self.capacity = capacity;
    }

    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Number of slots (the same for every row).
    pub fn len(&self) -> usize {
        self.slots
    }

    pub fn is_empty(&self) -> bool {
        self.slots == 0
    }

    /// Whether slot `slot` of row `row` holds a real token.
    pub fn is_valid(&self, row: usize, slot: usize) -> bool {
        self.valid[row * self.slots + slot]
    }

    /// The position id the next real token of each row gets: its count of real tokens so far.
    pub fn next_positions(&self) -> Vec<i64> {
        (0..self.batch)
            .map(|r| {
                self.valid[r * self.slots..(r + 1) * self.slots]
                    .iter()
                    .filter(|&&v| v)
                    .count() as i64
            })
            .collect()
    }

    /// A cache whose row `i` is a copy of row `rows[i]` of this one. Rows may repeat: this is
    /// how the n samples of a prompt share its prefilled KV.
    pub fn select_rows(&self, rows: &[usize]) -> KvCache {
        assert!(
            rows.iter().all(|&r| r < self.batch),
            "select_rows: row index out of range (batch {})",
            self.batch
        );
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                layer.as_ref().map(|(k, v)| {
                    let idx = Tensor::<1, Int>::from_data(
                        TensorData::new(
                            rows.iter().map(|&r| r as i64).collect::<Vec<_>>(),
                            [rows.len()],
                        ),
                        &k.device(),
                    );
                    (k.clone().select(0, idx.clone()), v.clone().select(0, idx))
                })
            })
            .collect();
        let valid = rows
            .iter()
            .flat_map(|&r| {
                self.valid[r * self.slots..(r + 1) * self.slots]
                    .iter()
                    .copied()
            })
            .collect();
        KvCache {
            layers,
            valid,
            batch: rows.len(),
            slots: self.slots,
            capacity: self.capacity,
        }
    }

    /// Keeps the first `slots` slots of every row (a prefix), dropping the rest. The dropped
    /// slots become free room (masked out, overwritten by the next writes).
    pub fn truncate(&mut self, slots: usize) {
        if slots >= self.slots {
            return;
        }
        self.valid = (0..self.batch)
            .flat_map(|r| {
                self.valid[r * self.slots..r * self.slots + slots]
                    .iter()
                    .copied()
            })
            .collect();
        self.slots = slots;
    }

    /// A cache whose row `i` is the first `slots` slots of row `row` of `cache`, for each
    /// `(cache, row, slots)` in `parts`: rows of different caches, cut at different lengths,
    /// gathered into one batch. Each row drops the empty slots before its first real token and
    /// the rows are right-aligned: shorter ones are left-padded with empty slots (zero keys and
    /// values, never attended), as left-padded prompts are. Position ids continue each row's
    /// count of real tokens, so every row decodes on exactly as it would have in its own cache.
    ///
    /// Consecutive parts from the same cache cut at the same length are copied with one `select`
    /// per layer. Panics when a row is out of range or the caches have different layer counts.
    pub fn gather(parts: &[(&KvCache, usize, usize)]) -> KvCache {
        let num_layers = parts.first().map_or(0, |p| p.0.layers.len());
        assert!(
            parts.iter().all(|p| p.0.layers.len() == num_layers),
            "gather: caches with different layer counts"
        );
        assert!(
            parts.iter().all(|p| p.1 < p.0.batch),
            "gather: row index out of range"
        );
        // Runs of consecutive parts from one cache with the same end: (cache, rows, first, end).
        let mut runs: Vec<(&KvCache, Vec<usize>, usize, usize)> = Vec::new();
        for &(cache, row, slots) in parts {
            let end = slots.min(cache.slots);
            let first = (0..end).find(|&s| cache.is_valid(row, s)).unwrap_or(end);
            match runs.last_mut() {
                Some((c, rows, f, e)) if std::ptr::eq(*c, cache) && *e == end => {
                    rows.push(row);
                    *f = (*f).min(first);
                }
                _ => runs.push((cache, vec![row], first, end)),
            }
        }
        let width = runs.iter().map(|r| r.3 - r.2).max().unwrap_or(0);
        let mut valid = Vec::with_capacity(parts.len() * width);
        for (cache, rows, first, end) in &runs {
            for &row in rows {
                valid.extend(std::iter::repeat_n(false, width - (end - first)));
                valid.extend_from_slice(
                    &cache.valid[row * cache.slots + first..row * cache.slots + end],
                );
            }
        }
        let layers = (0..num_layers)
            .map(|l| {
                if width == 0 {
                    return None;
                }
                // Shape, dtype and device of the padding come from any run with real slots.
                let (k0, _) = runs
                    .iter()
                    .filter(|r| r.3 > r.2)
                    .find_map(|r| r.0.layers[l].as_ref())
                    .expect("gather: a cache with slots has keys in every layer");
                let [_, heads, _, dim] = k0.dims();
                let zeros = |rows: usize, pad: usize| {
                    Tensor::<4>::zeros(
                        [rows, heads, pad, dim],
                        TensorCreationOptions::new(k0.device()).with_dtype(k0.dtype()),
                    )
                };
                let mut ks = Vec::with_capacity(runs.len());
                let mut vs = Vec::with_capacity(runs.len());
                for (cache, rows, first, end) in &runs {
                    let (len, pad) = (end - first, width - (end - first));
                    if len == 0 {
                        ks.push(zeros(rows.len(), width));
                        vs.push(zeros(rows.len(), width));
                        continue;
                    }
                    let (k, v) = cache.layers[l]
                        .as_ref()
                        .expect("gather: a cache with slots has keys in every layer");
                    let whole =
                        rows.len() == cache.batch && rows.iter().enumerate().all(|(i, &r)| i == r);
                    let take = |t: &Tensor<4>| {
                        let t = if *first > 0 || *end < t.dims()[2] {
                            t.clone().narrow(2, *first, len)
                        } else {
                            t.clone()
                        };
                        let t = if whole {
                            t
                        } else {
                            let idx = Tensor::<1, Int>::from_data(
                                TensorData::new(
                                    rows.iter().map(|&r| r as i64).collect::<Vec<_>>(),
                                    [rows.len()],
                                ),
                                &t.device(),
                            );
                            t.select(0, idx)
                        };
                        if pad > 0 {
                            Tensor::cat(vec![zeros(rows.len(), pad), t], 2)
                        } else {
                            t
                        }
                    };
                    ks.push(take(k));
                    vs.push(take(v));
                }
                let cat = |mut ts: Vec<Tensor<4>>| {
                    if ts.len() == 1 {
                        ts.pop().unwrap()
                    } else {
                        Tensor::cat(ts, 0)
                    }
                };
                Some((cat(ks), cat(vs)))
            })
            .collect();
        KvCache {
            layers,
            valid,
            batch: parts.len(),
            slots: width,
            capacity: width,
        }
    }

    /// Records `new` slots per row (row-major `[batch, new]` validity) after the layers wrote
    /// their keys and values.
    pub(crate) fn extend_valid(&mut self, new_valid: &[bool], new: usize) {
        let mut valid = Vec::with_capacity(self.batch * (self.slots + new));
        for r in 0..self.batch {
            valid.extend_from_slice(&self.valid[r * self.slots..(r + 1) * self.slots]);
            valid.extend_from_slice(&new_valid[r * new..(r + 1) * new]);
        }
        self.valid = valid;
        self.slots += new;
    }

    /// Validity of every slot of the layers' tensors once the `new` slots are written,
    /// `[batch, capacity]`: the used slots, the `new` ones, then free room (never valid).
    pub(crate) fn valid_with(&self, new_valid: &[bool], new: usize) -> Vec<bool> {
        let room = self.capacity.saturating_sub(self.slots + new);
        let mut out = Vec::with_capacity(self.batch * (self.slots + new + room));
        for r in 0..self.batch {
            out.extend_from_slice(&self.valid[r * self.slots..(r + 1) * self.slots]);
            out.extend_from_slice(&new_valid[r * new..(r + 1) * new]);
            out.extend(std::iter::repeat_n(false, room));
        }
        out
    }
}
