//! RMSNorm as one CPU pass per row, with its own backward pass.
//!
//! burn's `RmsNorm` is a square, a mean, a square root, a division and a product, each a full
//! pass and a fresh buffer, and about twice as many in the backward pass; the model runs two
//! per layer. Here each row is read once and written once, and only its inverse RMS is kept.
//! With `r = 1 / sqrt(mean(x^2) + eps)`, `y = x * r * w`:
//! `dx = r * (g * w) - r^3 * x * mean(g * w * x)` and `dw = sum over rows of g * x * r`.

use burn::backend::Flex;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::nn::RmsNorm;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use crate::cpu_math::dot;
use crate::cpu_tensor::{contiguous, contiguous_f32, from_f32};

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 32;

/// `norm.forward(x)`, by the kernel on the flex backend (tracked or not), burn's ops elsewhere.
pub(crate) fn rms_norm<const D: usize>(norm: &RmsNorm, x: Tensor<D>) -> Tensor<D> {
    fused(norm, &x).unwrap_or_else(|| norm.forward(x))
}

fn fused<const D: usize>(norm: &RmsNorm, x: &Tensor<D>) -> Option<Tensor<D>> {
    let weight = norm.gamma.val();
    let shape = x.dims();
    let width = shape[D - 1];
    let on_flex = x.dtype() == DType::F32 && x.device().inner() == Device::flex();
    if !on_flex || weight.dims() != [width] || weight.dtype() != DType::F32 || width == 0 {
        return None;
    }
    let eps = norm.epsilon as f32;
    match (x.is_autodiff(), weight.is_autodiff()) {
        (false, false) => {
            let (xf, wf) = (contiguous_f32(x)?, contiguous_f32(&weight)?);
            let n = shape.iter().product();
            let (out, _) = forward(
                &xf.storage::<f32>()[..n],
                &wf.storage::<f32>()[..width],
                eps,
            );
            Some(from_f32(out, shape))
        }
        (true, true) => tracked(x, &weight, eps),
        _ => None,
    }
}

fn tracked<const D: usize>(x: &Tensor<D>, weight: &Tensor<1>, eps: f32) -> Option<Tensor<D>> {
    type Ad = Autodiff<Flex>;
    let shape = x.dims();
    let x = x.clone().try_into_primitive::<Ad>().ok()?;
    let w = weight.clone().try_into_primitive::<Ad>().ok()?;
    let flat = |t: &FlexTensor| (t.dtype() == DType::F32).then(|| contiguous(t.clone()));
    let (xf, wf) = (flat(x.primitive())?, flat(w.primitive())?);
    let prep = RmsNormBackward
        .prepare::<NoCheckpointing>([x.node(), w.node()])
        .compute_bound()
        .stateful();
    let n = shape.iter().product();
    let width = shape[D - 1];
    let (out, inv_rms) = forward(
        &xf.storage::<f32>()[..n],
        &wf.storage::<f32>()[..width],
        eps,
    );
    let out = FlexTensor::from_data(TensorData::new(out, shape));
    let result = match prep {
        OpsKind::Tracked(prep) => prep.finish(
            RmsNormState {
                x: xf,
                weight: wf,
                inv_rms: inv_rms.into(),
            },
            out,
        ),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Some(Tensor::from_primitive::<Ad>(result))
}

#[derive(Debug)]
struct RmsNormBackward;

/// The input and weight (contiguous) and each row's inverse RMS.
#[derive(Debug, Clone)]
struct RmsNormState {
    x: FlexTensor,
    weight: FlexTensor,
    inv_rms: std::sync::Arc<[f32]>,
}

impl Backward<Flex, 2> for RmsNormBackward {
    type State = RmsNormState;

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w] = ops.parents;
        let grad_out = contiguous(grads.consume::<Flex>(&ops.node));
        let s = ops.state;
        let shape = s.x.layout().shape().clone();
        let n = shape.num_elements();
        let width = s.weight.layout().shape().num_elements();
        let (dx, dw) = backward(
            &s.x.storage::<f32>()[..n],
            &s.weight.storage::<f32>()[..width],
            &s.inv_rms,
            &grad_out.storage::<f32>()[..n],
        );
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, shape)));
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dw, [width])));
        }
    }
}

/// The normalised rows and each row's inverse RMS.
fn forward(x: &[f32], weight: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let width = weight.len();
    let mut out = vec![0f32; x.len()];
    let mut inv_rms = vec![0f32; x.len() / width];
    out.par_chunks_mut(ROWS_PER_TASK * width)
        .zip(inv_rms.par_chunks_mut(ROWS_PER_TASK))
        .zip(x.par_chunks(ROWS_PER_TASK * width))
        .for_each(|((out, inv_rms), x)| {
            for ((y, r), x) in out
                .chunks_exact_mut(width)
                .zip(inv_rms.iter_mut())
                .zip(x.chunks_exact(width))
            {
                let mean_square = dot(x, x) / width as f32;
                *r = 1.0 / (mean_square + eps).sqrt();
                for ((y, &x), &w) in y.iter_mut().zip(x).zip(weight) {
                    *y = x * *r * w;
                }
            }
        });
    (out, inv_rms)
}

/// `(dx, dw)` given the output's gradient.
fn backward(x: &[f32], weight: &[f32], inv_rms: &[f32], grad_out: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let width = weight.len();
    let mut dx = vec![0f32; x.len()];
    let chunk = ROWS_PER_TASK * width;
    // Each task's share of dw, summed at the end in task order: the same sum whichever
    // threads ran the tasks (training runs resume bit for bit).
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .zip(grad_out.par_chunks(chunk))
        .zip(inv_rms.par_chunks(ROWS_PER_TASK))
        .map(|(((dx, x), g), inv_rms)| {
            let mut dw = vec![0f32; width];
            let mut gw = vec![0f32; width];
            for (((dx, x), g), &r) in dx
                .chunks_exact_mut(width)
                .zip(x.chunks_exact(width))
                .zip(g.chunks_exact(width))
                .zip(inv_rms)
            {
                gw.iter_mut()
                    .zip(g.iter().zip(weight))
                    .for_each(|(gw, (g, w))| *gw = g * w);
                let c = r * r * r * dot(&gw, x) / width as f32;
                for i in 0..width {
                    dx[i] = r * g[i] * weight[i] - c * x[i];
                    dw[i] += g[i] * x[i] * r;
                }
            }
            dw
        })
        .collect();
    let mut dw = vec![0f32; width];
    for part in &partials {
        dw.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    (dx, dw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_tensor::max_diff;
    use burn::nn::RmsNormConfig;
    use burn::tensor::Distribution;

    #[test]
    fn forward_and_gradients_match_burns_rms_norm() {
        let flex = Device::flex();
        let width = 40;
        // Not a multiple of the rows per task.
        let shape = [3, 37, width];
        let normal = Distribution::Normal(0.5, 2.0);
        let x0 = Tensor::<3>::random(shape, normal, &flex);
        let w0 = Tensor::<3>::random(shape, normal, &flex);
        let gamma = Tensor::<1>::random([width], normal, &flex);
        let norm_on = |dev: &Device| {
            let mut norm = RmsNormConfig::new(width).with_epsilon(1e-5).init(dev);
            norm.gamma = burn::module::Param::from_tensor(Tensor::from_data(gamma.to_data(), dev));
            norm
        };

        let norm = norm_on(&flex);
        let diff = max_diff(
            fused(&norm, &x0).expect("applies on flex"),
            norm.forward(x0.clone()),
        );
        assert!(diff < 1e-5, "forward differs by {diff}");

        let ad = flex.clone().autodiff();
        let grads_of = |use_kernel: bool| {
            let norm = norm_on(&ad);
            let x = Tensor::<3>::from_data(x0.to_data(), &ad).require_grad();
            let y = if use_kernel {
                fused(&norm, &x).expect("applies under autodiff")
            } else {
                norm.forward(x.clone())
            };
            let grads = (y * Tensor::<3>::from_data(w0.to_data(), &ad))
                .sum()
                .backward();
            let dx = Tensor::<3>::from_data(x.grad(&grads).unwrap().to_data(), &flex);
            let dw = norm.gamma.val().grad(&grads).unwrap();
            (dx, Tensor::<1>::from_data(dw.to_data(), &flex))
        };
        let ((dx, dw), (want_dx, want_dw)) = (grads_of(true), grads_of(false));
        let (ex, ew) = (max_diff(dx, want_dx), max_diff(dw, want_dw));
        assert!(
            ex < 1e-4 && ew < 1e-3,
            "gradients differ: x {ex}, weight {ew}"
        );
    }

    #[test]
    fn the_weight_gradient_is_the_same_sum_every_time() {
        // Many tasks, so that rayon's threads split them differently from call to call.
        let (rows, width) = (ROWS_PER_TASK * 64 + 5, 48);
        let x: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 7919) % 1000) as f32 / 997.0 - 0.5)
            .collect();
        let g: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 104_729) % 1000) as f32 / 991.0 - 0.5)
            .collect();
        let w: Vec<f32> = (0..width).map(|i| 1.0 + i as f32 / 100.0).collect();
        let (_, inv_rms) = forward(&x, &w, 1e-5);
        let (_, first) = backward(&x, &w, &inv_rms, &g);
        for _ in 0..20 {
            let (_, again) = backward(&x, &w, &inv_rms, &g);
            let same = first
                .iter()
                .zip(&again)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "dw changed between calls");
        }
    }
}
