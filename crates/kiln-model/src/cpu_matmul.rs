//! Matrix products with few rows (decode steps) on the flex CPU backend, without autodiff.
//!
//! burn-flex hands every matmul to `gemm`, whose own threading gains nothing from a second core
//! when the left side has the 8-128 rows of a decode step: `32 x 576 x 1536` ran at 111 GFLOP/s
//! on one thread and 106 on two here. This module splits the weight's *columns* across rayon's
//! threads instead, each slice a single-threaded gemm call writing its own columns of the
//! output: 210-220 GFLOP/s on two cores for the same product (docs/benchmarks.md, "Decode
//! matmuls"). Larger products (prefill, training, autodiff) stay with burn, whose threading is
//! good there, and so do other backends.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

/// Rows up to which the column split is used; above it gemm's own threading is as fast.
pub(crate) const MAX_ROWS: usize = 128;

/// Narrowest column slice handed to one task (a multiple of the AVX-512 width).
const MIN_SLICE: usize = 64;

/// `x [rows, d_in] @ weight [d_in, d_out] (+ bias)` by the column split, or `None` where it does
/// not apply (autodiff, another backend, not f32, more than [`MAX_ROWS`] rows): the caller then
/// uses burn's matmul. `weight` may be any strided view (the tied LM head is a transpose).
pub(crate) fn small_matmul(
    x: &Tensor<2>,
    weight: &Tensor<2>,
    bias: Option<&Tensor<1>>,
) -> Option<Tensor<2>> {
    let [rows, d_in] = x.dims();
    let [w_in, d_out] = weight.dims();
    if rows == 0
        || rows > MAX_ROWS
        || w_in != d_in
        || x.is_autodiff()
        || weight.is_autodiff()
        || x.dtype() != DType::F32
        || weight.dtype() != DType::F32
        || x.device().inner() != Device::flex()
    {
        return None;
    }
    let x = flex(x)?;
    let x = if x.is_contiguous() {
        x
    } else {
        x.to_contiguous()
    };
    let w = flex(weight)?;
    let (w_rs, w_cs) = match w.layout().strides() {
        &[rs, cs] if rs >= 0 && cs >= 0 => (rs, cs),
        _ => return None,
    };
    let w_data = &w.storage::<f32>()[w.layout().start_offset()..];
    let x_data = &x.storage::<f32>()[x.layout().start_offset()..];

    // The output starts as the bias (broadcast over rows) or zeros; gemm adds the product to it.
    let mut out = match bias.map(flex) {
        Some(Some(b)) if b.is_contiguous() && b.dtype() == DType::F32 => {
            let b = &b.storage::<f32>()[b.layout().start_offset()..][..d_out];
            b.repeat(rows)
        }
        Some(_) => return None,
        None => vec![0f32; rows * d_out],
    };
    let read_out = bias.is_some();

    let tasks = 4 * rayon::current_num_threads();
    let slice = d_out.div_ceil(tasks).next_multiple_of(16).max(MIN_SLICE);
    let out_addr = out.as_mut_ptr() as usize;
    (0..d_out.div_ceil(slice)).into_par_iter().for_each(|task| {
        let first = task * slice;
        let width = slice.min(d_out - first);
        // SAFETY: each task writes only columns `first..first + width` of `out` (rows x d_out,
        // row-major), disjoint from every other task's; the reads stay inside `x` (rows x d_in,
        // contiguous) and `w` (d_in x d_out at the strides of its layout).
        unsafe {
            gemm::gemm(
                rows,
                width,
                d_in,
                (out_addr as *mut f32).add(first),
                1,
                d_out as isize,
                read_out,
                x_data.as_ptr(),
                1,
                d_in as isize,
                w_data.as_ptr().offset(first as isize * w_cs),
                w_cs,
                w_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
    let out = FlexTensor::from_data(TensorData::new(out, [rows, d_out]));
    Some(Tensor::from_primitive::<Flex>(out))
}

/// The flex primitive behind a tensor (a cheap handle: the storage is shared).
fn flex<const D: usize>(t: &Tensor<D>) -> Option<FlexTensor> {
    t.clone().try_into_primitive::<Flex>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn random(shape: [usize; 2]) -> Tensor<2> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Device::flex())
    }

    fn max_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    #[test]
    fn matches_burn_matmul_for_plain_transposed_and_biased_weights() {
        // Widths that are and are not multiples of a slice, down to one column; 1..=MAX_ROWS rows.
        for (rows, d_in, d_out) in [
            (1, 8, 1),
            (7, 33, 5),
            (32, 64, 100),
            (32, 96, 1000),
            (128, 40, 257),
        ] {
            let x = random([rows, d_in]);
            let w = random([d_in, d_out]);
            let want = x.clone().matmul(w.clone());
            let got = small_matmul(&x, &w, None).expect("applies on flex");
            assert_eq!(got.dims(), [rows, d_out]);
            assert!(max_diff(got, want.clone()) < 1e-4, "{rows}x{d_in}x{d_out}");

            // A transposed view (the tied LM head), not copied first.
            let wt = random([d_out, d_in]);
            let want_t = x.clone().matmul(wt.clone().transpose());
            let got_t = small_matmul(&x, &wt.transpose(), None).unwrap();
            assert!(
                max_diff(got_t, want_t) < 1e-4,
                "transposed {rows}x{d_in}x{d_out}"
            );

            let bias =
                Tensor::<1>::random([d_out], Distribution::Normal(0.0, 1.0), &Device::flex());
            let want_b = want + bias.clone().unsqueeze::<2>();
            let got_b = small_matmul(&x, &w, Some(&bias)).unwrap();
            assert!(max_diff(got_b, want_b) < 1e-4, "bias {rows}x{d_in}x{d_out}");
        }
    }

    #[test]
    fn declines_what_burn_should_do() {
        let w = random([16, 8]);
        assert!(small_matmul(&random([MAX_ROWS + 1, 16]), &w, None).is_none());
        let tracked = Tensor::<2>::zeros([4, 16], &Device::flex().autodiff());
        assert!(small_matmul(&tracked, &w, None).is_none());
    }
}
