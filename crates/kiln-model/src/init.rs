//! Models that start from random weights: Hugging Face-style initialisation of a [`CausalLm`],
//! and the character-level tokenizer of the tiny from-scratch recipes.
//!
//! The network is built by the same [`loader::build_model`] that loads checkpoints, fed by a
//! [`RandomSource`] that invents each tensor instead of reading it, so a random model has exactly
//! the parameter layout of a loaded one (and saves and reloads through the same code).
//!
//! Initialisation follows transformers' `_init_weights` for Llama/Qwen: linear and embedding
//! weights ~ Normal(0, `initializer_range`), biases 0, RMSNorm weights 1, and the embedding row
//! of `pad_token_id` zeroed (`nn.Embedding(padding_idx=...)`).
//!
//! Determinism: every tensor draws from its own ChaCha8 generator seeded by SHA-256 of
//! (seed, tensor name), so a tensor does not depend on the order tensors are built in; large
//! tensors are split into fixed-size chunks, each on its own ChaCha stream, so the values are the
//! same bit for bit whatever the thread count. Normal variates come from Box-Muller written here
//! (not `rand_distr`) so that a dependency upgrade can never change a seeded model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rayon::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Model;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result, io_err};
use crate::hub::ModelLocation;
use crate::loader;
use crate::model::CausalLm;
use crate::rope::Rope;
use crate::tokenizer::Tokenizer;
use crate::weights::{HostTensor, TensorSource};

/// transformers' default `initializer_range` when config.json does not set one.
pub const DEFAULT_INITIALIZER_RANGE: f64 = 0.02;

/// Values per independently seeded chunk of a tensor (the unit of parallel generation).
const CHUNK: usize = 1 << 16;

/// A randomly initialised network for `config`, with std [`DEFAULT_INITIALIZER_RANGE`].
pub fn random_network(config: &ModelConfig, device: &Device, seed: u64) -> Result<CausalLm> {
    random_network_with_std(config, DEFAULT_INITIALIZER_RANGE, device, seed)
}

/// A randomly initialised network whose weight matrices have standard deviation `std`
/// (config.json's `initializer_range`, see [`initializer_range`]).
pub fn random_network_with_std(
    config: &ModelConfig,
    std: f64,
    device: &Device,
    seed: u64,
) -> Result<CausalLm> {
    let source = RandomSource::new(config, std, seed, Path::new("<random init>"))?;
    loader::build_model(config, &source, device)
}

/// config.json's `initializer_range` (default 0.02); `origin` names the file in errors.
pub fn initializer_range(config_json: &Value, origin: &Path) -> Result<f64> {
    match config_json.get("initializer_range") {
        None | Some(Value::Null) => Ok(DEFAULT_INITIALIZER_RANGE),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| ModelError::Config {
                path: origin.to_path_buf(),
                message: format!("`initializer_range` must be a positive number, found {v}"),
            }),
    }
}

/// How one tensor starts out.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Init {
    /// Normal(0, std); `zero_row`: a row left at zero (the padding embedding).
    Normal {
        zero_row: Option<usize>,
    },
    Zeros,
    Ones,
}

/// A [`TensorSource`] that makes up every tensor of a model: what [`loader::build_model`]
/// asks for, under Hugging Face names and shapes, initialised as transformers does.
pub struct RandomSource {
    origin: PathBuf,
    std: f64,
    seed: u64,
    tensors: BTreeMap<String, (Vec<usize>, Init)>,
}

impl RandomSource {
    /// The tensors of `config`'s network; `origin` names the model in errors.
    pub fn new(config: &ModelConfig, std: f64, seed: u64, origin: &Path) -> Result<Self> {
        if !(std.is_finite() && std > 0.0) {
            return Err(ModelError::Config {
                path: origin.to_path_buf(),
                message: format!("initializer std must be a positive number, found {std}"),
            });
        }
        Ok(RandomSource {
            origin: origin.to_path_buf(),
            std,
            seed,
            tensors: hf_layout(config),
        })
    }

    /// Names and shapes of every tensor, in name order.
    pub fn shapes(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.tensors
            .iter()
            .map(|(n, (s, _))| (n.as_str(), s.as_slice()))
    }
}

impl TensorSource for RandomSource {
    fn origin(&self) -> &Path {
        &self.origin
    }

    fn tensor(&self, name: &str) -> Result<Option<HostTensor>> {
        let Some((shape, init)) = self.tensors.get(name) else {
            return Ok(None);
        };
        let len: usize = shape.iter().product();
        let data = match *init {
            Init::Zeros => vec![0.0; len],
            Init::Ones => vec![1.0; len],
            Init::Normal { zero_row } => {
                let mut data = normal(len, self.std, tensor_seed(self.seed, name));
                if let Some(r) = zero_row {
                    let cols = shape[1];
                    data[r * cols..(r + 1) * cols].fill(0.0);
                }
                data
            }
        };
        Ok(Some(HostTensor {
            shape: shape.clone(),
            data,
        }))
    }
}

/// Every tensor `build_model` reads for `cfg`, with its Hugging Face shape and initialiser.
fn hf_layout(cfg: &ModelConfig) -> BTreeMap<String, (Vec<usize>, Init)> {
    let (d, hd, ff, v) = (
        cfg.hidden_size,
        cfg.head_dim,
        cfg.intermediate_size,
        cfg.vocab_size,
    );
    let q_out = cfg.num_attention_heads * hd;
    let kv_out = cfg.num_key_value_heads * hd;
    let mut t = BTreeMap::new();
    let weight = Init::Normal { zero_row: None };
    let linear = |t: &mut BTreeMap<_, _>, prefix: String, d_in, d_out, bias: bool| {
        t.insert(format!("{prefix}.weight"), (vec![d_out, d_in], weight));
        if bias {
            t.insert(format!("{prefix}.bias"), (vec![d_out], Init::Zeros));
        }
    };
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let a = format!("{p}.self_attn");
        linear(&mut t, format!("{a}.q_proj"), d, q_out, cfg.qkv_bias);
        linear(&mut t, format!("{a}.k_proj"), d, kv_out, cfg.qkv_bias);
        linear(&mut t, format!("{a}.v_proj"), d, kv_out, cfg.qkv_bias);
        linear(&mut t, format!("{a}.o_proj"), q_out, d, cfg.o_bias);
        let m = format!("{p}.mlp");
        linear(&mut t, format!("{m}.gate_proj"), d, ff, cfg.mlp_bias);
        linear(&mut t, format!("{m}.up_proj"), d, ff, cfg.mlp_bias);
        linear(&mut t, format!("{m}.down_proj"), ff, d, cfg.mlp_bias);
        if cfg.qk_norm {
            t.insert(format!("{a}.q_norm.weight"), (vec![hd], Init::Ones));
            t.insert(format!("{a}.k_norm.weight"), (vec![hd], Init::Ones));
        }
        t.insert(format!("{p}.input_layernorm.weight"), (vec![d], Init::Ones));
        t.insert(
            format!("{p}.post_attention_layernorm.weight"),
            (vec![d], Init::Ones),
        );
    }
    let zero_row = cfg.pad_token_id.map(|p| p as usize).filter(|&p| p < v);
    t.insert(
        "model.embed_tokens.weight".into(),
        (vec![v, d], Init::Normal { zero_row }),
    );
    t.insert("model.norm.weight".into(), (vec![d], Init::Ones));
    if !cfg.tie_word_embeddings {
        linear(&mut t, "lm_head".into(), d, v, false);
    }
    t
}

/// The 32-byte ChaCha seed of one tensor: SHA-256 of a version tag, the seed and the name.
fn tensor_seed(seed: u64, name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"kiln-init-v1\0");
    h.update(seed.to_le_bytes());
    h.update(name.as_bytes());
    h.finalize().into()
}

/// `len` draws from Normal(0, std) as f32, chunk `c` drawn from ChaCha stream `c`.
fn normal(len: usize, std: f64, key: [u8; 32]) -> Vec<f32> {
    let mut out = vec![0f32; len];
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut rng = ChaCha8Rng::from_seed(key);
            rng.set_stream(c as u64);
            // Box-Muller: two uniforms give two independent standard normals.
            for pair in chunk.chunks_mut(2) {
                let u1 = open_unit(rng.next_u64());
                let u2 = open_unit(rng.next_u64());
                let r = (-2.0 * u1.ln()).sqrt() * std;
                let theta = std::f64::consts::TAU * u2;
                pair[0] = (r * theta.cos()) as f32;
                if let Some(second) = pair.get_mut(1) {
                    *second = (r * theta.sin()) as f32;
                }
            }
        });
    out
}

/// `len` draws from Normal(0, std), seeded by `(seed, name)` like every initialised tensor
/// (a classification head added to a trunk uses it).
pub(crate) fn seeded_normal(len: usize, std: f64, seed: u64, name: &str) -> Vec<f32> {
    normal(len, std, tensor_seed(seed, name))
}

/// A uniform double in (0, 1] from 53 random bits (never 0, so its log is finite).
fn open_unit(bits: u64) -> f64 {
    ((bits >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

impl Model {
    /// A model with `dir`'s config.json and tokenizer and randomly initialised weights (any
    /// weight files in `dir` are ignored). The std of the weights is config.json's
    /// `initializer_range` (default 0.02). `location` is `dir`, so [`Model::save_hf`] writes a
    /// checkpoint that [`Model::load`] reads back to the same numbers.
    pub fn random(dir: &Path, device: &Device, seed: u64) -> Result<Model> {
        let cfg_path = dir.join("config.json");
        let (config_json, config) = crate::read_hf_config(dir)?;
        let std = initializer_range(&config_json, &cfg_path)?;
        let tokenizer = Tokenizer::from_hf_dir(dir, &config.eos_token_ids)?;
        // A token id past the embedding table would fail deep inside the forward pass.
        let tok_vocab = tokenizer.inner.get_vocab_size(true);
        if tok_vocab > config.vocab_size {
            return Err(ModelError::Config {
                path: cfg_path,
                message: format!(
                    "vocab_size is {} but {} has {tok_vocab} tokens",
                    config.vocab_size,
                    dir.join("tokenizer.json").display()
                ),
            });
        }
        let source = RandomSource::new(&config, std, seed, &cfg_path)?;
        let net = loader::build_model(&config, &source, device)?;
        Ok(Model {
            rope: Rope::new(&config),
            config,
            config_json,
            net,
            tokenizer,
            location: ModelLocation::HfDir(dir.to_path_buf()),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The character-level tokenizer.

/// Id of `<pad>` in the character tokenizer.
pub const CHAR_PAD_ID: u32 = 0;
/// Id of `<eos>` in the character tokenizer.
pub const CHAR_EOS_ID: u32 = 1;
/// Id of `<unk>`: every character outside printable ASCII and `\n` (tab, `\r`, non-ASCII).
pub const CHAR_UNK_ID: u32 = 2;
const SPECIAL: [&str; 3] = ["<pad>", "<eos>", "<unk>"];

/// The character tokenizer's vocabulary, by id: `<pad>`, `<eos>`, `<unk>`, `"\n"`, then the
/// printable ASCII characters `' '..='~'` in code order (99 tokens).
pub fn char_vocab() -> Vec<String> {
    let mut v: Vec<String> = SPECIAL.iter().map(|s| s.to_string()).collect();
    v.push("\n".into());
    v.extend((0x20u8..=0x7e).map(|b| (b as char).to_string()));
    v
}

/// tokenizer.json of the character tokenizer, as the `tokenizers` crate serialises it: a
/// WordLevel model over [`char_vocab`], a pre-tokenizer isolating every character (newline
/// included: the regex is `[\s\S]`, not `.`), no normalizer, and the Fuse decoder so decoding
/// concatenates characters without spaces. The three specials are added special tokens, so a
/// literal `<eos>` in input text encodes to id 1 (as in every Hugging Face tokenizer).
pub fn char_tokenizer_json() -> Result<String> {
    let vocab = char_vocab();
    let added: Vec<Value> = SPECIAL
        .iter()
        .enumerate()
        .map(|(id, s)| {
            json!({"id": id, "content": s, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let map: serde_json::Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), json!(id)))
        .collect();
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "[\\s\\S]"},
                          "behavior": "Isolated", "invert": false},
        "post_processor": null,
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": map, "unk_token": "<unk>"},
    });
    // Round-trip through `tokenizers` so the text is exactly what it (and transformers) write.
    let err = |message: String| ModelError::Tokenizer {
        origin: "character tokenizer".into(),
        message,
    };
    let tok: tokenizers::Tokenizer = spec.to_string().parse().map_err(|e| err(format!("{e}")))?;
    tok.to_string(true).map_err(|e| err(e.to_string()))
}

/// tokenizer_config.json of the character tokenizer: eos `<eos>`, pad `<pad>`, unk `<unk>`,
/// no bos, no chat template.
pub fn char_tokenizer_config_json() -> Value {
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": null,
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "add_bos_token": false,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 256,
    })
}

/// Writes tokenizer.json and tokenizer_config.json of the character tokenizer into `dir`.
pub fn write_char_tokenizer(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tok_path = dir.join("tokenizer.json");
    std::fs::write(&tok_path, char_tokenizer_json()? + "\n").map_err(io_err(&tok_path))?;
    let cfg_path = dir.join("tokenizer_config.json");
    let text = serde_json::to_string_pretty(&char_tokenizer_config_json()).map_err(|e| {
        ModelError::Tokenizer {
            origin: cfg_path.display().to_string(),
            message: e.to_string(),
        }
    })?;
    std::fs::write(&cfg_path, text + "\n").map_err(io_err(&cfg_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tiny_config() -> ModelConfig {
        let v = json!({"model_type": "llama", "vocab_size": 99, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "tie_word_embeddings": true, "pad_token_id": 0});
        ModelConfig::from_json(&v, Path::new("test")).unwrap()
    }

    fn get(src: &RandomSource, name: &str) -> Vec<f32> {
        src.tensor(name).unwrap().unwrap().data
    }

    #[test]
    fn normal_draws_have_the_asked_moments() {
        let x = normal(200_001, 0.02, tensor_seed(7, "x"));
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 2e-4, "mean {mean}");
        assert!((var.sqrt() - 0.02).abs() < 2e-4, "std {}", var.sqrt());
        // Odd lengths fill the last element too.
        assert_ne!(*x.last().unwrap(), 0.0);
    }

    #[test]
    fn tensors_depend_on_seed_and_name_only() {
        let cfg = tiny_config();
        let a = RandomSource::new(&cfg, 0.02, 1, Path::new("a")).unwrap();
        let b = RandomSource::new(&cfg, 0.02, 1, Path::new("b")).unwrap();
        let c = RandomSource::new(&cfg, 0.02, 2, Path::new("c")).unwrap();
        let q = "model.layers.1.self_attn.q_proj.weight";
        // Asking in a different order changes nothing.
        let _ = get(&b, "model.layers.0.mlp.up_proj.weight");
        assert_eq!(get(&a, q), get(&b, q));
        assert_ne!(get(&a, q), get(&c, q));
        assert_ne!(
            get(&a, q),
            get(&a, "model.layers.0.self_attn.q_proj.weight")
        );
    }

    #[test]
    fn values_do_not_depend_on_the_thread_count() {
        let draw = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| normal(5 * CHUNK + 3, 0.02, tensor_seed(3, "big")))
        };
        let one = draw(1);
        assert_eq!(one, draw(3));
        // Chunks are distinct streams, not copies of one another.
        assert_ne!(one[..CHUNK], one[CHUNK..2 * CHUNK]);
    }

    #[test]
    fn layout_matches_what_the_model_exports() {
        let cfg = tiny_config();
        let src = RandomSource::new(&cfg, 0.02, 0, Path::new("t")).unwrap();
        let net = random_network(&cfg, &Device::flex(), 0).unwrap();
        let exported: BTreeMap<String, Vec<usize>> = loader::hf_tensors(&net)
            .into_iter()
            .map(|(n, t)| (n, t.shape))
            .collect();
        let layout: BTreeMap<String, Vec<usize>> = src
            .shapes()
            .map(|(n, s)| (n.to_string(), s.to_vec()))
            .collect();
        assert_eq!(exported, layout);
        // HF init: norms 1, padding embedding row 0, other rows random.
        assert!(get(&src, "model.norm.weight").iter().all(|&x| x == 1.0));
        let embed = get(&src, "model.embed_tokens.weight");
        assert!(embed[..64].iter().all(|&x| x == 0.0));
        assert!(embed[64..128].iter().any(|&x| x != 0.0));
    }

    #[test]
    fn biases_start_at_zero() {
        let v = json!({"model_type": "qwen2", "vocab_size": 50, "hidden_size": 32,
            "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2});
        let cfg = ModelConfig::from_json(&v, Path::new("q")).unwrap();
        let src = RandomSource::new(&cfg, 0.02, 0, Path::new("q")).unwrap();
        let b = get(&src, "model.layers.0.self_attn.q_proj.bias");
        assert_eq!(b, vec![0.0; 32]);
        // Untied head is its own random matrix.
        assert!(get(&src, "lm_head.weight").iter().any(|&x| x != 0.0));
        random_network(&cfg, &Device::flex(), 0).unwrap();
    }

    #[test]
    fn bad_std_and_initializer_range_are_errors() {
        let cfg = tiny_config();
        assert!(RandomSource::new(&cfg, 0.0, 0, Path::new("t")).is_err());
        let e = initializer_range(&json!({"initializer_range": "big"}), Path::new("cfg.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cfg.json") && e.contains("initializer_range"),
            "{e}"
        );
        let std = initializer_range(&json!({}), Path::new("c")).unwrap();
        assert_eq!(std, DEFAULT_INITIALIZER_RANGE);
    }

    #[test]
    fn char_vocab_layout() {
        let v = char_vocab();
        assert_eq!(v.len(), 99);
        assert_eq!(v[CHAR_PAD_ID as usize], "<pad>");
        assert_eq!(v[CHAR_EOS_ID as usize], "<eos>");
        assert_eq!(v[CHAR_UNK_ID as usize], "<unk>");
        assert_eq!(v[3], "\n");
        assert_eq!(v[4], " ");
        assert_eq!(v[98], "~");
    }
}
