//! kiln: RL post-training for LLM reasoning, in Rust on burn.
//!
//! This facade re-exports the crates a custom RL loop is written from:
//! [`model`] (the policy network, weights, tokenizer), [`rollout`] (generation),
//! [`reward`] (verifiers), [`data`] (datasets, prompts, mixing), [`optim`] (losses, advantages,
//! optimizer) and [`train`] (the trainer and recipes).

pub use kiln_data as data;
pub use kiln_model as model;
pub use kiln_optim as optim;
pub use kiln_reward as reward;
pub use kiln_rollout as rollout;
pub use kiln_train as train;
