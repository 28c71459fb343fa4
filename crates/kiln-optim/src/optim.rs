//! AdamW with PyTorch's defaults set explicitly, global-norm gradient clipping, skipping of
//! non-finite steps, learning-rate schedules, and optimizer state save / load.
//!
//! burn's `AdamWConfig` defaults are NOT PyTorch's (eps 1e-5, weight decay 1e-4); kiln always
//! sets betas 0.9 / 0.999, eps 1e-8, weight decay 0.01 unless the recipe says otherwise.
//! burn's own gradient clipping is per tensor; [`clip_grad_norm`] is the global-norm clip of
//! `torch.nn.utils.clip_grad_norm_` (coef = max / (norm + 1e-6), capped at 1).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};
use crate::hook::{NamedParams, grad_flat, register_flat, remove_flat};

/// AdamW hyper-parameters (PyTorch defaults) and the global clip.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWSettings {
    /// beta1 (0.9).
    pub beta1: f64,
    /// beta2 (0.999).
    pub beta2: f64,
    /// eps (1e-8).
    pub eps: f64,
    /// Decoupled weight decay (0.01).
    pub weight_decay: f64,
    /// Global-norm clip (1.0); `None` = no clipping (non-finite steps are still skipped).
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamWSettings {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
        }
    }
}

/// Learning-rate schedules (Hugging Face's formulas, as verl / TRL use them). `step` is the
/// number of optimizer steps already taken (0 for the first step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum LrSchedule {
    /// `lr`.
    #[default]
    Constant,
    /// `lr * step / warmup` during warm-up, then `lr` (HF `constant_schedule_with_warmup`;
    /// the first step has lr 0).
    LinearWarmup {
        /// Warm-up steps.
        warmup_steps: usize,
    },
    /// Linear warm-up from `min_lr_ratio` then half-cosine to `min_lr_ratio * lr` at
    /// `total_steps` (verl's `get_cosine_schedule_with_warmup`, 0.5 cycles).
    Cosine {
        /// Warm-up steps.
        warmup_steps: usize,
        /// Total training steps.
        total_steps: usize,
        /// Floor as a fraction of lr (0.0).
        min_lr_ratio: f64,
    },
}

impl LrSchedule {
    /// Multiplier of the base lr at `step`.
    pub fn factor(&self, step: usize) -> f64 {
        match *self {
            Self::Constant => 1.0,
            Self::LinearWarmup { warmup_steps } => {
                if step < warmup_steps {
                    step as f64 / warmup_steps.max(1) as f64
                } else {
                    1.0
                }
            }
            Self::Cosine {
                warmup_steps,
                total_steps,
                min_lr_ratio,
            } => {
                if step < warmup_steps {
                    return min_lr_ratio
                        + (1.0 - min_lr_ratio) * step as f64 / warmup_steps.max(1) as f64;
                }
                let progress = (step - warmup_steps) as f64
                    / (total_steps.saturating_sub(warmup_steps)).max(1) as f64;
                let x = (std::f64::consts::PI * progress).cos();
                (x * (1.0 - min_lr_ratio) * 0.5 + (1.0 + min_lr_ratio) * 0.5).max(0.0)
            }
        }
    }
    /// `base_lr * factor(step)`.
    pub fn lr_at(&self, base_lr: f64, step: usize) -> f64 {
        base_lr * self.factor(step)
    }
}

/// Global L2 norm of all gradients of `params` (missing gradients count as zero). NaN/inf
/// propagate.
pub fn global_grad_norm(grads: &GradientsParams, params: &NamedParams) -> Result<f64> {
    let mut sums = Vec::new();
    for p in params.iter() {
        if let Some(g) = grad_flat(grads, p)? {
            sums.push(g.square().sum());
        }
    }
    if sums.is_empty() {
        return Ok(0.0);
    }
    let v: Vec<f32> = Tensor::cat(sums, 0)
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap_or_default();
    Ok(v.iter().map(|&x| x as f64).sum::<f64>().sqrt())
}

/// Scale every gradient by `coef`.
pub fn scale_grads(grads: &mut GradientsParams, params: &NamedParams, coef: f64) -> Result<()> {
    for p in params.iter() {
        if let Some(g) = remove_flat(grads, p)? {
            register_flat(grads, p, g.mul_scalar(coef))?;
        }
    }
    Ok(())
}

/// `torch.nn.utils.clip_grad_norm_`: returns `(total_norm, applied_coef)`. Does nothing when the
/// norm is not finite (the caller skips the step).
pub fn clip_grad_norm(
    grads: &mut GradientsParams,
    params: &NamedParams,
    max_norm: f64,
) -> Result<(f64, f64)> {
    let norm = global_grad_norm(grads, params)?;
    if !norm.is_finite() {
        return Ok((norm, 1.0));
    }
    let coef = (max_norm / (norm + 1e-6)).min(1.0);
    if coef < 1.0 {
        scale_grads(grads, params, coef)?;
    }
    Ok((norm, coef))
}

/// What one [`Optimizer::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// Learning rate used (0 if skipped).
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Clip coefficient applied (1 = none).
    pub clip_coef: f64,
    /// Whether this step was skipped (non-finite norm).
    pub skipped: bool,
    /// Skipped steps so far.
    pub total_skipped: usize,
    /// Steps attempted so far (including this one).
    pub step: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Meta {
    step: usize,
    skipped: usize,
    base_lr: f64,
    settings: AdamWSettings,
    schedule: LrSchedule,
}

/// AdamW + global clipping + schedule + non-finite skipping.
pub struct Optimizer {
    inner: ModuleOptimizer,
    /// Base learning rate.
    pub base_lr: f64,
    /// Hyper-parameters.
    pub settings: AdamWSettings,
    /// Schedule.
    pub schedule: LrSchedule,
    step: usize,
    skipped: usize,
}

impl Optimizer {
    /// New optimizer (no state yet).
    pub fn new(base_lr: f64, settings: AdamWSettings, schedule: LrSchedule) -> Self {
        let inner = AdamWConfig::new()
            .with_beta_1(settings.beta1 as f32)
            .with_beta_2(settings.beta2 as f32)
            .with_epsilon(settings.eps as f32)
            .with_weight_decay(settings.weight_decay as f32)
            .init();
        Self {
            inner,
            base_lr,
            settings,
            schedule,
            step: 0,
            skipped: 0,
        }
    }

    /// Steps attempted so far.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// Steps skipped because the gradient norm was not finite.
    pub fn skipped_steps(&self) -> usize {
        self.skipped
    }

    /// Learning rate the next step will use.
    pub fn current_lr(&self) -> f64 {
        self.schedule.lr_at(self.base_lr, self.step)
    }

    /// Clip, check finiteness, and apply AdamW. A skipped step leaves the model and the AdamW
    /// moments untouched but advances the schedule's step counter.
    pub fn step<M: Module>(
        &mut self,
        model: M,
        mut grads: GradientsParams,
        params: &NamedParams,
    ) -> Result<(M, StepStats)> {
        let lr = self.current_lr();
        let (norm, coef) = match self.settings.max_grad_norm {
            Some(max) => clip_grad_norm(&mut grads, params, max)?,
            None => (global_grad_norm(&grads, params)?, 1.0),
        };
        self.step += 1;
        if !norm.is_finite() {
            self.skipped += 1;
            tracing::warn!(
                step = self.step,
                skipped = self.skipped,
                "non-finite gradient norm: optimizer step skipped"
            );
            return Ok((
                model,
                StepStats {
                    lr: 0.0,
                    grad_norm: norm,
                    clip_coef: 1.0,
                    skipped: true,
                    total_skipped: self.skipped,
                    step: self.step,
                },
            ));
        }
        let model = self.inner.step(lr, model, grads);
        Ok((
            model,
            StepStats {
                lr,
                grad_norm: norm,
                clip_coef: coef,
                skipped: false,
                total_skipped: self.skipped,
                step: self.step,
            },
        ))
    }

    fn meta_path(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".meta.json");
        PathBuf::from(p)
    }

    /// Save the AdamW moments (burnpack, keyed by `ParamId`) to `path` and the counters and
    /// settings to `path.meta.json`. Parameter ids must be the same when loading (load the
    /// model from a burn record that keeps ids).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let err = |e: String| OptimError::State {
            path: path.display().to_string(),
            reason: e,
        };
        self.inner.save(path).map_err(|e| err(format!("{e:?}")))?;
        let meta = Meta {
            step: self.step,
            skipped: self.skipped,
            base_lr: self.base_lr,
            settings: self.settings,
            schedule: self.schedule,
        };
        let json = serde_json::to_string_pretty(&meta).map_err(|e| err(e.to_string()))?;
        std::fs::write(Self::meta_path(path), json).map_err(|e| err(e.to_string()))?;
        Ok(())
    }

    /// Load what [`Optimizer::save`] wrote (settings, schedule and counters included).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let err = |e: String| OptimError::State {
            path: path.display().to_string(),
            reason: e,
        };
        let json =
            std::fs::read_to_string(Self::meta_path(path)).map_err(|e| err(e.to_string()))?;
        let meta: Meta = serde_json::from_str(&json).map_err(|e| err(e.to_string()))?;
        let mut o = Self::new(meta.base_lr, meta.settings, meta.schedule);
        o.inner = o.inner.load(path).map_err(|e| err(format!("{e:?}")))?;
        o.step = meta.step;
        o.skipped = meta.skipped;
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_hand_values() {
        assert_eq!(LrSchedule::Constant.factor(7), 1.0);
        let w = LrSchedule::LinearWarmup { warmup_steps: 4 };
        assert_eq!(
            (0..6).map(|s| w.factor(s)).collect::<Vec<_>>(),
            vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
        );
        let c = LrSchedule::Cosine {
            warmup_steps: 2,
            total_steps: 10,
            min_lr_ratio: 0.0,
        };
        assert_eq!(c.factor(1), 0.5);
        assert_eq!(c.factor(2), 1.0);
        assert!((c.factor(6) - 0.5).abs() < 1e-12); // halfway through the cosine
        assert!(c.factor(10).abs() < 1e-12);
        let m = LrSchedule::Cosine {
            warmup_steps: 0,
            total_steps: 4,
            min_lr_ratio: 0.1,
        };
        assert!((m.factor(4) - 0.1).abs() < 1e-12);
        assert!((m.factor(2) - 0.55).abs() < 1e-12);
    }
}
