//! `kiln bench rollout`: throughput of the rollout engine (kiln-rollout) on synthetic prompts.
//! The peer script is benchmarks/reference/generate_bench.py (same prompts, same definitions).

use anyhow::{Context, bail};
use clap::Args;
use kiln_model::{Model, parse_device};
use kiln_rollout::Engine;
use kiln_rollout::bench::{BenchConfig, bench_rollout};

#[derive(Args, Debug)]
pub struct RolloutBenchArgs {
    /// Model: a Hugging Face directory, a .gguf file, `smollm2`, or a HF repo id.
    #[arg(long, default_value = "smollm2")]
    pub model: String,
    /// Distinct prompts.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Samples per prompt (each prompt is prefilled once and shared by its samples).
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    #[arg(long, default_value_t = 64)]
    pub prompt_len: usize,
    #[arg(long, default_value_t = 128)]
    pub new_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Engine bound on rows x KV slots per decode batch (and prompt tokens per prefill).
    #[arg(long, default_value_t = kiln_rollout::DEFAULT_MAX_BATCH_TOKENS)]
    pub max_batch_tokens: usize,
    /// Print one JSON object: new_tokens_per_s, prefill_tokens_per_s, peak_rss_mb, ...
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = "flex")]
    pub device: String,
}

pub fn run(args: &RolloutBenchArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.n == 0 || args.prompt_len == 0 || args.new_tokens == 0 {
        bail!("--batch, --n, --prompt-len and --new-tokens must be positive");
    }
    let device = parse_device(&args.device)?;
    let model =
        Model::load(&args.model, &device).with_context(|| format!("loading {}", args.model))?;
    // Building the engine packs the weights for the decode kernel: timed apart, since a
    // training step pays it once per rollout phase.
    let t = std::time::Instant::now();
    let engine = Engine::from_model(&model).with_max_batch_tokens(args.max_batch_tokens);
    let engine_s = t.elapsed().as_secs_f64();
    let config = BenchConfig {
        batch: args.batch,
        n: args.n,
        prompt_len: args.prompt_len,
        new_tokens: args.new_tokens,
        temperature: args.temperature,
        seed: args.seed,
    };
    let report = bench_rollout(&engine, model.config.vocab_size, &config)?;
    let peak = super::peak_rss_mb();
    if args.json {
        let mut obj = serde_json::to_value(&report)?;
        obj["peak_rss_mb"] = serde_json::json!(peak);
        obj["engine_s"] = serde_json::json!(engine_s);
        obj["model"] = serde_json::json!(args.model);
        obj["batch"] = serde_json::json!(args.batch);
        obj["n"] = serde_json::json!(args.n);
        println!("{obj}");
    } else {
        println!(
            "rollout {} prompts x {} samples, prompt {} + {} new tokens: {:.1} new tokens/s, \
             prefill {:.1} tokens/s ({} prompt tokens), {:.2} s (engine built in {:.2} s), \
             peak RSS {:.0} MiB",
            args.batch,
            args.n,
            args.prompt_len,
            args.new_tokens,
            report.new_tokens_per_s,
            report.prefill_tokens_per_s,
            report.prefill_tokens,
            report.total_s,
            engine_s,
            peak.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
