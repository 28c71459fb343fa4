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

/// Index and value of the largest element; the first one on ties (as torch.argmax). NaNs are
/// skipped; `(0, -inf)` when nothing is larger than `-inf`.
pub fn argmax(values: &[f32]) -> (u32, f32) {
    // The maximum in 16 lanes (the loop vectorises), then its first position.
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = values.chunks_exact(16);
    for (lane, &v) in lanes.iter_mut().zip(chunks.remainder()) {
        *lane = lane.max(v);
    }
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(v);
        }
    }
    let max = lanes.into_iter().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return (0, max);
    }
    let at = values.iter().position(|&v| v == max).unwrap_or(0);
    (at as u32, max)
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_takes_the_first_maximum_and_skips_nans() {
        // Maxima in the tail (past the last 16-wide chunk) and in a chunk; ties resolve to the
        // lower index wherever they sit.
        let mut v: Vec<f32> = (0..37).map(|i| (i % 9) as f32).collect();
        assert_eq!(argmax(&v), (8, 8.0));
        v[35] = 9.0;
        v[20] = 9.0;
        assert_eq!(argmax(&v), (20, 9.0));
        v[3] = f32::NAN;
        assert_eq!(argmax(&v), (20, 9.0));
        assert_eq!(
            argmax(&[f32::NAN, f32::NEG_INFINITY]),
            (0, f32::NEG_INFINITY)
        );
        assert_eq!(argmax(&[]), (0, f32::NEG_INFINITY));
        assert_eq!(argmax(&[-3.0, -1.0, -1.0]), (1, -1.0));
    }
}
