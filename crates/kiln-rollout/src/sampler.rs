//! Host-side sampling of one row of logits.
//!
//! The logits row (the vocabulary: 49152 floats for SmolLM2) is read back to the host and the
//! sampling distribution is built there: cheap next to a decode step on a CPU, and exact (f64
//! sums). Every row draws from its own random stream, so a row's tokens do not depend on the
//! other rows of its batch.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::params::SamplingParams;

/// `exp(s)` of a scaled logit (`s <= 0`) by kiln-model's vectorisable f32 exponential; the
/// callers sum these in f64.
fn exp(s: f64) -> f64 {
    kiln_model::cpu_math::exp(s as f32) as f64
}

/// What was drawn at one position, with the statistics of the sampling distribution there.
#[derive(Debug, Clone, PartialEq)]
pub struct Draw {
    pub token: u32,
    /// Log-probability of `token` under the sampling distribution (greedy: under softmax(z)).
    pub logprob: f32,
    /// Entropy (nats) of the sampling distribution (greedy: of softmax(z)).
    pub entropy: f32,
    /// The most likely candidates of that distribution, most likely first (ties: lower id).
    pub top: Vec<(u32, f32)>,
}

/// The random stream of row (prompt `prompt`, sample `sample`) of a request seeded with `seed`.
pub fn row_rng(seed: u64, prompt: u64, sample: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&prompt.to_le_bytes());
    key[16..24].copy_from_slice(&sample.to_le_bytes());
    key[24..].copy_from_slice(b"kilnroll");
    ChaCha8Rng::from_seed(key)
}

/// Orders (index, weight) pairs most likely first, ties by lower id: a total order, so every
/// selection below is deterministic.
fn desc(a: &(u32, f64), b: &(u32, f64)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The `k` largest entries of `items` (by [`desc`]), sorted.
fn top_sorted(items: &mut [(u32, f64)], k: usize) -> Vec<(u32, f64)> {
    let k = k.min(items.len());
    if k == 0 {
        return Vec::new();
    }
    if k < items.len() {
        items.select_nth_unstable_by(k - 1, desc);
    }
    let mut top = items[..k].to_vec();
    top.sort_by(desc);
    top
}

/// Samples one token from logits `z` under `params`, drawing from `rng` (one uniform per
/// non-greedy call). `top_n` candidates are reported.
pub fn sample(z: &[f32], params: &SamplingParams, rng: &mut ChaCha8Rng) -> Draw {
    let top_n = params.top_logprobs;
    if params.is_greedy() {
        return greedy(z, top_n);
    }
    let inv_t = 1.0 / params.temperature as f64;
    // Scaled logits relative to their maximum: w_i = exp(s_i - max s) in (0, 1].
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let scaled = |x: f32| (x as f64 - max) * inv_t;

    // Candidates as (id, scaled logit) in id order, or a filtered subset.
    let vocab = z.len();
    let mut kept: Vec<(u32, f64)>;
    let mut sorted = false;
    if params.top_k > 0 && params.top_k < vocab {
        let mut all: Vec<(u32, f64)> = z
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32, scaled(x)))
            .collect();
        kept = top_sorted(&mut all, params.top_k);
        sorted = true;
    } else {
        kept = z
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32, scaled(x)))
            .collect();
    }
    if params.top_p < 1.0 {
        let total: f64 = kept.iter().map(|&(_, s)| exp(s)).sum();
        let target = params.top_p as f64 * total;
        if !sorted {
            // Grow a sorted head until it holds the mass, instead of sorting the vocabulary.
            let mut k = 64usize;
            loop {
                let head = top_sorted(&mut kept, k);
                let mass: f64 = head.iter().map(|&(_, s)| exp(s)).sum();
                if mass >= target || head.len() == kept.len() {
                    kept = head;
                    break;
                }
                k *= 4;
            }
            sorted = true;
        }
        let mut cum = 0.0;
        let mut cut = kept.len();
        for (i, &(_, s)) in kept.iter().enumerate() {
            cum += exp(s);
            if cum >= target {
                cut = i + 1;
                break;
            }
        }
        kept.truncate(cut.max(1));
    }
    if params.min_p > 0.0 {
        // The most likely candidate has scaled logit 0 (weight 1) whatever was filtered before.
        let floor = (params.min_p as f64).ln();
        kept.retain(|&(_, s)| s >= floor);
    }
    let weights: Vec<f64> = kept.iter().map(|&(_, s)| exp(s)).collect();
    let total: f64 = weights.iter().sum();
    let log_total = total.ln();
    let u: f64 = rng.random::<f64>() * total;
    let mut cum = 0.0;
    let mut pick = kept.len() - 1;
    for (i, w) in weights.iter().enumerate() {
        cum += w;
        if u < cum {
            pick = i;
            break;
        }
    }
    let entropy = log_total
        - kept
            .iter()
            .zip(&weights)
            .map(|(&(_, s), &w)| w * s)
            .sum::<f64>()
            / total;
    let top = if top_n == 0 {
        Vec::new()
    } else if sorted {
        kept.iter()
            .take(top_n)
            .map(|&(i, s)| (i, (s - log_total) as f32))
            .collect()
    } else {
        let mut copy = kept.clone();
        top_sorted(&mut copy, top_n)
            .into_iter()
            .map(|(i, s)| (i, (s - log_total) as f32))
            .collect()
    };
    Draw {
        token: kept[pick].0,
        logprob: (kept[pick].1 - log_total) as f32,
        entropy: entropy.max(0.0) as f32,
        top,
    }
}

/// Greedy: the first maximal logit; log-prob, entropy and candidates of softmax(z).
fn greedy(z: &[f32], top_n: usize) -> Draw {
    let (token, max) = kiln_model::generate::argmax(z);
    let max = max as f64;
    let (total, dot) = softmax_sums(z, max as f32);
    let log_total = total.ln();
    let top = if top_n == 0 {
        Vec::new()
    } else {
        let mut all: Vec<(u32, f64)> = z
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32, x as f64 - max))
            .collect();
        top_sorted(&mut all, top_n)
            .into_iter()
            .map(|(i, s)| (i, (s - log_total) as f32))
            .collect()
    };
    Draw {
        token,
        logprob: (-log_total) as f32,
        entropy: (log_total - dot / total).max(0.0) as f32,
        top,
    }
}

/// `(sum_i w_i, sum_i w_i s_i)` with `s_i = z_i - max` and `w_i = exp(s_i)`: f32 exponentials
/// in 16 lanes (one AVX-512 register; a single running sum would keep the loop scalar), each
/// block of 512 summed into f64.
fn softmax_sums(z: &[f32], max: f32) -> (f64, f64) {
    const LANES: usize = 16;
    let (mut total, mut dot) = (0.0f64, 0.0f64);
    for block in z.chunks(512) {
        let (mut t, mut d) = ([0f32; LANES], [0f32; LANES]);
        let mut chunks = block.chunks_exact(LANES);
        for chunk in &mut chunks {
            for l in 0..LANES {
                let s = chunk[l] - max;
                let w = kiln_model::cpu_math::exp(s);
                t[l] += w;
                d[l] += w * s;
            }
        }
        for (l, &x) in chunks.remainder().iter().enumerate() {
            let s = x - max;
            let w = kiln_model::cpu_math::exp(s);
            t[l] += w;
            d[l] += w * s;
        }
        total += t.iter().map(|&x| x as f64).sum::<f64>();
        dot += d.iter().map(|&x| x as f64).sum::<f64>();
    }
    (total, dot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32, k: usize, p: f32, m: f32) -> SamplingParams {
        SamplingParams {
            temperature: t,
            top_k: k,
            top_p: p,
            min_p: m,
            top_logprobs: 3,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_statistics_over_a_vocabulary_match_f64() {
        // A vocabulary-sized row whose length is not a multiple of the lanes or the blocks.
        let z: Vec<f32> = (0..49_157)
            .map(|i| ((i * 7919 % 1000) as f32) * 0.02 - 10.0)
            .collect();
        let d = sample(&z, &params(0.0, 0, 1.0, 0.0), &mut row_rng(0, 0, 0));
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let w: Vec<f64> = z.iter().map(|&x| (x as f64 - max).exp()).collect();
        let total: f64 = w.iter().sum();
        let entropy = total.ln()
            - w.iter()
                .zip(&z)
                .map(|(w, &x)| w * (x as f64 - max))
                .sum::<f64>()
                / total;
        assert!(
            (d.logprob as f64 + total.ln()).abs() < 1e-5,
            "{}",
            d.logprob
        );
        assert!((d.entropy as f64 - entropy).abs() < 1e-5, "{}", d.entropy);
    }

    #[test]
    fn greedy_picks_first_max_and_reports_softmax() {
        let z = [1.0f32, 3.0, 3.0, -2.0];
        let d = sample(&z, &params(0.0, 0, 1.0, 0.0), &mut row_rng(0, 0, 0));
        assert_eq!(d.token, 1);
        let lse = z.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        assert!((d.logprob as f64 - (3.0 - lse)).abs() < 1e-6);
        assert_eq!(d.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2, 0]);
    }

    #[test]
    fn filters_restrict_the_support() {
        let z: Vec<f32> = (0..100).map(|i| (i as f32) * 0.05).collect();
        let mut rng = row_rng(1, 2, 3);
        for _ in 0..200 {
            let d = sample(&z, &params(1.0, 5, 1.0, 0.0), &mut rng);
            assert!(d.token >= 95);
            let d = sample(&z, &params(0.7, 0, 0.1, 0.0), &mut rng);
            assert!(d.token >= 80, "{}", d.token);
            // min_p 0.5 at T=1: keep s >= max - ln 2 (i >= 99 - 13.86).
            let d = sample(&z, &params(1.0, 0, 1.0, 0.5), &mut rng);
            assert!(d.token >= 86, "{}", d.token);
        }
        // A single survivor has log-prob 0 and entropy 0.
        let d = sample(&z, &params(1.0, 1, 1.0, 0.0), &mut rng);
        assert_eq!((d.token, d.logprob, d.entropy), (99, 0.0, 0.0));
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let z: Vec<f32> = (0..50).map(|i| ((i * 7919) % 13) as f32 * 0.3).collect();
        let draw = |p, s| {
            let mut rng = row_rng(9, p, s);
            (0..20)
                .map(|_| sample(&z, &params(1.0, 0, 1.0, 0.0), &mut rng).token)
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(0, 0), draw(0, 0));
        assert_ne!(draw(0, 0), draw(0, 1));
        assert_ne!(draw(0, 0), draw(1, 0));
    }
}
