//! The rollout benchmark behind `kiln bench rollout`: new tokens/s and prefill tokens/s of the
//! engine on synthetic prompts (the same token formula as `benchmarks/reference/generate_bench.py`).

use std::time::Instant;

use serde::Serialize;

use crate::engine::Engine;
use crate::error::{Result, RolloutError};
use crate::params::SamplingParams;

#[derive(Debug, Clone, Serialize)]
pub struct BenchConfig {
    /// Distinct prompts.
    pub batch: usize,
    /// Samples per prompt (rows = batch x n; each prompt is prefilled once).
    pub n: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub config: BenchConfig,
    /// Response tokens (batch x n x new_tokens) over the wall time of the whole request, prefill
    /// included (as transformers' `generate` is timed).
    pub new_tokens_per_s: f64,
    /// Real prompt tokens over the wall time of a request for one new token (prefill plus one
    /// sampled token).
    pub prefill_tokens_per_s: f64,
    pub total_s: f64,
    pub prefill_s: f64,
    pub new_tokens: usize,
    pub prefill_tokens: usize,
    /// Forward calls and row-steps of the timed request.
    pub decode_steps: usize,
    pub decode_rows: usize,
}

/// The benchmark prompts: row b, position t holds `(b * 7919 + t * 104729 + 17) % vocab`.
pub fn bench_prompts(batch: usize, prompt_len: usize, vocab: usize) -> Vec<Vec<u32>> {
    (0..batch)
        .map(|b| {
            (0..prompt_len)
                .map(|t| ((b as u64 * 7919 + t as u64 * 104729 + 17) % vocab as u64) as u32)
                .collect()
        })
        .collect()
}

/// Runs the benchmark: one warm-up request, a timed prefill-only request, a timed full one.
/// Responses never stop early (eos ignored), so every row produces `new_tokens` tokens.
pub fn bench_rollout(
    engine: &Engine<'_>,
    vocab: usize,
    config: &BenchConfig,
) -> Result<BenchReport> {
    if config.batch == 0 || config.n == 0 || config.prompt_len == 0 || config.new_tokens == 0 {
        return Err(RolloutError::Config(
            "bench: batch, n, prompt_len and new_tokens must be positive".into(),
        ));
    }
    let prompts = bench_prompts(config.batch, config.prompt_len, vocab);
    let params = SamplingParams {
        n: config.n,
        temperature: config.temperature,
        max_new_tokens: config.new_tokens,
        ignore_eos: true,
        seed: config.seed,
        ..Default::default()
    };
    let one = SamplingParams {
        max_new_tokens: 1,
        ..params.clone()
    };
    // Warm-up (allocator, thread pool): a short request of the same shape.
    engine.generate(
        &prompts,
        &SamplingParams {
            max_new_tokens: 2,
            ..params.clone()
        },
    )?;
    let t = Instant::now();
    engine.generate(&prompts, &one)?;
    let prefill_s = t.elapsed().as_secs_f64();
    engine.reset_stats();
    let t = Instant::now();
    let groups = engine.generate(&prompts, &params)?;
    let total_s = t.elapsed().as_secs_f64();
    let stats = engine.stats();
    let new_tokens: usize = groups
        .iter()
        .flat_map(|g| &g.rollouts)
        .map(|r| r.response_ids.len())
        .sum();
    Ok(BenchReport {
        config: config.clone(),
        new_tokens_per_s: new_tokens as f64 / total_s,
        prefill_tokens_per_s: stats.prefill_tokens as f64 / prefill_s,
        total_s,
        prefill_s,
        new_tokens,
        prefill_tokens: stats.prefill_tokens,
        decode_steps: stats.decode_steps,
        decode_rows: stats.decode_rows,
    })
}
