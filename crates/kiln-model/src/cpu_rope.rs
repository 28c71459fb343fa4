//! Rotary embeddings on the CPU in one pass, with the move of the head axis folded in and its
//! own backward pass.
//!
//! The projections come out as `[batch, seq, heads, head_dim]` and attention wants
//! `[batch, heads, seq, head_dim]`. burn would copy for the transpose, then split, negate,
//! concatenate, multiply and add (rope.rs's `apply_rope`), each a pass and a buffer, and as
//! many again backwards. Here each output row is written once from its input row; the
//! backward pass rotates the gradient back by the opposite angle into the input's layout.
//! The rotation is Hugging Face's rotate-half, as in `apply_rope`.

use burn::backend::Flex;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use crate::cpu_tensor::{contiguous, contiguous_f32, from_f32};

/// `x` `[batch, seq, heads, head_dim]` rotated by the angles of `cos` and `sin`
/// (`[batch, 1, seq, head_dim]`, constants), returned as `[batch, heads, seq, head_dim]`.
/// `None` where the kernel does not apply (the caller uses `apply_rope`).
pub(crate) fn rope_heads_first(
    x: &Tensor<4>,
    cos: &Tensor<4>,
    sin: &Tensor<4>,
) -> Option<Tensor<4>> {
    let [b, s, h, hd] = x.dims();
    let on_flex = |t: &Tensor<4>| t.dtype() == DType::F32 && t.device().inner() == Device::flex();
    // Empty tensors stay with burn (a zero-sized chunk would panic in rayon).
    if cos.dims() != [b, 1, s, hd] || sin.dims() != cos.dims() || hd % 2 != 0 || b * s * h * hd == 0
    {
        return None;
    }
    if !(on_flex(x) && on_flex(cos) && on_flex(sin)) {
        return None;
    }
    let dims = Dims {
        batch: b,
        seq: s,
        heads: h,
        head_dim: hd,
    };
    if !x.is_autodiff() {
        let (xf, cf, sf) = (
            contiguous_f32(x)?,
            contiguous_f32(cos)?,
            contiguous_f32(sin)?,
        );
        let out = forward(
            dims,
            values(&xf, &dims),
            angles(&cf, &dims),
            angles(&sf, &dims),
        );
        return Some(from_f32(out, [b, h, s, hd]));
    }
    tracked(dims, x, cos, sin)
}

#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
}

fn values<'a>(t: &'a FlexTensor, d: &Dims) -> &'a [f32] {
    &t.storage::<f32>()[..d.batch * d.seq * d.heads * d.head_dim]
}

fn angles<'a>(t: &'a FlexTensor, d: &Dims) -> &'a [f32] {
    &t.storage::<f32>()[..d.batch * d.seq * d.head_dim]
}

/// The flex values of a constant (untracked) tensor, autodiff or not.
fn constant(t: &Tensor<4>) -> Option<FlexTensor> {
    if t.is_autodiff() {
        let inner = t.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
        Some(contiguous(inner.primitive().clone()))
    } else {
        contiguous_f32(t)
    }
}

fn tracked(d: Dims, x: &Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Option<Tensor<4>> {
    type Ad = Autodiff<Flex>;
    let x = x.clone().try_into_primitive::<Ad>().ok()?;
    let xf = contiguous(x.primitive().clone());
    let (cf, sf) = (constant(cos)?, constant(sin)?);
    if [&xf, &cf, &sf].iter().any(|t| t.dtype() != DType::F32) {
        return None;
    }
    let prep = RopeBackward
        .prepare::<NoCheckpointing>([x.node()])
        .compute_bound()
        .stateful();
    let out = forward(d, values(&xf, &d), angles(&cf, &d), angles(&sf, &d));
    let out = FlexTensor::from_data(TensorData::new(out, [d.batch, d.heads, d.seq, d.head_dim]));
    let result = match prep {
        OpsKind::Tracked(prep) => prep.finish((d, cf, sf), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Some(Tensor::from_primitive::<Ad>(result))
}

#[derive(Debug)]
struct RopeBackward;

impl Backward<Flex, 1> for RopeBackward {
    /// The sizes and the angles' cosines and sines.
    type State = (Dims, FlexTensor, FlexTensor);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let grad_out = contiguous(grads.consume::<Flex>(&ops.node));
        let (d, cos, sin) = ops.state;
        if let Some(node) = node_x {
            let n = d.batch * d.heads * d.seq * d.head_dim;
            let dx = backward(
                d,
                &grad_out.storage::<f32>()[..n],
                angles(&cos, &d),
                angles(&sin, &d),
            );
            let shape = [d.batch, d.seq, d.heads, d.head_dim];
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, shape)));
        }
    }
}

/// `y = x cos + rotate_half(x) sin` for one row of `head_dim` values, where
/// `rotate_half(x) = [-x2, x1]`; `sign` -1 rotates by the opposite angle (the transpose).
#[inline(always)]
fn rotate(out: &mut [f32], x: &[f32], cos: &[f32], sin: &[f32], sign: f32) {
    let half = x.len() / 2;
    let (x1, x2) = x.split_at(half);
    let (o1, o2) = out.split_at_mut(half);
    for i in 0..half {
        o1[i] = x1[i] * cos[i] - sign * x2[i] * sin[i];
        o2[i] = x2[i] * cos[half + i] + sign * x1[i] * sin[half + i];
    }
}

/// `[b, s, h, hd]` in, `[b, h, s, hd]` out: one task per (row, head).
fn forward(d: Dims, x: &[f32], cos: &[f32], sin: &[f32]) -> Vec<f32> {
    let hd = d.head_dim;
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(d.seq * hd)
        .enumerate()
        .for_each(|(task, out)| {
            let (b, h) = (task / d.heads, task % d.heads);
            for (t, row) in out.chunks_exact_mut(hd).enumerate() {
                let input = &x[((b * d.seq + t) * d.heads + h) * hd..][..hd];
                let angle = (b * d.seq + t) * hd;
                rotate(row, input, &cos[angle..][..hd], &sin[angle..][..hd], 1.0);
            }
        });
    out
}

/// The gradient `[b, h, s, hd]` rotated back into the input's layout `[b, s, h, hd]`: one task
/// per (row, position).
fn backward(d: Dims, grad: &[f32], cos: &[f32], sin: &[f32]) -> Vec<f32> {
    let hd = d.head_dim;
    let mut dx = vec![0f32; grad.len()];
    dx.par_chunks_mut(d.heads * hd)
        .enumerate()
        .for_each(|(task, dx)| {
            let (b, t) = (task / d.seq, task % d.seq);
            let angle = task * hd;
            for (h, row) in dx.chunks_exact_mut(hd).enumerate() {
                let g = &grad[((b * d.heads + h) * d.seq + t) * hd..][..hd];
                rotate(row, g, &cos[angle..][..hd], &sin[angle..][..hd], -1.0);
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::cpu_tensor::max_diff;
    use crate::rope::{Rope, apply_rope};
    use burn::tensor::Distribution;

    #[test]
    fn forward_and_gradient_match_apply_rope() {
        let flex = Device::flex();
        let (b, s, h, hd) = (2, 9, 3, 16);
        let cfg = serde_json::json!({"model_type": "llama", "vocab_size": 99,
            "hidden_size": h * hd, "intermediate_size": 128, "num_hidden_layers": 1,
            "num_attention_heads": h, "num_key_value_heads": h});
        let cfg = ModelConfig::from_json(&cfg, std::path::Path::new("test")).unwrap();
        let rope = Rope::new(&cfg);
        // Row 1 starts at position 5 (as a fork or a left-padded row would).
        let positions: Vec<i64> = (0..s as i64).chain(5..5 + s as i64).collect();
        let normal = Distribution::Normal(0.0, 1.0);
        let x0 = Tensor::<4>::random([b, s, h, hd], normal, &flex);
        let w0 = Tensor::<4>::random([b, h, s, hd], normal, &flex);

        let (cos, sin) = rope.tables(&positions, b, s, &flex);
        let got = rope_heads_first(&x0, &cos, &sin).expect("applies on flex");
        let want = apply_rope(x0.clone().swap_dims(1, 2), &cos, &sin);
        let diff = max_diff(got, want);
        assert!(diff < 1e-6, "forward differs by {diff}");

        let ad = flex.clone().autodiff();
        let (cos, sin) = rope.tables(&positions, b, s, &ad);
        let grad_of = |use_kernel: bool| {
            let x = Tensor::<4>::from_data(x0.to_data(), &ad).require_grad();
            let y = if use_kernel {
                rope_heads_first(&x, &cos, &sin).expect("applies under autodiff")
            } else {
                apply_rope(x.clone().swap_dims(1, 2), &cos, &sin)
            };
            let grads = (y * Tensor::<4>::from_data(w0.to_data(), &ad))
                .sum()
                .backward();
            Tensor::<4>::from_data(x.grad(&grads).unwrap().to_data(), &flex)
        };
        let diff = max_diff(grad_of(true), grad_of(false));
        assert!(diff < 1e-5, "gradient differs by {diff}");
    }
}
