//! Policy and value losses (ALGORITHMS.md section 1): PPO clip with asymmetric epsilon and dual
//! clip, the four aggregation modes over global mini-batch counts, KL estimators k1/k2/k3, the
//! KL-Cov and Forking-Tokens baselines, and the clipped value loss.
//!
//! Every aggregation mode is linear in the per-token losses: `agg(l) = sum_t w_t l_t` with a
//! per-token weight `w_t` that depends only on the mask and the GLOBAL counts of the mini-batch
//! ([`GlobalCounts`]). kiln therefore turns the mode into weights once per mini-batch
//! ([`agg_weights`]); a micro-batch's loss is `sum_t w_t l_t` over its own tokens, and summing
//! the micro-batches' gradients gives the mini-batch gradient exactly, whatever the split.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::entropy::EntropyReg;
use crate::error::{OptimError, Result, check_len};

/// How per-token losses are reduced over a mini-batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AggMode {
    /// `sum_b sum_t m l / sum_b sum_t m`.
    TokenMean,
    /// `mean_b (sum_t m l / sum_t m)`.
    SeqMeanTokenMean,
    /// `mean_b (sum_t m l)`.
    SeqMeanTokenSum,
    /// Dr.GRPO: `sum_b sum_t m l / (B * L_max)`, `L_max` the recipe's max response length.
    SeqMeanTokenSumNorm,
}

/// Counts over the WHOLE mini-batch (all micro-batches), fixed before the first micro-batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlobalCounts {
    /// Number of response tokens (sum of the mask).
    pub num_tokens: f64,
    /// Number of responses `B` (rows with at least one token, or all rows: the caller decides;
    /// [`GlobalCounts::from_mask`] counts every row).
    pub num_seqs: usize,
    /// The recipe's maximum response length `L_max` (only `SeqMeanTokenSumNorm` uses it).
    pub max_len: usize,
}

impl GlobalCounts {
    /// Counts from the mini-batch's full `[B, T]` mask.
    pub fn from_mask(mask: &[f32], seq_len: usize, max_len: usize) -> Self {
        Self {
            num_tokens: mask.iter().map(|&m| m as f64).sum(),
            num_seqs: mask.len() / seq_len.max(1),
            max_len,
        }
    }
}

/// Per-token aggregation weights `[B, T]` for `mask` (`[B, T]`, a micro-batch or the whole
/// mini-batch) under `mode` with the mini-batch's global `counts`.
pub fn agg_weights(
    mask: &[f32],
    seq_len: usize,
    mode: AggMode,
    counts: &GlobalCounts,
) -> Result<Vec<f32>> {
    if seq_len == 0 || !mask.len().is_multiple_of(seq_len) {
        return Err(OptimError::Config {
            field: "seq_len",
            reason: format!("mask of {} is not rows of {seq_len}", mask.len()),
        });
    }
    let b = counts.num_seqs.max(1) as f64;
    let nt = counts.num_tokens.max(1.0);
    let mut out = Vec::with_capacity(mask.len());
    for row in mask.chunks(seq_len) {
        let len: f64 = row.iter().map(|&m| m as f64).sum();
        let scale = match mode {
            AggMode::TokenMean => 1.0 / nt,
            AggMode::SeqMeanTokenMean => 1.0 / (len.max(1.0) * b),
            AggMode::SeqMeanTokenSum => 1.0 / b,
            AggMode::SeqMeanTokenSumNorm => {
                if counts.max_len == 0 {
                    return Err(OptimError::Config {
                        field: "max_len",
                        reason: "seq-mean-token-sum-norm needs the recipe's max response length"
                            .into(),
                    });
                }
                1.0 / (b * counts.max_len as f64)
            }
        };
        out.extend(row.iter().map(|&m| (m as f64 * scale) as f32));
    }
    Ok(out)
}

/// Aggregate a `[B, T]` per-token loss tensor with `mode` (convenience over [`agg_weights`]).
pub fn aggregate(
    loss: Tensor<2>,
    mask: &[f32],
    mode: AggMode,
    counts: &GlobalCounts,
) -> Result<Tensor<1>> {
    let [_, t] = loss.dims();
    let w = agg_weights(mask, t, mode, counts)?;
    check_len("aggregate mask", loss.shape().num_elements(), w.len())?;
    let w = Tensor::<1>::from_floats(w.as_slice(), &loss.device()).reshape(loss.shape());
    Ok((loss * w).sum())
}

/// KL estimators of KL(pi || ref) from `x = ref_logp - logp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KlEstimator {
    /// `k1 = -x`.
    K1,
    /// `k2 = x^2 / 2`.
    K2,
    /// `k3 = exp(x) - x - 1`, `x` clamped to `[-20, 20]`, result clamped to `[-10, 10]`
    /// (verl's `low_var_kl`).
    K3,
}

/// Per-token KL estimate (any rank). Differentiable in `logp` (and `ref_logp` if tracked).
pub fn kl_estimate<const D: usize>(
    logp: Tensor<D>,
    ref_logp: Tensor<D>,
    est: KlEstimator,
) -> Tensor<D> {
    let x = ref_logp - logp;
    match est {
        KlEstimator::K1 => x.neg(),
        KlEstimator::K2 => x.square().mul_scalar(0.5),
        KlEstimator::K3 => {
            let x = x.clamp(-20.0, 20.0);
            (x.clone().exp() - x).sub_scalar(1.0).clamp(-10.0, 10.0)
        }
    }
}

/// Host version of [`kl_estimate`] for one token (rewards, controllers, metrics).
pub fn kl_estimate_scalar(logp: f64, ref_logp: f64, est: KlEstimator) -> f64 {
    let x = ref_logp - logp;
    match est {
        KlEstimator::K1 => -x,
        KlEstimator::K2 => 0.5 * x * x,
        KlEstimator::K3 => {
            let x = x.clamp(-20.0, 20.0);
            (x.exp() - x - 1.0).clamp(-10.0, 10.0)
        }
    }
}

/// PPO clip settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PpoClip {
    /// `eps_low` (default 0.2).
    pub clip_low: f64,
    /// `eps_high` (default 0.2; DAPO clip-higher 0.28).
    pub clip_high: f64,
    /// Dual clip constant `c` (default `Some(3.0)`), applied where `A < 0`.
    pub dual_clip: Option<f64>,
}

impl Default for PpoClip {
    fn default() -> Self {
        Self {
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip: Some(3.0),
        }
    }
}

/// The log-ratio is clamped to `[-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP]` before `exp` (as verl) so a
/// stale token cannot overflow the ratio.
pub const LOG_RATIO_CLAMP: f64 = 20.0;

/// Per-token PPO clip loss and the "clipped" indicator (1.0 where the clipped branch is active,
/// verl's `pg_clipfrac`). Shapes of all inputs equal.
pub fn ppo_clip_token_loss<const D: usize>(
    logp: Tensor<D>,
    old_logp: Tensor<D>,
    adv: Tensor<D>,
    clip: &PpoClip,
) -> (Tensor<D>, Tensor<D>) {
    let log_ratio = (logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP);
    let ratio = log_ratio.exp();
    let l1 = adv.clone().neg() * ratio.clone();
    let l2 = adv.clone().neg() * ratio.clamp(1.0 - clip.clip_low, 1.0 + clip.clip_high);
    let clipped = l2.clone().greater(l1.clone()).float();
    let l = l1.max_pair(l2);
    let l = match clip.dual_clip {
        Some(c) => {
            let l3 = adv.clone().mul_scalar(-c);
            let dual = l.clone().min_pair(l3);
            l.mask_where(adv.lower_elem(0.0), dual)
        }
        None => l,
    };
    (l, clipped)
}

/// Clipped value loss per token: `0.5 * max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2)`.
pub fn clipped_value_token_loss<const D: usize>(
    values: Tensor<D>,
    old_values: Tensor<D>,
    returns: Tensor<D>,
    clip: f64,
) -> Tensor<D> {
    let lo = old_values.clone().sub_scalar(clip);
    let hi = old_values.add_scalar(clip);
    let v_clipped = values.clone().max_pair(lo).min_pair(hi);
    let a = (values - returns.clone()).square();
    let b = (v_clipped - returns).square();
    a.max_pair(b).mul_scalar(0.5)
}

/// The critic loss: [`clipped_value_token_loss`] reduced with weights (token-mean weights from
/// [`agg_weights`] with [`AggMode::TokenMean`]).
pub fn clipped_value_loss<const D: usize>(
    values: Tensor<D>,
    old_values: Tensor<D>,
    returns: Tensor<D>,
    weights: Tensor<D>,
    clip: f64,
) -> Tensor<1> {
    (clipped_value_token_loss(values, old_values, returns, clip) * weights).sum()
}

/// The Bradley-Terry loss of a reward model on preference pairs (TRL's RewardTrainer):
/// `sum_i w_i * -log sigmoid(r_chosen_i - r_rejected_i - margin_i)`. With `w_i = 1 / pairs`
/// over the whole batch it is the mean, whatever the micro-batch split.
pub fn bradley_terry_loss(
    chosen: Tensor<1>,
    rejected: Tensor<1>,
    margin: Tensor<1>,
    weights: Tensor<1>,
) -> Tensor<1> {
    let nll = burn::tensor::activation::log_sigmoid(chosen - rejected - margin).neg();
    (nll * weights).sum()
}

/// KL as a loss term.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KlLoss {
    /// Estimator (k3 / low_var_kl in the seeds).
    pub estimator: KlEstimator,
    /// `beta_kl` (0.001 in the seeds).
    pub coef: f64,
}

/// Baselines of the TRE paper that change the policy-gradient term.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PgBaseline {
    /// Plain PPO.
    #[default]
    None,
    /// Forking Tokens: the policy gradient only on the `top_frac` (0.2) highest-entropy tokens of
    /// the mini-batch; the normalisation keeps the full counts (the indicator sits inside the
    /// sum, as in the paper). The token mask comes from [`forking_token_mask`] and is passed in
    /// [`TokenBatch::pg_token_mask`].
    ForkingTokens {
        /// Fraction of tokens kept (0.2).
        top_frac: f64,
    },
    /// KL-Cov: `+ coef * |logp - old_logp|` on the `ratio` (0.2%) tokens with the largest
    /// covariance `(A - mean A)(logp - mean logp)`; mask from [`kl_cov_mask`] in
    /// [`TokenBatch::kl_cov_mask`]. Added to the configured PPO surrogate (verl's `kl_cov` uses
    /// the unclipped `-A r` as the base: set large clip epsilons to reproduce it).
    KlCov {
        /// Fraction of tokens penalised (0.002).
        ratio: f64,
        /// Penalty coefficient (1.0).
        coef: f64,
    },
}

/// Everything that defines the actor loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    /// PPO clip.
    pub ppo: PpoClip,
    /// Aggregation mode (policy, KL-loss and KL-Cov terms).
    pub agg: AggMode,
    /// KL to the reference as a loss term.
    pub kl_loss: Option<KlLoss>,
    /// Entropy regulariser (always token-mean aggregated).
    pub entropy: EntropyReg,
    /// TRE-paper baselines.
    pub baseline: PgBaseline,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            ppo: PpoClip::default(),
            agg: AggMode::TokenMean,
            kl_loss: None,
            entropy: EntropyReg::None,
            baseline: PgBaseline::None,
        }
    }
}

/// One micro-batch's response tokens, flattened to `N` (padding allowed: weight 0).
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// Target token ids `[N]`.
    pub targets: Tensor<1, Int>,
    /// Behaviour log-probs `[N]`.
    pub old_logp: Tensor<1>,
    /// Advantages `[N]`.
    pub advantages: Tensor<1>,
    /// Reference log-probs `[N]` (KL loss).
    pub ref_logp: Option<Tensor<1>>,
    /// Aggregation weights of the policy terms `[N]` ([`agg_weights`] with the loss's mode).
    pub pg_weight: Tensor<1>,
    /// Token-mean weights `[N]` (`mask / num_tokens`), for the entropy term and metrics.
    pub token_weight: Tensor<1>,
    /// Forking Tokens: 1.0 where the policy gradient applies.
    pub pg_token_mask: Option<Tensor<1>>,
    /// KL-Cov: 1.0 on the penalised tokens.
    pub kl_cov_mask: Option<Tensor<1>>,
}

impl TokenBatch {
    /// Build from host arrays of a `[B, T]` micro-batch (all `B*T` long, row-major).
    #[allow(clippy::too_many_arguments)]
    pub fn from_host(
        device: &Device,
        targets: &[i64],
        old_logp: &[f32],
        advantages: &[f32],
        ref_logp: Option<&[f32]>,
        mask: &[f32],
        seq_len: usize,
        agg: AggMode,
        counts: &GlobalCounts,
    ) -> Result<Self> {
        let n = mask.len();
        check_len("targets", n, targets.len())?;
        check_len("old_logp", n, old_logp.len())?;
        check_len("advantages", n, advantages.len())?;
        if let Some(r) = ref_logp {
            check_len("ref_logp", n, r.len())?;
        }
        let pg_w = agg_weights(mask, seq_len, agg, counts)?;
        let tok_w = agg_weights(mask, seq_len, AggMode::TokenMean, counts)?;
        let f = |v: &[f32]| Tensor::<1>::from_floats(v, device);
        Ok(Self {
            targets: Tensor::<1, Int>::from_ints(targets, device),
            old_logp: f(old_logp),
            advantages: f(advantages),
            ref_logp: ref_logp.map(f),
            pg_weight: f(&pg_w),
            token_weight: f(&tok_w),
            pg_token_mask: None,
            kl_cov_mask: None,
        })
    }

    /// Set the Forking-Tokens mask (`[N]`, 1.0 = keep the policy gradient).
    pub fn with_pg_token_mask(mut self, mask: &[f32]) -> Self {
        self.pg_token_mask = Some(Tensor::<1>::from_floats(mask, &self.old_logp.device()));
        self
    }

    /// Set the KL-Cov mask (`[N]`, 1.0 = penalised).
    pub fn with_kl_cov_mask(mut self, mask: &[f32]) -> Self {
        self.kl_cov_mask = Some(Tensor::<1>::from_floats(mask, &self.old_logp.device()));
        self
    }

    /// Number of tokens `N`.
    pub fn len(&self) -> usize {
        self.old_logp.dims()[0]
    }

    /// Whether `N == 0`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens `range` of this batch.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        let s = |t: &Tensor<1>| t.clone().slice([range.clone()]);
        Self {
            targets: self.targets.clone().slice([range.clone()]),
            old_logp: s(&self.old_logp),
            advantages: s(&self.advantages),
            ref_logp: self.ref_logp.as_ref().map(s),
            pg_weight: s(&self.pg_weight),
            token_weight: s(&self.token_weight),
            pg_token_mask: self.pg_token_mask.as_ref().map(s),
            kl_cov_mask: self.kl_cov_mask.as_ref().map(s),
        }
    }
}

/// Scalars of a loss evaluation. All are additive over chunks and micro-batches (each is a
/// weighted sum with global weights), so summing them gives the mini-batch value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LossMetrics {
    /// Total loss.
    pub loss: f64,
    /// Policy-gradient term (aggregated; includes the KL-Cov penalty).
    pub pg_loss: f64,
    /// KL-Cov penalty alone (aggregated).
    pub kl_cov_penalty: f64,
    /// KL estimate (aggregated with the policy mode), before `coef`.
    pub kl: f64,
    /// Token-mean of the entropy term (global `H` or TRE's `H_hat`), before `coef`.
    pub entropy: f64,
    /// Token-mean of the clipped indicator.
    pub clip_frac: f64,
    /// Token-mean of `old_logp - logp`.
    pub ppo_kl: f64,
}

impl std::ops::AddAssign for LossMetrics {
    fn add_assign(&mut self, o: Self) {
        self.loss += o.loss;
        self.pg_loss += o.pg_loss;
        self.kl_cov_penalty += o.kl_cov_penalty;
        self.kl += o.kl;
        self.entropy += o.entropy;
        self.clip_frac += o.clip_frac;
        self.ppo_kl += o.ppo_kl;
    }
}

pub(crate) struct Objective {
    pub loss: Tensor<1>,
    /// `[7]`: the metrics in `LossMetrics` order (detached).
    pub metrics: Tensor<1>,
}

impl Objective {
    pub fn metrics(&self) -> LossMetrics {
        let v: Vec<f32> = self
            .metrics
            .clone()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap_or_default();
        let g = |i: usize| v.get(i).copied().unwrap_or(f32::NAN) as f64;
        LossMetrics {
            loss: g(0),
            pg_loss: g(1),
            kl_cov_penalty: g(2),
            kl: g(3),
            entropy: g(4),
            clip_frac: g(5),
            ppo_kl: g(6),
        }
    }
}

/// Validate that the batch carries what the config needs.
pub(crate) fn check_batch(b: &TokenBatch, cfg: &LossConfig) -> Result<()> {
    if cfg.kl_loss.is_some() && b.ref_logp.is_none() {
        return Err(OptimError::Config {
            field: "kl_loss",
            reason: "the KL loss needs reference log-probs in the batch".into(),
        });
    }
    match cfg.baseline {
        PgBaseline::ForkingTokens { .. } if b.pg_token_mask.is_none() => Err(OptimError::Config {
            field: "baseline",
            reason: "Forking Tokens needs `pg_token_mask` (see forking_token_mask)".into(),
        }),
        PgBaseline::KlCov { .. } if b.kl_cov_mask.is_none() => Err(OptimError::Config {
            field: "baseline",
            reason: "KL-Cov needs `kl_cov_mask` (see kl_cov_mask)".into(),
        }),
        _ => Ok(()),
    }
}

/// The per-token objective shared by every path: `logp [N]` and the entropy term `ent [N]`
/// (global H or TRE's H_hat) in, scalar loss out. Differentiable in `logp` and `ent`.
pub(crate) fn objective(
    logp: Tensor<1>,
    ent: Option<Tensor<1>>,
    b: &TokenBatch,
    cfg: &LossConfig,
) -> Objective {
    let (mut pg, clipped) = ppo_clip_token_loss(
        logp.clone(),
        b.old_logp.clone(),
        b.advantages.clone(),
        &cfg.ppo,
    );
    if let (PgBaseline::ForkingTokens { .. }, Some(m)) = (&cfg.baseline, &b.pg_token_mask) {
        pg = pg * m.clone();
    }
    let device = b.old_logp.device().inner();
    let zero = || Tensor::<1>::zeros([1], &device);
    let mut klcov_pen = zero();
    if let (PgBaseline::KlCov { coef, .. }, Some(m)) = (&cfg.baseline, &b.kl_cov_mask) {
        let pen = (logp.clone() - b.old_logp.clone()).abs() * m.clone();
        let pen_agg = (pen * b.pg_weight.clone()).sum().mul_scalar(*coef);
        klcov_pen = pen_agg;
    }
    let pg_agg = (pg * b.pg_weight.clone()).sum() + klcov_pen.clone();
    let mut loss = pg_agg.clone();
    let mut kl_agg = zero();
    if let (Some(kl), Some(r)) = (&cfg.kl_loss, &b.ref_logp) {
        let k = kl_estimate(logp.clone(), r.clone(), kl.estimator);
        kl_agg = (k * b.pg_weight.clone()).sum();
        loss = loss + kl_agg.clone().mul_scalar(kl.coef);
    }
    let mut ent_agg = zero();
    if let Some(h) = ent {
        ent_agg = (h * b.token_weight.clone()).sum();
        loss = loss - ent_agg.clone().mul_scalar(cfg.entropy.coef());
    }
    let clip_frac = (clipped * b.token_weight.clone()).sum();
    let ppo_kl = ((b.old_logp.clone() - logp.detach()) * b.token_weight.clone()).sum();
    let d = |t: Tensor<1>| t.detach().inner();
    let metrics = Tensor::cat(
        vec![
            d(loss.clone()),
            d(pg_agg),
            d(klcov_pen),
            d(kl_agg),
            d(ent_agg),
            d(clip_frac),
            d(ppo_kl),
        ],
        0,
    );
    Objective { loss, metrics }
}

/// Forking Tokens mask: among valid tokens (`valid > 0`), keep those whose entropy is at least
/// the `k`-th largest, `k = ceil(top_frac * n_valid)` (ties at the threshold are all kept).
/// Computed once per mini-batch from the scoring pass's entropies, so micro-batching does not
/// change it.
pub fn forking_token_mask(entropy: &[f32], valid: &[f32], top_frac: f64) -> Result<Vec<f32>> {
    check_len("forking valid mask", entropy.len(), valid.len())?;
    let mut vals: Vec<f32> = entropy
        .iter()
        .zip(valid)
        .filter(|(_, m)| **m > 0.0)
        .map(|(h, _)| *h)
        .collect();
    if vals.is_empty() {
        return Ok(vec![0.0; entropy.len()]);
    }
    let k = ((top_frac * vals.len() as f64).ceil() as usize).clamp(1, vals.len());
    vals.sort_by(|a, b| b.total_cmp(a));
    let thr = vals[k - 1];
    Ok(entropy
        .iter()
        .zip(valid)
        .map(|(&h, &m)| if m > 0.0 && h >= thr { 1.0 } else { 0.0 })
        .collect())
}

/// KL-Cov mask: covariance `(A - mean A)(logp - mean logp)` over valid tokens (means over valid
/// tokens); the `k = max(1, floor(ratio * n_valid))` largest are marked (verl's `kl_cov`).
pub fn kl_cov_mask(logp: &[f32], adv: &[f32], valid: &[f32], ratio: f64) -> Result<Vec<f32>> {
    check_len("kl_cov adv", logp.len(), adv.len())?;
    check_len("kl_cov valid", logp.len(), valid.len())?;
    let idx: Vec<usize> = (0..logp.len()).filter(|&i| valid[i] > 0.0).collect();
    let mut out = vec![0.0; logp.len()];
    if idx.is_empty() {
        return Ok(out);
    }
    let n = idx.len() as f64;
    let ma = idx.iter().map(|&i| adv[i] as f64).sum::<f64>() / n;
    let ml = idx.iter().map(|&i| logp[i] as f64).sum::<f64>() / n;
    let mut cov: Vec<(f64, usize)> = idx
        .iter()
        .map(|&i| ((adv[i] as f64 - ma) * (logp[i] as f64 - ml), i))
        .collect();
    let k = ((ratio * n).floor() as usize).clamp(1, idx.len());
    cov.sort_by(|a, b| b.0.total_cmp(&a.0));
    for &(_, i) in &cov[..k] {
        out[i] = 1.0;
    }
    Ok(out)
}

/// KL reward controller (KL as a per-token reward `r_t -= beta * k_t`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum KlController {
    /// Constant `beta`.
    Fixed {
        /// beta.
        coef: f64,
    },
    /// Ziegler et al. adaptive controller: `e = clip(kl / target - 1, -0.2, 0.2)`,
    /// `beta *= 1 + e * n_steps / horizon`.
    Adaptive {
        /// Current beta.
        coef: f64,
        /// Target KL.
        target: f64,
        /// Horizon (in samples).
        horizon: f64,
    },
}

impl KlController {
    /// Current beta.
    pub fn value(&self) -> f64 {
        match self {
            Self::Fixed { coef } | Self::Adaptive { coef, .. } => *coef,
        }
    }

    /// Update from the measured KL over `n_steps` samples (no-op for `Fixed`).
    pub fn update(&mut self, current_kl: f64, n_steps: usize) {
        if let Self::Adaptive {
            coef,
            target,
            horizon,
        } = self
        {
            let e = (current_kl / *target - 1.0).clamp(-0.2, 0.2);
            *coef *= 1.0 + e * n_steps as f64 / *horizon;
        }
    }
}

/// Subtract `beta * k_t` from per-token rewards `[B, T]` in place and return the measured KL
/// (per-sequence token-mean, averaged over sequences, as verl) for the controller.
pub fn apply_kl_reward(
    token_rewards: &mut [f32],
    logp: &[f32],
    ref_logp: &[f32],
    mask: &[f32],
    seq_len: usize,
    beta: f64,
    est: KlEstimator,
) -> Result<f64> {
    let n = token_rewards.len();
    check_len("logp", n, logp.len())?;
    check_len("ref_logp", n, ref_logp.len())?;
    check_len("mask", n, mask.len())?;
    let mut seq_sum = 0.0;
    let mut rows = 0usize;
    for b in 0..n / seq_len.max(1) {
        let (mut s, mut c) = (0.0, 0.0);
        for t in 0..seq_len {
            let i = b * seq_len + t;
            if mask[i] > 0.0 {
                let k = kl_estimate_scalar(logp[i] as f64, ref_logp[i] as f64, est);
                token_rewards[i] -= (beta * k) as f32;
                s += k;
                c += 1.0;
            }
        }
        if c > 0.0 {
            seq_sum += s / c;
        }
        rows += 1;
    }
    Ok(if rows > 0 { seq_sum / rows as f64 } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agg_weights_hand_values() {
        // 2 rows of 3, lengths 2 and 1; global counts: 3 tokens, 2 seqs, L_max 4.
        let m = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0];
        let c = GlobalCounts::from_mask(&m, 3, 4);
        assert_eq!(c.num_tokens, 3.0);
        let w = agg_weights(&m, 3, AggMode::TokenMean, &c).unwrap();
        assert!((w[0] - 1.0 / 3.0).abs() < 1e-7 && w[2] == 0.0);
        let w = agg_weights(&m, 3, AggMode::SeqMeanTokenMean, &c).unwrap();
        assert!((w[0] - 0.25).abs() < 1e-7 && (w[3] - 0.5).abs() < 1e-7);
        let w = agg_weights(&m, 3, AggMode::SeqMeanTokenSum, &c).unwrap();
        assert!((w[0] - 0.5).abs() < 1e-7);
        let w = agg_weights(&m, 3, AggMode::SeqMeanTokenSumNorm, &c).unwrap();
        assert!((w[0] - 0.125).abs() < 1e-7);
    }

    #[test]
    fn adaptive_controller_hand_values() {
        let mut c = KlController::Adaptive {
            coef: 0.1,
            target: 6.0,
            horizon: 10000.0,
        };
        c.update(12.0, 256); // e clipped to 0.2: 0.1 * (1 + 0.2 * 0.0256)
        assert!((c.value() - 0.1 * (1.0 + 0.2 * 0.0256)).abs() < 1e-12);
        let mut f = KlController::Fixed { coef: 0.05 };
        f.update(100.0, 10);
        assert_eq!(f.value(), 0.05);
    }

    #[test]
    fn kl_reward_subtracts_k1() {
        let mut r = [0.0, 0.0, 1.0, 0.0];
        let logp = [-1.0, -2.0, -0.5, 0.0];
        let rf = [-1.5, -2.0, -1.0, 0.0];
        let m = [1.0, 1.0, 1.0, 0.0];
        let kl = apply_kl_reward(&mut r, &logp, &rf, &m, 4, 0.1, KlEstimator::K1).unwrap();
        assert!((r[0] + 0.05).abs() < 1e-7 && r[1] == 0.0 && (r[2] - 0.95).abs() < 1e-7);
        assert!((kl - (0.5 + 0.0 + 0.5) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn masks_hand_values() {
        let h = [0.1, 0.9, 0.5, 0.7, 2.0];
        let v = [1.0, 1.0, 1.0, 1.0, 0.0];
        // 4 valid tokens, top 50% => k = 2 => {0.9, 0.7}.
        assert_eq!(
            forking_token_mask(&h, &v, 0.5).unwrap(),
            vec![0.0, 1.0, 0.0, 1.0, 0.0]
        );
        let lp = [-1.0, -2.0, -3.0, -4.0];
        let a = [1.0, 1.0, -1.0, -1.0];
        // means: logp -2.5, adv 0: cov = [1.5, 0.5, 0.5, 1.5] * ... => token 0 and 3 tie at 1.5.
        let m = kl_cov_mask(&lp, &a, &[1.0; 4], 0.25).unwrap();
        assert_eq!(m.iter().sum::<f32>(), 1.0);
        assert!(m[0] == 1.0 || m[3] == 1.0);
    }
}
