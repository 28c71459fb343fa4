//! The key/value cache of incremental decoding.
//!
//! Slots are shared by the batch: slot `j` of every row was written by the same forward call.
//! Which slots hold a real token is tracked per row on the host (`valid`), so left-padded
//! prompts and rows that were copied or forked need no special cases. The two operations the
//! rollout engine and tree branching need are [`KvCache::select_rows`] (copy rows, repeating a
//! row to share a prompt's KV across samples) and [`KvCache::truncate`] (keep a prefix).

use burn::prelude::*;

#[derive(Debug, Clone)]
pub struct KvCache {
    /// Per layer: keys and values `[batch, kv_heads, slots, head_dim]`, RoPE already applied.
    pub(crate) layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// Row-major `[batch, slots]`: true where the slot holds a real (non-pad) token.
    valid: Vec<bool>,
    batch: usize,
    slots: usize,
}

impl KvCache {
    pub fn new(num_layers: usize, batch: usize) -> Self {
        KvCache {
            layers: vec![None; num_layers],
            valid: Vec::new(),
            batch,
            slots: 0,
        }
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
        }
    }

    /// Keeps the first `slots` slots of every row (a prefix), dropping the rest.
    pub fn truncate(&mut self, slots: usize) {
        if slots >= self.slots {
            return;
        }
        for layer in self.layers.iter_mut() {
            if let Some((k, v)) = layer.take() {
                *layer = Some((k.narrow(2, 0, slots), v.narrow(2, 0, slots)));
            }
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

    /// Validity of every slot before the call plus the `new` ones, `[batch, slots + new]`.
    pub(crate) fn valid_with(&self, new_valid: &[bool], new: usize) -> Vec<bool> {
        let total = self.slots + new;
        let mut out = Vec::with_capacity(self.batch * total);
        for r in 0..self.batch {
            out.extend_from_slice(&self.valid[r * self.slots..(r + 1) * self.slots]);
            out.extend_from_slice(&new_valid[r * new..(r + 1) * new]);
        }
        out
    }
}
