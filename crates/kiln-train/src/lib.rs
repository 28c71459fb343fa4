//! kiln-train: the RL loop of kiln. A recipe in, a run directory out.
//!
//! - [`recipe`]: the TOML schema, `extends`, `--set` overrides and validation.
//! - [`tasks`]: a recipe's tasks made concrete (prompt sources, eval sets, verifiers, mixer).
//! - [`policy`]: the training path over (prompt, response) sequences: scoring, actor, critic
//!   and SFT gradients, chunked over the vocabulary.
//! - [`trainer`]: the RL step and loop ([`Trainer`]); [`sft`]: the supervised warm-up.
//! - [`eval`]: held-out accuracy; [`checkpoint`]: atomic, checksummed checkpoints;
//!   [`metrics`]: metrics.jsonl, TensorBoard event files and PNG plots.
//! - [`reward_model`]: learned reward models and their scorer; [`rm_train`]: Bradley-Terry
//!   reward-model training (`kiln rm-train`).
//! - [`harness`]: the benchmark harness of `kiln eval` (pass@1, pass@k, maj@k, MATH levels and
//!   subjects, resumable results files).
//! - [`fault`]: fault injection (kill, NaN) at named points, for the reliability tests.

pub mod checkpoint;
pub mod error;
pub mod eval;
pub mod fault;
pub mod harness;
pub mod metrics;
pub mod policy;
pub mod recipe;
pub mod reward_model;
pub mod rm_train;
pub mod sft;
pub mod tasks;
pub mod trainer;

pub use error::{Result, TrainError};
pub use recipe::{Recipe, load_recipe};
pub use trainer::{RunOptions, Trainer, load_policy, run_dir_of, sft_only};
