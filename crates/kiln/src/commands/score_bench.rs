//! `kiln bench score`: the trainer's scoring pass without autodiff, the log-probs (and, with
//! `--entropy`, the entropies) of every response token of B rows under the policy. This is
//! what a step spends on old and reference log-probs before its update. The lm_head runs chunk
//! by chunk (`policy::score`), so `[tokens x vocab]` is never held whole. Same synthetic rows as
//! `kiln bench train`; the peer script is benchmarks/reference/score_bench.py.

use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use kiln_model::{Model, parse_device};
use kiln_optim::ChunkOptions;
use kiln_train::policy::{SeqBatch, score};

use super::train_bench::{median, synthetic_rows};

#[derive(Args, Debug)]
pub struct ScoreBenchArgs {
    /// Model: a Hugging Face directory, a .gguf file, `smollm2`, or a HF repo id.
    #[arg(long, default_value = "smollm2")]
    pub model: String,
    /// Rows (prompt + response) scored per pass.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per row: the prompt (--prompt-len) and the response (seq - prompt-len).
    #[arg(long, default_value_t = 320)]
    pub seq: usize,
    /// Prompt tokens per row (not scored).
    #[arg(long, default_value_t = 64)]
    pub prompt_len: usize,
    /// Rows per forward pass (train.micro_batch_size).
    #[arg(long, default_value_t = 8)]
    pub micro_batch: usize,
    /// Also compute each token's entropy (as for TRE's metrics).
    #[arg(long)]
    pub entropy: bool,
    /// Timed passes over the batch (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    /// Seed of the rows.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads (rayon's global pool); default: RAYON_NUM_THREADS, else every core.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object: tokens_per_s, step_s, peak_rss_mb and the settings.
    #[arg(long)]
    pub json: bool,
    /// Device: flex (CPU), wgpu or cuda:N (GPU backends are cargo features).
    #[arg(long, default_value = "flex")]
    pub device: String,
}

fn check(args: &ScoreBenchArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.iters == 0 || args.micro_batch == 0 || args.prompt_len == 0 {
        bail!("--batch, --iters, --micro-batch and --prompt-len must be positive");
    }
    if args.seq <= args.prompt_len {
        bail!(
            "--seq {} must exceed --prompt-len {}: each row is the prompt plus at least one response token",
            args.seq,
            args.prompt_len
        );
    }
    if args.threads == Some(0) {
        bail!("--threads must be positive");
    }
    Ok(())
}

pub fn run(args: &ScoreBenchArgs) -> anyhow::Result<()> {
    check(args)?;
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("setting the number of threads")?;
    }
    let device = parse_device(&args.device)?;
    let model =
        Model::load(&args.model, &device).with_context(|| format!("loading {}", args.model))?;
    let context = model.config.max_position_embeddings;
    if args.seq > context {
        bail!(
            "--seq {} exceeds the context of {} ({context} tokens)",
            args.seq,
            args.model
        );
    }
    let p = args.prompt_len;
    let (rows, _) = synthetic_rows(args.seed, args.batch, args.seq, model.config.vocab_size);
    let pad_id = model.tokenizer.pad_id.unwrap_or(0);
    let batches = rows
        .chunks(args.micro_batch)
        .map(|chunk| {
            let pairs: Vec<(&[u32], &[u32])> = chunk.iter().map(|r| (&r[..p], &r[p..])).collect();
            SeqBatch::new(&pairs, pad_id)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let opts = ChunkOptions::default();
    // One pass over the batch; the sum of the log-probs keeps the work observable.
    let pass = || -> anyhow::Result<f64> {
        let mut sum = 0.0;
        for batch in &batches {
            let (logp, _) = score(&model.net, &model.rope, batch, &opts, args.entropy)?;
            sum += logp.iter().map(|&x| x as f64).sum::<f64>();
        }
        Ok(sum)
    };
    pass()?; // warm-up
    let mut times = Vec::with_capacity(args.iters);
    let mut logp_sum = f64::NAN;
    for _ in 0..args.iters {
        let t0 = Instant::now();
        logp_sum = pass()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    let step_s = median(&times);
    let tokens_per_s = (args.batch * args.seq) as f64 / step_s;
    let peak = super::peak_rss_mb();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"tokens_per_s": tokens_per_s, "step_s": step_s,
                "peak_rss_mb": peak, "batch": args.batch, "seq": args.seq, "prompt_len": p,
                "micro_batch": args.micro_batch, "entropy": args.entropy, "iters": args.iters,
                "logp_sum": logp_sum, "model": args.model})
        );
    } else {
        println!(
            "score {}x{} (prompt {p} + response {}): {tokens_per_s:.1} tokens/s, {step_s:.3} s/pass, peak RSS {:.0} MiB",
            args.batch,
            args.seq,
            args.seq - p,
            peak.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
