//! kiln-optim: the update step of kiln.
//!
//! - [`advantages`]: GRPO, Dr.GRPO, RLOO, REINFORCE++-baseline, GAE.
//! - [`loss`]: PPO clip (asymmetric eps, dual clip), aggregation over global counts, KL
//!   estimators and controllers, KL-Cov / Forking Tokens baselines, clipped value loss.
//! - [`entropy`]: global entropy, TRE-K, TRE-P.
//! - [`pass`]: one chunked pass over the logits for log-probs, entropy terms, loss and gradient.
//! - [`hook`]: the gradient-hook trait (MGS / PCGrad plug in), named parameters.
//! - [`optim`]: AdamW (PyTorch defaults), global-norm clipping, schedules, state save / load.
//!
//! Specs: `docs/ALGORITHMS.md` sections 1 and 2. Golden tests against PyTorch:
//! `benchmarks/reference/optim_reference.py` -> `tests/fixtures/`.
//!
//! # One actor update (sketch)
//!
//! ```ignore
//! // Once per mini-batch: global counts, then per micro-batch a TokenBatch with global weights.
//! let counts = GlobalCounts::from_mask(&minibatch_mask, seq_len, recipe_max_len);
//! let batch = TokenBatch::from_host(&dev, &targets, &old_logp, &adv, Some(&ref_logp), &mask,
//!                                   seq_len, cfg.agg, &counts)?;
//! // Trunk forward under autodiff -> hidden [N, d]; lm_head weight [d, V] (a Param).
//! let hidden = model.trunk(tokens);                       // tracked
//! let head = model.lm_head.weight.val();                 // tracked
//! let g = chunked_policy_loss(&hidden, &head, &batch, &cfg, &ChunkOptions::default())?;
//! let grads = GradientsParams::from_grads(g.surrogate(hidden, Some(head)).backward(), &model);
//! hook::accumulate(&mut domain_buffer, grads, &params)?;  // per domain if a hook needs it
//! // After all micro-batches: hook.combine(..) -> optimizer.step(model, grads, &params)
//! ```
//!
//! Conventions that differ from (or pin down) the seeds' code are documented on the items:
//! the log-ratio is clamped to +-20 before `exp` (verl); whitening uses the unbiased variance
//! and eps 1e-8 (verl's `masked_whiten`); schedules follow Hugging Face (warm-up starts at lr 0);
//! Forking Tokens keeps `ceil(0.2 n)` tokens by entropy and keeps the full normalisation;
//! KL-Cov adds its penalty to the configured PPO surrogate.

pub mod advantages;
pub mod entropy;
pub mod error;
mod fused;
pub mod hook;
pub mod loss;
pub mod mgs;
pub mod optim;
pub mod pass;
pub mod tree;

pub use advantages::{AdvantageEstimator, GaeOutput, gae, grpo, reinforce_pp_baseline, rloo};
pub use entropy::{EntropyReg, Selection, TRE_P_MAX_REGION, TrustRegion, entropy_term};
pub use error::{OptimError, Result};
pub use hook::{
    DomainGrads, GradientHook, HookOutput, HookTelemetry, IdentityHook, NamedParam, NamedParams,
    PairTelemetry,
};
pub use loss::{
    AggMode, GlobalCounts, KlController, KlEstimator, KlLoss, LossConfig, LossMetrics, PgBaseline,
    PpoClip, TokenBatch,
};
pub use mgs::{Granularity, MgsHook};
pub use optim::{AdamWSettings, LrSchedule, Optimizer, StepStats, clip_grad_norm};
pub use pass::{
    ChunkOptions, LmHeadGrads, LogitsGrad, PolicyLossOutput, ScoreOutput, chunked_policy_loss,
    chunked_score, loss_and_grad_from_logits, policy_loss, score_logits,
};
pub use tree::{
    Calibration, ResponseSegments, RoseConfig, RoseOutput, TreeLink, informative_groups,
    rose_group, rose_token_advantages,
};
