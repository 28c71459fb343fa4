use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use kiln_model::{Model, TokenBatch, parse_device};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Full-sequence forward pass (training/scoring path) throughput and peak memory.
    Forward(ForwardArgs),
    /// Rollout engine throughput: new tokens/s, prefill tokens/s, peak RSS.
    Rollout(super::rollout_bench::RolloutBenchArgs),
    /// One GRPO update, timed: forward+backward, gradient surgery, optimizer; tokens/s, peak RSS.
    Train(super::train_bench::TrainBenchArgs),
    /// Scoring without autodiff (old / reference log-probs of the response tokens); tokens/s,
    /// peak RSS.
    Score(super::score_bench::ScoreBenchArgs),
}

#[derive(Args, Debug)]
pub struct ForwardArgs {
    /// Model: a Hugging Face directory, a .gguf file, `smollm2`, or a HF repo id.
    #[arg(long, default_value = "smollm2")]
    pub model: String,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    /// Timed iterations (after one warm-up).
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    /// Print one JSON object: tokens_per_s, step_s, peak_rss_mb.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = "flex")]
    pub device: String,
}

pub fn run(cmd: &BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Forward(args) => forward(args),
        BenchCommand::Rollout(args) => super::rollout_bench::run(args),
        BenchCommand::Train(args) => super::train_bench::run(args),
        BenchCommand::Score(args) => super::score_bench::run(args),
    }
}

fn forward(args: &ForwardArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.seq == 0 || args.iters == 0 {
        bail!("--batch, --seq and --iters must be positive");
    }
    let device = parse_device(&args.device)?;
    let model =
        Model::load(&args.model, &device).with_context(|| format!("loading {}", args.model))?;
    let vocab = model.config.vocab_size as u64;
    // Deterministic pseudo-random tokens (the same ones the reference script uses).
    let rows: Vec<Vec<u32>> = (0..args.batch)
        .map(|b| {
            (0..args.seq)
                .map(|t| ((b as u64 * 7919 + t as u64 * 104729 + 17) % vocab) as u32)
                .collect()
        })
        .collect();
    let batch = TokenBatch::new(&rows)?;
    let run_once = || {
        let logits = model.forward(&batch);
        // Reading one value forces the computation to finish.
        let _ = logits.narrow(1, 0, 1).into_data();
    };
    run_once();
    let start = Instant::now();
    for _ in 0..args.iters {
        run_once();
    }
    let step_s = start.elapsed().as_secs_f64() / args.iters as f64;
    let tokens_per_s = (args.batch * args.seq) as f64 / step_s;
    let peak = super::peak_rss_mb();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"tokens_per_s": tokens_per_s, "step_s": step_s, "peak_rss_mb": peak,
                "batch": args.batch, "seq": args.seq, "model": args.model})
        );
    } else {
        println!(
            "forward {}x{}: {tokens_per_s:.1} tokens/s, {step_s:.3} s/step, peak RSS {:.0} MiB",
            args.batch,
            args.seq,
            peak.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
