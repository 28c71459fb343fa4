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
//! Specs: `docs/ALGORITHMS.md` sections 1 and 2.

pub mod advantages;
pub mod entropy;
pub mod error;
pub mod hook;
pub mod loss;
pub mod optim;
pub mod pass;

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
pub use optim::{AdamWSettings, LrSchedule, Optimizer, StepStats, clip_grad_norm};
pub use pass::{
    ChunkOptions, LmHeadGrads, LogitsGrad, PolicyLossOutput, ScoreOutput, chunked_policy_loss,
    chunked_score, loss_and_grad_from_logits, policy_loss, score_logits,
};
