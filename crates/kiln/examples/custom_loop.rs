//! A small GRPO loop written from kiln's pieces instead of the `Trainer`: the tiny character
//! model learns to answer "a + b =" prompts. Run it with
//! `cargo run --release -p kiln --example custom_loop` (seconds on a CPU).
//!
//! Each piece is a library call a researcher can replace: the data generator (kiln-data), the
//! engine (kiln-rollout), the verifier (kiln-reward), the advantages, loss and optimizer
//! (kiln-optim), and the sequence batching of the training path (kiln-train's `policy`).

use std::path::Path;

use burn::optim::GradientsParams;
use burn::prelude::*;
use kiln::data::{ArithmeticConfig, ArithmeticGenerator, MathTemplate};
use kiln::model::Model;
use kiln::optim::advantages::grpo;
use kiln::optim::hook::{NamedParams, accumulate};
use kiln::optim::loss::{AggMode, GlobalCounts, LossConfig, TokenBatch, agg_weights};
use kiln::optim::{AdamWSettings, ChunkOptions, LrSchedule, Optimizer};
use kiln::reward::{Gsm8kVerifier, Reference, score_batch};
use kiln::rollout::{Engine, SamplingParams};
use kiln::train::eval::encode_prompt;
use kiln::train::policy::{SeqBatch, actor_grads};

fn main() -> anyhow::Result<()> {
    let device = Device::flex().autodiff();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/models/tiny-arith");
    let mut model = Model::random(&dir, &device, 1)?;
    let data = ArithmeticGenerator::new(
        ArithmeticConfig {
            template: MathTemplate::Terse,
            ..ArithmeticConfig::default()
        },
        7,
    )?;
    let verifier = Gsm8kVerifier::default();
    let (prompts_per_step, n) = (8usize, 4usize);
    let params = NamedParams::from_module(&model.net);
    let mut optimizer = Optimizer::new(1e-3, AdamWSettings::default(), LrSchedule::Constant);
    let loss = LossConfig::default();
    let opts = ChunkOptions::default();
    for step in 0..3u64 {
        // 1. Prompts and rollouts (the engine drops autodiff itself).
        let examples: Vec<_> = (0..prompts_per_step as u64)
            .map(|i| data.example(step * 100 + i))
            .collect();
        let prompts = examples
            .iter()
            .map(|e| encode_prompt(&model.tokenizer, &e.prompt))
            .collect::<Result<Vec<_>, _>>()?;
        let engine = Engine::new(&model.net, &model.rope, 64).with_tokenizer(&model.tokenizer);
        let sampling = SamplingParams {
            n,
            max_new_tokens: 8,
            seed: step,
            ..Default::default()
        };
        let groups = engine.generate(&prompts, &sampling)?;
        // 2. Rewards from the verifier, 3. GRPO advantages per response.
        let mut items = Vec::new();
        for (g, e) in groups.iter().zip(&examples) {
            for r in &g.rollouts {
                let answer = e.reference.answer().unwrap_or_default().to_string();
                items.push((r.text.clone().unwrap_or_default(), Reference::Text(answer)));
            }
        }
        let rewards: Vec<f32> = score_batch(&verifier, &items)
            .iter()
            .map(|v| v.score as f32)
            .collect();
        let adv = grpo(&rewards, n, true)?;
        // 4. One PPO/GRPO update over the whole batch (one micro-batch here).
        let rollouts: Vec<_> = groups.iter().flat_map(|g| g.rollouts.iter()).collect();
        let rows: Vec<(&[u32], &[u32])> = rollouts
            .iter()
            .map(|r| (r.prompt_ids.as_slice(), r.response_ids.as_slice()))
            .collect();
        let batch = SeqBatch::new(&rows, model.tokenizer.pad_id.unwrap_or(0))?;
        let mut mask = Vec::new();
        let mut token_adv = Vec::new();
        let mut old_logp = Vec::new();
        for (r, a) in rollouts.iter().zip(&adv) {
            mask.extend(std::iter::repeat_n(1.0f32, r.response_ids.len()));
            token_adv.extend(std::iter::repeat_n(*a, r.response_ids.len()));
            old_logp.extend(&r.logprobs); // the engine's behaviour log-probs
        }
        let counts = GlobalCounts {
            num_tokens: mask.len() as f64,
            num_seqs: rollouts.len(),
            max_len: 8,
        };
        let w = agg_weights(&mask, mask.len(), AggMode::TokenMean, &counts)?;
        let f = |v: &[f32]| Tensor::<1>::from_floats(v, &device);
        let tokens = TokenBatch {
            targets: Tensor::<1, Int>::from_ints(batch.targets.as_slice(), &device),
            old_logp: f(&old_logp),
            advantages: f(&token_adv),
            ref_logp: None,
            pg_weight: f(&w),
            token_weight: f(&w),
            pg_token_mask: None,
            kl_cov_mask: None,
        };
        let g = actor_grads(&model.net, &model.rope, &batch, &tokens, &loss, &opts)?;
        let mut grads = GradientsParams::new();
        accumulate(&mut grads, g.grads, &params)?;
        let (net, stats) = optimizer.step(model.net.clone(), grads, &params)?;
        model.net = net;
        let mean_reward = rewards.iter().sum::<f32>() / rewards.len() as f32;
        println!(
            "step {step}: mean reward {mean_reward:.3}, loss {:.4}, grad norm {:.3}",
            g.metrics.loss, stats.grad_norm
        );
    }
    Ok(())
}
