//! Shared bench helpers (`mod common;` in each bench).
#![allow(dead_code)]

use burn::prelude::*;
use kiln_optim::loss::{AggMode, GlobalCounts, KlEstimator, KlLoss, LossConfig, TokenBatch};

/// SmolLM2-135M: hidden size 576, vocabulary 49152.
pub const D: usize = 576;
pub const V: usize = 49152;

pub struct Lcg(pub u64);
impl Lcg {
    pub fn uniform(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    pub fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| scale * self.normal()).collect()
    }
}

pub struct Problem {
    pub hidden: Tensor<2>,
    pub weight: Tensor<2>,
    pub batch: TokenBatch,
}

/// `n` tokens of SmolLM2 shape; `w_scale` sets the logit spread (0.12 -> std ~2.9).
pub fn problem(dev: &Device, n: usize, w_scale: f32, cfg: &LossConfig) -> Problem {
    let mut r = Lcg(42);
    let hidden = Tensor::<1>::from_floats(r.vec(n * D, 1.0).as_slice(), dev).reshape([n, D]);
    let weight = Tensor::<1>::from_floats(r.vec(D * V, w_scale).as_slice(), dev).reshape([D, V]);
    let targets: Vec<i64> = (0..n)
        .map(|_| (r.uniform() * V as f32) as i64 % V as i64)
        .collect();
    let old: Vec<f32> = r.vec(n, 1.0).iter().map(|x| x - 8.0).collect();
    let rf: Vec<f32> = r.vec(n, 1.0).iter().map(|x| x - 8.0).collect();
    let adv = r.vec(n, 1.0);
    let mask = vec![1.0f32; n];
    let l = 512.min(n);
    let counts = GlobalCounts::from_mask(&mask, l, l);
    let batch = TokenBatch::from_host(
        dev,
        &targets,
        &old,
        &adv,
        Some(&rf),
        &mask,
        l,
        cfg.agg,
        &counts,
    )
    .unwrap();
    Problem {
        hidden,
        weight,
        batch,
    }
}

pub fn ppo_config() -> LossConfig {
    LossConfig {
        agg: AggMode::TokenMean,
        kl_loss: Some(KlLoss {
            estimator: KlEstimator::K3,
            coef: 0.001,
        }),
        ..LossConfig::default()
    }
}
