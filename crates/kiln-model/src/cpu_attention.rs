//! Attention of one new query per row (decode steps) on the flex CPU backend, without autodiff.
//!
//! burn-flex's attention runs two small gemm calls per row and head; with one query they are
//! matrix-vector products whose packing and dispatch cost more than their arithmetic. Here one
//! task takes one row's K/V head and the query heads that share it (GQA), so each key and value
//! comes from memory once for the whole group: a decode step's keys and values do not fit in
//! any cache (190 MB per step for SmolLM2 at batch 32), so memory traffic sets this kernel's
//! speed, and the kernel prefetches ahead of it. Each key is loaded into registers once and
//! scored against every head of the group; values are taken in blocks small enough to stay in
//! L1 while each head, its output in registers, goes over them. Other CPUs keep burn's
//! attention.

use burn::backend::Flex;
use burn::prelude::*;
use rayon::prelude::*;

use crate::cpu_math::{exp, sum};
use crate::cpu_tensor::{contiguous, contiguous_f32, from_f32};

/// Values per block of the second pass: 32 rows of a 128-wide head are 16 KB, half of an L1
/// data cache.
#[cfg(target_arch = "x86_64")]
const KEY_BLOCK: usize = 32;

/// How many keys ahead of the one in use the first pass asks memory for (4 KB of 64-wide keys),
/// and how many of the next task's keys are asked for while a task ends.
const AHEAD: usize = 16;

/// Widest head the kernel takes, in 16-float registers (a head's output lives in registers).
const MAX_CHUNKS: usize = 8;

/// `softmax(q k^T / sqrt(head_dim)) v` for `q [batch, heads, 1, head_dim]` over the first
/// `used` slots of `k`, `v [batch, kv_heads, slots, head_dim]` (the rest is a cache's free room),
/// with `mask [batch, 1, 1, slots]` (true = hidden). `None` where it does not apply (more than
/// one query, autodiff, another backend, not f32, no AVX-512, a head size that is not a multiple
/// of 16 up to 128): the caller then uses burn's attention. A row whose keys are all hidden gets
/// zeros.
pub(crate) fn decode_attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<&Tensor<4, Bool>>,
    used: usize,
) -> Option<Tensor<4>> {
    let [b, h, s, hd] = q.dims();
    let [kb, kvh, slots, khd] = k.dims();
    if s != 1
        || kb != b
        || khd != hd
        || v.dims() != k.dims()
        || kvh == 0
        || h % kvh != 0
        || used > slots
        || !available(hd)
    {
        return None;
    }
    if mask.is_some_and(|m| m.dims() != [b, 1, 1, slots]) {
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
            let at = (row * kvh + kv) * slots * hd;
            // The next task's first keys (usually this thread's next task).
            let next_at = at + slots * hd;
            let heads = Heads {
                next_k: k.get(next_at..next_at + used.min(AHEAD) * hd),
                q: &q[(row * h + kv * group) * hd..][..group * hd],
                k: &k[at..at + used * hd],
                v: &v[at..at + used * hd],
                hidden: hidden.map(|m| &m[row * slots..row * slots + used]),
                head_dim: hd,
                scale,
            };
            heads.run(out);
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
    /// The first keys of the next task, asked for while this one ends.
    next_k: Option<&'a [f32]>,
    head_dim: usize,
    scale: f32,
}

impl Heads<'_> {
    /// Writes the heads' outputs into `out` (`[group, head_dim]`, zeros on entry).
    fn run(&self, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available` checked AVX-512F and that the head size is 16 x (1..=8).
        unsafe {
            match self.head_dim / 16 {
                1 => self.run_avx512::<1>(out),
                2 => self.run_avx512::<2>(out),
                3 => self.run_avx512::<3>(out),
                4 => self.run_avx512::<4>(out),
                5 => self.run_avx512::<5>(out),
                6 => self.run_avx512::<6>(out),
                7 => self.run_avx512::<7>(out),
                _ => self.run_avx512::<8>(out),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = out;
    }

    /// [`Heads::run`] for heads of `C` x 16 floats: every head's scores key by key (each key
    /// read once), softmax, then the weighted sum of the values in blocks of [`KEY_BLOCK`] keys
    /// (a block stays in L1 while each head, its output in registers, goes over it).
    ///
    /// Only visible keys are scored, packed densely in slot order: a row's visible keys are its
    /// tokens in order wherever padding puts them, so every sum below (the softmax's runs in 16
    /// lanes) adds the same numbers in the same order whatever batch the row is in.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `head_dim == 16 * C`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512<const C: usize>(&self, out: &mut [f32]) {
        use core::arch::x86_64::*;
        let hd = self.head_dim;
        let slots = self.k.len() / hd;
        let group = self.q.len() / hd;
        let visible: Vec<usize> = match self.hidden {
            Some(hidden) => (0..slots).filter(|&j| hidden[j] == 0).collect(),
            None => (0..slots).collect(),
        };
        let keys = visible.len();
        if keys == 0 {
            return; // every key hidden: zeros
        }
        let (k, v) = (self.k.as_ptr(), self.v.as_ptr());
        // The queries, scaled once.
        let q: Vec<f32> = self.q.iter().map(|&x| x * self.scale).collect();
        // Head g's scores at `[g * keys..]`, then its probabilities.
        let mut probs = vec![0f32; group * keys];
        for (i, &j) in visible.iter().enumerate() {
            // SAFETY (every pointer below): `k` and `v` hold `slots x hd` floats, `q` holds
            // `group x hd`; prefetches past them are hints, which never fault.
            unsafe {
                // Memory, not arithmetic, sets the pace: ask for a key a few rows ahead (into
                // L1) and for this key's value (into L2, for the second pass).
                let ahead = visible.get(i + AHEAD).copied().unwrap_or(j + AHEAD);
                prefetch::<C, _MM_HINT_T0>(k.wrapping_add(ahead * hd));
                prefetch::<C, _MM_HINT_T1>(v.wrapping_add(j * hd));
            }
            let mut key = [_mm512_setzero_ps(); C];
            for (c, kc) in key.iter_mut().enumerate() {
                *kc = unsafe { _mm512_loadu_ps(k.add(j * hd + 16 * c)) };
            }
            for g in 0..group {
                let mut acc = _mm512_setzero_ps();
                for (c, kc) in key.iter().enumerate() {
                    let qc = unsafe { _mm512_loadu_ps(q.as_ptr().add(g * hd + 16 * c)) };
                    acc = _mm512_fmadd_ps(qc, *kc, acc);
                }
                probs[g * keys + i] = _mm512_reduce_add_ps(acc);
            }
        }
        for g in 0..group {
            softmax_in_place(&mut probs[g * keys..(g + 1) * keys]);
        }
        // A task's first keys would wait for memory: ask for the next task's into L2 now.
        for row in self.next_k.iter().flat_map(|next| next.chunks_exact(hd)) {
            // SAFETY: a hint about memory inside `next_k`.
            unsafe { prefetch::<C, _MM_HINT_T1>(row.as_ptr()) };
        }
        for first in (0..keys).step_by(KEY_BLOCK) {
            let block = &visible[first..keys.min(first + KEY_BLOCK)];
            for g in 0..group {
                let p = &probs[g * keys + first..][..block.len()];
                let o = out[g * hd..(g + 1) * hd].as_mut_ptr();
                let mut acc = [_mm512_setzero_ps(); C];
                for (c, a) in acc.iter_mut().enumerate() {
                    // SAFETY: `out` holds `group x hd` floats.
                    *a = unsafe { _mm512_loadu_ps(o.add(16 * c)) };
                }
                for (&j, &p) in block.iter().zip(p) {
                    if p == 0.0 {
                        continue; // negligible: its value need not be read
                    }
                    let w = _mm512_set1_ps(p);
                    for (c, a) in acc.iter_mut().enumerate() {
                        // SAFETY: slot `j < slots`, chunk `c < C`.
                        let vc = unsafe { _mm512_loadu_ps(v.add(j * hd + 16 * c)) };
                        *a = _mm512_fmadd_ps(w, vc, *a);
                    }
                }
                for (c, a) in acc.iter().enumerate() {
                    // SAFETY: as above.
                    unsafe { _mm512_storeu_ps(o.add(16 * c), *a) };
                }
            }
        }
    }
}

/// Prefetches one key or value row (`16 C` floats, `C` cache lines) at `at`, into the cache
/// level `HINT` names (`_MM_HINT_T0`: L1, `_MM_HINT_T1`: L2).
///
/// # Safety
/// Only hints: the address need not be valid.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn prefetch<const C: usize, const HINT: i32>(at: *const f32) {
    for line in 0..C {
        core::arch::x86_64::_mm_prefetch::<HINT>(at.wrapping_add(16 * line) as *const i8);
    }
}

/// Turns the scores of visible keys into probabilities in place.
fn softmax_in_place(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    scores.iter_mut().for_each(|s| *s = exp(*s - max));
    let inv = 1.0 / sum(scores);
    scores.iter_mut().for_each(|s| *s *= inv);
}

/// Whether [`decode_attention`] runs here for heads of `head_dim`: its kernel is AVX-512
/// (elsewhere burn's runs).
pub(crate) fn available(head_dim: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    return head_dim.is_multiple_of(16)
        && (16..=16 * MAX_CHUNKS).contains(&head_dim)
        && is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (head_dim, MAX_CHUNKS);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_tensor::max_diff;
    use burn::tensor::Distribution;
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;

    #[test]
    fn matches_burns_attention_with_gqa_and_a_mask() {
        if !available(64) {
            return; // burn's attention runs on this CPU
        }
        // Head sizes of 1, 3, 4 and 8 registers; keys within one block and across three.
        for (hd, keys) in [(16, 37), (48, 5), (64, 70), (128, 37)] {
            matches_burns_attention(hd, keys);
        }
    }

    fn matches_burns_attention(hd: usize, keys: usize) {
        let dev = Device::flex();
        // 6 query heads over 2 K/V heads.
        let (b, h, kvh) = (3, 6, 2);
        let normal = Distribution::Normal(0.0, 1.0);
        let q = Tensor::<4>::random([b, h, 1, hd], normal, &dev);
        let k = Tensor::<4>::random([b, kvh, keys, hd], normal, &dev);
        let v = Tensor::<4>::random([b, kvh, keys, hd], normal, &dev);
        // Row 0 sees everything, row 1 every third key, row 2 only the last one.
        let hidden: Vec<bool> = (0..b * keys)
            .map(|i| match i / keys {
                0 => false,
                1 => !(i % keys).is_multiple_of(3),
                _ => i % keys != keys - 1,
            })
            .collect();
        let mask = Tensor::<4, Bool>::from_data(TensorData::new(hidden, [b, 1, 1, keys]), &dev);
        // The kernel's inputs have 9 more slots (a cache's free room), huge and not hidden:
        // only the `keys` used slots may count.
        let room = |t: Tensor<4>| Tensor::cat(vec![t, Tensor::full([b, kvh, 9, hd], 1e6, &dev)], 2);
        let (k_room, v_room) = (room(k.clone()), room(v.clone()));
        let mask_room = |m: Tensor<4, Bool>| {
            let visible = TensorData::new(vec![false; b * 9], [b, 1, 1, 9]);
            Tensor::cat(vec![m, Tensor::from_data(visible, &dev)], 3)
        };

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
            let m_room = m.clone().map(mask_room);
            let got = decode_attention(&q, &k_room, &v_room, m_room.as_ref(), keys)
                .expect("applies on flex");
            let diff = max_diff(got, want);
            assert!(
                diff < 1e-5,
                "head_dim {hd}, {keys} keys: max difference {diff} (mask: {})",
                m.is_some()
            );
        }
    }

    #[test]
    fn a_rows_output_does_not_depend_on_where_padding_puts_its_keys() {
        if !available(64) {
            return;
        }
        let dev = Device::flex();
        let (h, kvh, hd, real) = (3, 1, 64, 37);
        let normal = Distribution::Normal(0.0, 1.0);
        let q = Tensor::<4>::random([1, h, 1, hd], normal, &dev);
        let k = Tensor::<4>::random([1, kvh, real, hd], normal, &dev);
        let v = Tensor::<4>::random([1, kvh, real, hd], normal, &dev);
        // The same keys after 5 padding slots and with a hole of 11 slots after the 20th (a
        // gathered cache), the hidden slots holding other numbers.
        let spread = |t: &Tensor<4>| {
            let junk = |n| Tensor::<4>::random([1, kvh, n, hd], normal, &dev);
            Tensor::cat(
                vec![
                    junk(5),
                    t.clone().narrow(2, 0, 20),
                    junk(11),
                    t.clone().narrow(2, 20, real - 20),
                ],
                2,
            )
        };
        let slots = real + 16;
        let hidden: Vec<bool> = (0..slots).map(|j| j < 5 || (25..36).contains(&j)).collect();
        let mask = Tensor::<4, Bool>::from_data(TensorData::new(hidden, [1, 1, 1, slots]), &dev);
        let dense = decode_attention(&q, &k, &v, None, real).unwrap();
        let padded = decode_attention(&q, &spread(&k), &spread(&v), Some(&mask), slots).unwrap();
        assert_eq!(
            dense.into_data().try_to_vec::<f32>().unwrap(),
            padded.into_data().try_to_vec::<f32>().unwrap(),
            "bit for bit"
        );
    }

    #[test]
    fn declines_more_than_one_query() {
        let dev = Device::flex();
        let q = Tensor::<4>::zeros([1, 2, 3, 16], &dev);
        let kv = Tensor::<4>::zeros([1, 2, 5, 16], &dev);
        assert!(decode_attention(&q, &kv, &kv, None, 5).is_none());
        // Nor a head size the kernel does not take.
        let q = Tensor::<4>::zeros([1, 2, 1, 20], &dev);
        let kv = Tensor::<4>::zeros([1, 2, 5, 20], &dev);
        assert!(decode_attention(&q, &kv, &kv, None, 5).is_none());
    }
}
