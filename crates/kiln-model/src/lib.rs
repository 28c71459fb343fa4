//! kiln-model: the policy network of kiln.
//!
//! A decoder-only transformer covering Llama (2, 3.x, SmolLM2), Qwen2/2.5 and Qwen3 on burn,
//! loaded from Hugging Face directories (safetensors, sharded or not) and GGUF files, with the
//! checkpoint's tokenizer and chat template. [`Model::load`] is the entry point:
//!
//! ```no_run
//! use kiln_model::{Model, parse_device};
//! let device = parse_device("flex").unwrap();
//! let model = Model::load("smollm2", &device).unwrap();
//! let ids = model.tokenizer.encode("What is 17 + 25?", false).unwrap();
//! ```

pub mod batch;
pub mod cache;
pub mod chat_template;
pub mod classifier;
pub mod config;
mod cpu_attention;
mod cpu_causal_attention;
pub mod cpu_math;
mod cpu_matmul;
mod cpu_rms_norm;
mod cpu_rope;
mod cpu_swiglu;
mod cpu_tensor;
pub mod device;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod hub;
pub mod init;
pub mod loader;
pub mod model;
pub mod rope;
pub mod tokenizer;
pub mod weights;

use std::path::Path;

use burn::prelude::*;
use serde_json::Value;

pub use batch::{Padding, TokenBatch};
pub use cache::KvCache;
pub use classifier::{HeadInit, SequenceClassifier};
pub use config::{Architecture, ModelConfig};
pub use device::parse_device;
pub use error::{ModelError, Result};
pub use hub::ModelLocation;
pub use init::{random_network, random_network_with_std};
pub use model::{CausalLm, PackedWeights};
pub use rope::Rope;
pub use tokenizer::{ChatMessage, Tokenizer};

use error::io_err;
use weights::{GgufSource, SafetensorsSource};

/// A loaded checkpoint: configuration, network, rotary tables and tokenizer.
#[derive(Debug)]
pub struct Model {
    pub config: ModelConfig,
    /// config.json as read (or rebuilt from GGUF metadata); written back on export.
    pub config_json: Value,
    pub net: CausalLm,
    pub rope: Rope,
    pub tokenizer: Tokenizer,
    pub location: ModelLocation,
}

/// `dir/config.json`, as read and as parsed.
pub(crate) fn read_hf_config(dir: &Path) -> Result<(Value, ModelConfig)> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
    let config_json: Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: cfg_path.clone(),
        message: format!("not valid JSON: {e}"),
    })?;
    let config = ModelConfig::from_json(&config_json, &cfg_path)?;
    Ok((config_json, config))
}

impl Model {
    /// Loads a model argument (path, `smollm2`, or HF repo id: see [`hub::resolve`]) onto `device`.
    pub fn load(model: &str, device: &Device) -> Result<Self> {
        Self::load_from(hub::resolve(model)?, device)
    }

    pub fn load_from(location: ModelLocation, device: &Device) -> Result<Self> {
        match &location {
            ModelLocation::HfDir(dir) => {
                let (config_json, config) = read_hf_config(dir)?;
                let tokenizer = Tokenizer::from_hf_dir(dir, &config.eos_token_ids)?;
                let source = SafetensorsSource::open_dir(dir)?;
                let net = loader::build_model(&config, &source, device)?;
                Ok(Model {
                    rope: Rope::new(&config),
                    config,
                    config_json,
                    net,
                    tokenizer,
                    location,
                })
            }
            ModelLocation::Gguf(path) => {
                let source = GgufSource::open(path)?;
                let config_json = gguf::hf_config(&source.file)?;
                let config = ModelConfig::from_json(&config_json, path)?;
                let inner = gguf::load_tokenizer(&source.file)?;
                let tok_cfg = gguf::tokenizer_config(&source.file)?;
                let tokenizer = Tokenizer::from_parts(
                    inner,
                    tok_cfg,
                    &config.eos_token_ids,
                    &path.display().to_string(),
                )?;
                let net = loader::build_model(&config, &source, device)?;
                Ok(Model {
                    rope: Rope::new(&config),
                    config,
                    config_json,
                    net,
                    tokenizer,
                    location,
                })
            }
        }
    }

    /// Logits `[batch, seq, vocab]` of a token batch.
    pub fn forward(&self, tokens: &TokenBatch) -> Tensor<3> {
        self.net.forward(&self.rope, tokens)
    }

    /// Writes a Hugging Face directory (config.json, model.safetensors in f32, tokenizer.json,
    /// tokenizer_config.json with the chat template, generation_config.json) that transformers
    /// opens unchanged.
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut cfg = self.config_json.clone();
        cfg["torch_dtype"] = Value::String("float32".into());
        cfg["dtype"] = Value::String("float32".into());
        let cfg_path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&cfg).map_err(|e| ModelError::Config {
            path: cfg_path.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&cfg_path, text).map_err(io_err(&cfg_path))?;
        let generation = serde_json::json!({
            "bos_token_id": self.config.bos_token_id,
            "eos_token_id": self.tokenizer.eos_ids,
            "pad_token_id": self.tokenizer.pad_id,
        });
        let gen_path = dir.join("generation_config.json");
        std::fs::write(&gen_path, generation.to_string()).map_err(io_err(&gen_path))?;
        self.tokenizer.save_hf(dir)?;
        loader::write_safetensors(
            &dir.join("model.safetensors"),
            &loader::hf_tensors(&self.net),
        )
    }
}
