//! The training path over (prompt, response) sequences: scoring without autodiff (old and
//! reference log-probs, critic values) and the actor / SFT / critic gradients of one
//! micro-batch. The lm_head runs chunk by chunk (kiln-optim's chunked pass), so a
//! `[tokens x vocab]` tensor is never held whole.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use kiln_model::{CausalLm, HeadInit, Padding, Rope, SequenceClassifier, TokenBatch};
use kiln_optim::loss::{LossConfig, LossMetrics, TokenBatch as LossBatch};
use kiln_optim::{ChunkOptions, chunked_policy_loss, chunked_score};

use crate::error::{Result, TrainError};

/// Sequences `prompt ++ response` right-padded into one model batch, and where each response
/// token's prediction sits in the flattened hidden states.
#[derive(Debug, Clone)]
pub struct SeqBatch {
    pub tokens: TokenBatch,
    /// For response token j of row b: row `b * seq + prompt_len_b + j - 1` of the flattened
    /// `[batch * seq, hidden]` states (the position that predicts it).
    pub gather: Vec<i64>,
    /// The response tokens, concatenated row after row.
    pub targets: Vec<i64>,
    /// Response length of each row.
    pub response_lens: Vec<usize>,
}

impl SeqBatch {
    /// Rows of `(prompt, response)`; the last response token is never an input, so it is left
    /// out of the sequence.
    pub fn new(rows: &[(&[u32], &[u32])], pad_id: u32) -> Result<Self> {
        let mut seqs = Vec::with_capacity(rows.len());
        for (i, (p, r)) in rows.iter().enumerate() {
            if p.is_empty() || r.is_empty() {
                return Err(TrainError::recipe(
                    "batch",
                    format!("row {i}: empty prompt or response"),
                ));
            }
            let mut s = p.to_vec();
            s.extend_from_slice(&r[..r.len() - 1]);
            seqs.push(s);
        }
        let tokens = TokenBatch::padded(&seqs, pad_id, Padding::Right)?;
        let seq = tokens.seq;
        let mut gather = Vec::new();
        let mut targets = Vec::new();
        for (b, (p, r)) in rows.iter().enumerate() {
            for (j, &t) in r.iter().enumerate() {
                gather.push((b * seq + p.len() + j - 1) as i64);
                targets.push(t as i64);
            }
        }
        Ok(Self {
            tokens,
            gather,
            targets,
            response_lens: rows.iter().map(|(_, r)| r.len()).collect(),
        })
    }

    /// Number of response tokens.
    pub fn num_tokens(&self) -> usize {
        self.targets.len()
    }

    /// Hidden states of the positions that predict the response tokens, `[N, hidden]`.
    fn response_hidden(&self, net: &CausalLm, rope: &Rope) -> Tensor<2> {
        let hidden = net.forward_hidden(rope, &self.tokens);
        let [b, s, d] = hidden.dims();
        let device = hidden.device();
        let idx = Tensor::<1, Int>::from_ints(self.gather.as_slice(), &device);
        hidden.reshape([b * s, d]).select(0, idx)
    }
}

fn host(t: Tensor<1>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

/// Log-probs (and entropies) of the response tokens under `net` (no autodiff), at
/// `temperature`.
pub fn score(
    net: &CausalLm,
    rope: &Rope,
    batch: &SeqBatch,
    opts: &ChunkOptions,
    with_entropy: bool,
) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
    let h = batch.response_hidden(net, rope);
    let device = h.device();
    let targets = Tensor::<1, Int>::from_ints(batch.targets.as_slice(), &device);
    let out = chunked_score(&h, &net.lm_head_weight(), &targets, with_entropy, opts)?;
    Ok((host(out.logp), out.entropy.map(host)))
}

/// One micro-batch of the actor: loss, backward, gradients of `net`'s parameters.
pub struct ActorGrads {
    pub grads: GradientsParams,
    pub metrics: LossMetrics,
    /// Log-probs at the current parameters (before this step's update).
    pub logp: Vec<f32>,
}

/// Actor loss and gradients on one micro-batch (`net` on an autodiff device).
pub fn actor_grads(
    net: &CausalLm,
    rope: &Rope,
    batch: &SeqBatch,
    loss_batch: &LossBatch,
    cfg: &LossConfig,
    opts: &ChunkOptions,
) -> Result<ActorGrads> {
    let h = batch.response_hidden(net, rope);
    let w = net.lm_head_weight();
    let g = chunked_policy_loss(&h, &w, loss_batch, cfg, opts)?;
    let grads = g.surrogate(h, Some(w)).backward();
    Ok(ActorGrads {
        grads: GradientsParams::from_grads(grads, net),
        metrics: g.metrics,
        logp: host(g.logp),
    })
}

/// PPO's critic: a value per token from kiln-model's [`SequenceClassifier`] (the network of a
/// reward model), read at the position that predicts each response token.
#[derive(Module, Debug)]
pub struct Critic {
    pub net: SequenceClassifier,
}

impl Critic {
    /// A critic whose trunk starts as a copy of `policy` (as verl and OpenRLHF do) and whose
    /// head starts at zero, so every first value is 0.
    pub fn from_policy(policy: &CausalLm) -> Self {
        Self {
            net: SequenceClassifier::from_trunk(policy.clone(), 1, HeadInit::Zeros),
        }
    }

    /// Values `[N]` of the response positions of `batch` (tracked when the critic is).
    pub fn values(&self, rope: &Rope, batch: &SeqBatch) -> Tensor<1> {
        let h = batch.response_hidden(&self.net.model, rope);
        let [n, _] = h.dims();
        self.net.head(h).reshape([n])
    }

    /// Values on the host (no autodiff).
    pub fn values_host(&self, rope: &Rope, batch: &SeqBatch) -> Vec<f32> {
        host(self.values(rope, batch))
    }
}

/// Clipped value loss and the critic's gradients on one micro-batch.
pub fn critic_grads(
    critic: &Critic,
    rope: &Rope,
    batch: &SeqBatch,
    old_values: &[f32],
    returns: &[f32],
    weights: &[f32],
    clip: f64,
) -> (GradientsParams, f64) {
    let values = critic.values(rope, batch);
    let device = values.device();
    let f = |v: &[f32]| Tensor::<1>::from_floats(v, &device);
    let loss =
        kiln_optim::loss::clipped_value_loss(values, f(old_values), f(returns), f(weights), clip);
    let value = loss.clone().into_scalar::<f32>() as f64;
    let grads = loss.backward();
    (GradientsParams::from_grads(grads, critic), value)
}

/// Cross-entropy gradients for SFT: `-sum_t w_t log p(target_t)`. Small vocabularies take
/// the plain autodiff path over full logits; large ones the chunked pass with advantage 1 and
/// old log-probs equal to the current ones, whose gradient is exactly the same (the PPO ratio
/// is 1 and unclipped) and which never holds `[tokens x vocab]` whole. Returns the gradients
/// and the weighted NLL.
pub fn sft_grads(
    net: &CausalLm,
    rope: &Rope,
    batch: &SeqBatch,
    weights: &[f32],
    opts: &ChunkOptions,
) -> Result<(GradientsParams, f64)> {
    let device = net.device();
    let n = batch.num_tokens();
    let f = |v: &[f32]| Tensor::<1>::from_floats(v, &device);
    let targets = Tensor::<1, Int>::from_ints(batch.targets.as_slice(), &device);
    if n * net.vocab_size() <= FULL_LOGITS_LIMIT {
        let h = batch.response_hidden(net, rope);
        let z = h.matmul(net.lm_head_weight());
        let logp = burn::tensor::activation::log_softmax(z, 1)
            .gather(1, targets.reshape([n, 1]))
            .reshape([n]);
        let loss = (logp * f(weights)).sum().neg();
        let nll = loss.clone().into_scalar::<f32>() as f64;
        let grads = loss.backward();
        return Ok((GradientsParams::from_grads(grads, net), nll));
    }
    // Current log-probs first (no autodiff), then the ratio-1 surrogate.
    let (logp, _) = score(&net.clone().valid(), rope, batch, opts, false)?;
    let ones = vec![1.0f32; n];
    let loss_batch = LossBatch {
        targets,
        old_logp: f(&logp),
        advantages: f(&ones),
        ref_logp: None,
        pg_weight: f(weights),
        token_weight: f(weights),
        pg_token_mask: None,
        kl_cov_mask: None,
    };
    let cfg = LossConfig {
        ppo: kiln_optim::PpoClip {
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip: None,
        },
        ..LossConfig::default()
    };
    let g = actor_grads(net, rope, batch, &loss_batch, &cfg, opts)?;
    let nll: f64 = logp
        .iter()
        .zip(weights)
        .map(|(&l, &w)| -(l as f64) * w as f64)
        .sum();
    Ok((g.grads, nll))
}

/// Above this many logits (tokens x vocab) SFT uses the chunked pass.
const FULL_LOGITS_LIMIT: usize = 1 << 24;

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::Model;
    use kiln_optim::hook::{NamedParams, grad_flat};

    fn tiny() -> Model {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../recipes/models/tiny-arith");
        Model::random(&dir, &Device::flex().autodiff(), 7).unwrap()
    }

    /// Every parameter gets a non-zero gradient from the response tokens (attention included:
    /// the answer depends on the prompt's content).
    #[test]
    fn sft_gradient_reaches_every_parameter() {
        let m = tiny();
        let rows: Vec<(Vec<u32>, Vec<u32>)> = ["47 + 38 =", "12 + 13 ="]
            .iter()
            .zip([" 85", " 25"])
            .map(|(p, r)| {
                (
                    m.tokenizer.encode(p, false).unwrap(),
                    m.tokenizer.encode(r, false).unwrap(),
                )
            })
            .collect();
        let refs: Vec<(&[u32], &[u32])> = rows
            .iter()
            .map(|(p, r)| (p.as_slice(), r.as_slice()))
            .collect();
        let batch = SeqBatch::new(&refs, 0).unwrap();
        let w = vec![1.0 / batch.num_tokens() as f32; batch.num_tokens()];
        let (g, nll) = sft_grads(&m.net, &m.rope, &batch, &w, &ChunkOptions::default()).unwrap();
        assert!(nll > 3.0 && nll < 6.0, "{nll}");
        let params = NamedParams::from_module(&m.net);
        for p in params.iter() {
            let flat = grad_flat(&g, p).unwrap();
            let norm = flat
                .map(|t| t.powi_scalar(2).sum().into_scalar::<f32>())
                .unwrap_or(0.0);
            println!("{} {norm:.3e}", p.path);
            assert!(norm > 0.0, "{} has no gradient", p.path);
        }
    }
}
