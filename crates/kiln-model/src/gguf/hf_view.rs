//! A Hugging Face view of a GGUF checkpoint: a transformers-style `config.json`, HF tensor
//! names, and tensors in HF layout, so the model code only knows one convention.
//!
//! Layout differences handled here:
//! - GGUF dims are reversed relative to PyTorch; `GgufFile::tensor_f32` already returns
//!   row-major shapes, so linear weights come out as HF's `[out, in]`.
//! - For `llama`, llama.cpp's `convert_hf_to_gguf.py` permutes the rows of q_proj (with n_head)
//!   and k_proj (with n_head_kv) so each head's rotary pairs are interleaved (GGML's rope); we
//!   undo it exactly as transformers' GGUF loader does (`_reverse_permute_weights`). Qwen2/Qwen3
//!   use NEOX-style rope in llama.cpp and are stored unpermuted.

use serde_json::{Value, json};

use super::{GgufError, GgufFile};

/// (GGUF block-tensor stem, HF per-layer module path).
const LAYER_NAMES: &[(&str, &str)] = &[
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

/// (GGUF name, HF name) of the tensors outside the layers.
const GLOBAL_NAMES: &[(&str, &str)] = &[
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// The architectures kiln implements: (GGUF `general.architecture`, HF class, HF model_type).
const ARCHITECTURES: &[(&str, &str, &str)] = &[
    ("llama", "LlamaForCausalLM", "llama"),
    ("qwen2", "Qwen2ForCausalLM", "qwen2"),
    ("qwen3", "Qwen3ForCausalLM", "qwen3"),
];

/// HF name of a GGUF tensor, if it is one kiln's models use.
fn hf_name_of(gguf: &str) -> Option<String> {
    if let Some((_, hf)) = GLOBAL_NAMES.iter().find(|(g, _)| *g == gguf) {
        return Some((*hf).to_owned());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: u32 = layer.parse().ok()?;
    let (stem, kind) = rest.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let (_, module) = LAYER_NAMES.iter().find(|(g, _)| *g == stem)?;
    Some(format!("model.layers.{layer}.{module}.{kind}"))
}

/// GGUF name of an HF tensor name (the inverse of [`hf_name_of`]).
fn gguf_name_of(hf: &str) -> Option<String> {
    if let Some((g, _)) = GLOBAL_NAMES.iter().find(|(_, h)| *h == hf) {
        return Some((*g).to_owned());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: u32 = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let (stem, _) = LAYER_NAMES.iter().find(|(_, m)| *m == module)?;
    Some(format!("blk.{layer}.{stem}.{kind}"))
}

fn architecture(file: &GgufFile) -> Result<(&str, &'static str, &'static str), GgufError> {
    let arch = file.require("general.architecture", file.get_str("general.architecture"))?;
    ARCHITECTURES
        .iter()
        .find(|(a, _, _)| *a == arch)
        .map(|&(_, class, model_type)| (arch, class, model_type))
        .ok_or_else(|| GgufError::UnknownArchitecture {
            file: file.path().to_path_buf(),
            arch: arch.to_owned(),
        })
}

/// The f32 value as the shortest decimal that round-trips (1e-5, not 9.999999747378752e-06),
/// which is what the original config.json held before conversion to f32.
fn f32_decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// A transformers-style `config.json` for the checkpoint (llama, qwen2, qwen3).
pub fn hf_config(file: &GgufFile) -> Result<Value, GgufError> {
    let (arch, class, model_type) = architecture(file)?;
    let key = |k: &str| format!("{arch}.{k}");
    let req_u32 = |k: &str| file.require(&key(k), file.get_u32(&key(k)));

    let hidden = req_u32("embedding_length")?;
    let heads = req_u32("attention.head_count")?;
    if heads == 0 {
        return Err(GgufError::Corrupt {
            file: file.path().to_path_buf(),
            what: format!("{} is 0", key("attention.head_count")),
        });
    }
    let kv_heads = file
        .get_u32(&key("attention.head_count_kv"))?
        .unwrap_or(heads);
    let head_dim = file
        .get_u32(&key("attention.key_length"))?
        .unwrap_or(hidden / heads);
    let vocab_size = match file.tensor_info("token_embd.weight") {
        Some(t) if t.dims.len() == 2 => t.dims[1],
        _ => match file.get_u64(&key("vocab_size"))? {
            Some(v) => v,
            None => file
                .require(
                    "tokenizer.ggml.tokens",
                    file.get_str_array("tokenizer.ggml.tokens"),
                )?
                .len() as u64,
        },
    };
    let eps = file.require(
        &key("attention.layer_norm_rms_epsilon"),
        file.get_f32(&key("attention.layer_norm_rms_epsilon")),
    )?;
    let rope_theta = file.get_f32(&key("rope.freq_base"))?.unwrap_or(10000.0);
    let token_id = |k: &str| file.get_u32(&format!("tokenizer.ggml.{k}_token_id"));
    let attention_bias = match arch {
        "qwen2" => true,
        "qwen3" => false,
        _ => file.tensor_info("blk.0.attn_q.bias").is_some(),
    };
    let max_pos = req_u32("context_length")?;

    let mut config = json!({
        "architectures": [class],
        "model_type": model_type,
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": req_u32("feed_forward_length")?,
        "num_hidden_layers": req_u32("block_count")?,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": f32_decimal(eps),
        "rope_theta": f32_decimal(rope_theta),
        "rope_scaling": rope_scaling(file, arch, head_dim, rope_theta)?,
        "max_position_embeddings": max_pos,
        "tie_word_embeddings": file.tensor_info("output.weight").is_none(),
        "bos_token_id": token_id("bos")?,
        "eos_token_id": token_id("eos")?,
        "pad_token_id": token_id("padding")?,
        "attention_bias": attention_bias,
        "attention_dropout": 0.0,
        "torch_dtype": "float32",
        "use_cache": true,
    });
    if arch == "llama" {
        config["mlp_bias"] = json!(false);
    }
    if arch == "qwen2" || arch == "qwen3" {
        config["use_sliding_window"] = json!(false);
        config["sliding_window"] = Value::Null;
    }
    Ok(config)
}

/// HF `rope_scaling` from `<arch>.rope.scaling.*`, or for Llama 3.x (whose converter stores
/// the scaling only as the `rope_freqs.weight` factor tensor) recovered from that tensor.
fn rope_scaling(
    file: &GgufFile,
    arch: &str,
    head_dim: u32,
    theta: f32,
) -> Result<Value, GgufError> {
    let key = |k: &str| format!("{arch}.rope.scaling.{k}");
    let kind = file.get_str(&key("type"))?;
    let factor = file.get_f32(&key("factor"))?;
    let original = file.get_u32(&key("original_context_length"))?;
    let unsupported = |what: String| GgufError::Unsupported {
        file: file.path().to_path_buf(),
        what,
    };
    match (kind, factor) {
        (None | Some("none"), None) | (Some("none"), _) => {}
        (Some("linear"), Some(f)) => {
            return Ok(json!({"rope_type": "linear", "factor": f32_decimal(f)}));
        }
        (Some("yarn"), Some(f)) => {
            return Ok(json!({
                "rope_type": "yarn",
                "factor": f32_decimal(f),
                "original_max_position_embeddings": original,
            }));
        }
        (Some("llama3") | None, Some(f)) => {
            let low = file.get_f32(&key("low_freq_factor"))?.unwrap_or(1.0);
            let high = file.get_f32(&key("high_freq_factor"))?.unwrap_or(4.0);
            return Ok(json!({
                "rope_type": "llama3",
                "factor": f32_decimal(f),
                "low_freq_factor": f32_decimal(low),
                "high_freq_factor": f32_decimal(high),
                "original_max_position_embeddings": original.unwrap_or(8192),
            }));
        }
        (Some(kind), None) => {
            return Err(unsupported(format!(
                "rope scaling type `{kind}` without {}",
                key("factor")
            )));
        }
        (Some(other), _) => {
            return Err(unsupported(format!(
                "rope scaling type `{other}` (key {})",
                key("type")
            )));
        }
    }
    if file.tensor_info("rope_freqs.weight").is_none() {
        return Ok(Value::Null);
    }
    let (_, freqs) = file.tensor_f32("rope_freqs.weight")?;
    llama3_from_factors(&freqs, head_dim, theta).ok_or_else(|| {
        unsupported(
            "rope_freqs.weight holds rope factors that do not match Llama 3 scaling \
             (low_freq_factor 1, high_freq_factor 4, original context 8192)"
                .into(),
        )
    })
}

/// Llama 3 rope factors as `convert_hf_to_gguf.py` computes them.
fn llama3_factors(
    head_dim: u32,
    theta: f32,
    factor: f64,
    low: f64,
    high: f64,
    original: f64,
) -> Vec<f64> {
    let (low_wavelen, high_wavelen) = (original / low, original / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / f64::from(theta).powf(f64::from(2 * i) / f64::from(head_dim));
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// Recovers Meta's Llama 3 `rope_scaling` from the factor tensor: the factor is its maximum,
/// and the other parameters are Meta's published ones, accepted only if they reproduce the
/// tensor.
fn llama3_from_factors(freqs: &[f32], head_dim: u32, theta: f32) -> Option<Value> {
    if freqs.len() != (head_dim / 2) as usize {
        return None;
    }
    let factor = f64::from(freqs.iter().copied().fold(f32::NAN, f32::max));
    let (low, high, original) = (1.0, 4.0, 8192.0);
    let want = llama3_factors(head_dim, theta, factor, low, high, original);
    let matches = want
        .iter()
        .zip(freqs)
        .all(|(w, &g)| (w - f64::from(g)).abs() <= 1e-4 * w.abs().max(1.0));
    (matches && factor.is_finite()).then(|| {
        json!({
            "rope_type": "llama3",
            "factor": f32_decimal(factor as f32),
            "low_freq_factor": low,
            "high_freq_factor": high,
            "original_max_position_embeddings": original as u64,
        })
    })
}

/// (HF name, GGUF name) for every tensor kiln's models load, in file order. Tensors with no
/// HF counterpart (e.g. `rope_freqs.weight`) are left out.
pub fn hf_tensor_names(file: &GgufFile) -> Vec<(String, String)> {
    file.tensor_infos()
        .iter()
        .filter_map(|t| hf_name_of(&t.name).map(|hf| (hf, t.name.clone())))
        .collect()
}

/// The tensor named `hf_name` (HF convention), dequantized, in HF shape and row order.
pub fn hf_tensor(file: &GgufFile, hf_name: &str) -> Result<(Vec<usize>, Vec<f32>), GgufError> {
    let gguf = gguf_name_of(hf_name).ok_or_else(|| GgufError::MissingTensor {
        file: file.path().to_path_buf(),
        tensor: format!("{hf_name} (no GGUF equivalent)"),
    })?;
    let (shape, mut data) = file.tensor_f32(&gguf)?;
    let (arch, _, _) = architecture(file)?;
    if arch == "llama" {
        let heads = |k: &str| file.require(k, file.get_u32(k));
        let n_head = if gguf.contains(".attn_q.") {
            Some(heads("llama.attention.head_count")?)
        } else if gguf.contains(".attn_k.") {
            let n = heads("llama.attention.head_count")?;
            Some(file.get_u32("llama.attention.head_count_kv")?.unwrap_or(n))
        } else {
            None
        };
        if let Some(n_head) = n_head {
            data = unpermute_rows(&data, &shape, n_head as usize).ok_or_else(|| GgufError::Corrupt {
                file: file.path().to_path_buf(),
                what: format!("tensor `{gguf}` of shape {shape:?} cannot be split into {n_head} rotary heads"),
            })?;
        }
    }
    Ok((shape, data))
}

/// Undoes `convert_hf_to_gguf.py`'s `permute`: within each of `n_head` heads of `head_dim`
/// rows, GGUF row `2i + j` is HF row `j * head_dim / 2 + i`. Works for weights `[rows, cols]`
/// and biases `[rows]`. `None` if the rows do not split into heads of even size.
fn unpermute_rows(data: &[f32], shape: &[usize], n_head: usize) -> Option<Vec<f32>> {
    let rows = *shape.first()?;
    let cols: usize = shape.iter().skip(1).product();
    if n_head == 0 || rows % (2 * n_head) != 0 || data.len() != rows * cols {
        return None;
    }
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let src = h * head_dim + 2 * i + j;
                let dst = h * head_dim + j * half + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{Writer, smollm2_gguf};
    use super::*;

    #[test]
    fn names_round_trip() {
        for g in [
            "token_embd.weight",
            "output.weight",
            "output_norm.weight",
            "blk.0.attn_q.weight",
            "blk.12.attn_q.bias",
            "blk.3.attn_k_norm.weight",
            "blk.29.ffn_down.weight",
            "blk.1.ffn_norm.weight",
        ] {
            let hf = hf_name_of(g).unwrap();
            assert_eq!(gguf_name_of(&hf).as_deref(), Some(g));
        }
        assert_eq!(
            hf_name_of("blk.0.attn_output.weight").unwrap(),
            "model.layers.0.self_attn.o_proj.weight"
        );
        assert_eq!(
            hf_name_of("blk.2.attn_norm.weight").unwrap(),
            "model.layers.2.input_layernorm.weight"
        );
        assert_eq!(
            hf_name_of("blk.2.ffn_norm.weight").unwrap(),
            "model.layers.2.post_attention_layernorm.weight"
        );
        assert_eq!(hf_name_of("rope_freqs.weight"), None);
        assert_eq!(hf_name_of("blk.x.attn_q.weight"), None);
        assert_eq!(
            gguf_name_of("model.layers.0.self_attn.rotary_emb.inv_freq"),
            None
        );
    }

    #[test]
    fn unpermute_inverts_convert_permute() {
        // convert_hf_to_gguf: w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols)
        let (n_head, head_dim, cols) = (3, 8, 2);
        let rows = n_head * head_dim;
        let hf: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let mut gguf = vec![0f32; hf.len()];
        for h in 0..n_head {
            for j in 0..2 {
                for i in 0..head_dim / 2 {
                    let hf_row = h * head_dim + j * (head_dim / 2) + i;
                    let gguf_row = h * head_dim + i * 2 + j;
                    for c in 0..cols {
                        gguf[gguf_row * cols + c] = hf[hf_row * cols + c];
                    }
                }
            }
        }
        assert_eq!(unpermute_rows(&gguf, &[rows, cols], n_head).unwrap(), hf);
        assert!(unpermute_rows(&gguf, &[rows, cols], 5).is_none());
    }

    #[test]
    fn llama3_factors_round_trip() {
        // Llama 3.1 8B: head_dim 128, theta 500000, factor 8.
        let f: Vec<f32> = llama3_factors(128, 500000.0, 8.0, 1.0, 4.0, 8192.0)
            .iter()
            .map(|&x| x as f32)
            .collect();
        let v = llama3_from_factors(&f, 128, 500000.0).unwrap();
        assert_eq!(v["factor"], 8.0);
        assert_eq!(v["original_max_position_embeddings"], 8192);
        let mut bad = f.clone();
        bad[40] *= 1.5;
        assert!(llama3_from_factors(&bad, 128, 500000.0).is_none());
    }

    fn tiny_model(arch: &str) -> Writer {
        Writer::new()
            .str("general.architecture", arch)
            .u32(&format!("{arch}.block_count"), 1)
            .u32(&format!("{arch}.context_length"), 128)
            .u32(&format!("{arch}.embedding_length"), 8)
            .u32(&format!("{arch}.feed_forward_length"), 16)
            .u32(&format!("{arch}.attention.head_count"), 2)
            .u32(&format!("{arch}.attention.head_count_kv"), 1)
            .f32(&format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-6)
            .f32(&format!("{arch}.rope.freq_base"), 1e6)
            .u32("tokenizer.ggml.bos_token_id", 5)
            .u32("tokenizer.ggml.eos_token_id", 6)
    }

    #[test]
    fn config_for_each_architecture() {
        for arch in ["llama", "qwen2", "qwen3"] {
            let mut w = tiny_model(arch).tensor_f32("token_embd.weight", &[8, 10], &[0.0; 80]);
            if arch == "qwen3" {
                w = w.u32("qwen3.attention.key_length", 16);
            }
            let f = w.write(arch);
            let g = GgufFile::open(f.path()).unwrap();
            let c = hf_config(&g).unwrap();
            assert_eq!(c["model_type"], arch);
            assert_eq!(c["vocab_size"], 10);
            assert_eq!(c["num_key_value_heads"], 1);
            assert_eq!(c["head_dim"], if arch == "qwen3" { 16 } else { 4 });
            assert_eq!(c["rms_norm_eps"], 1e-6);
            assert_eq!(c["rope_theta"], 1e6);
            assert_eq!(c["tie_word_embeddings"], true);
            assert_eq!(c["attention_bias"], arch == "qwen2");
            assert_eq!(c["rope_scaling"], Value::Null);
            assert_eq!(c["bos_token_id"], 5);
            assert_eq!(c["pad_token_id"], Value::Null);
        }
    }

    #[test]
    fn rope_scaling_keys() {
        let f = tiny_model("llama")
            .u32("llama.vocab_size", 10)
            .str("llama.rope.scaling.type", "linear")
            .f32("llama.rope.scaling.factor", 2.0)
            .write("rope-linear");
        let c = hf_config(&GgufFile::open(f.path()).unwrap()).unwrap();
        assert_eq!(
            c["rope_scaling"],
            json!({"rope_type": "linear", "factor": 2.0})
        );
        let f = tiny_model("llama")
            .u32("llama.vocab_size", 10)
            .f32("llama.rope.scaling.factor", 8.0)
            .u32("llama.rope.scaling.original_context_length", 8192)
            .write("rope-llama3");
        let c = hf_config(&GgufFile::open(f.path()).unwrap()).unwrap();
        assert_eq!(c["rope_scaling"]["rope_type"], "llama3");
        assert_eq!(c["rope_scaling"]["high_freq_factor"], 4.0);
    }

    #[test]
    fn unknown_architecture_is_named() {
        let f = tiny_model("gemma2").write("gemma");
        let err = hf_config(&GgufFile::open(f.path()).unwrap()).unwrap_err();
        assert!(
            matches!(&err, GgufError::UnknownArchitecture { arch, .. } if arch == "gemma2"),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("gemma2") && msg.contains(&f.path().display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn smollm2_config_and_names() {
        let Some(path) = smollm2_gguf("smollm2_config_and_names") else {
            return;
        };
        let g = GgufFile::open(&path).unwrap();
        let c = hf_config(&g).unwrap();
        let want = json!({
            "model_type": "llama", "architectures": ["LlamaForCausalLM"],
            "num_hidden_layers": 30, "hidden_size": 576, "intermediate_size": 1536,
            "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
            "vocab_size": 49152, "rope_theta": 100000.0, "rms_norm_eps": 1e-5,
            "tie_word_embeddings": true, "max_position_embeddings": 8192,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
            "attention_bias": false, "rope_scaling": null,
        });
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&c[k], v, "config key {k}");
        }
        let names = hf_tensor_names(&g);
        assert_eq!(
            names.len(),
            1 + 1 + 30 * 9,
            "embed + norm + 9 per layer, no lm_head (tied)"
        );
        for (hf, _) in &names {
            let (shape, data) = hf_tensor(&g, hf).unwrap();
            assert_eq!(shape.iter().product::<usize>(), data.len());
            if hf.ends_with("q_proj.weight") || hf.ends_with("o_proj.weight") {
                assert_eq!(shape, vec![576, 576], "{hf}");
            }
            if hf.ends_with("k_proj.weight") {
                assert_eq!(shape, vec![192, 576], "{hf}");
            }
            if hf.ends_with("gate_proj.weight") {
                assert_eq!(shape, vec![1536, 576], "{hf}");
            }
            if hf.ends_with("down_proj.weight") {
                assert_eq!(shape, vec![576, 1536], "{hf}");
            }
        }
        assert_eq!(
            hf_tensor(&g, "model.embed_tokens.weight").unwrap().0,
            vec![49152, 576]
        );
    }
}
