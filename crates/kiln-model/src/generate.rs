//! Greedy decoding through the KV cache: the reference generation path (the rollout engine in
//! kiln-rollout adds sampling, batching and forking on the same model calls).

use burn::tensor::activation::log_softmax;

use crate::batch::TokenBatch;
use crate::error::{ModelError, Result};
use crate::model::CausalLm;
use crate::rope::Rope;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub generated_ids: Vec<u32>,
    /// Log-probability of each generated token under the model (no temperature).
    pub logprobs: Vec<f32>,
    /// True when generation stopped at an end-of-sequence id (kept in `generated_ids`).
    pub stopped_at_eos: bool,
}

/// Greedy decoding of up to `max_new_tokens` tokens after `prompt`, stopping after any id in
/// `eos_ids`. `on_token` sees each token as it is produced (for streaming).
pub fn greedy(
    model: &CausalLm,
    rope: &Rope,
    prompt: &[u32],
    max_new_tokens: usize,
    eos_ids: &[u32],
    max_context: usize,
    mut on_token: impl FnMut(u32),
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(ModelError::Input("the prompt has no tokens".into()));
    }
    if prompt.len() + max_new_tokens > max_context {
        return Err(ModelError::Input(format!(
            "prompt ({} tokens) + max_new_tokens ({max_new_tokens}) exceed the context of {max_context}",
            prompt.len()
        )));
    }
    let mut cache = model.new_cache(1);
    let mut logits = model.forward_cached(rope, &TokenBatch::new(&[prompt.to_vec()])?, &mut cache);
    let mut out = Generation {
        prompt_ids: prompt.to_vec(),
        generated_ids: Vec::new(),
        logprobs: Vec::new(),
        stopped_at_eos: false,
    };
    for _ in 0..max_new_tokens {
        let [_, s, v] = logits.dims();
        let last = logits.narrow(1, s - 1, 1).reshape([1, v]);
        let logp = log_softmax(last, 1);
        let values: Vec<f32> = logp
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| ModelError::Input(format!("reading logits: {e:?}")))?;
        let (token, lp) = argmax(&values);
        if !lp.is_finite() {
            return Err(ModelError::Input(format!(
                "non-finite log-probability at step {}",
                out.generated_ids.len()
            )));
        }
        out.generated_ids.push(token);
        out.logprobs.push(lp);
        on_token(token);
        if eos_ids.contains(&token) {
            out.stopped_at_eos = true;
            break;
        }
        logits = model.forward_cached(rope, &TokenBatch::new(&[vec![token]])?, &mut cache);
    }
    Ok(out)
}

/// Index and value of the largest element; the first one on ties (as torch.argmax).
pub fn argmax(values: &[f32]) -> (u32, f32) {
    let mut best = (0u32, f32::NEG_INFINITY);
    for (i, &v) in values.iter().enumerate() {
        if v > best.1 {
            best = (i as u32, v);
        }
    }
    best
}
