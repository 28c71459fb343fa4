//! Entropy regularisers (ALGORITHMS.md sections 1 and 2): global entropy, TRE-K and TRE-P.
//!
//! TRE restricts the entropy bonus to a trust region `S_t` of each token's distribution:
//! renormalise the logits inside `S_t`, take the local entropy `H_TR`, and rescale it by
//! `ln V / ln |S_t|` (0 when `|S_t| = 1`). The selection carries no gradient; the gradient flows
//! only through the selected logits (a gather of at most 256 logits per token).
//!
//! The selection of the top tokens runs either on the host ([`Selection::Host`]: one O(V)
//! heap scan per row, parallel over rows; fast on CPU backends where burn's `topk` is a full
//! sort) or with burn's `topk` ([`Selection::Device`]: for GPU backends).

use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use burn::tensor::activation::log_softmax;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// TRE-P keeps at most this many tokens per position.
pub const TRE_P_MAX_REGION: usize = 256;

/// The entropy term of the actor loss (`loss -= coef * token-mean(term)`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum EntropyReg {
    /// No entropy term.
    #[default]
    None,
    /// Full-vocabulary entropy `H = -sum_v p_v log p_v`.
    Global {
        /// beta_H.
        coef: f64,
    },
    /// TRE-K: trust region = the `k` largest logits (default 2).
    TreK {
        /// Region size K.
        k: usize,
        /// beta (0.001 in the seed).
        coef: f64,
    },
    /// TRE-P: smallest top-p region (the crossing token included, top-1 always, at most
    /// `max_region` = 256 tokens).
    TreP {
        /// Probability threshold (default 0.99).
        p: f64,
        /// Cap on |S| (256).
        max_region: usize,
        /// beta (0.001 in the seed).
        coef: f64,
    },
}

impl EntropyReg {
    /// TRE-K with the seed's beta.
    pub fn tre_k(k: usize) -> Self {
        Self::TreK { k, coef: 0.001 }
    }
    /// TRE-P with the 256 cap and the seed's beta.
    pub fn tre_p(p: f64) -> Self {
        Self::TreP {
            p,
            max_region: TRE_P_MAX_REGION,
            coef: 0.001,
        }
    }
    /// The coefficient (0 for `None`).
    pub fn coef(&self) -> f64 {
        match self {
            Self::None => 0.0,
            Self::Global { coef } | Self::TreK { coef, .. } | Self::TreP { coef, .. } => *coef,
        }
    }
    /// Whether a term is computed at all.
    pub fn is_active(&self) -> bool {
        !matches!(self, Self::None)
    }
    /// Number of candidate columns gathered per token (TRE only).
    fn region_width(&self, vocab: usize) -> Option<usize> {
        match self {
            Self::TreK { k, .. } => Some((*k).clamp(1, vocab)),
            Self::TreP { max_region, .. } => Some((*max_region).clamp(1, vocab)),
            _ => None,
        }
    }
}

/// Where the top-k selection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// Host on the flex CPU backend, device otherwise.
    #[default]
    Auto,
    /// Copy the logits to the host and scan each row with a size-M heap (O(V) per row).
    Host,
    /// burn's `topk_with_indices` on the device.
    Device,
}

impl Selection {
    pub(crate) fn use_host(self, device: &Device) -> bool {
        match self {
            Self::Host => true,
            Self::Device => false,
            Self::Auto => device.clone().inner() == Device::flex(),
        }
    }
}

/// A trust region per token: `M` candidate columns sorted by descending logit, which of them are
/// kept, and the region size `|S|`.
#[derive(Debug, Clone)]
pub struct TrustRegion {
    /// Column indices `[N, M]`, descending logit.
    pub indices: Tensor<2, Int>,
    /// 1.0 where the candidate is in `S_t` `[N, M]`.
    pub keep: Tensor<2>,
    /// `|S_t|` `[N]`.
    pub size: Tensor<1>,
}

#[derive(Clone, Copy)]
pub(crate) struct Cand(pub(crate) f32, pub(crate) u32);
impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    // "Greater" = better: larger logit, then smaller index.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0).then(o.1.cmp(&self.1))
    }
}

/// Top-`m` (value, index) of a row, best first (ties: smaller index first). One pass with a
/// candidate buffer: values above the running threshold are appended; when the buffer holds
/// `2m`, a quickselect keeps the best `m` and raises the threshold. Blocks of 16 whose maximum
/// is below the threshold are skipped with a vectorisable max.
pub(crate) fn top_m_row(row: &[f32], m: usize) -> Vec<Cand> {
    let m = m.min(row.len());
    if m == 0 {
        return Vec::new();
    }
    let desc = |a: &Cand, b: &Cand| b.cmp(a);
    let mut buf: Vec<Cand> = Vec::with_capacity(2 * m + 16);
    let mut thr = f32::NEG_INFINITY;
    let push = |buf: &mut Vec<Cand>, thr: &mut f32, i: usize, v: f32| {
        if v > *thr || (buf.len() < m && !v.is_nan()) {
            buf.push(Cand(v, i as u32));
            if buf.len() >= 2 * m {
                buf.select_nth_unstable_by(m - 1, desc);
                buf.truncate(m);
                *thr = buf[m - 1].0;
            }
        }
    };
    const BLK: usize = 16;
    let full = row.len() / BLK * BLK;
    let mut b = 0;
    while b < full {
        let blk = &row[b..b + BLK];
        let mut mx = f32::NEG_INFINITY;
        for &v in blk {
            mx = if v > mx { v } else { mx };
        }
        if mx > thr || buf.len() < m {
            for (k, &v) in blk.iter().enumerate() {
                push(&mut buf, &mut thr, b + k, v);
            }
        }
        b += BLK;
    }
    for (k, &v) in row[full..].iter().enumerate() {
        push(&mut buf, &mut thr, full + k, v);
    }
    buf.sort_unstable_by(desc);
    buf.truncate(m);
    buf
}

/// Keep mask of TRE-P from the sorted candidate probabilities of one token.
pub(crate) fn tre_p_keep(probs_desc: &[f64], p_thr: f64) -> Vec<bool> {
    let mut cum = 0.0;
    probs_desc
        .iter()
        .enumerate()
        .map(|(r, &p)| {
            let keep = r == 0 || cum < p_thr;
            cum += p;
            keep
        })
        .collect()
}

/// Select the trust region of each row of `z` (`[N, V]`, temperature-scaled logits; only its
/// values are used). `lse` (`[N]`, logsumexp of each row) is needed for TRE-P probabilities
/// and computed here when absent. Returns `None` for non-TRE regularisers.
pub fn select_trust_region(
    z: &Tensor<2>,
    lse: Option<Tensor<1>>,
    reg: &EntropyReg,
    sel: Selection,
) -> Option<TrustRegion> {
    let [n, v] = z.dims();
    let m = reg.region_width(v)?;
    let z = z.clone().detach().inner();
    let device = z.device();
    let p_thr = match reg {
        EntropyReg::TreP { p, .. } => Some(*p),
        _ => None,
    };
    let lse = match (p_thr, lse) {
        (Some(_), Some(l)) => Some(l.detach().inner()),
        (Some(_), None) => {
            let mx = z.clone().max_dim(1);
            Some(((z.clone() - mx.clone()).exp().sum_dim(1).log() + mx).reshape([n]))
        }
        _ => None,
    };
    if sel.use_host(&device) {
        let data = z.into_data().convert::<f32>();
        let flat: &[f32] = data.as_slice().expect("f32 logits");
        let lse_host: Option<Vec<f32>> =
            lse.map(|l| l.into_data().try_into_vec_as::<f32>().expect("f32 lse"));
        let rows: Vec<(Vec<i64>, Vec<f32>)> = flat
            .par_chunks(v)
            .enumerate()
            .map(|(r, row)| {
                let top = top_m_row(row, m);
                let idx: Vec<i64> = top.iter().map(|c| c.1 as i64).collect();
                let keep: Vec<f32> = match (p_thr, &lse_host) {
                    (Some(pt), Some(l)) => {
                        let probs: Vec<f64> =
                            top.iter().map(|c| ((c.0 - l[r]) as f64).exp()).collect();
                        tre_p_keep(&probs, pt)
                            .into_iter()
                            .map(|k| if k { 1.0 } else { 0.0 })
                            .collect()
                    }
                    _ => vec![1.0; m],
                };
                (idx, keep)
            })
            .collect();
        let mut idx = Vec::with_capacity(n * m);
        let mut keep = Vec::with_capacity(n * m);
        for (i, k) in rows {
            idx.extend(i);
            keep.extend(k);
        }
        let size: Vec<f32> = keep.chunks(m).map(|c| c.iter().sum()).collect();
        Some(TrustRegion {
            indices: Tensor::<1, Int>::from_ints(idx.as_slice(), &device).reshape([n, m]),
            keep: Tensor::<1>::from_floats(keep.as_slice(), &device).reshape([n, m]),
            size: Tensor::<1>::from_floats(size.as_slice(), &device),
        })
    } else {
        let (vals, idx) = z.topk_with_indices(m, 1);
        let keep = match (p_thr, lse) {
            (Some(pt), Some(l)) => {
                let p = (vals - l.reshape([n, 1])).exp();
                let cum_excl = p.clone().cumsum(1) - p;
                let keep = cum_excl.lower_elem(pt).float();
                keep.slice_fill([0..n, 0..1], 1.0)
            }
            _ => Tensor::<2>::ones([n, m], &device),
        };
        let size = keep.clone().sum_dim(1).reshape([n]);
        Some(TrustRegion {
            indices: idx,
            keep,
            size,
        })
    }
}

/// `ln V / ln |S|`, 0 where `|S| <= 1`.
fn region_scale(size: Tensor<1>, vocab: usize) -> Tensor<1> {
    let ln_v = (vocab as f64).ln();
    let single = size.clone().lower_equal_elem(1.0);
    let safe = size.mask_fill(single.clone(), 2.0);
    safe.log().recip().mul_scalar(ln_v).mask_fill(single, 0.0)
}

/// Local entropy inside the region: returns `(H_TR [N], q [N, M], log q [N, M])` computed from
/// the gathered logits `zs` (`[N, M]`, differentiable) and the keep mask.
fn region_entropy(zs: Tensor<2>, keep: Tensor<2>) -> (Tensor<1>, Tensor<2>, Tensor<2>) {
    let [n, _] = zs.dims();
    let mx = zs.clone().detach().max_dim(1);
    let shifted = zs - mx;
    let e = shifted.clone().exp() * keep.clone();
    let s = e.clone().sum_dim(1);
    let lq = shifted - s.clone().log();
    let q = e / s;
    let h = (q.clone() * lq.clone() * keep)
        .sum_dim(1)
        .neg()
        .reshape([n]);
    (h, q, lq)
}

/// The entropy term per token `[N]` from logits `z` (`[N, V]`, temperature-scaled), for the
/// autodiff path: global `H`, or TRE's `H_hat` (gradient only through the selected logits).
/// `None` for [`EntropyReg::None`].
pub fn entropy_term(z: Tensor<2>, reg: &EntropyReg, sel: Selection) -> Option<Tensor<1>> {
    let [n, v] = z.dims();
    match reg {
        EntropyReg::None => None,
        EntropyReg::Global { .. } => {
            let lsm = log_softmax(z, 1);
            Some((lsm.clone().exp() * lsm).sum_dim(1).neg().reshape([n]))
        }
        EntropyReg::TreK { .. } | EntropyReg::TreP { .. } => {
            let region = select_trust_region(&z, None, reg, sel)?;
            let zs = z.gather(1, region.indices);
            let (h, _, _) = region_entropy(zs, region.keep);
            Some(h * region_scale(region.size, v))
        }
    }
}

/// Entropy of every row, no gradient (`[N]`): scoring, Forking Tokens, metrics.
pub fn full_entropy(z: Tensor<2>) -> Tensor<1> {
    let [n, _] = z.dims();
    let lsm = log_softmax(z.detach().inner(), 1);
    (lsm.clone().exp() * lsm).sum_dim(1).neg().reshape([n])
}

/// Analytic entropy term for the chunked path. Inputs are non-autodiff: `z` `[N, V]`, `p =
/// softmax(z)` `[N, V]`, `lse` `[N]`. Returns the term `[N]` and its gradient w.r.t. `z`.
pub(crate) fn entropy_term_analytic(
    z: &Tensor<2>,
    lse: &Tensor<1>,
    p: &Tensor<2>,
    reg: &EntropyReg,
    sel: Selection,
) -> Option<(Tensor<1>, EntropyGrad)> {
    let [n, v] = z.dims();
    match reg {
        EntropyReg::None => None,
        EntropyReg::Global { .. } => {
            // H = lse - sum_v p_v z_v
            let h = lse.clone() - (p.clone() * z.clone()).sum_dim(1).reshape([n]);
            Some((h, EntropyGrad::Global))
        }
        EntropyReg::TreK { .. } | EntropyReg::TreP { .. } => {
            let region = select_trust_region(z, Some(lse.clone()), reg, sel)?;
            let zs = z.clone().gather(1, region.indices.clone());
            let (h, q, lq) = region_entropy(zs, region.keep.clone());
            let scale = region_scale(region.size, v);
            // dH_TR/dz_a = -q_a (log q_a + H_TR) on kept a (q = 0 elsewhere).
            let dh = (lq + h.clone().reshape([n, 1])).mul(q).neg();
            Some((
                h * scale.clone(),
                EntropyGrad::Region {
                    indices: region.indices,
                    dh_scaled: dh * scale.reshape([n, 1]),
                },
            ))
        }
    }
}

/// Gradient of the entropy term w.r.t. the logits.
#[allow(clippy::large_enum_variant)]
pub(crate) enum EntropyGrad {
    /// Dense: dH/dz = -p (z - lse + H); folded into the dense logits gradient by the caller.
    Global,
    /// Sparse: `d term / d z[indices] = dh_scaled`.
    Region {
        indices: Tensor<2, Int>,
        dh_scaled: Tensor<2>,
    },
}

impl EntropyGrad {
    /// For the sparse (TRE) case return `g + e * d(term)/dz` (`e = dL/d(term)`, `[N]`);
    /// the global case is folded in by the caller and `g` is returned unchanged.
    pub(crate) fn add_sparse(self, g: Tensor<2>, e: Tensor<1>) -> Tensor<2> {
        match self {
            Self::Region { indices, dh_scaled } => {
                let [n, _] = dh_scaled.dims();
                g.scatter(
                    1,
                    indices,
                    dh_scaled * e.reshape([n, 1]),
                    IndexingUpdateOp::Add,
                )
            }
            Self::Global => g,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_m_row_orders_and_breaks_ties_by_index() {
        let row = [0.5, 3.0, -1.0, 3.0, 2.0];
        let t = top_m_row(&row, 3);
        let got: Vec<u32> = t.iter().map(|c| c.1).collect();
        assert_eq!(got, vec![1, 3, 4]);
    }

    #[test]
    fn tre_p_keep_rules() {
        // cum above: 0, .5, .8, .95 => with p=0.9: keep 0,1,2 and the crossing token 3? cum
        // before token 3 is .95 >= .9 => not kept. Token 2 has cum .8 < .9 => kept.
        assert_eq!(
            tre_p_keep(&[0.5, 0.3, 0.15, 0.05], 0.9),
            vec![true, true, true, false]
        );
        // top-1 always kept even if it alone exceeds p.
        assert_eq!(tre_p_keep(&[0.999, 0.001], 0.99), vec![true, false]);
    }

    #[test]
    fn tre_k2_uniform_pair_is_ln_v() {
        // Two equal top logits: H_TR = ln 2, scaled by ln V / ln 2 = ln V.
        let dev = Device::flex();
        let z = Tensor::<2>::from_floats([[5.0, 5.0, 0.0, -1.0, 1.0]], &dev);
        for sel in [Selection::Host, Selection::Device] {
            let h = entropy_term(z.clone(), &EntropyReg::tre_k(2), sel).unwrap();
            let v: f32 = h.into_scalar();
            assert!((v as f64 - 5f64.ln()).abs() < 1e-5, "{v}");
        }
    }
}
