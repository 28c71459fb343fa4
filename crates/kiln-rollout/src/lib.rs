//! kiln-rollout: generation for RL. A batched sampling engine over a kiln-model policy (no
//! autodiff): prompts prefilled once and shared by their n samples, live rows decoded in
//! lock-step, finished rows leaving the batch, memory bounded by `max_batch_tokens`; per-token
//! behaviour log-probs, entropies and top-k candidates; forking from a response position (the
//! primitive of tree rollouts); ROSE tree rollouts ([`tree`]); deterministic per-row random
//! streams.
//!
//! ```no_run
//! use kiln_model::{Model, parse_device};
//! use kiln_rollout::{Engine, SamplingParams};
//! let model = Model::load("smollm2", &parse_device("flex").unwrap()).unwrap();
//! let engine = Engine::from_model(&model);
//! let prompt = model.tokenizer.encode("What is 17 + 25?", true).unwrap();
//! let params = SamplingParams { n: 8, temperature: 0.7, max_new_tokens: 64, seed: 1, ..Default::default() };
//! let groups = engine.generate(&[prompt], &params).unwrap();
//! println!("{}", groups[0].rollouts[0].text.as_deref().unwrap_or(""));
//! ```

pub mod bench;
pub mod engine;
pub mod error;
pub mod jsonl;
pub mod params;
pub mod sampler;
pub mod tree;

pub use engine::{
    DEFAULT_MAX_BATCH_TOKENS, Engine, EngineStats, FinishReason, ForkOrigin, ForkRequest, Rollout,
    RolloutGroup, TokenEvent,
};
pub use error::{Result, RolloutError};
pub use params::{MAX_TOP_LOGPROBS, SamplingParams};
pub use tree::{
    BranchMetric, PositionStats, TokenEmbeddings, TreeGroup, TreeLink, TreeParams, branch_scores,
    position_stats, tree_rollouts, tree_rollouts_by_rounds_from, tree_rollouts_from,
};
