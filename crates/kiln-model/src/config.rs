//! The model configuration, read from a Hugging Face `config.json` value.
//!
//! Both layouts transformers writes are accepted: 4.x (`rope_theta` and `rope_scaling` at the top
//! level) and 5.x (`rope_parameters`). A GGUF checkpoint is first turned into the same JSON
//! (`gguf::hf_config`), so there is one parser.

use serde_json::Value;
use std::path::Path;

use crate::error::{ModelError, Result};

/// The decoder families kiln implements. They share one transformer; the differences are flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama 2 / 3.x, SmolLM2, Mistral-style decoders without sliding windows.
    Llama,
    /// Qwen2 / Qwen2.5: biases on q/k/v.
    Qwen2,
    /// Qwen3: per-head RMSNorm on q and k before RoPE, explicit head_dim.
    Qwen3,
}

/// How rotary frequencies are derived from the base frequency.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (transformers' `linear`).
    Linear {
        factor: f64,
    },
    /// Llama 3.x's piecewise frequency scaling (transformers' `llama3`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on the q, k and v projections (Qwen2, or Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama with `attention_bias` only).
    pub o_bias: bool,
    /// Biases on the MLP projections (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// Per-head RMSNorm on queries and keys (Qwen3).
    pub qk_norm: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
}

impl ModelConfig {
    /// Parses `config.json` from `path` (a file).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(crate::error::io_err(path))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            message: format!("not valid JSON: {e}"),
        })?;
        Self::from_json(&value, path)
    }

    /// Parses a config.json value; `origin` names the file in errors.
    pub fn from_json(v: &Value, origin: &Path) -> Result<Self> {
        let err = |message: String| ModelError::Config {
            path: origin.to_path_buf(),
            message,
        };
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                v.get("architectures")
                    .and_then(|a| a.get(0))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .ok_or_else(|| err("neither `model_type` nor `architectures` is set".into()))?;
        // `architectures[0]` names the head too (`LlamaForCausalLM`,
        // `Qwen2ForSequenceClassification`): the family is what comes before `For`.
        let family = model_type.to_ascii_lowercase();
        let family = family
            .strip_suffix("forcausallm")
            .or_else(|| family.strip_suffix("forsequenceclassification"))
            .unwrap_or(&family);
        let architecture = match family {
            "llama" | "mistral" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            "qwen3" => Architecture::Qwen3,
            _ => {
                return Err(ModelError::UnknownArchitecture {
                    path: origin.to_path_buf(),
                    arch: model_type,
                });
            }
        };
        if let Some(w) = v.get("sliding_window").and_then(Value::as_u64)
            && v.get("use_sliding_window").and_then(Value::as_bool) == Some(true)
        {
            return Err(err(format!(
                "sliding-window attention (window {w}) is not supported"
            )));
        }
        let usize_field = |key: &str| -> Result<usize> {
            v.get(key)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| err(format!("`{key}` is missing or not a non-negative integer")))
        };
        let hidden_size = usize_field("hidden_size")?;
        let num_attention_heads = usize_field("num_attention_heads")?;
        let num_key_value_heads = match v.get("num_key_value_heads") {
            Some(Value::Null) | None => num_attention_heads,
            Some(_) => usize_field("num_key_value_heads")?,
        };
        if num_attention_heads == 0 || num_key_value_heads == 0 {
            return Err(err("head counts must be positive".into()));
        }
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(err(format!(
                "num_attention_heads ({num_attention_heads}) is not a multiple of num_key_value_heads ({num_key_value_heads})"
            )));
        }
        let head_dim = match v.get("head_dim") {
            Some(Value::Null) | None => hidden_size / num_attention_heads,
            Some(_) => usize_field("head_dim")?,
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(err(format!(
                "head_dim {head_dim} must be even and positive"
            )));
        }
        let f64_field = |key: &str, default: f64| -> Result<f64> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_f64()
                    .ok_or_else(|| err(format!("`{key}` must be a number"))),
            }
        };
        let bool_field = |key: &str, default: bool| -> bool {
            v.get(key).and_then(Value::as_bool).unwrap_or(default)
        };

        // transformers 5 keeps RoPE settings in `rope_parameters`; 4.x at the top level.
        let (rope_theta, rope_params) = match v.get("rope_parameters").filter(|p| p.is_object()) {
            Some(p) => (
                p.get("rope_theta")
                    .and_then(Value::as_f64)
                    .map(Ok)
                    .unwrap_or_else(|| f64_field("rope_theta", 10000.0))?,
                Some(p),
            ),
            None => (
                f64_field("rope_theta", 10000.0)?,
                v.get("rope_scaling").filter(|p| p.is_object()),
            ),
        };
        let rope_scaling = parse_rope_scaling(rope_params, v).map_err(err)?;

        let ids = |key: &str| -> Vec<u32> {
            match v.get(key) {
                Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_u64)
                    .map(|x| x as u32)
                    .collect(),
                _ => vec![],
            }
        };
        let attention_bias = bool_field("attention_bias", false);
        let cfg = ModelConfig {
            architecture,
            vocab_size: usize_field("vocab_size")?,
            hidden_size,
            intermediate_size: usize_field("intermediate_size")?,
            num_hidden_layers: usize_field("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: f64_field("rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_scaling,
            max_position_embeddings: v
                .get("max_position_embeddings")
                .and_then(Value::as_u64)
                .unwrap_or(2048) as usize,
            tie_word_embeddings: bool_field("tie_word_embeddings", false),
            qkv_bias: architecture == Architecture::Qwen2 || attention_bias,
            o_bias: architecture == Architecture::Llama && attention_bias,
            mlp_bias: bool_field("mlp_bias", false),
            qk_norm: architecture == Architecture::Qwen3,
            bos_token_id: ids("bos_token_id").first().copied(),
            eos_token_ids: ids("eos_token_id"),
            pad_token_id: ids("pad_token_id").first().copied(),
        };
        if cfg.vocab_size == 0 || cfg.hidden_size == 0 || cfg.num_hidden_layers == 0 {
            return Err(err(
                "vocab_size, hidden_size and num_hidden_layers must be positive".into(),
            ));
        }
        // Weight shapes are products of these sizes: a corrupt config must not overflow them
        // (tests/fuzz_inputs: 2 heads x head_dim 2^63 wrapped to 0 rows, [0, d] weights
        // matched, and the rotary table then asked for 2^62 entries).
        if cfg.checked_num_parameters().is_none() {
            return Err(err(format!(
                "the sizes overflow: {} layers, hidden_size {}, {} heads of head_dim {} \
                 ({} key/value heads), intermediate_size {}, vocab_size {}",
                cfg.num_hidden_layers,
                cfg.hidden_size,
                cfg.num_attention_heads,
                cfg.head_dim,
                cfg.num_key_value_heads,
                cfg.intermediate_size,
                cfg.vocab_size
            )));
        }
        Ok(cfg)
    }

    /// Number of query heads per key/value head (grouped-query attention).
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Parameter count (tied embeddings counted once).
    pub fn num_parameters(&self) -> usize {
        // A parsed config never overflows (checked in `from_json`).
        self.checked_num_parameters().unwrap_or(usize::MAX)
    }

    /// The parameter count, `None` when a product of sizes overflows `usize`; every weight
    /// shape is a factor of it, so none overflows when it does not.
    fn checked_num_parameters(&self) -> Option<usize> {
        let (d, h, kv, hd, ff) = (
            self.hidden_size,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim,
            self.intermediate_size,
        );
        let attn = d
            .checked_mul(hd)?
            .checked_mul(h.checked_add(kv)?)?
            .checked_mul(2)?;
        let mlp = d.checked_mul(ff)?.checked_mul(3)?;
        let per_layer = attn.checked_add(mlp)?.checked_add(d.checked_mul(2)?)?;
        let embed = self.vocab_size.checked_mul(d)?;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed
            .checked_add(head)?
            .checked_add(d)?
            .checked_add(self.num_hidden_layers.checked_mul(per_layer)?)
    }
}

fn parse_rope_scaling(
    params: Option<&Value>,
    top: &Value,
) -> std::result::Result<RopeScaling, String> {
    let Some(p) = params else {
        return Ok(RopeScaling::None);
    };
    let kind = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |key: &str| -> std::result::Result<f64, String> {
        p.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("rope scaling `{kind}` needs a numeric `{key}`"))
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: p
                .get("original_max_position_embeddings")
                .or_else(|| top.get("original_max_position_embeddings"))
                .and_then(Value::as_f64)
                .ok_or("rope scaling `llama3` needs `original_max_position_embeddings`")?,
        }),
        other => Err(format!(
            "rope scaling type `{other}` is not supported (supported: default, linear, llama3)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2})
    }

    #[test]
    fn both_rope_layouts_parse_to_the_same_config() {
        let mut v4 = base();
        v4["rope_theta"] = json!(500000.0);
        v4["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
        let mut v5 = base();
        v5["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
        let a = ModelConfig::from_json(&v4, Path::new("a")).unwrap();
        let b = ModelConfig::from_json(&v5, Path::new("b")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.rope_theta, 500000.0);
        assert!(matches!(a.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
        assert_eq!(a.head_dim, 16);
    }

    #[test]
    fn unknown_architecture_and_bad_fields_are_named() {
        let mut v = base();
        v["model_type"] = json!("gpt_neox");
        let e = ModelConfig::from_json(&v, Path::new("cfg.json")).unwrap_err();
        assert!(e.to_string().contains("gpt_neox"), "{e}");
        assert!(e.to_string().contains("cfg.json"), "{e}");
        let mut v = base();
        v["hidden_size"] = json!("big");
        let e = ModelConfig::from_json(&v, Path::new("cfg.json")).unwrap_err();
        assert!(e.to_string().contains("hidden_size"), "{e}");
        let mut v = base();
        v["head_dim"] = json!(1u64 << 63);
        let e = ModelConfig::from_json(&v, Path::new("cfg.json")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cfg.json: invalid config: the sizes overflow: 2 layers, hidden_size 64, 4 heads of \
             head_dim 9223372036854775808 (2 key/value heads), intermediate_size 128, vocab_size 256"
        );
        let mut v = base();
        v["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
        let e = ModelConfig::from_json(&v, Path::new("cfg.json")).unwrap_err();
        assert!(e.to_string().contains("yarn"), "{e}");
    }
}
