//! Attention of one new query per row (decode steps) on the flex CPU backend, without autodiff.
//!
//! burn-flex's attention runs two small gemm calls per row and head; with one query they are
//! matrix-vector products whose packing and dispatch cost more than their arithmetic (12% of a
//! batch-32 decode step of SmolLM2 in `perf`; this kernel takes 10%). Here one task takes one
//! row's K/V head and the query heads that share it (GQA): scores, masked softmax, weighted sum
//! of the values, with AVX-512 dot products; other CPUs keep burn's attention.

use burn::backend::Flex;
use burn::prelude::*;
use rayon::prelude::*;

use crate::cpu_math::exp;
use crate::cpu_tensor::{contiguous, contiguous_f32, from_f32};

/// `softmax(q k^T / sqrt(head_dim)) v` for `q [batch, heads, 1, head_dim]` over
/// `k`, `v [batch, kv_heads, keys, head_dim]`, with `mask [batch, 1, 1, keys]` (true = hidden).
/// `None` where it does not apply (more than one query, autodiff, another backend, not f32, no
/// AVX-512, a head size that is not a multiple of 16): the caller then uses burn's attention.
/// A row whose keys are all hidden gets zeros.
pub(crate) fn decode_attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<&Tensor<4, Bool>>,
) -> Option<Tensor<4>> {
    let [b, h, s, hd] = q.dims();
    let [kb, kvh, keys, khd] = k.dims();
    if s != 1
        || kb != b
        || khd != hd
        || v.dims() != k.dims()
        || kvh == 0
        || h % kvh != 0
        || !available(hd)
    {
        return None;
    }
    if mask.is_some_and(|m| m.dims() != [b, 1, 1, keys]) {
        return None;
    }
    let (q, k, v) = (contiguous_f32(q)?, contiguous_f32(k)?, contiguous_f32(v)?);
    let mask = match mask {
        Some(m) => Some(contiguous(m.clone().try_into_primitive::<Flex>().ok()?)),
        None => None,
    };
    let (q, k, v) = (q.storage::<f32>(), k.storage::<f32>(), v.storage::<f32>());
    let hidden = mask.as_ref().map(|m| m.storage::<u8>());
    let group = h / kvh;
    let scale = 1.0 / (hd as f32).sqrt();

    let mut out = vec![0f32; b * h * hd];
    // One task per (row, K/V head): its `group` query heads, `group * hd` contiguous outputs.
    out.par_chunks_mut(group * hd)
        .enumerate()
        .for_each(|(task, out)| {
            let (row, kv) = (task / kvh, task % kvh);
            let at = (row * kvh + kv) * keys * hd;
            let heads = Heads {
                q: &q[(row * h + kv * group) * hd..][..group * hd],
                k: &k[at..at + keys * hd],
                v: &v[at..at + keys * hd],
                hidden: hidden.map(|m| &m[row * keys..(row + 1) * keys]),
                head_dim: hd,
                scale,
            };
            // SAFETY: `available` checked AVX-512F and the head size.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                heads.run(out)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (heads, out);
        });
    Some(from_f32(out, [b, h, 1, hd]))
}

/// One task's inputs: the query heads that share one row's K/V head.
struct Heads<'a> {
    /// `[group, head_dim]`.
    q: &'a [f32],
    /// `[keys, head_dim]` each.
    k: &'a [f32],
    v: &'a [f32],
    /// `[keys]`, nonzero = hidden.
    hidden: Option<&'a [u8]>,
    head_dim: usize,
    scale: f32,
}

impl Heads<'_> {
    /// Writes the heads' outputs into `out` (`[group, head_dim]`, zeros on entry).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `head_dim` is a multiple of 16.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run(&self, out: &mut [f32]) {
        use core::arch::x86_64::*;
        let hd = self.head_dim;
        let keys = self.k.len() / hd;
        let mut scores = vec![0f32; keys];
        for (q, out) in self.q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
            let mut max = f32::NEG_INFINITY;
            for (j, score) in scores.iter_mut().enumerate() {
                *score = if self.hidden.is_some_and(|m| m[j] != 0) {
                    f32::NEG_INFINITY
                } else {
                    let k = &self.k[j * hd..(j + 1) * hd];
                    let mut acc = _mm512_setzero_ps();
                    for (qc, kc) in q.chunks_exact(16).zip(k.chunks_exact(16)) {
                        // SAFETY: both chunks hold 16 floats.
                        let (qv, kv) =
                            unsafe { (_mm512_loadu_ps(qc.as_ptr()), _mm512_loadu_ps(kc.as_ptr())) };
                        acc = _mm512_fmadd_ps(qv, kv, acc);
                    }
                    _mm512_reduce_add_ps(acc) * self.scale
                };
                max = max.max(*score);
            }
            if max == f32::NEG_INFINITY {
                continue; // every key hidden: zeros
            }
            let mut total = 0.0;
            for score in scores.iter_mut() {
                *score = exp(*score - max);
                total += *score;
            }
            for (j, &p) in scores.iter().enumerate() {
                if p != 0.0 {
                    let w = _mm512_set1_ps(p / total);
                    let v = &self.v[j * hd..(j + 1) * hd];
                    for (oc, vc) in out.chunks_exact_mut(16).zip(v.chunks_exact(16)) {
                        // SAFETY: both chunks hold 16 floats.
                        unsafe {
                            let o = _mm512_loadu_ps(oc.as_ptr());
                            let o = _mm512_fmadd_ps(w, _mm512_loadu_ps(vc.as_ptr()), o);
                            _mm512_storeu_ps(oc.as_mut_ptr(), o);
                        }
                    }
                }
            }
        }
    }
}

/// Whether [`decode_attention`] runs here: its kernel is AVX-512 (elsewhere burn's runs).
fn available(head_dim: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    return head_dim.is_multiple_of(16) && is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;

    #[test]
    fn matches_burns_attention_with_gqa_and_a_mask() {
        if !available(64) {
            return; // burn's attention runs on this CPU
        }
        for hd in [16, 64] {
            matches_burns_attention(hd);
        }
    }

    fn matches_burns_attention(hd: usize) {
        let dev = Device::flex();
        // 6 query heads over 2 K/V heads; 37 keys.
        let (b, h, kvh, keys) = (3, 6, 2, 37);
        let normal = Distribution::Normal(0.0, 1.0);
        let q = Tensor::<4>::random([b, h, 1, hd], normal, &dev);
        let k = Tensor::<4>::random([b, kvh, keys, hd], normal, &dev);
        let v = Tensor::<4>::random([b, kvh, keys, hd], normal, &dev);
        // Row 0 sees everything, row 1 every third key, row 2 only the last one.
        let hidden: Vec<bool> = (0..b * keys)
            .map(|i| match i / keys {
                0 => false,
                1 => i % keys % 3 != 0,
                _ => i % keys != keys - 1,
            })
            .collect();
        let mask = Tensor::<4, Bool>::from_data(TensorData::new(hidden, [b, 1, 1, keys]), &dev);

        let expand = |t: Tensor<4>| {
            t.reshape([b, kvh, 1, keys, hd])
                .expand([b, kvh, h / kvh, keys, hd])
                .reshape([b, h, keys, hd])
        };
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: false,
        };
        for m in [None, Some(mask)] {
            let want = attention(
                q.clone(),
                expand(k.clone()),
                expand(v.clone()),
                m.clone().map(|m| m.expand([b, h, 1, keys])),
                None,
                options,
            );
            let got = decode_attention(&q, &k, &v, m.as_ref()).expect("applies on flex");
            let diff = (got - want).abs().max().into_scalar::<f32>();
            assert!(
                diff < 1e-5,
                "head_dim {hd}: max difference {diff} (mask: {})",
                m.is_some()
            );
        }
    }

    #[test]
    fn declines_more_than_one_query() {
        let dev = Device::flex();
        let q = Tensor::<4>::zeros([1, 2, 3, 16], &dev);
        let kv = Tensor::<4>::zeros([1, 2, 5, 16], &dev);
        assert!(decode_attention(&q, &kv, &kv, None).is_none());
        // Nor a head size the kernel does not take.
        let q = Tensor::<4>::zeros([1, 2, 1, 20], &dev);
        let kv = Tensor::<4>::zeros([1, 2, 5, 20], &dev);
        assert!(decode_attention(&q, &kv, &kv, None).is_none());
    }
}
