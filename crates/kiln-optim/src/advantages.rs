//! Advantage estimators (ALGORITHMS.md section 1).
//!
//! Host-side and exact (f64 accumulation, f32 results). Layouts:
//! - `rewards`: one scalar per response, `B` values, groups contiguous (`group_size` responses of
//!   the same prompt next to each other), so `B` must be a multiple of `group_size`.
//! - token arrays (`mask`, `token_rewards`, `values`): `[B, T]` row-major, `mask` 1.0 on real
//!   response tokens and 0.0 on padding. Outputs are zero on padding.

use crate::error::{OptimError, Result, check_len};

/// Which outcome-reward estimator to use (GAE needs a critic and has its own function).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdvantageEstimator {
    /// `(R - mean_g) / (std_g + 1e-6)`, std with Bessel's correction.
    Grpo,
    /// Dr.GRPO: `R - mean_g` (no std division).
    DrGrpo,
    /// `R_b - mean_{j != b} R_j`.
    Rloo,
    /// `R - mean_g`, then whitened over all response tokens of the batch.
    ReinforcePlusPlusBaseline,
}

/// Epsilon added to the group std in GRPO (as in verl / DeepSeekMath).
pub const GRPO_STD_EPS: f64 = 1e-6;
/// Epsilon inside the whitening rsqrt (verl's `masked_whiten`).
pub const WHITEN_EPS: f64 = 1e-8;

fn check_groups(n: usize, group_size: usize) -> Result<()> {
    if group_size < 2 {
        return Err(OptimError::Config {
            field: "group_size",
            reason: format!("must be at least 2 (got {group_size})"),
        });
    }
    if !n.is_multiple_of(group_size) {
        return Err(OptimError::Config {
            field: "group_size",
            reason: format!("{n} rewards are not a whole number of groups of {group_size}"),
        });
    }
    Ok(())
}

fn group_mean_std(g: &[f32]) -> (f64, f64) {
    let n = g.len() as f64;
    let mean = g.iter().map(|&r| r as f64).sum::<f64>() / n;
    let var = g.iter().map(|&r| (r as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// GRPO advantages per response. `scale_by_std = false` gives Dr.GRPO.
pub fn grpo(rewards: &[f32], group_size: usize, scale_by_std: bool) -> Result<Vec<f32>> {
    check_groups(rewards.len(), group_size)?;
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(group_size) {
        let (mean, std) = group_mean_std(g);
        for &r in g {
            let a = r as f64 - mean;
            out.push(if scale_by_std {
                a / (std + GRPO_STD_EPS)
            } else {
                a
            } as f32);
        }
    }
    Ok(out)
}

/// Dr.GRPO advantages per response: `R - mean_g R`.
pub fn dr_grpo(rewards: &[f32], group_size: usize) -> Result<Vec<f32>> {
    grpo(rewards, group_size, false)
}

/// RLOO advantages per response: `R_b - mean_{j != b} R_j`.
pub fn rloo(rewards: &[f32], group_size: usize) -> Result<Vec<f32>> {
    check_groups(rewards.len(), group_size)?;
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(group_size) {
        let sum: f64 = g.iter().map(|&r| r as f64).sum();
        let n = g.len() as f64;
        for &r in g {
            let loo = (sum - r as f64) / (n - 1.0);
            out.push((r as f64 - loo) as f32);
        }
    }
    Ok(out)
}

/// Masked whitening over every masked token (verl's `masked_whiten`): mean and unbiased variance
/// over tokens with `mask > 0`, `(x - mean) / sqrt(var + 1e-8)`; padding is set to 0.
pub fn masked_whiten(x: &[f32], mask: &[f32]) -> Result<Vec<f32>> {
    check_len("masked_whiten mask", x.len(), mask.len())?;
    let n: f64 = mask.iter().map(|&m| m as f64).sum();
    if n < 2.0 {
        return Err(OptimError::Config {
            field: "mask",
            reason: format!("whitening needs at least 2 masked tokens (got {n})"),
        });
    }
    let mean = x
        .iter()
        .zip(mask)
        .map(|(&v, &m)| v as f64 * m as f64)
        .sum::<f64>()
        / n;
    let var = x
        .iter()
        .zip(mask)
        .map(|(&v, &m)| (v as f64 - mean).powi(2) * m as f64)
        .sum::<f64>()
        / n
        * (n / (n - 1.0));
    let inv = 1.0 / (var + WHITEN_EPS).sqrt();
    Ok(x.iter()
        .zip(mask)
        .map(|(&v, &m)| {
            if m > 0.0 {
                ((v as f64 - mean) * inv) as f32
            } else {
                0.0
            }
        })
        .collect())
}

/// Every token of response `b` gets `adv[b]`; padding gets 0. `mask` is `[B, T]`.
pub fn broadcast_to_tokens(adv: &[f32], mask: &[f32], seq_len: usize) -> Result<Vec<f32>> {
    check_len("mask", adv.len() * seq_len, mask.len())?;
    Ok(mask
        .chunks(seq_len)
        .zip(adv)
        .flat_map(|(row, &a)| row.iter().map(move |&m| if m > 0.0 { a } else { 0.0 }))
        .collect())
}

/// REINFORCE++-baseline: `R - mean_g R` per response, broadcast to its tokens, then whitened over
/// all response tokens of the batch (token-weighted, as verl). Returns `[B, T]`.
pub fn reinforce_pp_baseline(
    rewards: &[f32],
    group_size: usize,
    mask: &[f32],
    seq_len: usize,
) -> Result<Vec<f32>> {
    let centred = grpo(rewards, group_size, false)?;
    let tok = broadcast_to_tokens(&centred, mask, seq_len)?;
    masked_whiten(&tok, mask)
}

/// Token advantages `[B, T]` for an outcome estimator (not GAE).
pub fn outcome_token_advantages(
    estimator: AdvantageEstimator,
    rewards: &[f32],
    group_size: usize,
    mask: &[f32],
    seq_len: usize,
) -> Result<Vec<f32>> {
    let per_resp = match estimator {
        AdvantageEstimator::Grpo => grpo(rewards, group_size, true)?,
        AdvantageEstimator::DrGrpo => grpo(rewards, group_size, false)?,
        AdvantageEstimator::Rloo => rloo(rewards, group_size)?,
        AdvantageEstimator::ReinforcePlusPlusBaseline => {
            return reinforce_pp_baseline(rewards, group_size, mask, seq_len);
        }
    };
    broadcast_to_tokens(&per_resp, mask, seq_len)
}

/// Place each response's scalar reward on its last masked token. Returns `[B, T]`.
pub fn place_on_last_token(rewards: &[f32], mask: &[f32], seq_len: usize) -> Result<Vec<f32>> {
    check_len("mask", rewards.len() * seq_len, mask.len())?;
    let mut out = vec![0.0; mask.len()];
    for (b, row) in mask.chunks(seq_len).enumerate() {
        if let Some(t) = row.iter().rposition(|&m| m > 0.0) {
            out[b * seq_len + t] = rewards[b];
        }
    }
    Ok(out)
}

/// Output of [`gae`].
#[derive(Debug, Clone)]
pub struct GaeOutput {
    /// Whitened advantages `[B, T]` (0 on padding).
    pub advantages: Vec<f32>,
    /// Returns `A + V` before whitening `[B, T]` (0 on padding): the critic's targets.
    pub returns: Vec<f32>,
}

/// GAE from per-token rewards and a critic's values, all `[B, T]`:
/// `delta_t = r_t + gamma V_{t+1} - V_t`, `A_t = sum_l (gamma lambda)^l delta_{t+l}`,
/// `returns = A + V`, advantages whitened over the batch. Padding positions are skipped (the
/// recursion carries over them), so right- and interior-padding both work (verl's form).
pub fn gae(
    token_rewards: &[f32],
    values: &[f32],
    mask: &[f32],
    seq_len: usize,
    gamma: f64,
    lambda: f64,
) -> Result<GaeOutput> {
    check_len("values", token_rewards.len(), values.len())?;
    check_len("mask", token_rewards.len(), mask.len())?;
    if seq_len == 0 || !token_rewards.len().is_multiple_of(seq_len) {
        return Err(OptimError::Config {
            field: "seq_len",
            reason: format!("{} tokens are not rows of {seq_len}", token_rewards.len()),
        });
    }
    let mut adv = vec![0.0f32; token_rewards.len()];
    let mut ret = vec![0.0f32; token_rewards.len()];
    for b in 0..token_rewards.len() / seq_len {
        let mut next_value = 0.0f64;
        let mut last_gae = 0.0f64;
        for t in (0..seq_len).rev() {
            let i = b * seq_len + t;
            let m = mask[i] as f64;
            let v = values[i] as f64;
            let delta = token_rewards[i] as f64 + gamma * next_value - v;
            let g = delta + gamma * lambda * last_gae;
            next_value = v * m + (1.0 - m) * next_value;
            last_gae = g * m + (1.0 - m) * last_gae;
            if m > 0.0 {
                adv[i] = last_gae as f32;
                ret[i] = (last_gae + v) as f32;
            }
        }
    }
    Ok(GaeOutput {
        advantages: masked_whiten(&adv, mask)?,
        returns: ret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpo_hand_values() {
        // group [1, 0, 0, 1]: mean 0.5, Bessel std = sqrt(1/3).
        let a = grpo(&[1.0, 0.0, 0.0, 1.0], 4, true).unwrap();
        let s = (1.0f64 / 3.0).sqrt() + 1e-6;
        assert!((a[0] as f64 - 0.5 / s).abs() < 1e-6);
        assert!((a[1] as f64 + 0.5 / s).abs() < 1e-6);
        let d = dr_grpo(&[1.0, 0.0, 0.0, 1.0], 4).unwrap();
        assert_eq!(d, vec![0.5, -0.5, -0.5, 0.5]);
    }

    #[test]
    fn rloo_hand_values() {
        let a = rloo(&[1.0, 2.0, 3.0], 3).unwrap();
        // 1 - 2.5, 2 - 2, 3 - 1.5
        assert_eq!(a, vec![-1.5, 0.0, 1.5]);
    }

    #[test]
    fn bad_groups_are_errors() {
        assert!(grpo(&[1.0, 2.0, 3.0], 2, true).is_err());
        assert!(rloo(&[1.0], 1).is_err());
    }

    #[test]
    fn gae_gamma_lambda_one_is_reward_to_go_minus_value() {
        // One row, 3 tokens, reward 1 on the last: A_t = 1 - V_t before whitening.
        let r = [0.0, 0.0, 1.0, 0.0];
        let v = [0.2, 0.5, 0.1, 9.0];
        let m = [1.0, 1.0, 1.0, 0.0];
        let out = gae(&r, &v, &m, 4, 1.0, 1.0).unwrap();
        assert!((out.returns[0] - 1.0).abs() < 1e-6 && (out.returns[2] - 1.0).abs() < 1e-6);
        assert_eq!(out.returns[3], 0.0);
        let w = masked_whiten(&[0.8, 0.5, 0.9, 0.0], &m).unwrap();
        assert_eq!(out.advantages, w);
        // Whitened values have zero mean and unit (unbiased) variance: hand check.
        let mean = (0.8 + 0.5 + 0.9) / 3.0f64;
        let var = ((0.8 - mean).powi(2) + (0.5 - mean).powi(2) + (0.9 - mean).powi(2)) / 2.0;
        assert!((w[0] as f64 - (0.8 - mean) / (var + 1e-8).sqrt()).abs() < 1e-5);
    }
}
