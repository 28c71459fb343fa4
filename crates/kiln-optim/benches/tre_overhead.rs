//! Time of the actor loss pass with TRE-K, TRE-P and the global entropy relative to the plain
//! PPO loss, on SmolLM2's vocabulary (49152), hidden 576.
//!
//! Two measurements per regulariser:
//! - `pass`: the whole chunked lm_head pass (logits matmul, log-softmax, loss, gradient, the two
//!   gradient matmuls), i.e. what a training step pays;
//! - `loss-only`: `loss_and_grad_from_logits` on precomputed `[chunk, V]` logits (no matmuls),
//!   the part the regulariser actually changes.
//!
//! `KILN_BENCH_TOKENS` (default 1024) and `KILN_BENCH_REPS` (default 3) override the sizes.
//! Run: `cargo bench --release -p kiln-optim --bench tre_overhead`.

mod common;

use std::time::Instant;

use burn::prelude::*;
use common::{D, V, ppo_config, problem};
use kiln_optim::{
    ChunkOptions, EntropyReg, LossConfig, Selection, chunked_policy_loss, loss_and_grad_from_logits,
};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let dev = Device::flex();
    let n = env("KILN_BENCH_TOKENS", 1024);
    let reps = env("KILN_BENCH_REPS", 3);
    let chunk = env("KILN_BENCH_CHUNK", 256);
    let base = ppo_config();
    let regs: Vec<(&str, EntropyReg)> = vec![
        ("ppo", EntropyReg::None),
        ("global", EntropyReg::Global { coef: 0.001 }),
        ("tre-k2", EntropyReg::tre_k(2)),
        ("tre-p0.99", EntropyReg::tre_p(0.99)),
        ("tre-p0.9", EntropyReg::tre_p(0.9)),
    ];
    println!(
        "kiln-optim TRE overhead: {n} tokens, d = {D}, V = {V}, chunk {chunk}, best of {reps}"
    );
    for w_scale in [0.12f32, 0.02] {
        let p = problem(&dev, n, w_scale, &base);
        // Logit spread report.
        let z = p
            .hidden
            .clone()
            .slice_dim(0, 0..chunk.min(n))
            .matmul(p.weight.clone());
        let std: f32 = z.clone().var(1).sqrt().mean().into_scalar();
        println!("\nlogit std per row ~ {std:.2} (lm_head init scale {w_scale})");
        println!(
            "{:<10} {:>12} {:>9} {:>14} {:>9} {:>10} {:>10}",
            "reg", "pass ms/tok", "ratio", "loss-only us/tok", "ratio", "est. ratio", "mean |S|"
        );
        // Round-robin over the regularisers so load drift on a shared machine hits all alike.
        let opts = ChunkOptions {
            chunk_size: chunk,
            temperature: 1.0,
            selection: Selection::Auto,
        };
        let b = p.batch.slice(0..chunk.min(n));
        let zdata = z.to_data();
        let mut best_pass = vec![f64::INFINITY; regs.len()];
        let mut best_loss = vec![f64::INFINITY; regs.len()];
        for _ in 0..reps {
            for (i, (_, reg)) in regs.iter().enumerate() {
                let cfg = LossConfig {
                    entropy: *reg,
                    ..base.clone()
                };
                let t = Instant::now();
                let g = chunked_policy_loss(&p.hidden, &p.weight, &p.batch, &cfg, &opts).unwrap();
                let _: f32 = g.grad_weight.clone().slice([0..1, 0..1]).into_scalar();
                best_pass[i] = best_pass[i].min(t.elapsed().as_secs_f64());
                for _ in 0..2 {
                    // A uniquely owned copy, as in the chunked pass (the CPU kernel works in place).
                    let z = Tensor::<2>::from_data(zdata.clone(), &dev);
                    let t = Instant::now();
                    let out = loss_and_grad_from_logits(z, &b, &cfg, Selection::Auto).unwrap();
                    let _: f32 = out.grad.slice([0..1, 0..1]).into_scalar();
                    best_loss[i] = best_loss[i].min(t.elapsed().as_secs_f64());
                }
            }
        }
        let mut base_pass = 0.0;
        let mut base_loss = 0.0;
        for (i, (name, reg)) in regs.iter().enumerate() {
            let (best_pass, best_loss) = (best_pass[i], best_loss[i]);
            let size = match reg {
                EntropyReg::TreP { .. } | EntropyReg::TreK { .. } => {
                    let r =
                        kiln_optim::entropy::select_trust_region(&z, None, reg, Selection::Auto)
                            .unwrap();
                    let s: f32 = r.size.mean().into_scalar();
                    format!("{s:.1}")
                }
                _ => "-".into(),
            };
            let per_tok_pass = best_pass / n as f64 * 1e3;
            let per_tok_loss = best_loss / chunk.min(n) as f64 * 1e6;
            if *name == "ppo" {
                base_pass = per_tok_pass;
                base_loss = per_tok_loss;
            }
            // The regulariser only changes the loss part: its extra cost relative to the PPO
            // pass is (loss-only delta) / (PPO pass), less noisy than the raw pass ratio.
            let est = 1.0 + (per_tok_loss - base_loss) * 1e-3 / base_pass;
            println!(
                "{:<10} {:>12.4} {:>9.3} {:>14.2} {:>9.3} {:>10.3} {:>10}",
                name,
                per_tok_pass,
                per_tok_pass / base_pass,
                per_tok_loss,
                per_tok_loss / base_loss,
                est,
                size
            );
        }
    }
}
