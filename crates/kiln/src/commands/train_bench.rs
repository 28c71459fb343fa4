//! `kiln bench train`: the trainer's update, one optimizer step at a time, on synthetic rows.
//! A step is what `Trainer::update` does per optimizer step: per micro-batch the chunked
//! log-prob pass, the clipped PPO loss (token-mean) and backward (`policy::actor_grads`),
//! accumulated per domain; the domains combined (plain sum, MGS or PCGrad); then global-norm
//! clipping and AdamW. The peer script is benchmarks/reference/train_bench.py (same rows, same
//! loss, same optimizer settings).

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::optim::GradientsParams;
use burn::prelude::*;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kiln_model::{Model, parse_device};
use kiln_optim::hook::{DomainGrads, GradientHook, IdentityHook, NamedParams, accumulate};
use kiln_optim::loss::{AggMode, GlobalCounts, LossConfig, PpoClip, TokenBatch as LossBatch};
use kiln_optim::{AdamWSettings, ChunkOptions, Granularity, MgsHook, Optimizer};
use kiln_train::policy::{SeqBatch, actor_grads, score};

/// How the domains' gradients are combined (`algorithm.gradient_surgery` of a recipe).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Surgery {
    /// The plain sum (the identity hook).
    None,
    /// PCGrad over the whole parameter vector.
    Pcgrad,
    /// MGS, every parameter tensor a module.
    Mgs,
    /// MGS, the attention / mlp / norms of each layer a module.
    MgsBlock,
}

impl Surgery {
    fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pcgrad => "pcgrad",
            Self::Mgs => "mgs",
            Self::MgsBlock => "mgs-block",
        }
    }

    fn hook(self, seed: u64) -> Box<dyn GradientHook> {
        match self {
            Self::None => Box::new(IdentityHook),
            Self::Pcgrad => Box::new(MgsHook::pcgrad(seed)),
            Self::Mgs => Box::new(MgsHook::new(Granularity::Tensor, seed)),
            Self::MgsBlock => Box::new(MgsHook::new(Granularity::Block, seed)),
        }
    }
}

#[derive(Args, Debug)]
pub struct TrainBenchArgs {
    /// Model: a Hugging Face directory, a .gguf file, `smollm2`, or a HF repo id.
    #[arg(long, default_value = "smollm2")]
    pub model: String,
    /// Rows (responses) per optimizer step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per row: the prompt (--prompt-len) and the response (seq - prompt-len).
    #[arg(long, default_value_t = 320)]
    pub seq: usize,
    /// Prompt tokens per row (no loss on them).
    #[arg(long, default_value_t = 64)]
    pub prompt_len: usize,
    /// Rows per forward/backward (train.micro_batch_size); micro-batches never mix domains.
    #[arg(long, default_value_t = 8)]
    pub micro_batch: usize,
    /// Timed optimizer steps (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Untimed optimizer steps first.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Domains: the rows split into this many equal parts, each with its own gradient.
    #[arg(long, default_value_t = 1)]
    pub domains: usize,
    /// How the domains' gradients are combined before the optimizer step.
    #[arg(long, value_enum, default_value_t = Surgery::None)]
    pub surgery: Surgery,
    /// Learning rate (the recipe default).
    #[arg(long, default_value_t = 1e-6)]
    pub lr: f64,
    /// Seed of the rows, advantages and the surgery's random orders.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads (rayon's global pool); default: RAYON_NUM_THREADS, else every core.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object: tokens_per_s, step_s, peak_rss_mb, backward_s, combine_s, ...
    #[arg(long)]
    pub json: bool,
    /// Device: flex (CPU), wgpu or cuda:N (GPU backends are cargo features).
    #[arg(long, default_value = "flex")]
    pub device: String,
}

/// splitmix64, the generator of the rows and advantages (train_bench.py has the same).
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The i-th number of stream `stream` under `seed`.
fn draw(seed: u64, stream: u64, i: u64) -> u64 {
    splitmix(splitmix(seed ^ stream.wrapping_mul(0x100_0000_01B3)) ^ i)
}

/// Token rows (`seq` ids below `vocab` each) and one advantage in [-1, 1) per row.
pub(crate) fn synthetic_rows(
    seed: u64,
    batch: usize,
    seq: usize,
    vocab: usize,
) -> (Vec<Vec<u32>>, Vec<f32>) {
    let rows = (0..batch)
        .map(|b| {
            (0..seq)
                .map(|t| (draw(seed, 1, (b * seq + t) as u64) % vocab as u64) as u32)
                .collect()
        })
        .collect();
    let adv = (0..batch)
        .map(|b| ((draw(seed, 2, b as u64) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32)
        .collect();
    (rows, adv)
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn check(args: &TrainBenchArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.steps == 0 || args.micro_batch == 0 || args.domains == 0 {
        bail!("--batch, --steps, --micro-batch and --domains must be positive");
    }
    if args.prompt_len == 0 {
        bail!("--prompt-len must be positive (a response token is predicted from the prompt)");
    }
    if args.seq <= args.prompt_len {
        bail!(
            "--seq {} must exceed --prompt-len {}: each row is the prompt plus at least one response token",
            args.seq,
            args.prompt_len
        );
    }
    if args.domains > args.batch {
        bail!(
            "--domains {} exceeds --batch {}: every domain needs at least one row",
            args.domains,
            args.batch
        );
    }
    if !args.batch.is_multiple_of(args.domains) {
        bail!(
            "--batch {} is not a multiple of --domains {}: the domains are equal parts of the rows",
            args.batch,
            args.domains
        );
    }
    if args.threads == Some(0) {
        bail!("--threads must be positive");
    }
    Ok(())
}

/// One step's timings, seconds.
#[derive(Debug, Clone, Copy, Default)]
struct StepTimes {
    backward: f64,
    combine: f64,
    optimizer: f64,
    total: f64,
}

pub fn run(args: &TrainBenchArgs) -> anyhow::Result<()> {
    check(args)?;
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("setting the number of threads")?;
    }
    let device = parse_device(&args.device)?.autodiff();
    let mut model =
        Model::load(&args.model, &device).with_context(|| format!("loading {}", args.model))?;
    let context = model.config.max_position_embeddings;
    if args.seq > context {
        bail!(
            "--seq {} exceeds the context of {} ({context} tokens)",
            args.seq,
            args.model
        );
    }
    let (b, p, t) = (args.batch, args.prompt_len, args.seq - args.prompt_len);
    let (rows, row_adv) = synthetic_rows(args.seed, b, args.seq, model.config.vocab_size);
    let pad_id = model.tokenizer.pad_id.unwrap_or(0);
    // Domain d holds rows [d * per, (d + 1) * per); its micro-batches are domain-pure.
    let per = b / args.domains;
    let micro: Vec<(usize, Vec<usize>)> = (0..args.domains)
        .flat_map(|d| {
            let rows: Vec<usize> = (d * per..(d + 1) * per).collect();
            rows.chunks(args.micro_batch)
                .map(|c| (d, c.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect();
    let seq_batch = |idx: &[usize]| -> anyhow::Result<SeqBatch> {
        let pairs: Vec<(&[u32], &[u32])> = idx
            .iter()
            .map(|&i| (&rows[i][..p], &rows[i][p..]))
            .collect();
        Ok(SeqBatch::new(&pairs, pad_id)?)
    };
    // Old log-probs: the policy's own, scored once without autodiff (the first PPO epoch's).
    let opts = ChunkOptions::default();
    let policy_valid = model.net.clone().valid();
    let mut old_logp = vec![Vec::new(); b];
    for (_, idx) in &micro {
        let (logp, _) = score(&policy_valid, &model.rope, &seq_batch(idx)?, &opts, false)?;
        for (k, &i) in idx.iter().enumerate() {
            old_logp[i] = logp[k * t..(k + 1) * t].to_vec();
        }
    }
    drop(policy_valid);
    // The recipe defaults: GRPO's clip 0.2 (no dual clip), token-mean over the whole batch.
    let loss_cfg = LossConfig {
        ppo: PpoClip {
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip: None,
        },
        agg: AggMode::TokenMean,
        ..LossConfig::default()
    };
    let counts = GlobalCounts::from_mask(&vec![1.0f32; b * t], t, t);
    let weight = (1.0 / counts.num_tokens) as f32;
    let params = NamedParams::from_module(&model.net);
    let mut optimizer = Optimizer::new(args.lr, AdamWSettings::default(), Default::default());
    let mut hook =
        (args.domains > 1 || args.surgery != Surgery::None).then(|| args.surgery.hook(args.seed));

    let total = args.warmup + args.steps;
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} {pos}/{len} [{bar:30}] {elapsed_precise}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut times = Vec::with_capacity(args.steps);
    let (mut loss, mut grad_norm, mut conflict) = (f64::NAN, f64::NAN, None);
    for step in 0..total {
        bar.set_message(if step < args.warmup {
            "warm-up"
        } else {
            "step"
        });
        let t0 = Instant::now();
        let mut by_domain: Vec<GradientsParams> =
            (0..args.domains).map(|_| GradientsParams::new()).collect();
        let mut step_loss = 0.0;
        for (d, idx) in &micro {
            let batch = seq_batch(idx)?;
            let sel = |per_row: &dyn Fn(usize) -> Vec<f32>| -> Vec<f32> {
                idx.iter().flat_map(|&i| per_row(i)).collect()
            };
            let n = batch.num_tokens();
            let f = |v: &[f32]| Tensor::<1>::from_floats(v, &device);
            let loss_batch = LossBatch {
                targets: Tensor::<1, Int>::from_ints(batch.targets.as_slice(), &device),
                old_logp: f(&sel(&|i| old_logp[i].clone())),
                advantages: f(&sel(&|i| vec![row_adv[i]; t])),
                ref_logp: None,
                pg_weight: f(&vec![weight; n]),
                token_weight: f(&vec![weight; n]),
                pg_token_mask: None,
                kl_cov_mask: None,
            };
            let g = actor_grads(
                &model.net,
                &model.rope,
                &batch,
                &loss_batch,
                &loss_cfg,
                &opts,
            )?;
            step_loss += g.metrics.loss;
            accumulate(&mut by_domain[*d], g.grads, &params)?;
        }
        let t1 = Instant::now();
        let grads = match hook.as_mut() {
            None => by_domain.pop().unwrap_or_default(),
            Some(h) => {
                let domains: Vec<DomainGrads> = by_domain
                    .into_iter()
                    .enumerate()
                    .map(|(d, grads)| DomainGrads {
                        domain: format!("domain{d}"),
                        grads,
                    })
                    .collect();
                let out = h.combine(&domains, &params)?;
                conflict = out.telemetry.summary.get("conflict_frac").copied();
                out.grads
            }
        };
        let t2 = Instant::now();
        let (net, stats) = optimizer.step(model.net.clone(), grads, &params)?;
        model.net = net;
        let t3 = Instant::now();
        loss = step_loss;
        grad_norm = stats.grad_norm;
        if step >= args.warmup {
            times.push(StepTimes {
                backward: (t1 - t0).as_secs_f64(),
                combine: (t2 - t1).as_secs_f64(),
                optimizer: (t3 - t2).as_secs_f64(),
                total: (t3 - t0).as_secs_f64(),
            });
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    let med = |f: fn(&StepTimes) -> f64| median(&times.iter().map(f).collect::<Vec<_>>());
    let step_s = med(|s| s.total);
    let (backward_s, combine_s, optimizer_s) = (
        med(|s| s.backward),
        med(|s| s.combine),
        med(|s| s.optimizer),
    );
    let tokens_per_s = (b * args.seq) as f64 / step_s;
    let peak = super::peak_rss_mb();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"tokens_per_s": tokens_per_s, "step_s": step_s,
                "peak_rss_mb": peak, "backward_s": backward_s, "combine_s": combine_s,
                "optimizer_s": optimizer_s, "surgery": args.surgery.name(),
                "domains": args.domains, "batch": b, "seq": args.seq, "prompt_len": p,
                "micro_batch": args.micro_batch, "steps": args.steps, "loss": loss,
                "grad_norm": grad_norm, "conflict_frac": conflict, "model": args.model})
        );
    } else {
        let share = |x: f64| 100.0 * x / step_s;
        println!(
            "train {b}x{} (prompt {p} + response {t}), {} domain(s), surgery {}, median of {} steps",
            args.seq,
            args.domains,
            args.surgery.name(),
            args.steps
        );
        println!("| part | s/step | share |");
        println!("|---|---|---|");
        println!(
            "| forward+backward | {backward_s:.3} | {:.1}% |",
            share(backward_s)
        );
        println!("| combine | {combine_s:.3} | {:.1}% |", share(combine_s));
        println!(
            "| optimizer (clip + AdamW) | {optimizer_s:.3} | {:.1}% |",
            share(optimizer_s)
        );
        println!("| step | {step_s:.3} | |");
        println!(
            "{tokens_per_s:.1} tokens/s, peak RSS {:.0} MiB, loss {loss:.4}, grad norm {grad_norm:.3}",
            peak.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
