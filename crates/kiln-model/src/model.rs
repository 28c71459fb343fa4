//! The decoder-only transformer shared by Llama, Qwen2 and Qwen3 (weights named as in the
//! Hugging Face checkpoints; burn's `Linear` stores `[d_in, d_out]`, the transpose of HF's).
//!
//! Two forward paths run over the same layers: [`CausalLm::forward`] for whole (possibly padded)
//! sequences, used by training and scoring, and [`CausalLm::forward_cached`] for incremental
//! decoding with a [`KvCache`]. Both compute the same numbers for the same tokens.

use burn::module::Param;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::prelude::*;
use burn::tensor::TensorCreationOptions;
use burn::tensor::activation::silu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use crate::batch::TokenBatch;
use crate::cache::KvCache;
use crate::cpu_attention::{self, decode_attention};
use crate::cpu_causal_attention::causal_attention;
use crate::cpu_matmul::{self, PackedLinear};
use crate::cpu_rms_norm::rms_norm;
use crate::cpu_rope::rope_heads_first;
use crate::cpu_swiglu::swiglu;
use crate::rope::{Rope, apply_rope};

#[derive(Module, Debug)]
pub struct SelfAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    /// Qwen3: RMSNorm over each head's features, before RoPE.
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: SelfAttention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

/// A causal language model: embeddings, decoder layers, final norm, LM head.
#[derive(Module, Debug)]
pub struct CausalLm {
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// `None` when the head is tied to the input embeddings.
    pub lm_head: Option<Linear>,
}

/// One layer's part of a [`KvCache`] during a forward call.
struct LayerCache<'a> {
    /// Keys and values `[batch, kv_heads, capacity, head_dim]`; `None` before the first write.
    kv: &'a mut Option<(Tensor<4>, Tensor<4>)>,
    /// Slots already used: the new keys and values go right after them.
    past: usize,
    capacity: usize,
}

/// What one attention call needs besides the hidden states.
struct AttentionInputs {
    cos: Tensor<4>,
    sin: Tensor<4>,
    /// `[batch, 1, q, k]`, true = masked out. `None`: plain causal attention.
    mask: Option<Tensor<4, Bool>>,
    /// Which of the new tokens are real, `[batch, seq]` (`None`: all), and whether they start
    /// their rows (no cached keys before them): then kiln's causal kernel applies.
    new_valid: Option<Vec<bool>>,
    from_start: bool,
}

/// A network's weights repacked for decode-sized products on the CPU
/// ([`CausalLm::pack_for_decode`]); the rollout engine keeps one beside its network.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    layers: Vec<PackedLayer>,
    lm_head: PackedLinear,
}

#[derive(Debug, Clone)]
struct PackedLayer {
    q: PackedLinear,
    k: PackedLinear,
    v: PackedLinear,
    o: PackedLinear,
    gate: PackedLinear,
    up: PackedLinear,
    down: PackedLinear,
}

/// `layer.forward(x)`, by kiln's CPU kernels where they apply ([`decode_sized_product`]).
fn linear(layer: &Linear, x: Tensor<3>, packed: Option<&PackedLinear>) -> Tensor<3> {
    let [b, s, d] = x.dims();
    // The check first: a reshape of a tracked tensor would leave a node in the autodiff graph.
    if b * s <= cpu_matmul::MAX_ROWS && !x.is_autodiff() {
        let bias = layer.bias.as_ref().map(|b| b.val());
        let rows = x.clone().reshape([b * s, d]);
        if let Some(y) = decode_sized_product(&rows, &layer.weight.val(), bias.as_ref(), packed) {
            let out = y.dims()[1];
            return y.reshape([b, s, out]);
        }
    }
    layer.forward(x)
}

/// [`linear`] of several layers over the same `x` (attention's q, k and v): one pass of the
/// packed kernel over all of them where it applies (decode), else one product each.
fn linears<const N: usize>(
    layers: [&Linear; N],
    x: Tensor<3>,
    packed: Option<[&PackedLinear; N]>,
) -> [Tensor<3>; N] {
    let [b, s, d] = x.dims();
    if let Some(packs) = packed
        && b * s <= cpu_matmul::MAX_ROWS
        && !x.is_autodiff()
    {
        let rows = x.clone().reshape([b * s, d]);
        let weights = layers.map(|l| l.weight.val());
        let biases = layers.map(|l| l.bias.as_ref().map(|b| b.val()));
        let products = std::array::from_fn(|i| (packs[i], &weights[i], biases[i].as_ref()));
        if let Some(outs) = PackedLinear::forward_together(products, &rows) {
            return outs.map(|y| {
                let out = y.dims()[1];
                y.reshape([b, s, out])
            });
        }
    }
    std::array::from_fn(|i| linear(layers[i], x.clone(), packed.map(|p| p[i])))
}

/// `rows @ weight (+ bias)` for up to `cpu_matmul::MAX_ROWS` rows on the CPU without autodiff:
/// the packed kernel when `packed` holds these very tensors, else the column split (both use
/// every core where burn's matmul uses one at these sizes). `None` where neither applies.
fn decode_sized_product(
    rows: &Tensor<2>,
    weight: &Tensor<2>,
    bias: Option<&Tensor<1>>,
    packed: Option<&PackedLinear>,
) -> Option<Tensor<2>> {
    if rows.dims()[0] > cpu_matmul::MAX_ROWS {
        return None;
    }
    packed
        .and_then(|p| p.forward(rows, weight, bias))
        .or_else(|| cpu_matmul::small_matmul(rows, weight, bias))
}

/// A `Linear`'s weight and bias packed for the decode kernel.
fn pack_linear(layer: &Linear) -> Option<PackedLinear> {
    let bias = layer.bias.as_ref().map(|b| b.val());
    PackedLinear::pack(&layer.weight.val(), bias.as_ref())
}

impl Mlp {
    fn forward(&self, x: Tensor<3>, packed: Option<&PackedLayer>) -> Tensor<3> {
        let down = |act: Tensor<3>| linear(&self.down_proj, act, packed.map(|p| &p.down));
        // Decode: both products and the activation in one pass of the packed kernel. The checks
        // first, as in `linear`.
        let [b, s, d] = x.dims();
        if let Some(p) = packed
            && b * s <= cpu_matmul::MAX_ROWS
            && !x.is_autodiff()
        {
            let (gate, up) = (self.gate_proj.weight.val(), self.up_proj.weight.val());
            let rows = x.clone().reshape([b * s, d]);
            if let Some(act) = p.gate.forward_swiglu(&p.up, &rows, &gate, &up) {
                let width = act.dims()[1];
                return down(act.reshape([b, s, width]));
            }
        }
        let gate = linear(&self.gate_proj, x.clone(), packed.map(|p| &p.gate));
        let up = linear(&self.up_proj, x, packed.map(|p| &p.up));
        // One pass on the CPU (cpu_swiglu.rs), burn's ops elsewhere.
        down(swiglu(&gate, &up).unwrap_or_else(|| silu(gate) * up))
    }
}

impl SelfAttention {
    /// `x`: `[batch, seq, hidden]`. With a cache slot, new keys/values are written into it after
    /// its `past` used slots and attention runs over all its slots (the mask hides the unused).
    fn forward(
        &self,
        x: Tensor<3>,
        inputs: &AttentionInputs,
        cache: Option<LayerCache<'_>>,
        packed: Option<&PackedLayer>,
    ) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let split_heads = |t: Tensor<3>, heads: usize| t.reshape([b, s, heads, hd]);
        let [q, k, v] = linears(
            [&self.q_proj, &self.k_proj, &self.v_proj],
            x,
            packed.map(|p| [&p.q, &p.k, &p.v]),
        );
        let (mut q, mut k) = (split_heads(q, h), split_heads(k, kvh));
        let v = split_heads(v, kvh).swap_dims(1, 2);
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = rms_norm(qn, q);
            k = rms_norm(kn, k);
        }
        let rope = |x: Tensor<4>| {
            rope_heads_first(&x, &inputs.cos, &inputs.sin)
                .unwrap_or_else(|| apply_rope(x.swap_dims(1, 2), &inputs.cos, &inputs.sin))
        };
        let (q, k) = (rope(q), rope(k));
        // Whole sequences from their first token (training, scoring, prefill): kiln's causal
        // kernel over the new keys, with its own backward (cpu_causal_attention.rs).
        let whole = if inputs.from_start && s > 1 {
            causal_attention(&q, &k, &v, inputs.new_valid.as_deref())
        } else {
            None
        };

        // Slots holding keys: a cache's free room after them is never read by the decode kernel.
        let (k, v, used) = match cache {
            Some(LayerCache { kv, past, capacity }) => {
                let (k, v) = match kv.take() {
                    None if capacity == s => (k, v),
                    stored => {
                        let (ck, cv) = stored.unwrap_or_else(|| {
                            let room = || {
                                Tensor::<4>::zeros(
                                    [b, kvh, capacity, hd],
                                    TensorCreationOptions::new(k.device()).with_dtype(k.dtype()),
                                )
                            };
                            (room(), room())
                        });
                        // In place: the cache holds the only reference to its tensors here.
                        let at = [0..b, 0..kvh, past..past + s, 0..hd];
                        (ck.slice_assign(at.clone(), k), cv.slice_assign(at, v))
                    }
                };
                *kv = Some((k.clone(), v.clone()));
                (k, v, past + s)
            }
            None => (k, v, s),
        };
        if let Some(out) = whole {
            let out = out.swap_dims(1, 2).reshape([b, s, h * hd]);
            return linear(&self.o_proj, out, packed.map(|p| &p.o));
        }

        // flex's inference kernel shares K/V heads itself (GQA). The autodiff path and other
        // backends get K/V expanded to every query head, as burn requires there.
        let native_gqa = !q.is_autodiff() && q.device().inner() == Device::flex();
        // One new query per row (decode): kiln's own kernel, where burn would call gemm per head.
        if native_gqa
            && s == 1
            && let Some(out) = decode_attention(&q, &k, &v, inputs.mask.as_ref(), used)
        {
            return linear(
                &self.o_proj,
                out.reshape([b, s, h * hd]),
                packed.map(|p| &p.o),
            );
        }
        let (k, v, mask) = if native_gqa || h == kvh {
            (k, v, inputs.mask.clone())
        } else {
            let expand = |t: Tensor<4>| {
                let [_, _, len, _] = t.dims();
                t.reshape([b, kvh, 1, len, hd])
                    .expand([b, kvh, h / kvh, len, hd])
                    .reshape([b, h, len, hd])
            };
            let mask = inputs.mask.clone().map(|m| {
                let [mb, _, mq, mk] = m.dims();
                m.expand([mb, h, mq, mk])
            });
            (expand(k), expand(v), mask)
        };
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: mask.is_none(),
        };
        let out = attention(q, k, v, mask, None, options);
        let out = out.swap_dims(1, 2).reshape([b, s, h * hd]);
        linear(&self.o_proj, out, packed.map(|p| &p.o))
    }
}

impl DecoderLayer {
    fn forward(
        &self,
        x: Tensor<3>,
        inputs: &AttentionInputs,
        cache: Option<LayerCache<'_>>,
        packed: Option<&PackedLayer>,
    ) -> Tensor<3> {
        let normed = rms_norm(&self.input_layernorm, x.clone());
        let x = x + self.self_attn.forward(normed, inputs, cache, packed);
        let normed = rms_norm(&self.post_attention_layernorm, x.clone());
        x + self.mlp.forward(normed, packed)
    }

    fn pack_for_decode(&self) -> Option<PackedLayer> {
        let (attn, mlp) = (&self.self_attn, &self.mlp);
        Some(PackedLayer {
            q: pack_linear(&attn.q_proj)?,
            k: pack_linear(&attn.k_proj)?,
            v: pack_linear(&attn.v_proj)?,
            o: pack_linear(&attn.o_proj)?,
            gate: pack_linear(&mlp.gate_proj)?,
            up: pack_linear(&mlp.up_proj)?,
            down: pack_linear(&mlp.down_proj)?,
        })
    }
}

impl CausalLm {
    pub fn device(&self) -> Device {
        self.embed_tokens.weight.device()
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.weight.dims()[0]
    }

    /// The LM head as a `[hidden, vocab]` matrix (the embeddings transposed when tied). The
    /// training path applies it chunk by chunk so `[tokens x vocab]` is never whole.
    pub fn lm_head_weight(&self) -> Tensor<2> {
        match &self.lm_head {
            Some(head) => head.weight.val(),
            None => self.embed_tokens.weight.val().transpose(),
        }
    }

    /// Final hidden states `[batch, seq, hidden]` of a whole sequence batch (training, scoring).
    pub fn forward_hidden(&self, rope: &Rope, tokens: &TokenBatch) -> Tensor<3> {
        let device = self.device();
        let positions = tokens.position_ids(None);
        let (cos, sin) = rope.tables(&positions, tokens.batch, tokens.seq, &device);
        let mask = tokens
            .mask
            .as_ref()
            .map(|m| attention_mask(m, tokens.batch, tokens.seq, 0, &device));
        let inputs = AttentionInputs {
            cos,
            sin,
            mask,
            new_valid: tokens.mask.clone(),
            from_start: true,
        };
        let mut x = self.embed(tokens, &device);
        for layer in &self.layers {
            x = layer.forward(x, &inputs, None, None);
        }
        rms_norm(&self.norm, x)
    }

    /// Logits `[batch, seq, vocab]` of a whole sequence batch.
    pub fn forward(&self, rope: &Rope, tokens: &TokenBatch) -> Tensor<3> {
        self.logits(self.forward_hidden(rope, tokens))
    }

    /// Runs `tokens` (new tokens for every row of `cache`) through the model, appending their
    /// keys and values to the cache; returns their logits `[batch, seq, vocab]`. Prefill is a
    /// call on an empty cache. Position ids continue each row's count of real tokens unless
    /// `tokens` carries explicit ones.
    pub fn forward_cached(
        &self,
        rope: &Rope,
        tokens: &TokenBatch,
        cache: &mut KvCache,
    ) -> Tensor<3> {
        self.forward_cached_packed(rope, tokens, cache, None)
    }

    /// [`CausalLm::forward_cached`] with this network's weights packed for decode
    /// ([`CausalLm::pack_for_decode`]): calls of up to 128 token rows use them. The same numbers
    /// up to float rounding. A pack of other weights (another network, or this one before an
    /// update) is not used: each layer checks that its pack was made from its own tensors.
    pub fn forward_cached_packed(
        &self,
        rope: &Rope,
        tokens: &TokenBatch,
        cache: &mut KvCache,
        packed: Option<&PackedWeights>,
    ) -> Tensor<3> {
        assert_eq!(
            cache.batch_size(),
            tokens.batch,
            "forward_cached: cache has {} rows, batch has {}",
            cache.batch_size(),
            tokens.batch
        );
        let device = self.device();
        cache.reserve_amortized(tokens.seq);
        let start = cache.next_positions();
        let positions = tokens.position_ids(Some(&start));
        let (cos, sin) = rope.tables(&positions, tokens.batch, tokens.seq, &device);
        let new_valid = tokens.valid();
        let (past, capacity) = (cache.len(), cache.capacity());
        let all_valid = cache.valid_with(&new_valid, tokens.seq);
        let mask = if all_valid.iter().all(|&v| v) {
            None
        } else {
            Some(attention_mask(
                &all_valid,
                tokens.batch,
                tokens.seq,
                past,
                &device,
            ))
        };
        let inputs = AttentionInputs {
            cos,
            sin,
            mask,
            from_start: past == 0,
            new_valid: Some(new_valid.clone()),
        };
        let mut x = self.embed(tokens, &device);
        for (i, (layer, kv)) in self.layers.iter().zip(cache.layers.iter_mut()).enumerate() {
            let slot = LayerCache { kv, past, capacity };
            x = layer.forward(x, &inputs, Some(slot), packed.and_then(|p| p.layers.get(i)));
        }
        cache.extend_valid(&new_valid, tokens.seq);
        let hidden = rms_norm(&self.norm, x);
        self.logits_packed(hidden, packed.map(|p| &p.lm_head))
    }

    /// Whether decode steps (one new token per row, without autodiff) read only the used slots
    /// of a [`KvCache`]: kiln's CPU decode attention does; burn's attention, elsewhere, runs
    /// over every slot with the unused ones masked (free room then costs compute).
    pub fn decode_reads_used_slots_only(&self) -> bool {
        self.device().inner() == Device::flex()
            && self
                .layers
                .first()
                .is_some_and(|l| cpu_attention::available(l.self_attn.head_dim))
    }

    /// The weights repacked for the CPU decode kernel, or `None` where it does not run (not the
    /// flex backend, no AVX-512, autodiff, not f32). A copy about the size of the model
    /// (540 MB for SmolLM2-135M), which serves these weights only: after an update, pack again.
    pub fn pack_for_decode(&self) -> Option<PackedWeights> {
        let layers = self
            .layers
            .iter()
            .map(DecoderLayer::pack_for_decode)
            .collect::<Option<Vec<_>>>()?;
        let lm_head = match &self.lm_head {
            Some(head) => pack_linear(head)?,
            None => PackedLinear::pack(&self.embed_tokens.weight.val().transpose(), None)?,
        };
        Some(PackedWeights { layers, lm_head })
    }

    /// Applies the LM head to hidden states `[batch, seq, hidden]`.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.logits_packed(hidden, None)
    }

    fn logits_packed(&self, hidden: Tensor<3>, packed: Option<&PackedLinear>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => linear(head, hidden, packed),
            None => {
                let [b, s, d] = hidden.dims();
                let w = self.embed_tokens.weight.val().transpose();
                let v = w.dims()[1];
                let rows = hidden.reshape([b * s, d]);
                decode_sized_product(&rows, &w, None, packed)
                    .unwrap_or_else(|| rows.matmul(w))
                    .reshape([b, s, v])
            }
        }
    }

    fn embed(&self, tokens: &TokenBatch, device: &Device) -> Tensor<3> {
        let ids: Vec<i64> = tokens.ids.iter().map(|&t| t as i64).collect();
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(ids, [tokens.batch, tokens.seq]), device);
        self.embed_tokens.forward(ids)
    }

    /// An empty cache for `batch` rows.
    pub fn new_cache(&self, batch: usize) -> KvCache {
        KvCache::new(self.layers.len(), batch)
    }
}

/// The boolean attention mask `[batch, 1, seq, keys]` (true = masked) for `seq` new queries
/// over the keys whose validity `valid` holds (`[batch, keys]`, keys >= past + seq): a key is
/// visible when it is a real token and not in the future of the query.
fn attention_mask(
    valid: &[bool],
    batch: usize,
    seq: usize,
    past: usize,
    device: &Device,
) -> Tensor<4, Bool> {
    // Keys: the `past` slots, the `seq` new ones, then any free room of a cache.
    let keys = valid.len() / batch.max(1);
    debug_assert!(keys >= past + seq && valid.len() == batch * keys);
    let mut mask = Vec::with_capacity(batch * seq * keys);
    for r in 0..batch {
        let row = &valid[r * keys..(r + 1) * keys];
        for q in 0..seq {
            let last_visible = past + q;
            mask.extend(row.iter().enumerate().map(|(k, &v)| !v || k > last_visible));
        }
    }
    Tensor::from_data(TensorData::new(mask, [batch, 1, seq, keys]), device)
}

/// Builds a burn parameter from a host tensor.
pub(crate) fn param<const D: usize>(
    data: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), device))
}
