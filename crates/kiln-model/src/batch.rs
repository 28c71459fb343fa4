//! Host-side token batches: ids, padding mask and position ids of a `[batch, seq]` block.

use crate::error::{ModelError, Result};

/// A rectangular block of token ids with its padding mask and position ids.
///
/// Position ids default to Hugging Face's rule for padded batches: each row counts its real
/// tokens from 0 (left padding does not shift positions); pads get position 0.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    pub ids: Vec<u32>,
    pub batch: usize,
    pub seq: usize,
    /// Row-major `[batch, seq]`; `None` means every token is real.
    pub mask: Option<Vec<bool>>,
    /// Row-major `[batch, seq]`; `None` means derived from the mask (see above).
    pub positions: Option<Vec<i64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    Left,
    Right,
}

impl TokenBatch {
    /// Rows of equal length, no padding.
    pub fn new(rows: &[Vec<u32>]) -> Result<Self> {
        let seq = rows.first().map_or(0, Vec::len);
        if rows.is_empty() || seq == 0 {
            return Err(ModelError::Input("empty batch".into()));
        }
        if rows.iter().any(|r| r.len() != seq) {
            return Err(ModelError::Input(
                "rows have different lengths: use TokenBatch::padded".into(),
            ));
        }
        Ok(TokenBatch {
            ids: rows.concat(),
            batch: rows.len(),
            seq,
            mask: None,
            positions: None,
        })
    }

    /// Rows of any length, padded to the longest with `pad_id` on the given side.
    pub fn padded(rows: &[Vec<u32>], pad_id: u32, side: Padding) -> Result<Self> {
        let seq = rows.iter().map(Vec::len).max().unwrap_or(0);
        if rows.is_empty() || seq == 0 {
            return Err(ModelError::Input("empty batch".into()));
        }
        if let Some(i) = rows.iter().position(Vec::is_empty) {
            return Err(ModelError::Input(format!("row {i} has no tokens")));
        }
        let mut ids = Vec::with_capacity(rows.len() * seq);
        let mut mask = Vec::with_capacity(rows.len() * seq);
        for r in rows {
            let pad = seq - r.len();
            if side == Padding::Left {
                ids.extend(std::iter::repeat_n(pad_id, pad));
                mask.extend(std::iter::repeat_n(false, pad));
            }
            ids.extend_from_slice(r);
            mask.extend(std::iter::repeat_n(true, r.len()));
            if side == Padding::Right {
                ids.extend(std::iter::repeat_n(pad_id, pad));
                mask.extend(std::iter::repeat_n(false, pad));
            }
        }
        let all_real = mask.iter().all(|&m| m);
        Ok(TokenBatch {
            ids,
            batch: rows.len(),
            seq,
            mask: (!all_real).then_some(mask),
            positions: None,
        })
    }

    pub fn with_positions(mut self, positions: Vec<i64>) -> Result<Self> {
        if positions.len() != self.batch * self.seq {
            return Err(ModelError::Input(format!(
                "{} position ids for a {}x{} batch",
                positions.len(),
                self.batch,
                self.seq
            )));
        }
        self.positions = Some(positions);
        Ok(self)
    }

    pub fn is_real(&self, row: usize, col: usize) -> bool {
        self.mask.as_ref().is_none_or(|m| m[row * self.seq + col])
    }

    /// Position ids: explicit ones, or each row's running count of real tokens starting at
    /// `start[row]` (0 without a cache).
    pub fn position_ids(&self, start: Option<&[i64]>) -> Vec<i64> {
        if let Some(p) = &self.positions {
            return p.clone();
        }
        let mut out = Vec::with_capacity(self.batch * self.seq);
        for r in 0..self.batch {
            let mut next = start.map_or(0, |s| s[r]);
            for c in 0..self.seq {
                if self.is_real(r, c) {
                    out.push(next);
                    next += 1;
                } else {
                    out.push(0);
                }
            }
        }
        out
    }

    pub fn valid(&self) -> Vec<bool> {
        self.mask
            .clone()
            .unwrap_or_else(|| vec![true; self.batch * self.seq])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_padding_positions_count_real_tokens() {
        let b = TokenBatch::padded(&[vec![5, 6, 7], vec![8]], 0, Padding::Left).unwrap();
        assert_eq!(b.ids, vec![5, 6, 7, 0, 0, 8]);
        assert_eq!(b.position_ids(None), vec![0, 1, 2, 0, 0, 0]);
        assert_eq!(b.position_ids(Some(&[3, 10])), vec![3, 4, 5, 0, 0, 10]);
        let r = TokenBatch::padded(&[vec![5, 6, 7], vec![8]], 0, Padding::Right).unwrap();
        assert_eq!(r.ids, vec![5, 6, 7, 8, 0, 0]);
        assert_eq!(r.valid(), vec![true, true, true, true, false, false]);
        assert!(TokenBatch::padded(&[vec![1], vec![]], 0, Padding::Left).is_err());
        assert!(TokenBatch::new(&[vec![1], vec![1, 2]]).is_err());
    }
}
