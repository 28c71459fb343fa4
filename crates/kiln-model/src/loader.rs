//! Building a [`CausalLm`] from a checkpoint's tensors, and writing one back out as a Hugging
//! Face directory. Tensor names and shapes are Hugging Face's; linear weights are transposed
//! on the way in and out (burn's `Linear` is `[d_in, d_out]`).

use std::collections::HashMap;
use std::path::Path;

use burn::nn::{Embedding, Linear, RmsNorm};
use burn::prelude::*;
use safetensors::{Dtype, tensor::TensorView};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result, io_err};
use crate::model::{CausalLm, DecoderLayer, Mlp, SelfAttention, param};
use crate::weights::{HostTensor, TensorSource};

/// The network of a Hugging Face directory (config.json + safetensors) without its tokenizer:
/// what a critic or reward trunk, or a tiny test model, needs.
pub fn load_network(
    dir: &Path,
    device: &Device,
) -> Result<(ModelConfig, CausalLm, crate::rope::Rope)> {
    let cfg = ModelConfig::from_file(&dir.join("config.json"))?;
    let source = crate::weights::SafetensorsSource::open_dir(dir)?;
    let net = build_model(&cfg, &source, device)?;
    let rope = crate::rope::Rope::new(&cfg);
    Ok((cfg, net, rope))
}

/// Builds the model described by `cfg` from `source`, on `device`, in f32.
pub fn build_model(
    cfg: &ModelConfig,
    source: &dyn TensorSource,
    device: &Device,
) -> Result<CausalLm> {
    build(cfg, source, device, true)
}

/// The transformer without its LM head (`lm_head` is `None` and never read): the trunk of a
/// `*ForSequenceClassification` checkpoint, which has no `lm_head.weight`.
pub fn build_trunk(
    cfg: &ModelConfig,
    source: &dyn TensorSource,
    device: &Device,
) -> Result<CausalLm> {
    build(cfg, source, device, false)
}

fn build(
    cfg: &ModelConfig,
    source: &dyn TensorSource,
    device: &Device,
    with_lm_head: bool,
) -> Result<CausalLm> {
    let loader = Loader {
        cfg,
        source,
        device,
    };
    let (d, hd) = (cfg.hidden_size, cfg.head_dim);
    let q_out = cfg.num_attention_heads * hd;
    let kv_out = cfg.num_key_value_heads * hd;
    let ff = cfg.intermediate_size;
    // Not `with_capacity(num_hidden_layers)`: the count comes from the checkpoint, and a corrupt
    // one (GGUF `block_count` = 4e9) must end at the first missing layer, not in a huge allocation.
    let mut layers = Vec::new();
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let self_attn = SelfAttention {
            q_proj: loader.linear(&format!("{p}.self_attn.q_proj"), d, q_out, cfg.qkv_bias)?,
            k_proj: loader.linear(&format!("{p}.self_attn.k_proj"), d, kv_out, cfg.qkv_bias)?,
            v_proj: loader.linear(&format!("{p}.self_attn.v_proj"), d, kv_out, cfg.qkv_bias)?,
            o_proj: loader.linear(&format!("{p}.self_attn.o_proj"), q_out, d, cfg.o_bias)?,
            q_norm: cfg
                .qk_norm
                .then(|| loader.norm(&format!("{p}.self_attn.q_norm"), hd))
                .transpose()?,
            k_norm: cfg
                .qk_norm
                .then(|| loader.norm(&format!("{p}.self_attn.k_norm"), hd))
                .transpose()?,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
        };
        let mlp = Mlp {
            gate_proj: loader.linear(&format!("{p}.mlp.gate_proj"), d, ff, cfg.mlp_bias)?,
            up_proj: loader.linear(&format!("{p}.mlp.up_proj"), d, ff, cfg.mlp_bias)?,
            down_proj: loader.linear(&format!("{p}.mlp.down_proj"), ff, d, cfg.mlp_bias)?,
        };
        layers.push(DecoderLayer {
            input_layernorm: loader.norm(&format!("{p}.input_layernorm"), d)?,
            self_attn,
            post_attention_layernorm: loader.norm(&format!("{p}.post_attention_layernorm"), d)?,
            mlp,
        });
    }
    let embed = loader.require("model.embed_tokens.weight", &[cfg.vocab_size, d])?;
    let lm_head = if cfg.tie_word_embeddings || !with_lm_head {
        None
    } else {
        Some(loader.linear("lm_head", d, cfg.vocab_size, false)?)
    };
    Ok(CausalLm {
        embed_tokens: Embedding {
            weight: param(embed.data, [cfg.vocab_size, d], device),
        },
        layers,
        norm: loader.norm("model.norm", d)?,
        lm_head,
    })
}

struct Loader<'a> {
    cfg: &'a ModelConfig,
    source: &'a dyn TensorSource,
    device: &'a Device,
}

impl Loader<'_> {
    fn require(&self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        let t = self
            .source
            .tensor(name)?
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.source.origin().to_path_buf(),
                tensor: name.to_string(),
            })?;
        if t.shape != expected {
            return Err(ModelError::ShapeMismatch {
                path: self.source.origin().to_path_buf(),
                tensor: name.to_string(),
                expected: expected.to_vec(),
                found: t.shape,
            });
        }
        Ok(t)
    }

    fn linear(&self, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear> {
        let w = self.require(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let bias = if bias {
            let b = self.require(&format!("{prefix}.bias"), &[d_out])?;
            Some(param(b.data, [d_out], self.device))
        } else {
            None
        };
        Ok(Linear {
            weight: param(transpose(&w.data, d_out, d_in), [d_in, d_out], self.device),
            bias,
        })
    }

    fn norm(&self, prefix: &str, dim: usize) -> Result<RmsNorm> {
        let w = self.require(&format!("{prefix}.weight"), &[dim])?;
        Ok(RmsNorm {
            gamma: param(w.data, [dim], self.device),
            epsilon: self.cfg.rms_norm_eps,
        })
    }
}

/// Row-major transpose of a `[rows, cols]` matrix.
pub(crate) fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    // Blocked for cache locality: the big matrices are tens of MB.
    const B: usize = 64;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    out[c * rows + r] = data[r * cols + c];
                }
            }
        }
    }
    out
}

/// Every tensor of the model under its Hugging Face name and shape, as f32 on the host.
pub fn hf_tensors(model: &CausalLm) -> Vec<(String, HostTensor)> {
    fn host<const D: usize>(t: Tensor<D>) -> HostTensor {
        let shape = t.dims().to_vec();
        let data = t
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("converted to f32 above");
        HostTensor { shape, data }
    }
    fn linear(out: &mut Vec<(String, HostTensor)>, prefix: &str, l: &Linear) {
        let w = host(l.weight.val());
        let (d_in, d_out) = (w.shape[0], w.shape[1]);
        out.push((
            format!("{prefix}.weight"),
            HostTensor {
                shape: vec![d_out, d_in],
                data: transpose(&w.data, d_in, d_out),
            },
        ));
        if let Some(b) = &l.bias {
            out.push((format!("{prefix}.bias"), host(b.val())));
        }
    }
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        host(model.embed_tokens.weight.val()),
    )];
    for (i, layer) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        out.push((
            format!("{p}.input_layernorm.weight"),
            host(layer.input_layernorm.gamma.val()),
        ));
        let a = &layer.self_attn;
        linear(&mut out, &format!("{p}.self_attn.q_proj"), &a.q_proj);
        linear(&mut out, &format!("{p}.self_attn.k_proj"), &a.k_proj);
        linear(&mut out, &format!("{p}.self_attn.v_proj"), &a.v_proj);
        linear(&mut out, &format!("{p}.self_attn.o_proj"), &a.o_proj);
        if let (Some(qn), Some(kn)) = (&a.q_norm, &a.k_norm) {
            out.push((format!("{p}.self_attn.q_norm.weight"), host(qn.gamma.val())));
            out.push((format!("{p}.self_attn.k_norm.weight"), host(kn.gamma.val())));
        }
        out.push((
            format!("{p}.post_attention_layernorm.weight"),
            host(layer.post_attention_layernorm.gamma.val()),
        ));
        linear(
            &mut out,
            &format!("{p}.mlp.gate_proj"),
            &layer.mlp.gate_proj,
        );
        linear(&mut out, &format!("{p}.mlp.up_proj"), &layer.mlp.up_proj);
        linear(
            &mut out,
            &format!("{p}.mlp.down_proj"),
            &layer.mlp.down_proj,
        );
    }
    out.push((
        "model.norm.weight".to_string(),
        host(model.norm.gamma.val()),
    ));
    if let Some(head) = &model.lm_head {
        linear(&mut out, "lm_head", head);
    }
    out
}

/// Writes `tensors` as one f32 safetensors file, atomically (temporary file, then rename).
pub fn write_safetensors(path: &Path, tensors: &[(String, HostTensor)]) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let b = t.data.iter().flat_map(|x| x.to_le_bytes()).collect();
            (name.clone(), t.shape.clone(), b)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(name, shape, b)| {
            let view =
                TensorView::new(Dtype::F32, shape.clone(), b).map_err(|e| ModelError::BadTensor {
                    path: path.to_path_buf(),
                    tensor: name.clone(),
                    message: e.to_string(),
                });
            view.map(|v| (name.clone(), v))
        })
        .collect::<Result<_>>()?;
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, Some(metadata), &tmp).map_err(|e| {
        ModelError::Safetensors {
            path: tmp.clone(),
            message: e.to_string(),
        }
    })?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint with no tensors at all.
    struct NoTensors;

    impl TensorSource for NoTensors {
        fn origin(&self) -> &Path {
            Path::new("corrupt.gguf")
        }

        fn tensor(&self, _: &str) -> Result<Option<HostTensor>> {
            Ok(None)
        }
    }

    /// Found by fuzzing (tests/fuzz_inputs): a GGUF `block_count` of billions made the layer
    /// vector ask for terabytes up front and abort the process.
    #[test]
    fn a_huge_layer_count_is_a_missing_tensor_not_an_allocation() {
        let json = serde_json::json!({
            "model_type": "llama", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
            "num_hidden_layers": 4_294_967_295u64, "num_attention_heads": 2,
        });
        let cfg = ModelConfig::from_json(&json, Path::new("corrupt.gguf")).unwrap();
        let err = build_model(&cfg, &NoTensors, &Device::flex()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "corrupt.gguf: tensor `model.layers.0.self_attn.q_proj.weight` is missing"
        );
    }
}
