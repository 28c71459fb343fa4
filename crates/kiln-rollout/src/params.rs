//! Sampling parameters of a rollout request.

use serde::{Deserialize, Serialize};

use crate::error::{Result, RolloutError};

/// The most candidates per position a rollout can record (`SamplingParams::top_logprobs`).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// How the engine samples the responses of one request.
///
/// The sampling distribution at each step is built on the host from the logits `z` of the row:
/// `softmax(z / temperature)`, then (in this order, as transformers' warpers) top-k, top-p and
/// min-p filtering, each applied to the distribution left by the previous one, renormalised.
/// `temperature == 0` is greedy decoding (the first maximal logit, as `torch.argmax`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingParams {
    /// Samples per prompt. The prompt is prefilled once and its KV shared by all of them.
    pub n: usize,
    /// 0 = greedy; otherwise > 0.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; in (0, 1],
    /// 1 = off. The token that crosses the threshold is kept; at least one token is kept.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the most likely one's; in [0, 1],
    /// 0 = off.
    pub min_p: f32,
    /// Upper bound on response tokens (>= 1). A response also ends at the model's context.
    pub max_new_tokens: usize,
    /// Token ids that end a response besides the tokenizer's eos ids (kept in the response).
    pub stop_token_ids: Vec<u32>,
    /// Texts that end a response. Matched against the decoded response text (special tokens
    /// skipped) after every token, so a stop string split across several tokens is found. The
    /// response ids keep every sampled token up to and including the one that completed the stop
    /// string (so ids and log-probs stay aligned); `Rollout::text` is cut just before the stop
    /// string. Needs a tokenizer.
    pub stop_strings: Vec<String>,
    /// Do not stop at the tokenizer's eos ids (stop ids and strings still apply).
    pub ignore_eos: bool,
    /// Seed of the per-row random streams: row (prompt p, sample s) draws from a ChaCha8 stream
    /// keyed by (seed, p, s), so tokens do not depend on how rows are batched.
    pub seed: u64,
    /// Record the `top_logprobs` most likely candidates of the sampling distribution at every
    /// response position (0 = off, at most [`MAX_TOP_LOGPROBS`]).
    pub top_logprobs: usize,
    /// Keep each finished row's KV cache in its `Rollout` so [`crate::Engine::fork`] continues it
    /// without running the prompt again. Costs one cache row per rollout.
    pub retain_kv: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            n: 1,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            max_new_tokens: 256,
            stop_token_ids: Vec::new(),
            stop_strings: Vec::new(),
            ignore_eos: false,
            seed: 0,
            top_logprobs: 0,
            retain_kv: false,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of up to `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        SamplingParams {
            temperature: 0.0,
            max_new_tokens,
            ..Default::default()
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks every field; the message names the field and the allowed range.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(RolloutError::Params(m));
        if self.n == 0 {
            return bad("n must be at least 1".into());
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!(
                "temperature must be >= 0 (0 = greedy), got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens must be at least 1".into());
        }
        if self.top_logprobs > MAX_TOP_LOGPROBS {
            return bad(format!(
                "top_logprobs must be at most {MAX_TOP_LOGPROBS}, got {}",
                self.top_logprobs
            ));
        }
        if let Some(i) = self.stop_strings.iter().position(String::is_empty) {
            return bad(format!("stop_strings[{i}] is empty"));
        }
        Ok(())
    }
}
