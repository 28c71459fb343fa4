//! The MLP's gated activation `silu(gate) * up` as one CPU pass, with its own backward pass.
//!
//! As separate burn ops this is a sigmoid, two products and, under autodiff, about as many
//! again in the backward pass, each a fresh `[tokens x intermediate]` buffer (the largest
//! activations of the network). Here the forward pass is one read of `gate` and `up` and one
//! write; the backward pass one read of `gate`, `up` and the output's gradient and one write
//! of each input's gradient. With `s = sigmoid(gate)`:
//! `d up = g * gate * s` and `d gate = g * up * s * (1 + gate * (1 - s))`.

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

use crate::cpu_math::sigmoid;
use crate::cpu_tensor::{contiguous, contiguous_f32, from_f32};

/// Elements per parallel task: large enough that a task outweighs its scheduling.
const CHUNK: usize = 1 << 14;

/// `silu(gate) * up` on the flex backend (tracked or not); `None` elsewhere (the caller keeps
/// burn's ops).
pub(crate) fn swiglu<const D: usize>(gate: &Tensor<D>, up: &Tensor<D>) -> Option<Tensor<D>> {
    let shape = gate.dims();
    let on_flex = |t: &Tensor<D>| t.dtype() == DType::F32 && t.device().inner() == Device::flex();
    if up.dims() != shape || !on_flex(gate) || !on_flex(up) {
        return None;
    }
    match (gate.is_autodiff(), up.is_autodiff()) {
        (false, false) => {
            let (g, u) = (contiguous_f32(gate)?, contiguous_f32(up)?);
            let out = forward(values(&g, shape), values(&u, shape));
            Some(from_f32(out, shape))
        }
        (true, true) => tracked(gate, up),
        _ => None,
    }
}

fn values<const D: usize>(t: &FlexTensor, shape: [usize; D]) -> &[f32] {
    &t.storage::<f32>()[..shape.iter().product::<usize>()]
}

fn tracked<const D: usize>(gate: &Tensor<D>, up: &Tensor<D>) -> Option<Tensor<D>> {
    type Ad = Autodiff<Flex>;
    let shape = gate.dims();
    let gate = gate.clone().try_into_primitive::<Ad>().ok()?;
    let up = up.clone().try_into_primitive::<Ad>().ok()?;
    let flat = |t: &FlexTensor| (t.dtype() == DType::F32).then(|| contiguous(t.clone()));
    let (g, u) = (flat(gate.primitive())?, flat(up.primitive())?);
    let prep = SwigluBackward
        .prepare::<NoCheckpointing>([gate.node(), up.node()])
        .compute_bound()
        .stateful();
    let out = FlexTensor::from_data(TensorData::new(
        forward(values(&g, shape), values(&u, shape)),
        shape,
    ));
    let result = match prep {
        OpsKind::Tracked(prep) => prep.finish((g, u), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Some(Tensor::from_primitive::<Ad>(result))
}

#[derive(Debug)]
struct SwigluBackward;

impl Backward<Flex, 2> for SwigluBackward {
    /// The inputs, contiguous.
    type State = (FlexTensor, FlexTensor);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_gate, node_up] = ops.parents;
        let grad_out = contiguous(grads.consume::<Flex>(&ops.node));
        let (g, u) = ops.state;
        let shape = g.layout().shape().clone();
        let n = shape.num_elements();
        let (d_gate, d_up) = backward(
            &g.storage::<f32>()[..n],
            &u.storage::<f32>()[..n],
            &grad_out.storage::<f32>()[..n],
        );
        let tensor = |data: Vec<f32>| FlexTensor::from_data(TensorData::new(data, shape.clone()));
        if let Some(node) = node_gate {
            grads.register::<Flex>(node.id, tensor(d_gate));
        }
        if let Some(node) = node_up {
            grads.register::<Flex>(node.id, tensor(d_up));
        }
    }
}

fn forward(gate: &[f32], up: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; gate.len()];
    out.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .for_each(|(out, (gate, up))| {
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                *o = g * sigmoid(g) * u;
            }
        });
    out
}

/// `(d gate, d up)` given the output's gradient.
fn backward(gate: &[f32], up: &[f32], grad_out: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut d_gate = vec![0f32; gate.len()];
    let mut d_up = vec![0f32; gate.len()];
    d_gate
        .par_chunks_mut(CHUNK)
        .zip(d_up.par_chunks_mut(CHUNK))
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .zip(grad_out.par_chunks(CHUNK))
        .for_each(|(((dg, du), (gate, up)), go)| {
            for i in 0..dg.len() {
                let (g, s) = (gate[i], sigmoid(gate[i]));
                du[i] = go[i] * g * s;
                dg[i] = go[i] * up[i] * s * (1.0 + g * (1.0 - s));
            }
        });
    (d_gate, d_up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_tensor::max_diff;
    use burn::tensor::Distribution;
    use burn::tensor::activation::silu;

    #[test]
    fn forward_and_gradients_match_burns_ops() {
        let flex = Device::flex();
        // Not a multiple of the task size, values well into both tails of the sigmoid.
        let shape = [3, 7, CHUNK / 5 + 3];
        let wide = Distribution::Normal(0.0, 4.0);
        let gate0 = Tensor::<3>::random(shape, wide, &flex);
        let up0 = Tensor::<3>::random(shape, wide, &flex);
        let w0 = Tensor::<3>::random(shape, wide, &flex);

        let got = swiglu(&gate0, &up0).expect("applies on flex");
        let want = silu(gate0.clone()) * up0.clone();
        // Relative to the largest output (in the hundreds here, where one f32 ulp is ~1e-5).
        let scale = want.clone().abs().max().into_scalar::<f32>().max(1.0);
        let diff = max_diff(got, want);
        assert!(
            diff < 1e-6 * scale,
            "forward differs by {diff} (largest {scale})"
        );

        let ad = flex.clone().autodiff();
        let grads_of = |use_kernel: bool| {
            let track = |t: &Tensor<3>| Tensor::<3>::from_data(t.to_data(), &ad).require_grad();
            let (gate, up) = (track(&gate0), track(&up0));
            let out = if use_kernel {
                swiglu(&gate, &up).expect("applies under autodiff")
            } else {
                silu(gate.clone()) * up.clone()
            };
            let grads = (out * Tensor::<3>::from_data(w0.to_data(), &ad))
                .sum()
                .backward();
            let g =
                |t: &Tensor<3>| Tensor::<3>::from_data(t.grad(&grads).unwrap().to_data(), &flex);
            (g(&gate), g(&up))
        };
        let ((got_g, got_u), (want_g, want_u)) = (grads_of(true), grads_of(false));
        let (dg, du) = (max_diff(got_g, want_g), max_diff(got_u, want_u));
        assert!(
            dg < 1e-4 && du < 1e-4,
            "gradients differ: gate {dg}, up {du}"
        );
    }

    #[test]
    fn declines_mixed_inputs() {
        let flex = Device::flex();
        let a = Tensor::<2>::zeros([2, 3], &flex);
        let b = Tensor::<2>::zeros([2, 3], &flex.clone().autodiff());
        assert!(swiglu(&a, &b).is_none());
        assert!(swiglu(&a, &Tensor::<2>::zeros([3, 2], &flex)).is_none());
    }
}
