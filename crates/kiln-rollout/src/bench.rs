//! The rollout benchmark behind `kiln bench rollout`: new tokens/s and prefill tokens/s of the
//! engine on synthetic prompts (the same token formula as `benchmarks/reference/generate_bench.py`);
//! and [`bench_tree`], tree rollouts against independent samples of the same budget.

use std::time::Instant;

use serde::Serialize;

use crate::engine::Engine;
use crate::error::{Result, RolloutError};
use crate::params::SamplingParams;
use crate::tree::{
    TokenEmbeddings, TreeGroup, TreeParams, tree_rollouts, tree_rollouts_by_rounds_from,
};

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

/// Tree rollouts against independent samples of the same budget ([`bench_tree`]).
#[derive(Debug, Clone, Serialize)]
pub struct TreeBenchReport {
    pub prompts: usize,
    /// Responses per prompt, in both arms.
    pub n: usize,
    pub max_new_tokens: usize,
    pub tree: TreeParams,
    /// `n` independent samples per prompt: one `Engine::generate` call with `n = tree.n` (each
    /// prompt prefilled once, `top_logprobs` as given).
    pub flat: BenchArm,
    /// `tree_rollouts` (top-20 candidates recorded and scored with the semantic metric).
    pub tree_arm: BenchArm,
    /// `tree_rollouts_by_rounds_from` (the same trees, one batched call per round), when asked.
    pub by_rounds: Option<BenchArm>,
    /// Responses of the tree that branched (the rest sampled from the root).
    pub branches: usize,
    /// Mean branch position k of those.
    pub mean_branch_pos: f64,
}

/// Work and wall time of one arm of [`bench_tree`].
#[derive(Debug, Clone, Serialize)]
pub struct BenchArm {
    /// Wall time of the request.
    pub seconds: f64,
    /// Tokens actually sampled, i.e. decoded (`EngineStats::sampled_tokens`): copied prefixes
    /// excluded.
    pub sampled_tokens: usize,
    /// Response tokens in the result, copied prefixes included.
    pub response_tokens: usize,
    pub prefill_tokens: usize,
    pub decode_steps: usize,
    pub decode_rows: usize,
    /// Rows joining a running batch (`EngineStats::joins`).
    pub joins: usize,
}

impl TreeBenchReport {
    /// A few lines for humans: tokens decoded and wall time per arm, relative to the flat arm.
    pub fn summary(&self) -> String {
        let line = |name: &str, a: &BenchArm| {
            format!(
                "{name:<10} decoded {:>6} tokens ({:+.0}%), response tokens {:>6}, {:>5} steps, {:>6} row-steps, {:>8.3} s ({:+.0}%)",
                a.sampled_tokens,
                100.0 * (a.sampled_tokens as f64 / self.flat.sampled_tokens as f64 - 1.0),
                a.response_tokens,
                a.decode_steps,
                a.decode_rows,
                a.seconds,
                100.0 * (a.seconds / self.flat.seconds - 1.0),
            )
        };
        let mut s = format!(
            "{} prompts x n = {}, max_new_tokens {}, epsilon {}, {:?}: {} branches (mean k {:.1})\n",
            self.prompts,
            self.n,
            self.max_new_tokens,
            self.tree.epsilon,
            self.tree.metric,
            self.branches,
            self.mean_branch_pos
        );
        s += &line("flat", &self.flat);
        s += "\n";
        s += &line("tree", &self.tree_arm);
        if let Some(b) = &self.by_rounds {
            s += "\n";
            s += &line("by rounds", b);
        }
        s
    }
}

/// Times `tree.n` independent samples per prompt against a tree of `tree.n` responses per prompt
/// on the same prompts, sampling parameters and response budget (after one small warm-up of
/// each); with `by_rounds`, also the round-by-round schedule of the same trees.
pub fn bench_tree(
    engine: &Engine<'_>,
    embeddings: &TokenEmbeddings,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    tree: &TreeParams,
    by_rounds: bool,
) -> Result<TreeBenchReport> {
    let flat_params = SamplingParams {
        n: tree.n,
        ..params.clone()
    };
    let warm = SamplingParams {
        max_new_tokens: 2,
        ..flat_params.clone()
    };
    engine.generate(prompts, &warm)?;
    tree_rollouts(engine, prompts, &warm, tree, embeddings)?;

    let arm = |run: &dyn Fn() -> Result<usize>| -> Result<BenchArm> {
        engine.reset_stats();
        let t = Instant::now();
        let response_tokens = run()?;
        let seconds = t.elapsed().as_secs_f64();
        let s = engine.stats();
        Ok(BenchArm {
            seconds,
            sampled_tokens: s.sampled_tokens,
            response_tokens,
            prefill_tokens: s.prefill_tokens,
            decode_steps: s.decode_steps,
            decode_rows: s.decode_rows,
            joins: s.joins,
        })
    };
    let flat = arm(&|| {
        let groups = engine.generate(prompts, &flat_params)?;
        Ok(groups
            .iter()
            .flat_map(|g| &g.rollouts)
            .map(|r| r.response_ids.len())
            .sum())
    })?;
    let links = std::cell::RefCell::new(Vec::new());
    let tokens = |groups: &[TreeGroup]| -> usize {
        groups
            .iter()
            .flat_map(|g| &g.rollouts)
            .map(|r| r.response_ids.len())
            .sum()
    };
    let tree_arm = arm(&|| {
        let groups = tree_rollouts(engine, prompts, params, tree, embeddings)?;
        *links.borrow_mut() = groups.iter().flat_map(|g| g.links.clone()).collect();
        Ok(tokens(&groups))
    })?;
    let by_rounds = if by_rounds {
        Some(arm(&|| {
            let groups =
                tree_rollouts_by_rounds_from(engine, 0, prompts, params, tree, embeddings)?;
            Ok(tokens(&groups))
        })?)
    } else {
        None
    };
    let links = links.into_inner();
    let branch_pos: Vec<usize> = links
        .iter()
        .filter(|l| l.parent.is_some())
        .map(|l| l.branch_pos)
        .collect();
    Ok(TreeBenchReport {
        prompts: prompts.len(),
        n: tree.n,
        max_new_tokens: params.max_new_tokens,
        tree: tree.clone(),
        flat,
        tree_arm,
        by_rounds,
        branches: branch_pos.len(),
        mean_branch_pos: branch_pos.iter().sum::<usize>() as f64 / branch_pos.len().max(1) as f64,
    })
}
