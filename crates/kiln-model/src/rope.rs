//! Rotary position embeddings in the Hugging Face "rotate half" convention, with one position id
//! per (row, token).
//!
//! burn's `RotaryEncoding` rotates interleaved pairs and takes one start position for the whole
//! batch; HF checkpoints rotate halves, and batched rollouts (left padding, forks) need per-row
//! positions, so RoPE is computed here. The angles are computed on the host in f64 (cheap:
//! positions x head_dim/2) and uploaded as cos/sin tables.

use burn::prelude::*;

use crate::config::{ModelConfig, RopeScaling};

#[derive(Debug, Clone)]
pub struct Rope {
    /// Inverse frequencies, one per rotated pair: `head_dim / 2` values.
    inv_freq: Vec<f64>,
    /// Positions are multiplied by this before the angle is taken (linear scaling).
    position_scale: f64,
}

impl Rope {
    pub fn new(cfg: &ModelConfig) -> Self {
        let dim = cfg.head_dim;
        let mut inv_freq: Vec<f64> = (0..dim / 2)
            .map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f64 / dim as f64))
            .collect();
        let mut position_scale = 1.0;
        match cfg.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => position_scale = 1.0 / factor,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old_ctx,
            } => {
                // Llama 3.1's rule (as transformers' `_compute_llama3_parameters`): long
                // wavelengths are slowed by `factor`, short ones kept, the band between blended.
                let low_wavelen = old_ctx / low_freq_factor;
                let high_wavelen = old_ctx / high_freq_factor;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f64::consts::PI / *f;
                    if wavelen > low_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_wavelen {
                        let smooth = (old_ctx / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
        }
        Rope {
            inv_freq,
            position_scale,
        }
    }

    /// cos and sin tables of shape `[batch, 1, seq, head_dim]` for `positions` (row-major
    /// `[batch, seq]`). The two halves of the last axis repeat the same angles (rotate-half).
    pub fn tables(
        &self,
        positions: &[i64],
        batch: usize,
        seq: usize,
        device: &Device,
    ) -> (Tensor<4>, Tensor<4>) {
        debug_assert_eq!(positions.len(), batch * seq);
        let half = self.inv_freq.len();
        let dim = 2 * half;
        let mut cos = vec![0f32; batch * seq * dim];
        let mut sin = vec![0f32; batch * seq * dim];
        for (t, &p) in positions.iter().enumerate() {
            let p = p as f64 * self.position_scale;
            let base = t * dim;
            for (i, f) in self.inv_freq.iter().enumerate() {
                let (s, c) = (p * f).sin_cos();
                cos[base + i] = c as f32;
                cos[base + half + i] = c as f32;
                sin[base + i] = s as f32;
                sin[base + half + i] = s as f32;
            }
        }
        let shape = [batch, 1, seq, dim];
        (
            Tensor::from_data(TensorData::new(cos, shape), device),
            Tensor::from_data(TensorData::new(sin, shape), device),
        )
    }
}

/// Applies the rotation to `x` of shape `[batch, heads, seq, head_dim]`.
pub fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let dim = x.dims()[3];
    let half = dim / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}
