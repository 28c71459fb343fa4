//! Causal self-attention over whole sequences on the CPU (training, scoring, prefill), with its
//! own backward pass.
//!
//! burn's attention under autodiff runs as separate ops: every head's `[seq x seq]` scores,
//! the mask, the softmax and its backward each make a full pass over memory, and the
//! probabilities stay alive until the backward pass (about 135 ms per SmolLM2 layer at 8 x 320
//! tokens, 20% of a training step). Here one task per (row, head) walks its queries in blocks
//! of [`QUERY_BLOCK`]: scores only against keys at or before the block's last query (causal:
//! half the products), the softmax in the block's scratch buffer, and only each query's
//! log-sum-exp is kept. The backward pass recomputes the probabilities from it, as
//! FlashAttention does. K/V heads shared by several query heads (GQA) are never expanded:
//! one backward task per K/V head sums its query heads' gradients.
//!
//! Masking: key `j` is visible to query `i` when `j <= i` and key `j` is a real token of its
//! row. A query that sees no key (a padding position before a row's first real token) gets an
//! output of zeros and no gradient; the callers never read those positions.

use std::sync::Arc;

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

use crate::cpu_math::exp;
use crate::cpu_tensor::{contiguous, contiguous_f32, from_f32};

/// Queries per block: the block's scores (`QUERY_BLOCK x seq` floats) stay in the core's cache.
const QUERY_BLOCK: usize = 64;

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Dims {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    seq: usize,
    head_dim: usize,
}

impl Dims {
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
    fn head_len(&self) -> usize {
        self.seq * self.head_dim
    }
}

/// Causal attention of `q` `[batch, heads, seq, head_dim]` over `k`, `v`
/// `[batch, kv_heads, seq, head_dim]` (scale `1/sqrt(head_dim)`), `valid` `[batch, seq]` saying
/// which keys are real tokens (`None`: all). Differentiable when the inputs are tracked.
///
/// `None` where the kernel does not apply (not the flex backend, not f32, heads not a multiple
/// of kv_heads, a checkpointing autodiff graph): the caller keeps burn's attention.
pub(crate) fn causal_attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    valid: Option<&[bool]>,
) -> Option<Tensor<4>> {
    let [batch, heads, seq, head_dim] = q.dims();
    let [kb, kv_heads, ks, kd] = k.dims();
    let dims = Dims {
        batch,
        heads,
        kv_heads,
        seq,
        head_dim,
    };
    let shapes_fit = [kb, ks, kd] == [batch, seq, head_dim]
        && v.dims() == k.dims()
        && kv_heads > 0
        && heads.is_multiple_of(kv_heads)
        && valid.is_none_or(|m| m.len() == batch * seq);
    let on_flex = |t: &Tensor<4>| t.dtype() == DType::F32 && t.device().inner() == Device::flex();
    // Empty tensors stay with burn (a zero-sized chunk would panic in rayon).
    if !(shapes_fit && on_flex(q) && on_flex(k) && on_flex(v)) || seq * heads * head_dim == 0 {
        return None;
    }
    let valid: Option<Arc<[bool]>> = valid.map(Arc::from);
    if !q.is_autodiff() && !k.is_autodiff() && !v.is_autodiff() {
        let (q, k, v) = (contiguous_f32(q)?, contiguous_f32(k)?, contiguous_f32(v)?);
        let (out, _) = forward(
            dims,
            values(&q, &dims, heads),
            values(&k, &dims, kv_heads),
            values(&v, &dims, kv_heads),
            valid.as_deref(),
        );
        return Some(from_f32(out, [batch, heads, seq, head_dim]));
    }
    tracked(dims, q, k, v, valid)
}

/// The f32 values of a contiguous `[batch, n_heads, seq, head_dim]` flex tensor.
fn values<'a>(t: &'a FlexTensor, dims: &Dims, n_heads: usize) -> &'a [f32] {
    &t.storage::<f32>()[..dims.batch * n_heads * dims.head_len()]
}

/// The autodiff path: the forward pass on the inner flex tensors, then a graph node whose
/// backward is [`backward`].
fn tracked(
    dims: Dims,
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    valid: Option<Arc<[bool]>>,
) -> Option<Tensor<4>> {
    type Ad = Autodiff<Flex>;
    // All three in one graph (a checkpointing graph is another type: burn's attention then).
    if !(q.is_autodiff() && k.is_autodiff() && v.is_autodiff()) {
        return None;
    }
    let lift = |t: &Tensor<4>| t.clone().try_into_primitive::<Ad>().ok();
    let (q, k, v) = (lift(q)?, lift(k)?, lift(v)?);
    let flat = |t: &FlexTensor| (t.dtype() == DType::F32).then(|| contiguous(t.clone()));
    let (qf, kf, vf) = (
        flat(q.primitive())?,
        flat(k.primitive())?,
        flat(v.primitive())?,
    );
    let out_shape = [dims.batch, dims.heads, dims.seq, dims.head_dim];

    let prep = AttentionBackward
        .prepare::<NoCheckpointing>([q.node(), k.node(), v.node()])
        .compute_bound()
        .stateful();
    let (out, lse) = forward(
        dims,
        values(&qf, &dims, dims.heads),
        values(&kf, &dims, dims.kv_heads),
        values(&vf, &dims, dims.kv_heads),
        valid.as_deref(),
    );
    let out_flex = FlexTensor::from_data(TensorData::new(out, out_shape));
    let result = match prep {
        OpsKind::Tracked(prep) => prep.finish(
            AttentionState {
                dims,
                q: qf,
                k: kf,
                v: vf,
                out: out_flex.clone(),
                lse: Arc::from(lse),
                valid,
            },
            out_flex,
        ),
        OpsKind::UnTracked(prep) => prep.finish(out_flex),
    };
    Some(Tensor::from_primitive::<Ad>(result))
}

#[derive(Debug)]
struct AttentionBackward;

/// What the backward pass needs: the inputs, the output and each query's log-sum-exp.
#[derive(Debug, Clone)]
struct AttentionState {
    dims: Dims,
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    out: FlexTensor,
    lse: Arc<[f32]>,
    valid: Option<Arc<[bool]>>,
}

impl Backward<Flex, 3> for AttentionBackward {
    type State = AttentionState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_q, node_k, node_v] = ops.parents;
        let grad_out = contiguous(grads.consume::<Flex>(&ops.node));
        let s = ops.state;
        let d = s.dims;
        let (dq, dk, dv) = backward(
            d,
            values(&s.q, &d, d.heads),
            values(&s.k, &d, d.kv_heads),
            values(&s.v, &d, d.kv_heads),
            values(&s.out, &d, d.heads),
            values(&grad_out, &d, d.heads),
            &s.lse,
            s.valid.as_deref(),
        );
        let tensor = |data: Vec<f32>, heads: usize| {
            FlexTensor::from_data(TensorData::new(data, [d.batch, heads, d.seq, d.head_dim]))
        };
        if let Some(node) = node_q {
            grads.register::<Flex>(node.id, tensor(dq, d.heads));
        }
        if let Some(node) = node_k {
            grads.register::<Flex>(node.id, tensor(dk, d.kv_heads));
        }
        if let Some(node) = node_v {
            grads.register::<Flex>(node.id, tensor(dv, d.kv_heads));
        }
    }
}

/// Whether key `j` of batch row `b` is visible to query `i`.
#[inline]
fn visible(valid: Option<&[bool]>, seq: usize, b: usize, i: usize, j: usize) -> bool {
    j <= i && valid.is_none_or(|m| m[b * seq + j])
}

/// The attention output `[batch, heads, seq, head_dim]` and each query's log-sum-exp of its
/// scaled scores (`+inf` for a query that sees no key).
fn forward(
    d: Dims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    valid: Option<&[bool]>,
) -> (Vec<f32>, Vec<f32>) {
    let len = d.head_len();
    let mut out = vec![0f32; d.batch * d.heads * len];
    let mut lse = vec![0f32; d.batch * d.heads * d.seq];
    out.par_chunks_mut(len)
        .zip(lse.par_chunks_mut(d.seq))
        .enumerate()
        .for_each(|(task, (out, lse))| {
            let (b, h) = (task / d.heads, task % d.heads);
            let kv = b * d.kv_heads + h / d.group();
            let qh = &q[task * len..][..len];
            let (kh, vh) = (&k[kv * len..][..len], &v[kv * len..][..len]);
            let mut scores = vec![0f32; QUERY_BLOCK * d.seq];
            for first in (0..d.seq).step_by(QUERY_BLOCK) {
                let rows = QUERY_BLOCK.min(d.seq - first);
                let keys = first + rows;
                let block = Block { first, rows, keys };
                let p = &mut scores[..rows * keys];
                block.scores(d, qh, kh, p);
                for r in 0..rows {
                    let i = first + r;
                    let row = &mut p[r * keys..][..keys];
                    lse[i] = softmax_row(row, |j| visible(valid, d.seq, b, i, j));
                }
                // O = P V over the visible keys.
                matmul(
                    Mat::new(&mut out[first * d.head_dim..], rows, d.head_dim, d.head_dim),
                    false,
                    MatRef::rows(p, rows, keys, keys),
                    MatRef::rows(vh, keys, d.head_dim, d.head_dim),
                    1.0,
                );
            }
        });
    (out, lse)
}

/// The gradients of `q`, `k` and `v` given the output's gradient `grad_out`.
#[allow(clippy::too_many_arguments)]
fn backward(
    d: Dims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    grad_out: &[f32],
    lse: &[f32],
    valid: Option<&[bool]>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let len = d.head_len();
    let group = d.group();
    let mut dq = vec![0f32; d.batch * d.heads * len];
    let mut dk = vec![0f32; d.batch * d.kv_heads * len];
    let mut dv = vec![0f32; d.batch * d.kv_heads * len];
    // One task per (row, K/V head): it owns that head's dK and dV and its query heads' dQ.
    dq.par_chunks_mut(group * len)
        .zip(dk.par_chunks_mut(len).zip(dv.par_chunks_mut(len)))
        .enumerate()
        .for_each(|(task, (dq, (dk, dv)))| {
            let b = task / d.kv_heads;
            let (kh, vh) = (&k[task * len..][..len], &v[task * len..][..len]);
            let mut probs = vec![0f32; QUERY_BLOCK * d.seq];
            let mut dprobs = vec![0f32; QUERY_BLOCK * d.seq];
            let mut row_dot = [0f32; QUERY_BLOCK];
            for g in 0..group {
                let head = task * group + g;
                let span = head * len..(head + 1) * len;
                let (qh, oh) = (&q[span.clone()], &out[span.clone()]);
                let doh = &grad_out[span];
                let lse_h = &lse[head * d.seq..][..d.seq];
                let dq_h = &mut dq[g * len..][..len];
                for first in (0..d.seq).step_by(QUERY_BLOCK) {
                    let rows = QUERY_BLOCK.min(d.seq - first);
                    let keys = first + rows;
                    let block = Block { first, rows, keys };
                    let p = &mut probs[..rows * keys];
                    let dp = &mut dprobs[..rows * keys];
                    // P again, from the scores and the saved log-sum-exp.
                    block.scores(d, qh, kh, p);
                    for r in 0..rows {
                        let i = first + r;
                        let m = lse_h[i];
                        for (j, x) in p[r * keys..][..keys].iter_mut().enumerate() {
                            *x = if visible(valid, d.seq, b, i, j) {
                                exp(*x - m)
                            } else {
                                0.0
                            };
                        }
                        let o = &oh[i * d.head_dim..][..d.head_dim];
                        let go = &doh[i * d.head_dim..][..d.head_dim];
                        row_dot[r] = o.iter().zip(go).map(|(a, b)| a * b).sum();
                    }
                    let go_block =
                        MatRef::rows(&doh[first * d.head_dim..], rows, d.head_dim, d.head_dim);
                    // dP = dO V^T, then dS = P * (dP - rowsum(dO * O)) in place.
                    matmul(
                        Mat::new(dp, rows, keys, keys),
                        false,
                        go_block,
                        MatRef::transposed(vh, d.head_dim, keys, d.head_dim),
                        1.0,
                    );
                    for r in 0..rows {
                        let (pr, dpr) = (&p[r * keys..][..keys], &mut dp[r * keys..][..keys]);
                        for (ds, &pv) in dpr.iter_mut().zip(pr) {
                            *ds = pv * (*ds - row_dot[r]);
                        }
                    }
                    let ds = MatRef::rows(dp, rows, keys, keys);
                    // dQ = scale dS K (each query block written once).
                    matmul(
                        Mat::new(
                            &mut dq_h[first * d.head_dim..],
                            rows,
                            d.head_dim,
                            d.head_dim,
                        ),
                        false,
                        ds,
                        MatRef::rows(kh, keys, d.head_dim, d.head_dim),
                        d.scale(),
                    );
                    // dK += scale dS^T Q, dV += P^T dO over the visible keys.
                    matmul(
                        Mat::new(dk, keys, d.head_dim, d.head_dim),
                        true,
                        MatRef::transposed(dp, keys, rows, keys),
                        MatRef::rows(&qh[first * d.head_dim..], rows, d.head_dim, d.head_dim),
                        d.scale(),
                    );
                    matmul(
                        Mat::new(dv, keys, d.head_dim, d.head_dim),
                        true,
                        MatRef::transposed(p, keys, rows, keys),
                        go_block,
                        1.0,
                    );
                }
            }
        });
    (dq, dk, dv)
}

/// A block of queries `first..first + rows` and the keys `0..keys` they may see.
struct Block {
    first: usize,
    rows: usize,
    keys: usize,
}

impl Block {
    /// The block's scaled scores `[rows, keys]` into `dst`.
    fn scores(&self, d: Dims, q: &[f32], k: &[f32], dst: &mut [f32]) {
        matmul(
            Mat::new(dst, self.rows, self.keys, self.keys),
            false,
            MatRef::rows(
                &q[self.first * d.head_dim..],
                self.rows,
                d.head_dim,
                d.head_dim,
            ),
            MatRef::transposed(k, d.head_dim, self.keys, d.head_dim),
            d.scale(),
        );
    }
}

/// Softmax of one row of scores in place over the keys `visible` admits (the others get 0);
/// returns the log-sum-exp, `+inf` (and a row of zeros) when no key is visible.
fn softmax_row(row: &mut [f32], visible: impl Fn(usize) -> bool) -> f32 {
    let mut max = f32::NEG_INFINITY;
    for (j, x) in row.iter_mut().enumerate() {
        if visible(j) {
            max = max.max(*x);
        } else {
            *x = f32::NEG_INFINITY;
        }
    }
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return f32::INFINITY;
    }
    for x in row.iter_mut() {
        *x = exp(*x - max);
    }
    let sum: f32 = row.iter().sum();
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
    max + sum.ln()
}

/// A writable `rows x cols` matrix with row stride `stride` (unit column stride).
struct Mat<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    stride: usize,
}

impl<'a> Mat<'a> {
    fn new(data: &'a mut [f32], rows: usize, cols: usize, stride: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            stride,
        }
    }
}

/// A read-only `rows x cols` matrix at (row, column) strides.
#[derive(Clone, Copy)]
struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major, `stride` floats between rows.
    fn rows(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: stride,
            col_stride: 1,
        }
    }
    /// The transpose of a row-major `[cols, rows]` matrix with `stride` floats between its rows.
    fn transposed(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: 1,
            col_stride: stride,
        }
    }
    /// One past the last element it reads.
    fn extent(&self) -> usize {
        (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride + 1
    }
}

/// `dst = (accumulate ? dst : 0) + alpha * lhs @ rhs`, single-threaded (the callers run one task
/// per head on every core).
fn matmul(dst: Mat<'_>, accumulate: bool, lhs: MatRef<'_>, rhs: MatRef<'_>, alpha: f32) {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    assert!(
        lhs.rows == m && rhs.rows == k && rhs.cols == n,
        "matmul shapes"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst.data[r * dst.stride..][..n].fill(0.0);
            }
        }
        return;
    }
    assert!(
        (m - 1) * dst.stride + n <= dst.data.len()
            && lhs.extent() <= lhs.data.len()
            && rhs.extent() <= rhs.data.len(),
        "matmul operand out of bounds"
    );
    // SAFETY: the assert above keeps every element gemm reads or writes inside the slices, and
    // `dst` is borrowed mutably, so nothing else aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            dst.stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_tensor::max_diff;
    use burn::tensor::Distribution;
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;

    /// burn's attention with the same causal + padding mask, K/V expanded to every head.
    fn reference(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, valid: &[bool]) -> Tensor<4> {
        let [b, h, s, hd] = q.dims();
        let kvh = k.dims()[1];
        let expand = |t: Tensor<4>| {
            t.reshape([b, kvh, 1, s, hd])
                .expand([b, kvh, h / kvh, s, hd])
                .reshape([b, h, s, hd])
        };
        let hidden: Vec<bool> = (0..b * s * s)
            .map(|n| {
                let (row, i, j) = (n / (s * s), n / s % s, n % s);
                !visible(Some(valid), s, row, i, j)
            })
            .collect();
        let mask = Tensor::<4, Bool>::from_data(TensorData::new(hidden, [b, 1, s, s]), &q.device())
            .expand([b, h, s, s]);
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: false,
        };
        attention(q, expand(k), expand(v), Some(mask), None, options)
    }

    /// Row 0 is all real tokens, row 1 left-padded by 5 (its first queries see no key), row 2
    /// right-padded by 9; 70 tokens cross a query block boundary.
    fn padded_rows(b: usize, s: usize) -> Vec<bool> {
        (0..b * s)
            .map(|n| match n / s {
                0 => true,
                1 => n % s >= 5,
                _ => n % s < s - 9,
            })
            .collect()
    }

    #[test]
    fn forward_and_gradients_match_burns_attention() {
        let (b, h, kvh, s, hd) = (3, 6, 2, 70, 16);
        let valid = padded_rows(b, s);
        let normal = Distribution::Normal(0.0, 1.0);
        let flex = Device::flex();
        let q0 = Tensor::<4>::random([b, h, s, hd], normal, &flex);
        let k0 = Tensor::<4>::random([b, kvh, s, hd], normal, &flex);
        let v0 = Tensor::<4>::random([b, kvh, s, hd], normal, &flex);
        // Weights on the output so every position's gradient differs; padding queries
        // (which see no key) are left out: their output is defined only as zeros here.
        let w0 = Tensor::<4>::random([b, h, s, hd], normal, &flex);
        let real_query: Vec<f32> = (0..b * s)
            .map(|n| (n / s != 1 || n % s >= 5) as u8 as f32)
            .collect();
        let real_query =
            Tensor::<1>::from_floats(real_query.as_slice(), &flex).reshape([b, 1, s, 1]);
        let w0 = w0 * real_query;

        // Inference: the untracked kernel.
        let got = causal_attention(&q0, &k0, &v0, Some(&valid)).expect("applies on flex");
        let want = reference(q0.clone(), k0.clone(), v0.clone(), &valid);
        let diff = max_diff(got * w0.clone(), want * w0.clone());
        assert!(diff < 1e-5, "forward differs by {diff}");

        // Training: gradients of sum(w * attention(q, k, v)).
        let ad = flex.clone().autodiff();
        let grads_of = |use_kernel: bool| {
            let track = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), &ad).require_grad();
            let (q, k, v) = (track(&q0), track(&k0), track(&v0));
            let out = if use_kernel {
                causal_attention(&q, &k, &v, Some(&valid)).expect("applies under autodiff")
            } else {
                reference(q.clone(), k.clone(), v.clone(), &valid)
            };
            let w = Tensor::<4>::from_data(w0.to_data(), &ad);
            let grads = (out * w).sum().backward();
            let g = |t: &Tensor<4>| {
                let g = t.grad(&grads).expect("a gradient");
                Tensor::<4>::from_data(g.to_data(), &flex)
            };
            (g(&q), g(&k), g(&v))
        };
        let (gq, gk, gv) = grads_of(true);
        let (wq, wk, wv) = grads_of(false);
        for (name, got, want) in [("q", gq, wq), ("k", gk, wk), ("v", gv, wv)] {
            let diff = max_diff(got, want);
            assert!(diff < 1e-4, "d{name} differs by {diff}");
        }
    }

    #[test]
    fn a_query_that_sees_no_key_gets_zeros_and_no_gradient() {
        let flex = Device::flex();
        let (b, h, s, hd) = (1, 2, 4, 8);
        // The first two tokens are padding: queries 0 and 1 see nothing.
        let valid = [false, false, true, true];
        let ad = flex.autodiff();
        let q = Tensor::<4>::ones([b, h, s, hd], &ad).require_grad();
        let kv = Tensor::<4>::ones([b, h, s, hd], &ad).require_grad();
        let out = causal_attention(&q, &kv, &kv, Some(&valid)).expect("applies");
        let rows: Vec<f32> = out
            .clone()
            .sum_dim(3)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(&rows[..4], &[0.0, 0.0, hd as f32, hd as f32]);
        let grads = out.sum().backward();
        let gq: Vec<f32> = q
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(gq.iter().all(|g| g.is_finite()));
        assert!(gq[..2 * hd].iter().all(|&g| g == 0.0));
    }

    #[test]
    fn declines_what_it_cannot_do() {
        let flex = Device::flex();
        // 4 query heads over 3 K/V heads.
        let q = Tensor::<4>::zeros([1, 4, 3, 16], &flex);
        let kv = Tensor::<4>::zeros([1, 3, 3, 16], &flex);
        assert!(causal_attention(&q, &kv, &kv, None).is_none());
        // A mask of the wrong size.
        let kv = Tensor::<4>::zeros([1, 2, 3, 16], &flex);
        assert!(causal_attention(&q, &kv, &kv, Some(&[true; 5])).is_none());
    }
}
