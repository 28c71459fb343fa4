//! Host-fused kernel of the analytic loss gradient for CPU backends (flex).
//!
//! On a CPU, burn's element-wise ops each allocate a fresh `[chunk x V]` buffer and make a full
//! memory pass (~2-5 ns per element; `exp` ~5 ns). This kernel takes the chunk's logits buffer
//! (zero-copy when uniquely owned), and in two fused row passes (parallel over rows) computes the
//! log-sum-exp, the token log-probs, the global entropy or the TRE trust region (one heap scan),
//! and then overwrites the buffer IN PLACE with `dL/dz`. The exponential is a vectorisable
//! Cephes-style `expf` (about 1 ulp). Numerically it matches the device path (golden tests run
//! both).

use rayon::prelude::*;

use crate::entropy::{EntropyReg, top_m_row, tre_p_keep};

/// `exp(x)` for `x <= 88`, Cephes polynomial, branch-free so loops vectorise. Inputs below -87
/// return ~`exp(-87)` (callers only need `exp` of non-positive shifted logits, where such
/// values are negligible against the row's maximum term 1).
#[inline(always)]
pub(crate) fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const MAGIC: f32 = 12582912.0; // 1.5 * 2^23: round-to-nearest trick
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let r2 = r * r;
    let mut y = 1.987_569_2e-4f32;
    y = y * r + 1.398_199_9e-3;
    y = y * r + 8.333_452e-3;
    y = y * r + 4.166_579_6e-2;
    y = y * r + 1.666_666_5e-1;
    y = y * r + 0.5;
    let y = y * r2 + r + 1.0;
    y * f32::from_bits(((ni + 127) as u32) << 23)
}

fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut it = row.chunks_exact(8);
    for c in &mut it {
        for k in 0..8 {
            lanes[k] = if c[k] > lanes[k] { c[k] } else { lanes[k] };
        }
    }
    let mut m = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &v in it.remainder() {
        m = m.max(v);
    }
    m
}

/// `(sum exp(z - m), sum exp(z - m) * (z - m))` with 8 f32 lanes folded into f64 every 512 values.
fn row_sum_exp(row: &[f32], m: f32, with_z: bool) -> (f64, f64) {
    let (mut s, mut sz) = (0.0f64, 0.0f64);
    for block in row.chunks(512) {
        let mut ls = [0.0f32; 8];
        let mut lz = [0.0f32; 8];
        let mut it = block.chunks_exact(8);
        if with_z {
            for c in &mut it {
                for k in 0..8 {
                    let e = exp_fast(c[k] - m);
                    ls[k] += e;
                    lz[k] += e * (c[k] - m);
                }
            }
        } else {
            for c in &mut it {
                for k in 0..8 {
                    ls[k] += exp_fast(c[k] - m);
                }
            }
        }
        for &v in it.remainder() {
            let e = exp_fast(v - m);
            ls[0] += e;
            lz[0] += e * (v - m);
        }
        s += ls.iter().map(|&x| x as f64).sum::<f64>();
        if with_z {
            sz += lz.iter().map(|&x| x as f64).sum::<f64>();
        }
    }
    (s, sz)
}

/// Per-row results of the first pass.
pub(crate) struct RowStats {
    pub lse: f64,
    pub logp: f32,
    /// Global H or TRE's H_hat (0 without a regulariser).
    pub term: f32,
    /// TRE: selected columns and `d H_hat / d z` on them.
    pub region: Option<(Vec<u32>, Vec<f32>)>,
}

fn region_stats(vals: &[f32], keep: &[bool], vocab: usize) -> (f64, Vec<f32>) {
    let v0 = vals[0] as f64;
    let e: Vec<f64> = vals
        .iter()
        .zip(keep)
        .map(|(&v, &k)| if k { (v as f64 - v0).exp() } else { 0.0 })
        .collect();
    let s: f64 = e.iter().sum();
    let ls = s.ln();
    let size = keep.iter().filter(|&&k| k).count();
    let mut h = 0.0;
    for (i, &v) in vals.iter().enumerate() {
        if keep[i] {
            let q = e[i] / s;
            h -= q * (v as f64 - v0 - ls);
        }
    }
    let scale = if size > 1 {
        (vocab as f64).ln() / (size as f64).ln()
    } else {
        0.0
    };
    let dh = vals
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if keep[i] {
                let q = e[i] / s;
                (-q * ((v as f64 - v0 - ls) + h) * scale) as f32
            } else {
                0.0
            }
        })
        .collect();
    (h * scale, dh)
}

/// First pass over `[n, v]` logits.
pub(crate) fn row_stats(z: &[f32], v: usize, targets: &[i64], reg: &EntropyReg) -> Vec<RowStats> {
    z.par_chunks(v)
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            let m = row_max(row);
            let global = matches!(reg, EntropyReg::Global { .. });
            let (s, sz) = row_sum_exp(row, m, global);
            let lse = m as f64 + s.ln();
            let logp = (row[t as usize] as f64 - lse) as f32;
            let (term, region) = match reg {
                EntropyReg::None => (0.0, None),
                // H = lse - E_p[z] = ln s - E_p[z - m]
                EntropyReg::Global { .. } => ((s.ln() - sz / s) as f32, None),
                EntropyReg::TreK { k, .. } => {
                    let top = top_m_row(row, (*k).clamp(1, v));
                    let vals: Vec<f32> = top.iter().map(|c| c.0).collect();
                    let (h, dh) = region_stats(&vals, &vec![true; vals.len()], v);
                    (h as f32, Some((top.iter().map(|c| c.1).collect(), dh)))
                }
                EntropyReg::TreP { p, max_region, .. } => {
                    let top = top_m_row(row, (*max_region).clamp(1, v));
                    let vals: Vec<f32> = top.iter().map(|c| c.0).collect();
                    let probs: Vec<f64> = vals.iter().map(|&x| (x as f64 - lse).exp()).collect();
                    let keep = tre_p_keep(&probs, *p);
                    let (h, dh) = region_stats(&vals, &keep, v);
                    (h as f32, Some((top.iter().map(|c| c.1).collect(), dh)))
                }
            };
            RowStats {
                lse,
                logp,
                term,
                region,
            }
        })
        .collect()
}

/// Second pass: overwrite `z` with `dL/dz` given `c = dL/dlogp` and `e = dL/dterm` per row.
pub(crate) fn write_grad(
    z: &mut [f32],
    v: usize,
    targets: &[i64],
    stats: &[RowStats],
    c: &[f32],
    e: &[f32],
    global: bool,
) {
    z.par_chunks_mut(v).enumerate().for_each(|(r, row)| {
        let st = &stats[r];
        let lse = st.lse as f32;
        let (cr, er) = (c[r], e[r]);
        if global {
            // -p (c + e (z - lse + H)) = -p (a + e z), a = c + e (H - lse)
            let a = (cr as f64 + er as f64 * (st.term as f64 - st.lse)) as f32;
            for x in row.iter_mut() {
                let p = exp_fast(*x - lse);
                *x = -p * (a + er * *x);
            }
        } else {
            for x in row.iter_mut() {
                *x = -cr * exp_fast(*x - lse);
            }
        }
        row[targets[r] as usize] += cr;
        if let Some((idx, dh)) = &st.region {
            for (&i, &d) in idx.iter().zip(dh) {
                row[i as usize] += er * d;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_fast_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 10.0 {
            let got = exp_fast(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max((got - want).abs() / want);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "max rel err {worst}");
    }

    #[test]
    fn sum_exp_matches_naive() {
        let row: Vec<f32> = (0..1003)
            .map(|i| ((i * 37) % 101) as f32 * 0.07 - 3.0)
            .collect();
        let m = row_max(&row);
        assert_eq!(m, row.iter().copied().fold(f32::MIN, f32::max));
        let (s, sz) = row_sum_exp(&row, m, true);
        let ns: f64 = row.iter().map(|&v| ((v - m) as f64).exp()).sum();
        let nz: f64 = row
            .iter()
            .map(|&v| ((v - m) as f64).exp() * (v - m) as f64)
            .sum();
        assert!((s - ns).abs() / ns < 1e-6 && (sz - nz).abs() / nz.abs() < 1e-6);
    }
}
