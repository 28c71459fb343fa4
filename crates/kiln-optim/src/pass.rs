//! One pass over the logits: token log-probs, the entropy / TRE terms and the actor loss, with
//! its gradient, chunked over tokens so that a `[tokens x vocab]` tensor is never held whole.
//!
//! Three entry points:
//! - [`policy_loss`]: the plain autodiff path on full logits (small models, reference in tests).
//! - [`chunked_policy_loss`]: hidden states `[N, d]` and the lm_head weight `[d, V]` in; for
//!   each chunk of rows it computes the logits, the loss terms and the ANALYTIC gradient w.r.t.
//!   the chunk's logits, turns it into `dL/dhidden` and `dL/dW` with two matmuls and drops the
//!   chunk. The caller then backprops the trunk through [`LmHeadGrads::surrogate`]
//!   (`sum(hidden * g_h) + sum(W * g_W)`, whose gradient is exactly `g_h`, `g_W`). The loss's
//!   global normalisation is already in the per-token weights of the [`TokenBatch`].
//! - [`chunked_score`] / [`score_logits`]: log-probs (and entropy) without autodiff, for old /
//!   reference log-probs and rollouts, with the same numerics.
//!
//! Analytic gradients: with `c_t = dL/dlogp_t` and `e_t = dL/dterm_t` (obtained by autodiff on
//! the tiny `[chunk]` graph of the per-token objective), `dL/dz = c (onehot - p)` plus, for the
//! global entropy, `e * (-p (z - lse + H))`, or, for TRE, `e * dH_hat/dz` on the `<= 256`
//! selected columns.

use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

use crate::entropy::{
    EntropyGrad, EntropyReg, Selection, entropy_term, entropy_term_analytic, full_entropy,
};
use crate::error::{OptimError, Result, check_len};
use crate::fused;
use crate::loss::{LossConfig, LossMetrics, TokenBatch, check_batch, objective};

/// Output of [`policy_loss`] (autodiff path).
#[derive(Debug)]
pub struct PolicyLossOutput {
    /// Scalar loss `[1]`, tracked: call `backward()`.
    pub loss: Tensor<1>,
    /// Token log-probs `[N]` (detached).
    pub logp: Tensor<1>,
    /// Metrics (weighted sums with global weights; additive over micro-batches).
    pub metrics: LossMetrics,
}

/// Actor loss from full logits `z` (`[N, V]`, ALREADY divided by the temperature), on the
/// autodiff path. The entropy term uses burn's autodiff through `log_softmax` / the gathered
/// logits.
pub fn policy_loss(
    z: Tensor<2>,
    batch: &TokenBatch,
    cfg: &LossConfig,
    sel: Selection,
) -> Result<PolicyLossOutput> {
    check_batch(batch, cfg)?;
    let [n, _] = z.dims();
    check_len("logits rows", batch.len(), n)?;
    let lsm = log_softmax(z.clone(), 1);
    let logp = lsm
        .gather(1, batch.targets.clone().reshape([n, 1]))
        .reshape([n]);
    let ent = entropy_term(z, &cfg.entropy, sel);
    let obj = objective(logp.clone(), ent, batch, cfg);
    let metrics = obj.metrics();
    Ok(PolicyLossOutput {
        loss: obj.loss,
        logp: logp.detach().inner(),
        metrics,
    })
}

/// Output of [`loss_and_grad_from_logits`].
#[derive(Debug)]
pub struct LogitsGrad {
    /// `dL/dz` `[N, V]` (no autodiff).
    pub grad: Tensor<2>,
    /// Token log-probs `[N]`.
    pub logp: Tensor<1>,
    /// Entropy term per token `[N]` (global H or TRE's H_hat), if any.
    pub entropy_term: Option<Tensor<1>>,
    /// Metrics.
    pub metrics: LossMetrics,
}

/// Loss and its analytic gradient w.r.t. logits `z` (`[N, V]`, temperature-scaled; only the
/// values are used). One chunk of [`chunked_policy_loss`]; also usable alone.
pub fn loss_and_grad_from_logits(
    z: Tensor<2>,
    batch: &TokenBatch,
    cfg: &LossConfig,
    sel: Selection,
) -> Result<LogitsGrad> {
    check_batch(batch, cfg)?;
    let [n, _] = z.dims();
    check_len("logits rows", batch.len(), n)?;
    let z = z.detach().inner();
    let device = z.device();
    if sel.use_host(&device) {
        return fused_loss_and_grad(z, batch, cfg);
    }
    let mx = z.clone().max_dim(1);
    let ez = (z.clone() - mx.clone()).exp();
    let s = ez.clone().sum_dim(1);
    let lse2 = mx + s.clone().log(); // [N, 1]
    let p = ez / s;
    let tgt = batch.targets.clone().reshape([n, 1]);
    let logp = (z.clone().gather(1, tgt.clone()) - lse2.clone()).reshape([n]);
    let lse = lse2.clone().reshape([n]);
    let ent = entropy_term_analytic(&z, &lse, &p, &cfg.entropy, sel);

    // Tiny autodiff graph over [N] vectors: c = dL/dlogp, e = dL/dterm.
    let logp_leaf = logp.clone().autodiff().require_grad();
    let ent_leaf = ent
        .as_ref()
        .map(|(h, _)| h.clone().autodiff().require_grad());
    let obj = objective(logp_leaf.clone(), ent_leaf.clone(), batch, cfg);
    let metrics = obj.metrics();
    let grads = obj.loss.backward();
    let zeros = || Tensor::<1>::zeros([n], &device);
    let c = logp_leaf
        .grad(&grads)
        .map(|g| g.inner())
        .unwrap_or_else(zeros);
    let e = ent_leaf
        .as_ref()
        .and_then(|l| l.grad(&grads))
        .map(|g| g.inner())
        .unwrap_or_else(zeros);

    let c2 = c.clone().reshape([n, 1]);
    let mut g = match &ent {
        Some((h, EntropyGrad::Global)) => {
            // -p (c + e (z - lse + H))
            let e2 = e.clone().reshape([n, 1]);
            let coeff = c2.clone() + e2.clone() * (h.clone().reshape([n, 1]) - lse2);
            (z.clone() * e2 + coeff) * p.neg()
        }
        _ => p * c2.clone().neg(),
    };
    g = g.scatter(1, tgt, c2, IndexingUpdateOp::Add);
    let mut entropy_term = None;
    if let Some((h, eg)) = ent {
        g = eg.add_sparse(g, e);
        entropy_term = Some(h);
    }
    Ok(LogitsGrad {
        grad: g,
        logp,
        entropy_term,
        metrics,
    })
}

/// The host-fused version of [`loss_and_grad_from_logits`] (CPU backends).
fn fused_loss_and_grad(z: Tensor<2>, batch: &TokenBatch, cfg: &LossConfig) -> Result<LogitsGrad> {
    let [n, v] = z.dims();
    let device = z.device();
    let targets: Vec<i64> = batch
        .targets
        .clone()
        .into_data()
        .try_into_vec_as::<i64>()
        .map_err(|e| OptimError::Config {
            field: "targets",
            reason: format!("{e:?}"),
        })?;
    if let Some(&bad) = targets.iter().find(|&&t| t < 0 || t as usize >= v) {
        return Err(OptimError::Config {
            field: "targets",
            reason: format!("token id {bad} outside the vocabulary of {v}"),
        });
    }
    let mut data = z.into_data();
    if data.dtype() != burn::tensor::DType::F32 {
        data = data.convert::<f32>();
    }
    let buf: &mut [f32] = data.as_mut_slice::<f32>().map_err(|e| OptimError::Config {
        field: "logits",
        reason: format!("{e:?}"),
    })?;
    let stats = fused::row_stats(buf, v, &targets, &cfg.entropy);
    let logp_h: Vec<f32> = stats.iter().map(|s| s.logp).collect();
    let logp = Tensor::<1>::from_floats(logp_h.as_slice(), &device);
    let term = cfg.entropy.is_active().then(|| {
        let t: Vec<f32> = stats.iter().map(|s| s.term).collect();
        Tensor::<1>::from_floats(t.as_slice(), &device)
    });
    let logp_leaf = logp.clone().autodiff().require_grad();
    let ent_leaf = term.as_ref().map(|h| h.clone().autodiff().require_grad());
    let obj = objective(logp_leaf.clone(), ent_leaf.clone(), batch, cfg);
    let metrics = obj.metrics();
    let grads = obj.loss.backward();
    let host = |t: Option<Tensor<1>>| -> Vec<f32> {
        t.and_then(|t| t.inner().into_data().try_into_vec_as::<f32>().ok())
            .unwrap_or_else(|| vec![0.0; n])
    };
    let c = host(logp_leaf.grad(&grads));
    let e = host(ent_leaf.as_ref().and_then(|l| l.grad(&grads)));
    let global = matches!(cfg.entropy, EntropyReg::Global { .. });
    fused::write_grad(buf, v, &targets, &stats, &c, &e, global);
    Ok(LogitsGrad {
        grad: Tensor::<2>::from_data(data, &device),
        logp,
        entropy_term: term,
        metrics,
    })
}

/// Vocabulary columns per block of the lm_head weight gradient.
const VOCAB_BLOCK: usize = 8192;

/// Options of the chunked pass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChunkOptions {
    /// Rows (tokens) per chunk. Peak extra memory is about 4 x chunk x V x 4 bytes.
    pub chunk_size: usize,
    /// Sampling temperature: logits are divided by it before any log-prob or entropy.
    pub temperature: f64,
    /// Where TRE's top-k runs.
    pub selection: Selection,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self {
            chunk_size: 256,
            temperature: 1.0,
            selection: Selection::Auto,
        }
    }
}

/// Result of [`chunked_policy_loss`]: the gradients to inject into the trunk and lm_head.
#[derive(Debug)]
pub struct LmHeadGrads {
    /// `dL/dhidden` `[N, d]`.
    pub grad_hidden: Tensor<2>,
    /// `dL/dW` `[d, V]` (burn's Linear layout).
    pub grad_weight: Tensor<2>,
    /// Token log-probs `[N]` at the current parameters.
    pub logp: Tensor<1>,
    /// Entropy term per token `[N]`, if any.
    pub entropy_term: Option<Tensor<1>>,
    /// Metrics (`metrics.loss` is this micro-batch's loss value).
    pub metrics: LossMetrics,
}

impl LmHeadGrads {
    /// A scalar whose gradient w.r.t. `hidden` and `weight` (the tracked tensors the chunked pass
    /// was given, e.g. the trunk output and `lm_head.weight.val()`) is `grad_hidden` and
    /// `grad_weight`. Call `backward()` on it (once, after any other terms are added).
    /// Pass `weight = None` when the lm_head is frozen or its gradient is registered directly.
    pub fn surrogate(&self, hidden: Tensor<2>, weight: Option<Tensor<2>>) -> Tensor<1> {
        let s = (hidden * self.grad_hidden.clone().autodiff()).sum();
        match weight {
            Some(w) => s + (w * self.grad_weight.clone().autodiff()).sum(),
            None => s,
        }
    }
}

fn check_chunk(opts: &ChunkOptions) -> Result<()> {
    if opts.chunk_size == 0 {
        return Err(OptimError::Config {
            field: "chunk_size",
            reason: "must be at least 1".into(),
        });
    }
    if !(opts.temperature > 0.0 && opts.temperature.is_finite()) {
        return Err(OptimError::Config {
            field: "temperature",
            reason: format!("must be positive and finite (got {})", opts.temperature),
        });
    }
    Ok(())
}

/// The chunked actor pass: `hidden` `[N, d]` (trunk output, tracked or not: only its values are
/// read), `weight` `[d, V]`. Never holds more than one chunk of `[chunk x V]` logits (plus its
/// softmax and gradient). See the module docs.
pub fn chunked_policy_loss(
    hidden: &Tensor<2>,
    weight: &Tensor<2>,
    batch: &TokenBatch,
    cfg: &LossConfig,
    opts: &ChunkOptions,
) -> Result<LmHeadGrads> {
    check_chunk(opts)?;
    check_batch(batch, cfg)?;
    let [n, d] = hidden.dims();
    let [dw, v] = weight.dims();
    check_len("lm_head weight rows (hidden size)", d, dw)?;
    check_len("batch tokens", n, batch.len())?;
    let h_all = hidden.clone().detach().inner();
    let w = weight.clone().detach().inner();
    let inv_t = 1.0 / opts.temperature;
    // dW is accumulated in vocabulary blocks: flex's matmul transiently allocates twice its
    // output, so one [d, V] product per chunk would cost 2 x 113 MB on SmolLM2; per block it
    // costs 2 x [d, VOCAB_BLOCK]. Blocks are accumulated in place and joined once at the end.
    let blocks: Vec<std::ops::Range<usize>> = (0..v)
        .step_by(VOCAB_BLOCK)
        .map(|s| s..(s + VOCAB_BLOCK).min(v))
        .collect();
    let mut grad_w: Vec<Option<Tensor<2>>> = vec![None; blocks.len()];
    let mut gh = Vec::new();
    let mut logps = Vec::new();
    let mut ents = Vec::new();
    let mut metrics = LossMetrics::default();
    let mut start = 0;
    while start < n {
        let end = (start + opts.chunk_size).min(n);
        let h = h_all.clone().slice_dim(0, start..end);
        let mut z = h.clone().matmul(w.clone());
        if inv_t != 1.0 {
            z = z.mul_scalar(inv_t);
        }
        let out = loss_and_grad_from_logits(z, &batch.slice(start..end), cfg, opts.selection)?;
        let mut g = out.grad;
        if inv_t != 1.0 {
            g = g.mul_scalar(inv_t);
        }
        // dh = G W^T, computed as (W G^T)^T so that only the [d, chunk] result is new.
        gh.push(w.clone().matmul(g.clone().transpose()).transpose());
        let ht = h.transpose();
        let rows = end - start;
        for (acc, cols) in grad_w.iter_mut().zip(&blocks) {
            let gw = ht.clone().matmul(g.clone().slice([0..rows, cols.clone()]));
            *acc = Some(match acc.take() {
                Some(a) => a + gw,
                None => gw,
            });
        }
        logps.push(out.logp);
        if let Some(e) = out.entropy_term {
            ents.push(e);
        }
        metrics += out.metrics;
        start = end;
    }
    let cat1 = |v: Vec<Tensor<1>>| {
        if v.is_empty() {
            None
        } else {
            Some(Tensor::cat(v, 0))
        }
    };
    Ok(LmHeadGrads {
        grad_hidden: if gh.is_empty() {
            Tensor::zeros([0, d], &w.device())
        } else {
            Tensor::cat(gh, 0)
        },
        grad_weight: {
            let parts: Vec<Tensor<2>> = grad_w.into_iter().flatten().collect();
            if parts.is_empty() {
                Tensor::zeros([d, v], &w.device())
            } else {
                Tensor::cat(parts, 1)
            }
        },
        logp: cat1(logps).unwrap_or_else(|| Tensor::zeros([0], &w.device())),
        entropy_term: cat1(ents),
        metrics,
    })
}

/// Output of the scoring functions.
#[derive(Debug, Clone)]
pub struct ScoreOutput {
    /// Token log-probs `[N]`.
    pub logp: Tensor<1>,
    /// Full-vocabulary entropy `[N]` when requested.
    pub entropy: Option<Tensor<1>>,
}

/// Log-probs (and entropy) from logits `z` `[N, V]` (temperature-scaled), no autodiff.
///
/// On the flex CPU backend this runs the same fused host kernel as the training pass (so the
/// behaviour log-probs and the first-epoch training log-probs agree bit for bit); elsewhere it
/// uses burn's `log_softmax`.
pub fn score_logits(z: Tensor<2>, targets: Tensor<1, Int>, with_entropy: bool) -> ScoreOutput {
    let [n, v] = z.dims();
    let mut z = z.detach().inner();
    let device = z.device();
    if Selection::Auto.use_host(&device)
        && let Ok(tg) = targets.clone().into_data().try_into_vec_as::<i64>()
        && tg.iter().all(|&t| t >= 0 && (t as usize) < v)
    {
        let data = z.into_data().convert::<f32>();
        if let Ok(buf) = data.as_slice::<f32>() {
            let reg = if with_entropy {
                EntropyReg::Global { coef: 0.0 }
            } else {
                EntropyReg::None
            };
            let stats = fused::row_stats(buf, v, &tg, &reg);
            let logp: Vec<f32> = stats.iter().map(|s| s.logp).collect();
            let ent: Vec<f32> = stats.iter().map(|s| s.term).collect();
            return ScoreOutput {
                logp: Tensor::<1>::from_floats(logp.as_slice(), &device),
                entropy: with_entropy.then(|| Tensor::<1>::from_floats(ent.as_slice(), &device)),
            };
        }
        z = Tensor::from_data(data, &device);
    }
    let lsm = log_softmax(z.clone(), 1);
    let logp = lsm.gather(1, targets.reshape([n, 1])).reshape([n]);
    ScoreOutput {
        logp,
        entropy: with_entropy.then(|| full_entropy(z)),
    }
}

/// Chunked scoring from hidden states and the lm_head weight (no autodiff, same numerics as the
/// training pass).
pub fn chunked_score(
    hidden: &Tensor<2>,
    weight: &Tensor<2>,
    targets: &Tensor<1, Int>,
    with_entropy: bool,
    opts: &ChunkOptions,
) -> Result<ScoreOutput> {
    check_chunk(opts)?;
    let [n, d] = hidden.dims();
    let [dw, _] = weight.dims();
    check_len("lm_head weight rows (hidden size)", d, dw)?;
    check_len("targets", n, targets.dims()[0])?;
    let h_all = hidden.clone().detach().inner();
    let w = weight.clone().detach().inner();
    let mut logps = Vec::new();
    let mut ents = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + opts.chunk_size).min(n);
        let mut z = h_all.clone().slice_dim(0, start..end).matmul(w.clone());
        if opts.temperature != 1.0 {
            z = z.mul_scalar(1.0 / opts.temperature);
        }
        let out = score_logits(z, targets.clone().slice_dim(0, start..end), with_entropy);
        logps.push(out.logp);
        if let Some(e) = out.entropy {
            ents.push(e);
        }
        start = end;
    }
    let dev = w.device();
    Ok(ScoreOutput {
        logp: if logps.is_empty() {
            Tensor::zeros([0], &dev)
        } else {
            Tensor::cat(logps, 0)
        },
        entropy: (!ents.is_empty()).then(|| Tensor::cat(ents, 0)),
    })
}
