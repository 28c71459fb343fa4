//! Sequence classification, as transformers' `*ForSequenceClassification`: the decoder trunk
//! and a `score` head (hidden -> num_labels, no bias). A reward model is one with a single
//! label; its score of a sequence is the head applied to the final hidden state of the row's
//! last non-pad token. PPO's critic is the same network read at every position (a value per
//! token), so both use this type.

use std::path::Path;

use burn::nn::Linear;
use burn::prelude::*;
use serde_json::{Value, json};

use crate::batch::TokenBatch;
use crate::config::{Architecture, ModelConfig};
use crate::error::{ModelError, Result, io_err};
use crate::loader::{self, transpose};
use crate::model::{CausalLm, param};
use crate::rope::Rope;
use crate::weights::{HostTensor, SafetensorsSource, TensorSource};

/// How a new `score` head starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HeadInit {
    /// All zeros: every first score is 0 (kiln's critic).
    Zeros,
    /// Normal(0, std) from a seed, as transformers initialises a fresh head
    /// (std = `initializer_range`).
    Normal { std: f64, seed: u64 },
}

/// A trunk with a linear `score` head: a reward model, a classifier or a critic.
#[derive(Module, Debug)]
pub struct SequenceClassifier {
    /// The transformer; its `lm_head` is `None` and never used.
    pub model: CausalLm,
    /// `[hidden, num_labels]` (burn's layout: HF's `score.weight` transposed).
    pub score: Linear,
}

impl SequenceClassifier {
    /// A classifier on `trunk` (its LM head, if any, is dropped) with a new head.
    pub fn from_trunk(mut trunk: CausalLm, num_labels: usize, init: HeadInit) -> Self {
        let device = trunk.device();
        let hidden = trunk.norm.gamma.dims()[0];
        trunk.lm_head = None;
        let data = match init {
            HeadInit::Zeros => vec![0.0; hidden * num_labels],
            HeadInit::Normal { std, seed } => {
                crate::init::seeded_normal(hidden * num_labels, std, seed, "score.weight")
            }
        };
        Self {
            model: trunk,
            score: Linear {
                weight: param(data, [hidden, num_labels], &device),
                bias: None,
            },
        }
    }

    /// Loads a Hugging Face `*ForSequenceClassification` directory (config.json and
    /// safetensors with `score.weight`); returns its config and config.json too.
    pub fn load(dir: &Path, device: &Device) -> Result<(ModelConfig, Value, Self, Rope)> {
        let (config_json, cfg) = crate::read_hf_config(dir)?;
        let source = SafetensorsSource::open_dir(dir)?;
        let net = Self::from_source(&cfg, &source, device)?;
        let rope = Rope::new(&cfg);
        Ok((cfg, config_json, net, rope))
    }

    /// Builds the classifier from a checkpoint's tensors; the label count is read from the
    /// shape of `score.weight`.
    pub fn from_source(
        cfg: &ModelConfig,
        source: &dyn TensorSource,
        device: &Device,
    ) -> Result<Self> {
        let trunk = loader::build_trunk(cfg, source, device)?;
        let head = source
            .tensor("score.weight")?
            .ok_or_else(|| ModelError::MissingTensor {
                path: source.origin().to_path_buf(),
                tensor: "score.weight (a *ForSequenceClassification checkpoint's head)".into(),
            })?;
        let d = cfg.hidden_size;
        let labels = match head.shape[..] {
            [labels, h] if h == d && labels > 0 => labels,
            _ => {
                return Err(ModelError::ShapeMismatch {
                    path: source.origin().to_path_buf(),
                    tensor: "score.weight".into(),
                    expected: vec![1, d],
                    found: head.shape,
                });
            }
        };
        Ok(Self {
            model: trunk,
            score: Linear {
                weight: param(transpose(&head.data, labels, d), [d, labels], device),
                bias: None,
            },
        })
    }

    pub fn num_labels(&self) -> usize {
        self.score.weight.dims()[1]
    }

    pub fn device(&self) -> Device {
        self.model.device()
    }

    /// Final hidden states `[batch, seq, hidden]`.
    pub fn hidden(&self, rope: &Rope, tokens: &TokenBatch) -> Tensor<3> {
        self.model.forward_hidden(rope, tokens)
    }

    /// The head applied to hidden states `[n, hidden]`: `[n, num_labels]`.
    pub fn head(&self, hidden: Tensor<2>) -> Tensor<2> {
        self.score.forward(hidden)
    }

    /// Scores at every position, `[batch, seq, num_labels]` (a critic's values).
    pub fn token_scores(&self, rope: &Rope, tokens: &TokenBatch) -> Tensor<3> {
        self.score.forward(self.hidden(rope, tokens))
    }

    /// One score row per sequence, `[batch, num_labels]`: the head at each row's last non-pad
    /// token (see [`last_token_index`]).
    pub fn sequence_scores(
        &self,
        rope: &Rope,
        tokens: &TokenBatch,
        pad_id: Option<u32>,
    ) -> Tensor<2> {
        let hidden = self.hidden(rope, tokens);
        let [b, s, d] = hidden.dims();
        let rows: Vec<i64> = last_token_index(tokens, pad_id)
            .into_iter()
            .enumerate()
            .map(|(r, c)| (r * s + c) as i64)
            .collect();
        let idx = Tensor::<1, Int>::from_ints(rows.as_slice(), &hidden.device());
        self.head(hidden.reshape([b * s, d]).select(0, idx))
    }

    /// Every tensor under its Hugging Face name (the trunk's, then `score.weight`).
    pub fn hf_tensors(&self) -> Vec<(String, HostTensor)> {
        let mut out = loader::hf_tensors(&self.model);
        let w = self.score.weight.val();
        let [d, labels] = w.dims();
        let data = w
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("converted to f32 above");
        out.push((
            "score.weight".into(),
            HostTensor {
                shape: vec![labels, d],
                data: transpose(&data, d, labels),
            },
        ));
        out
    }

    /// Writes config.json (`base_config` turned into `<Family>ForSequenceClassification` with
    /// this head's label count) and model.safetensors (f32) to `dir`, which transformers'
    /// `AutoModelForSequenceClassification` opens. The tokenizer is the caller's to save.
    pub fn save_hf(&self, dir: &Path, base_config: &Value, cfg: &ModelConfig) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let family = match cfg.architecture {
            Architecture::Llama => "Llama",
            Architecture::Qwen2 => "Qwen2",
            Architecture::Qwen3 => "Qwen3",
        };
        let labels = self.num_labels();
        let mut config = base_config.clone();
        config["architectures"] = json!([format!("{family}ForSequenceClassification")]);
        config["num_labels"] = json!(labels);
        config["id2label"] = (0..labels)
            .map(|i| (i.to_string(), json!(format!("LABEL_{i}"))))
            .collect();
        config["label2id"] = (0..labels)
            .map(|i| (format!("LABEL_{i}"), json!(i)))
            .collect();
        config["torch_dtype"] = json!("float32");
        config["dtype"] = json!("float32");
        let path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&config).map_err(|e| ModelError::Config {
            path: path.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&path, text).map_err(io_err(&path))?;
        loader::write_safetensors(&dir.join("model.safetensors"), &self.hf_tensors())
    }
}

/// Where each row's score is read, as transformers does: the last position whose token is
/// real (mask 1) and is not `pad_id`. Right and left padding both work. A row made only of
/// pad tokens falls back to its last real position.
pub fn last_token_index(tokens: &TokenBatch, pad_id: Option<u32>) -> Vec<usize> {
    (0..tokens.batch)
        .map(|r| {
            let real = |c: usize| tokens.is_real(r, c);
            let not_pad = |c: usize| pad_id.is_none_or(|p| tokens.ids[r * tokens.seq + c] != p);
            (0..tokens.seq)
                .rev()
                .find(|&c| real(c) && not_pad(c))
                .or_else(|| (0..tokens.seq).rev().find(|&c| real(c)))
                .unwrap_or(tokens.seq - 1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Padding;

    #[test]
    fn the_score_is_read_at_the_last_non_pad_token() {
        let right = TokenBatch::padded(&[vec![5, 6, 7], vec![8]], 0, Padding::Right).unwrap();
        assert_eq!(last_token_index(&right, Some(0)), vec![2, 0]);
        let left = TokenBatch::padded(&[vec![5, 6, 7], vec![8]], 0, Padding::Left).unwrap();
        assert_eq!(last_token_index(&left, Some(0)), vec![2, 2]);
        // A real token equal to pad_id is skipped, as transformers does.
        let eos_is_pad = TokenBatch::new(&[vec![5, 6, 2]]).unwrap();
        assert_eq!(last_token_index(&eos_is_pad, Some(2)), vec![1]);
        assert_eq!(last_token_index(&eos_is_pad, None), vec![2]);
        let all_pad = TokenBatch::new(&[vec![0, 0]]).unwrap();
        assert_eq!(last_token_index(&all_pad, Some(0)), vec![1]);
    }
}
