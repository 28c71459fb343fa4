//! Matrix products with few rows (decode steps) on the flex CPU backend, without autodiff.
//!
//! Two things make burn-flex's matmul slow at the 1-128 rows of a decode step, both measured
//! here with a scratch benchmark of the gemm crate (end-to-end numbers: docs/benchmarks.md,
//! Rollouts):
//! - `gemm`'s own threading gains nothing from a second core: `32 x 576 x 1536` ran at
//!   111 GFLOP/s on one thread and 106 on two. [`small_matmul`] splits the weight's *columns*
//!   across rayon's threads instead, each task a single-threaded gemm call writing its own
//!   columns of the output (210-220 GFLOP/s for the same product).
//! - With so few rows every weight comes from memory once per step, and a row-major weight read
//!   a few columns at a time touches a new page on every row: the hardware prefetcher does not
//!   follow. [`PackedLinear`] repacks a weight once into panels of 32 columns, each panel one
//!   contiguous run, and an AVX-512 kernel streams them, prefetching the next panel: all of
//!   SmolLM2's matmuls for a 32-row step took 59 ms instead of 93 (the column split over gemm),
//!   before the prefetch.
//!
//! Larger products (prefill, training, autodiff) stay with burn, whose threading is good there,
//! and so do other backends; CPUs without AVX-512 get the column split over gemm.

use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use rayon::prelude::*;

use crate::cpu_math::sigmoid;
use crate::cpu_tensor::{contiguous_f32, from_f32, inference_f32, same_view};

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
    if !(1..=MAX_ROWS).contains(&rows) || w_in != d_in {
        return None;
    }
    let x = contiguous_f32(x)?;
    let w = inference_f32(weight)?;
    let (w_rs, w_cs) = strides_2d(&w)?;
    let (w_rs, w_cs) = (w_rs as isize, w_cs as isize);
    let w_data = &w.storage::<f32>()[w.layout().start_offset()..];
    let x_data = &x.storage::<f32>()[..rows * d_in];

    // The output starts as the bias (broadcast over rows) or zeros; gemm adds the product to it.
    let mut out = match bias {
        Some(b) => rows_of(&contiguous_f32(b)?, rows, d_out)?,
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
    Some(from_f32(out, [rows, d_out]))
}

/// Row and column strides of a 2-D view, when neither is negative.
fn strides_2d(t: &FlexTensor) -> Option<(usize, usize)> {
    match t.layout().strides() {
        &[rs, cs] if rs >= 0 && cs >= 0 => Some((rs as usize, cs as usize)),
        _ => None,
    }
}

/// `rows` copies of a `[width]` vector (the bias), one after another.
fn rows_of(v: &FlexTensor, rows: usize, width: usize) -> Option<Vec<f32>> {
    Some(v.storage::<f32>().get(..width)?.repeat(rows))
}

/// Columns per panel of a [`PackedLinear`]: two 16-lane AVX-512 registers.
const PANEL: usize = 32;

/// A weight `[d_in, d_out]` (and bias) repacked for decode-sized products: panel `p` holds
/// columns `32p..32p + 32` of every row, `d_in x 32` contiguous (the last panel zero-padded).
/// It keeps handles to the tensors it was packed from and serves only those: burn's tensors
/// never change in place, so a pack cannot go stale, it can only be asked about other weights.
#[derive(Debug, Clone)]
pub struct PackedLinear {
    panels: Vec<f32>,
    /// The weight packed (a handle sharing its storage).
    source: FlexTensor,
    /// The bias, row-major (a handle, or a copy if it was not contiguous).
    bias: Option<FlexTensor>,
    d_in: usize,
    d_out: usize,
}

impl PackedLinear {
    /// Packs `weight` (any strided view: the tied LM head is a transpose); `None` where the
    /// kernel cannot run (no AVX-512, autodiff, another backend, not f32).
    pub(crate) fn pack(weight: &Tensor<2>, bias: Option<&Tensor<1>>) -> Option<Self> {
        if !avx512::available() {
            return None;
        }
        let [d_in, d_out] = weight.dims();
        let w = inference_f32(weight)?;
        let (rs, cs) = strides_2d(&w)?;
        let data = &w.storage::<f32>()[w.layout().start_offset()..];
        let mut panels = vec![0f32; d_out.div_ceil(PANEL) * d_in * PANEL];
        panels
            .par_chunks_mut(d_in * PANEL)
            .enumerate()
            .for_each(|(p, panel)| {
                let first = p * PANEL;
                let width = PANEL.min(d_out - first);
                // Walk the source along its unit stride: rows of a plain weight, columns of a
                // transposed one.
                if cs == 1 {
                    for (k, dst) in panel.chunks_exact_mut(PANEL).enumerate() {
                        let src = &data[k * rs + first..][..width];
                        dst[..width].copy_from_slice(src);
                    }
                } else {
                    for j in 0..width {
                        let src = &data[(first + j) * cs..];
                        for k in 0..d_in {
                            panel[k * PANEL + j] = src[k * rs];
                        }
                    }
                }
            });
        let bias = match bias {
            None => None,
            Some(b) => Some(contiguous_f32(b)?),
        };
        Some(PackedLinear {
            panels,
            source: w,
            bias,
            d_in,
            d_out,
        })
    }

    /// `x [rows, d_in] @ weight (+ bias)` for up to [`MAX_ROWS`] rows, from the packed copy;
    /// `None` where `x` is not a flex f32 tensor without autodiff, or where `weight` and `bias`
    /// are not the tensors this was packed from (the caller then takes another path).
    pub(crate) fn forward(
        &self,
        x: &Tensor<2>,
        weight: &Tensor<2>,
        bias: Option<&Tensor<1>>,
    ) -> Option<Tensor<2>> {
        let [out] = PackedLinear::forward_together([(self, weight, bias)], x)?;
        Some(out)
    }

    /// [`PackedLinear::forward`] of several packs over the same `x` (attention's q, k and v) in
    /// one parallel pass over all their panels: one hand-over to rayon's threads instead of
    /// one per product, and no thread idles while another finishes a narrow product.
    pub(crate) fn forward_together<const N: usize>(
        products: [(&PackedLinear, &Tensor<2>, Option<&Tensor<1>>); N],
        x: &Tensor<2>,
    ) -> Option<[Tensor<2>; N]> {
        let [rows, d_in] = x.dims();
        if !(1..=MAX_ROWS).contains(&rows) {
            return None;
        }
        for (pack, weight, bias) in products {
            if d_in != pack.d_in || !pack.packed_from(weight, bias)? {
                return None;
            }
        }
        let x = contiguous_f32(x)?;
        let x_data = &x.storage::<f32>()[..rows * d_in];
        let mut outs = Vec::with_capacity(N);
        for (pack, _, _) in products {
            outs.push(match &pack.bias {
                Some(b) => rows_of(b, rows, pack.d_out)?,
                None => vec![0f32; rows * pack.d_out],
            });
        }
        let out_addrs: Vec<usize> = outs.iter_mut().map(|o| o.as_mut_ptr() as usize).collect();
        // Panels numbered across the products: product i's are `first[i]..first[i + 1]`.
        let mut first = vec![0];
        for (pack, _, _) in products {
            first.push(first.last().unwrap() + pack.panel_count());
        }
        let locate = |panel: usize| {
            let i = first.partition_point(|&f| f <= panel) - 1;
            (products[i].0, i, panel - first[i])
        };
        for_panel_ranges(first[N], |panels| {
            for panel in panels.clone() {
                let (pack, i, p) = locate(panel);
                let col = p * PANEL;
                let next = (panel + 1 < panels.end).then(|| {
                    let (next_pack, _, next_p) = locate(panel + 1);
                    next_pack.panel(next_p)
                });
                // SAFETY: `pack` only built packs where AVX-512F is available; each panel
                // writes only its own columns `col..col + width` of its product's output
                // (rows x d_out), and each task its own panels; `x_data` and the panel hold
                // what is read.
                unsafe {
                    avx512::panel(
                        x_data,
                        rows,
                        pack.panel(p),
                        (out_addrs[i] as *mut f32).add(col),
                        pack.d_out,
                        PANEL.min(pack.d_out - col),
                        pack.bias.is_some(),
                        next,
                    );
                }
            }
        });
        let mut outs = outs.into_iter();
        Some(products.map(|(pack, _, _)| from_f32(outs.next().unwrap(), [rows, pack.d_out])))
    }

    /// Whether this was packed from `weight` and `bias` (`None`: they are not flex tensors
    /// without autodiff).
    fn packed_from(&self, weight: &Tensor<2>, bias: Option<&Tensor<1>>) -> Option<bool> {
        Some(
            same_view(&self.source, &inference_f32(weight)?)
                && match (&self.bias, bias) {
                    (None, None) => true,
                    (Some(packed), Some(b)) => same_view(packed, &contiguous_f32(b)?),
                    _ => false,
                },
        )
    }

    /// `silu(x @ gate) * (x @ up)`, a SwiGLU MLP's activation, with `self` the packed gate and
    /// `up` the packed up projection (no biases): each task takes the same panels of both, so
    /// the two products and the activation are one parallel pass. `None` where either pack
    /// would decline its product, or the two do not match.
    pub(crate) fn forward_swiglu(
        &self,
        up: &PackedLinear,
        x: &Tensor<2>,
        gate_weight: &Tensor<2>,
        up_weight: &Tensor<2>,
    ) -> Option<Tensor<2>> {
        let [rows, d_in] = x.dims();
        if !(1..=MAX_ROWS).contains(&rows)
            || d_in != self.d_in
            || (up.d_in, up.d_out) != (self.d_in, self.d_out)
            || !self.packed_from(gate_weight, None)?
            || !up.packed_from(up_weight, None)?
        {
            return None;
        }
        let x = contiguous_f32(x)?;
        let x_data = &x.storage::<f32>()[..rows * d_in];
        let d_out = self.d_out;
        let mut out = vec![0f32; rows * d_out];
        let out_addr = out.as_mut_ptr() as usize;
        for_panel_ranges(self.panel_count(), |panels| {
            // One panel of each product, `rows x 32` each: they stay in L1 until combined.
            let mut gate = vec![0f32; rows * PANEL];
            let mut upv = vec![0f32; rows * PANEL];
            for p in panels.clone() {
                let col = p * PANEL;
                let width = PANEL.min(d_out - col);
                let next = (p + 1 < panels.end).then(|| self.panel(p + 1));
                // SAFETY: as in `forward`; the scratch panels are `rows x 32`.
                unsafe {
                    let (g, u) = (gate.as_mut_ptr(), upv.as_mut_ptr());
                    avx512::panel(
                        x_data,
                        rows,
                        self.panel(p),
                        g,
                        PANEL,
                        width,
                        false,
                        Some(up.panel(p)),
                    );
                    avx512::panel(x_data, rows, up.panel(p), u, PANEL, width, false, next);
                }
                for r in 0..rows {
                    let (g, u) = (&gate[r * PANEL..][..width], &upv[r * PANEL..][..width]);
                    // SAFETY: row `r` of `out` has columns `col..col + width`, written by this
                    // task alone.
                    let o = unsafe {
                        std::slice::from_raw_parts_mut(
                            (out_addr as *mut f32).add(r * d_out + col),
                            width,
                        )
                    };
                    for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                        *o = g * sigmoid(g) * u;
                    }
                }
            }
        });
        Some(from_f32(out, [rows, d_out]))
    }

    fn panel_count(&self) -> usize {
        self.d_out.div_ceil(PANEL)
    }

    /// Panel `p`: `d_in x 32` floats.
    fn panel(&self, p: usize) -> &[f32] {
        &self.panels[p * self.d_in * PANEL..(p + 1) * self.d_in * PANEL]
    }
}

/// Runs `f` on ranges of panels `0..n_panels`, four per thread of rayon's pool, in parallel.
fn for_panel_ranges(n_panels: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    let per_task = n_panels.div_ceil(4 * rayon::current_num_threads());
    (0..n_panels.div_ceil(per_task))
        .into_par_iter()
        .for_each(|task| f(task * per_task..n_panels.min(task * per_task + per_task)));
}

/// The AVX-512 kernel of [`PackedLinear`]: one panel times all rows.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::PANEL;
    use core::arch::x86_64::*;

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx512f")
    }

    /// `out[r, 0..width] (+)= sum_k x[r, k] * panel[k, 0..width]` for every row `r`. While the
    /// first rows run, the `next` panel is prefetched into L2, so that only the first panel of a
    /// task waits for memory.
    ///
    /// # Safety
    /// AVX-512F is available; `x` is `rows x k` row-major and `panel` is `k x 32`; `out` points
    /// at a row-major output with row stride `ldo` and `width <= 32` columns in bounds per row.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn panel(
        x: &[f32],
        rows: usize,
        panel: &[f32],
        out: *mut f32,
        ldo: usize,
        width: usize,
        accumulate: bool,
        next: Option<&[f32]>,
    ) {
        let k = panel.len() / PANEL;
        debug_assert!(next.is_none_or(|n| n.len() == panel.len()));
        debug_assert_eq!(x.len(), rows * k);
        // Lanes of the output's two registers that are inside it.
        let lanes = |n: usize| {
            if n >= 16 {
                0xffff
            } else {
                (1u32 << n) as u16 - 1
            }
        };
        let masks = (lanes(width), lanes(width.saturating_sub(16)));
        let mut r = 0;
        while r < rows {
            // Row blocks of 12, 8, 4, 2, 1: 12 rows x 2 registers is 24 accumulators of 32.
            let take = [12, 8, 4, 2, 1]
                .into_iter()
                .find(|&t| t <= rows - r)
                .unwrap();
            let (xr, outr) = (x[r * k..].as_ptr(), unsafe { out.add(r * ldo) });
            let p = panel.as_ptr();
            let ahead = match next {
                Some(n) if r == 0 => n.as_ptr(),
                _ => core::ptr::null(),
            };
            let io = (outr, ldo, masks, accumulate, ahead);
            unsafe {
                match take {
                    12 => block::<12>(xr, k, p, io),
                    8 => block::<8>(xr, k, p, io),
                    4 => block::<4>(xr, k, p, io),
                    2 => block::<2>(xr, k, p, io),
                    _ => block::<1>(xr, k, p, io),
                }
            }
            r += take;
        }
    }

    #[target_feature(enable = "avx512f")]
    /// `R` rows of `x` times one panel; `io` is the output (pointer, row stride, lane masks,
    /// accumulate) and the panel to prefetch (null: none).
    unsafe fn block<const R: usize>(
        x: *const f32,
        k: usize,
        panel: *const f32,
        io: (*mut f32, usize, (u16, u16), bool, *const f32),
    ) {
        let (out, ldo, (m0, m1), accumulate, ahead) = io;
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            if accumulate {
                for (r, a) in acc.iter_mut().enumerate() {
                    a[0] = _mm512_maskz_loadu_ps(m0, out.add(r * ldo));
                    a[1] = _mm512_maskz_loadu_ps(m1, out.add(r * ldo + 16));
                }
            }
            for kk in 0..k {
                if !ahead.is_null() {
                    let line = ahead.add(kk * PANEL) as *const i8;
                    _mm_prefetch::<_MM_HINT_T1>(line);
                    _mm_prefetch::<_MM_HINT_T1>(line.add(64));
                }
                let w0 = _mm512_loadu_ps(panel.add(kk * PANEL));
                let w1 = _mm512_loadu_ps(panel.add(kk * PANEL + 16));
                for (r, a) in acc.iter_mut().enumerate() {
                    let xb = _mm512_set1_ps(*x.add(r * k + kk));
                    a[0] = _mm512_fmadd_ps(xb, w0, a[0]);
                    a[1] = _mm512_fmadd_ps(xb, w1, a[1]);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                _mm512_mask_storeu_ps(out.add(r * ldo), m0, a[0]);
                _mm512_mask_storeu_ps(out.add(r * ldo + 16), m1, a[1]);
            }
        }
    }
}

/// Other architectures: nothing is packed, decode takes the column split over gemm.
#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    pub(super) fn available() -> bool {
        false
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn panel(
        _: &[f32],
        _: usize,
        _: &[f32],
        _: *mut f32,
        _: usize,
        _: usize,
        _: bool,
        _: Option<&[f32]>,
    ) {
        unreachable!("nothing is packed off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_tensor::max_diff;
    use burn::tensor::Distribution;

    fn random(shape: [usize; 2]) -> Tensor<2> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Device::flex())
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
    fn packed_weights_give_burns_product() {
        if !avx512::available() {
            return; // nothing is packed on this CPU: decode uses `small_matmul`, tested above
        }
        // Widths below, at and above a panel (32), not multiples of it; 1..=MAX_ROWS rows
        // through every row block (12, 8, 4, 2, 1).
        for (rows, d_in, d_out) in [
            (1, 8, 1),
            (7, 33, 5),
            (32, 64, 100),
            (27, 96, 1000),
            (128, 40, 257),
        ] {
            let x = random([rows, d_in]);
            let w = random([d_in, d_out]);
            let bias =
                Tensor::<1>::random([d_out], Distribution::Normal(0.0, 1.0), &Device::flex());
            let want = x.clone().matmul(w.clone());
            let plain = PackedLinear::pack(&w, None).expect("packs on flex with AVX-512");
            let got = plain.forward(&x, &w, None).unwrap();
            assert!(max_diff(got, want.clone()) < 1e-4, "{rows}x{d_in}x{d_out}");
            let biased = PackedLinear::pack(&w, Some(&bias)).unwrap();
            let got_b = biased.forward(&x, &w, Some(&bias)).unwrap();
            let want_b = want + bias.unsqueeze::<2>();
            assert!(max_diff(got_b, want_b) < 1e-4, "bias {rows}x{d_in}x{d_out}");

            let wt = random([d_out, d_in]).transpose();
            let transposed = PackedLinear::pack(&wt, None).unwrap();
            let got_t = transposed.forward(&x, &wt, None).unwrap();
            let want_t = x.clone().matmul(wt);
            assert!(
                max_diff(got_t, want_t) < 1e-4,
                "transposed {rows}x{d_in}x{d_out}"
            );
        }
        let w = random([16, 8]);
        let packed = PackedLinear::pack(&w, None).unwrap();
        assert!(
            packed
                .forward(&random([MAX_ROWS + 1, 16]), &w, None)
                .is_none()
        );
    }

    #[test]
    fn products_together_give_each_products_result() {
        if !avx512::available() {
            return;
        }
        // q, k, v-like widths (one under a panel), the first with a bias.
        let x = random([27, 40]);
        let ws = [random([40, 96]), random([40, 20]), random([40, 33])];
        let bias = Tensor::<1>::random([96], Distribution::Normal(0.0, 1.0), &Device::flex());
        let packs = [
            PackedLinear::pack(&ws[0], Some(&bias)).unwrap(),
            PackedLinear::pack(&ws[1], None).unwrap(),
            PackedLinear::pack(&ws[2], None).unwrap(),
        ];
        let got = PackedLinear::forward_together(
            [
                (&packs[0], &ws[0], Some(&bias)),
                (&packs[1], &ws[1], None),
                (&packs[2], &ws[2], None),
            ],
            &x,
        )
        .expect("applies");
        for (i, got) in got.into_iter().enumerate() {
            let mut want = x.clone().matmul(ws[i].clone());
            if i == 0 {
                want = want + bias.clone().unsqueeze::<2>();
            }
            assert!(max_diff(got, want) < 1e-4, "product {i}");
        }
        // One weight that is not its pack's: nothing is computed.
        let swapped = [(&packs[1], &ws[1], None), (&packs[2], &ws[1], None)];
        assert!(PackedLinear::forward_together(swapped, &x).is_none());
    }

    #[test]
    fn packed_swiglu_gives_burns_activation() {
        if !avx512::available() {
            return;
        }
        // Widths below, at and above a panel, not multiples of it.
        for (rows, d_in, d_ff) in [(1, 8, 5), (32, 64, 100), (27, 40, 257)] {
            let x = random([rows, d_in]);
            let (gate, up) = (random([d_in, d_ff]), random([d_in, d_ff]));
            let want = burn::tensor::activation::silu(x.clone().matmul(gate.clone()))
                * x.clone().matmul(up.clone());
            let (pg, pu) = (
                PackedLinear::pack(&gate, None).unwrap(),
                PackedLinear::pack(&up, None).unwrap(),
            );
            let got = pg.forward_swiglu(&pu, &x, &gate, &up).expect("applies");
            assert!(max_diff(got, want) < 1e-4, "{rows}x{d_in}x{d_ff}");
            // Weights in the wrong roles are not the ones packed.
            assert!(pg.forward_swiglu(&pu, &x, &up, &gate).is_none());
        }
    }

    #[test]
    fn a_pack_serves_only_the_tensors_it_was_packed_from() {
        if !avx512::available() {
            return;
        }
        let (x, w) = (random([4, 16]), random([16, 40]));
        let bias = Tensor::<1>::zeros([40], &Device::flex());
        let packed = PackedLinear::pack(&w, None).unwrap();
        assert!(
            packed.forward(&x, &w.clone(), None).is_some(),
            "a handle of the same weight"
        );
        // A weight with the same shape (an updated policy), or a bias the pack does not have.
        assert!(packed.forward(&x, &random([16, 40]), None).is_none());
        assert!(packed.forward(&x, &w, Some(&bias)).is_none());
    }

    #[test]
    fn declines_what_burn_should_do() {
        let w = random([16, 8]);
        assert!(small_matmul(&random([MAX_ROWS + 1, 16]), &w, None).is_none());
        let tracked = Tensor::<2>::zeros([4, 16], &Device::flex().autodiff());
        assert!(small_matmul(&tracked, &w, None).is_none());
    }
}
