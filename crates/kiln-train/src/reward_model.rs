//! Learned reward models: a Hugging Face `*ForSequenceClassification` checkpoint (kiln-model's
//! [`SequenceClassifier`]) with its tokenizer, and [`RewardModelScorer`], which scores
//! (prompt, response) pairs in batches for a task's reward.
//!
//! How a pair becomes the reward model's input ([`RewardModel::encode`]), the same in
//! `kiln rm-train` and in scoring:
//! - a chat prompt: its messages plus `{assistant: response}` rendered by the reward model's
//!   chat template without a generation prompt (a trailing assistant prefill is joined with
//!   the response), as TRL's RewardTrainer does for conversational data;
//! - a text prompt: `prompt + response` tokenized (with the tokenizer's BOS if it adds one),
//!   then EOS appended, as TRL does for plain-text data.
//!
//! The score is read at the last non-pad token, as transformers does.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use kiln_data::Prompt;
use kiln_model::{
    ChatMessage, HeadInit, Model, ModelConfig, Padding, Rope, SequenceClassifier, TokenBatch,
    Tokenizer,
};
use serde_json::Value;

use crate::error::{Result, TrainError};

/// A reward model: network, config, tokenizer.
#[derive(Debug)]
pub struct RewardModel {
    pub config: ModelConfig,
    /// config.json as read; written back (as `*ForSequenceClassification`) on save.
    pub config_json: Value,
    pub net: SequenceClassifier,
    pub rope: Rope,
    pub tokenizer: Tokenizer,
}

impl RewardModel {
    /// Loads a reward model directory (config.json, safetensors with `score.weight`,
    /// tokenizer.json), e.g. the `model/` that `kiln rm-train` writes.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        if !dir.join("config.json").is_file() {
            return Err(TrainError::recipe(
                "reward model",
                format!(
                    "{}: no reward model here (no config.json); train one with `kiln rm-train <recipe>`",
                    dir.display()
                ),
            ));
        }
        let (config, config_json, net, rope) = SequenceClassifier::load(dir, device)?;
        if net.num_labels() != 1 {
            return Err(TrainError::recipe(
                "reward model",
                format!(
                    "{}: a reward model has one output, this classifier has {}",
                    dir.display(),
                    net.num_labels()
                ),
            ));
        }
        let tokenizer = Tokenizer::from_hf_dir(dir, &config.eos_token_ids)?;
        Ok(Self {
            config,
            config_json,
            net,
            rope,
            tokenizer,
        })
    }

    /// A new reward model on a causal LM's trunk (its LM head dropped), with a fresh score
    /// head ~ Normal(0, `std`) from `seed` (transformers initialises the head the same way).
    pub fn from_causal_lm(model: Model, std: f64, seed: u64) -> Self {
        let net = SequenceClassifier::from_trunk(model.net, 1, HeadInit::Normal { std, seed });
        Self {
            config: model.config,
            config_json: model.config_json,
            net,
            rope: model.rope,
            tokenizer: model.tokenizer,
        }
    }

    /// Writes the checkpoint (config.json, model.safetensors, tokenizer files) to `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.net.save_hf(dir, &self.config_json, &self.config)?;
        self.tokenizer.save_hf(dir)?;
        Ok(())
    }

    /// The pad id the score is read around (config's, else the tokenizer's).
    pub fn pad_id(&self) -> Option<u32> {
        self.config.pad_token_id.or(self.tokenizer.pad_id)
    }

    /// The token ids of (prompt, response), as described in the module docs.
    pub fn encode(&self, prompt: &Prompt, response: &str) -> Result<Vec<u32>> {
        match prompt {
            Prompt::Chat(msgs) => {
                let mut msgs: Vec<ChatMessage> = msgs
                    .iter()
                    .map(|m| ChatMessage {
                        role: m.role.clone(),
                        content: m.content.clone(),
                    })
                    .collect();
                match msgs.last_mut() {
                    Some(last) if last.role == "assistant" => last.content.push_str(response),
                    _ => msgs.push(ChatMessage {
                        role: "assistant".into(),
                        content: response.into(),
                    }),
                }
                Ok(self.tokenizer.encode_chat(&msgs, false)?)
            }
            Prompt::Text(t) => {
                let mut ids = self.tokenizer.encode(&format!("{t}{response}"), true)?;
                if let Some(&eos) = self.tokenizer.eos_ids.first()
                    && ids.last() != Some(&eos)
                {
                    ids.push(eos);
                }
                Ok(ids)
            }
        }
    }

    /// Scores `[rows]` of already encoded sequences, in one forward pass (no autodiff unless
    /// the network is on an autodiff device).
    pub fn scores(&self, rows: &[Vec<u32>]) -> Result<Tensor<1>> {
        self.scores_with(&self.net, rows)
    }

    /// [`RewardModel::scores`] through `net` (this model's network, or a copy of it such as
    /// `net.valid()`).
    pub fn scores_with(&self, net: &SequenceClassifier, rows: &[Vec<u32>]) -> Result<Tensor<1>> {
        let max = self.config.max_position_embeddings;
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() > max) {
            return Err(TrainError::recipe(
                "reward_model",
                format!(
                    "sequence {i} has {} tokens, more than the reward model's context ({max})",
                    r.len()
                ),
            ));
        }
        let pad = self.pad_id().unwrap_or(0);
        let batch = TokenBatch::padded(rows, pad, Padding::Right)?;
        let scores = net.sequence_scores(&self.rope, &batch, self.pad_id());
        Ok(scores.reshape([rows.len()]))
    }
}

/// Scores (prompt, response) pairs with a reward model, `batch_size` sequences per forward.
#[derive(Debug)]
pub struct RewardModelScorer {
    pub model: RewardModel,
    pub batch_size: usize,
    /// Where the model came from (error messages).
    pub origin: PathBuf,
}

impl RewardModelScorer {
    /// Loads the reward model at `dir` onto `device` (without autodiff).
    pub fn load(dir: &Path, device: &Device, batch_size: usize) -> Result<Self> {
        Ok(Self {
            model: RewardModel::load(dir, device)?,
            batch_size: batch_size.max(1),
            origin: dir.to_path_buf(),
        })
    }

    /// One scalar reward per pair. A non-finite score is an error naming the pair, never a
    /// silent NaN reward.
    pub fn score(&self, pairs: &[(&Prompt, &str)]) -> Result<Vec<f32>> {
        let rows = pairs
            .iter()
            .map(|(p, r)| self.model.encode(p, r))
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(rows.len());
        // Similar lengths together waste less padding; the output keeps the input order.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| rows[i].len());
        let mut by_order = vec![0f32; rows.len()];
        for chunk in order.chunks(self.batch_size) {
            let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| rows[i].clone()).collect();
            let s = self
                .model
                .scores(&batch)?
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default();
            for (&i, v) in chunk.iter().zip(s) {
                by_order[i] = v;
            }
        }
        for (i, &v) in by_order.iter().enumerate() {
            if !v.is_finite() {
                return Err(TrainError::recipe(
                    "reward_model",
                    format!(
                        "{}: the score of response {i} is {v}: the reward model is broken",
                        self.origin.display()
                    ),
                ));
            }
            out.push(v);
        }
        Ok(out)
    }
}

/// Whitens scores over the batch: `(s - mean) / (std + 1e-6)` (population std). One score
/// becomes 0.
pub fn normalize_over_batch(scores: &mut [f32]) {
    let n = scores.len();
    if n == 0 {
        return;
    }
    let mean = scores.iter().map(|&s| s as f64).sum::<f64>() / n as f64;
    let var = scores
        .iter()
        .map(|&s| (s as f64 - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    let std = var.sqrt();
    for s in scores {
        *s = ((*s as f64 - mean) / (std + 1e-6)) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_over_batch;

    #[test]
    fn normalisation_whitens_by_hand() {
        let mut s = [1.0, 3.0];
        normalize_over_batch(&mut s);
        // mean 2, population std 1.
        assert!(
            (s[0] + 1.0).abs() < 1e-5 && (s[1] - 1.0).abs() < 1e-5,
            "{s:?}"
        );
        let mut one = [5.0];
        normalize_over_batch(&mut one);
        assert_eq!(one, [0.0]);
    }
}
