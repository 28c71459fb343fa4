//! Recipes: the TOML files that describe a run (model, tasks, sampling, algorithm, schedule).
//!
//! [`load_recipe`] reads a recipe file, merges the bases it `extends`, applies `--set key=value`
//! overrides, deserialises it into [`Recipe`] (every unknown key or wrong type is an error that
//! names the dotted key and the file) and validates it ([`validate`]: ranges, batch geometry,
//! cross-section rules, files that must exist; all problems reported together).
//!
//! A run saves the resolved recipe ([`to_toml`]) as `recipe.toml` in its run directory; resuming
//! reads it back with [`from_toml_str`], which gives back the same [`Recipe`].
//!
//! The user documentation, with every key, is `docs/recipes.md`.

mod error;
mod load;
pub mod schema;
mod validate;

use std::path::PathBuf;

pub use error::RecipeError;
pub use load::{
    MAX_EXTENDS_DEPTH, from_toml_str, load_recipe, load_toml_as, resolve_table, to_toml,
};
pub use schema::*;
pub use validate::{problems, validate};

impl Recipe {
    /// Responses per RL step: `train.prompts_per_step * rollout.n`.
    pub fn batch_size(&self) -> usize {
        self.train.prompts_per_step.saturating_mul(self.rollout.n)
    }

    /// Responses per optimizer step: `train.mini_batch_size`, by default the whole batch
    /// ([`Recipe::batch_size`], one optimizer step per PPO epoch).
    pub fn mini_batch_size(&self) -> usize {
        self.train
            .mini_batch_size
            .unwrap_or_else(|| self.batch_size())
    }

    /// Optimizer steps per RL step: `ppo_epochs * batch / mini_batch`.
    pub fn optimizer_steps_per_step(&self) -> usize {
        self.train.ppo_epochs * (self.batch_size() / self.mini_batch_size().max(1))
    }

    /// The run directory: `logging.run_dir`, else `runs/<name>`.
    pub fn run_dir(&self) -> PathBuf {
        match &self.logging.run_dir {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from("runs").join(&self.name),
        }
    }

    /// Token budget of eval responses: `eval.max_new_tokens`, else `rollout.max_new_tokens`.
    pub fn eval_max_new_tokens(&self) -> usize {
        self.eval
            .max_new_tokens
            .unwrap_or(self.rollout.max_new_tokens)
    }
}

impl SftSection {
    /// Demonstrations per forward/backward: `micro_batch_size`, else the whole `batch_size`.
    pub fn micro_batch_size(&self) -> usize {
        self.micro_batch_size.unwrap_or(self.batch_size)
    }
}
