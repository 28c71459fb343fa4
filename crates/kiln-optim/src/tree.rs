//! ROSE segment advantages for tree rollouts (ALGORITHMS.md section 3).
//!
//! ROSE grows each group as a tree: a response is either sampled from the prompt or copies the
//! first `k` response tokens of an earlier response and samples the rest (the token at `k` is
//! drawn anew). The prefixes the responses share *through the tree* form a trie. Every trie node
//! has a value, the mean reward of the responses below it (the root's value is the group mean).
//! A response's tokens are cut into segments at the points where its path splits, and every token
//! of a segment gets the segment's value increment: the value of the node the segment leads to
//! minus the value of the node it starts from, and for the last segment the response's own reward
//! minus the value of its last split node. The increments telescope to `R_b - mean_g R`, so a group
//! without branching gets Dr.GRPO's advantage, while a prefix shared by good and bad continuations
//! is credited only with what it decided. The optional length-aware calibration then shrinks
//! positive (and grows negative) advantages on the tail of correct responses that are longer than
//! the group's shortest correct response.
//!
//! Layouts as in [`crate::advantages`]: one reward per response, groups contiguous; token arrays
//! `[B, T]` row-major with a mask. Tree positions are response-token indices (column `t` of a row).
//! Host-side, f64 arithmetic, f32 results.

use std::collections::BTreeMap;

use crate::error::{OptimError, Result, check_len};

/// Where a response came from inside its group (generation order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TreeLink {
    /// Index (inside the group) of the response it branched from; `None`: sampled from the prompt.
    pub parent: Option<usize>,
    /// `k`: how many of the parent's response tokens were copied (0 for root responses).
    pub branch_pos: usize,
}

impl TreeLink {
    /// A response sampled from the prompt.
    pub const ROOT: TreeLink = TreeLink {
        parent: None,
        branch_pos: 0,
    };

    /// A response that copied the first `branch_pos` response tokens of `parent`.
    pub fn branch(parent: usize, branch_pos: usize) -> Self {
        TreeLink {
            parent: Some(parent),
            branch_pos,
        }
    }
}

/// Options of the ROSE advantage.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoseConfig {
    /// Length-aware calibration exponent `lambda` (0 = off, as in the seed's released example).
    pub length_lambda: f64,
    /// Key node values by token index alone, as the seed code does (see [`rose_group`]).
    pub seed_compat: bool,
}

impl Default for RoseConfig {
    fn default() -> Self {
        RoseConfig {
            length_lambda: 0.0,
            seed_compat: false,
        }
    }
}

impl RoseConfig {
    fn validate(&self) -> Result<()> {
        if !(self.length_lambda.is_finite() && self.length_lambda >= 0.0) {
            return Err(OptimError::Config {
                field: "length_lambda",
                reason: format!("must be finite and >= 0 (got {})", self.length_lambda),
            });
        }
        Ok(())
    }
}

/// What the length-aware calibration did to one correct response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// The group's shortest correct response `s` (index inside the group).
    pub shortest: usize,
    /// `k_c`: the length of the tree prefix shared with `s`; tokens from here on were adjusted.
    pub shared: usize,
    /// `rho = (L_s - k_c) / (L_b - k_c)`.
    pub rho: f64,
}

/// One response's segments, for telemetry and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseSegments {
    /// `K_b = {0 = k_0 < k_1 < ... < k_m}`: the positions (all `< L_b`, except `k_0` of an empty
    /// response) where the response's path splits.
    pub splits: Vec<usize>,
    /// `V_b(k_i)` for each split point (`values[0]` is the group mean).
    pub values: Vec<f64>,
    /// Value increment of each segment: `V_b(k_{i+1}) - V_b(k_i)`, the last one `R_b - V_b(k_m)`.
    /// They sum to `R_b - mean_g R`.
    pub increments: Vec<f64>,
    /// Per-token advantages, `L_b` of them, after the length calibration.
    pub advantages: Vec<f32>,
    /// Set when the length calibration touched this response (`lambda > 0`, at least two correct
    /// responses in the group, this one correct and not the shortest, `k_c < L_b`).
    pub calibration: Option<Calibration>,
}

/// Output of [`rose_token_advantages`].
#[derive(Debug, Clone, PartialEq)]
pub struct RoseOutput {
    /// `[B, T]` token advantages, 0 on padding (the layout of `outcome_token_advantages`).
    pub advantages: Vec<f32>,
    /// Per response, in batch order.
    pub responses: Vec<ResponseSegments>,
}

/// `share[a][b]`: how many response tokens `a` and `b` share through the tree (copied prefixes,
/// never tokens that happen to be equal). `share[b][b] = L_b`.
fn shared_prefixes(links: &[TreeLink], lens: &[usize]) -> Result<Vec<Vec<usize>>> {
    let n = links.len();
    let mut share = vec![vec![0usize; n]; n];
    for (b, link) in links.iter().enumerate() {
        let bad = |reason: String| OptimError::Tree {
            group: 0,
            response: b,
            reason,
        };
        let k = link.branch_pos;
        match link.parent {
            None if k != 0 => {
                return Err(bad(format!(
                    "branch_pos {k} without a parent (a root response copies nothing: branch_pos must be 0)"
                )));
            }
            Some(p) if p >= b => {
                return Err(bad(format!(
                    "parent {p} is not an earlier response of the group (a parent must come before its \
                     children in generation order)"
                )));
            }
            Some(p) if k > lens[p] => {
                return Err(bad(format!(
                    "branch_pos {k} is past the {} response tokens of its parent {p}",
                    lens[p]
                )));
            }
            _ => {}
        }
        if k > lens[b] {
            return Err(bad(format!(
                "branch_pos {k} is past its own {} response tokens",
                lens[b]
            )));
        }
        // Everything after b's first k tokens is b's own, so b shares with an earlier x exactly
        // what its copied prefix (the parent's first k tokens) shares with x.
        let row = match link.parent {
            Some(p) => share[p][..b].iter().map(|&s| k.min(s)).collect(),
            None => vec![0; b],
        };
        for (x, s) in row.into_iter().enumerate() {
            share[b][x] = s;
            share[x][b] = s;
        }
        share[b][b] = lens[b];
    }
    Ok(share)
}

/// `K_b`: 0 and every position `< L_b` at which some other response leaves b's path. This covers
/// b's own branch point, its ancestors' branch points, and those of responses branched off b's
/// prefix (descendants, or branches of ancestors inside the shared prefix).
fn split_points(share_b: &[usize], b: usize, len: usize) -> Vec<usize> {
    let mut ks: Vec<usize> = std::iter::once(0)
        .chain(
            share_b
                .iter()
                .enumerate()
                .filter(|&(x, &s)| x != b && s < len)
                .map(|(_, &s)| s),
        )
        .collect();
    ks.sort_unstable();
    ks.dedup();
    ks
}

fn mean_over(rewards: &[f64], members: impl Iterator<Item = usize>) -> f64 {
    let (sum, n) = members.fold((0.0, 0usize), |(s, n), x| (s + rewards[x], n + 1));
    sum / n as f64
}

/// kiln's node value: the mean reward of the responses sharing b's first k tokens through the
/// tree, i.e. of the trie node at depth k on b's path (b itself is always a member).
fn node_value(share_b: &[usize], k: usize, rewards: &[f64]) -> f64 {
    mean_over(rewards, (0..share_b.len()).filter(|&x| share_b[x] >= k))
}

/// The seed's index-keyed values: for each split index k, the mean reward over the union of every
/// split node at depth k, whichever subtree it is in.
fn index_keyed_values(
    share: &[Vec<usize>],
    splits: &[Vec<usize>],
    rewards: &[f64],
) -> BTreeMap<usize, f64> {
    let mut members: BTreeMap<usize, Vec<bool>> = BTreeMap::new();
    for (b, ks) in splits.iter().enumerate() {
        for &k in ks {
            let m = members
                .entry(k)
                .or_insert_with(|| vec![false; rewards.len()]);
            for (x, &s) in share[b].iter().enumerate() {
                m[x] |= s >= k;
            }
        }
    }
    members
        .into_iter()
        .map(|(k, m)| (k, mean_over(rewards, (0..m.len()).filter(|&x| m[x]))))
        .collect()
}

/// Length-aware calibration in place: for each correct b other than the shortest correct s,
/// `A_t -= |A_t| (1 - rho^lambda)` on `[k_c, L_b)`.
fn calibrate(
    adv: &mut [Vec<f64>],
    share: &[Vec<usize>],
    lens: &[usize],
    correct: &[bool],
    lambda: f64,
) -> Vec<Option<Calibration>> {
    let mut out = vec![None; adv.len()];
    let correct_ids: Vec<usize> = (0..correct.len()).filter(|&b| correct[b]).collect();
    if lambda == 0.0 || correct_ids.len() < 2 {
        return out;
    }
    // Shortest correct; min_by_key keeps the first of equal keys, so ties go to the earliest.
    let s = *correct_ids.iter().min_by_key(|&&b| lens[b]).unwrap();
    for &b in &correct_ids {
        let kc = share[b][s];
        // b == s, or b ends inside the prefix shared with s (then b and s are the same path and
        // there is no tail to shorten).
        if b == s || lens[b] <= kc {
            continue;
        }
        // L_s >= k_c (k_c is a prefix of s) and L_b >= L_s (s is the shortest), so rho is in [0, 1].
        let rho = (lens[s] - kc) as f64 / (lens[b] - kc) as f64;
        let w = 1.0 - rho.powf(lambda);
        for a in &mut adv[b][kc..] {
            *a -= a.abs() * w;
        }
        out[b] = Some(Calibration {
            shortest: s,
            shared: kc,
            rho,
        });
    }
    out
}

/// ROSE segment advantages of one group. `links`, `lens` (response tokens `L_b`), `rewards` and
/// `correct` have one entry per response in generation order; `correct` is only read by the
/// length calibration (`cfg.length_lambda > 0`).
///
/// Node keying: the node at depth k on b's path is the set of responses that share b's first k
/// tokens through the tree (copied prefixes, not tokens equal by chance), and `V_b(k)` is their mean
/// reward. With `cfg.seed_compat`, `V_b(k)` (k > 0) is instead the mean over the union of all
/// split nodes at depth k in the group, as the seed code keys values by index alone: two
/// different subtrees that both split at the same index get one merged value. The split points
/// `K_b` and the calibration are the same in both modes; without index collisions the two agree.
pub fn rose_group(
    links: &[TreeLink],
    lens: &[usize],
    rewards: &[f32],
    correct: &[bool],
    cfg: &RoseConfig,
) -> Result<Vec<ResponseSegments>> {
    let n = links.len();
    check_len("lens", n, lens.len())?;
    check_len("rewards", n, rewards.len())?;
    check_len("correct", n, correct.len())?;
    cfg.validate()?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let share = shared_prefixes(links, lens)?;
    let r: Vec<f64> = rewards.iter().map(|&x| x as f64).collect();
    let splits: Vec<Vec<usize>> = (0..n)
        .map(|b| split_points(&share[b], b, lens[b]))
        .collect();
    let by_index = cfg
        .seed_compat
        .then(|| index_keyed_values(&share, &splits, &r));

    let mut values = Vec::with_capacity(n);
    let mut increments = Vec::with_capacity(n);
    let mut adv = Vec::with_capacity(n);
    for b in 0..n {
        let v: Vec<f64> = splits[b]
            .iter()
            .map(|&k| match &by_index {
                Some(m) => m[&k],
                None => node_value(&share[b], k, &r),
            })
            .collect();
        let inc: Vec<f64> = v
            .windows(2)
            .map(|w| w[1] - w[0])
            .chain(std::iter::once(r[b] - v[v.len() - 1]))
            .collect();
        // Every token of segment [k_i, k_{i+1}) carries that segment's increment.
        let mut a = vec![0.0f64; lens[b]];
        for (i, &k) in splits[b].iter().enumerate() {
            let end = splits[b].get(i + 1).copied().unwrap_or(lens[b]);
            a[k..end].fill(inc[i]);
        }
        values.push(v);
        increments.push(inc);
        adv.push(a);
    }
    let calib = calibrate(&mut adv, &share, lens, correct, cfg.length_lambda);

    Ok(splits
        .into_iter()
        .zip(values)
        .zip(increments)
        .zip(adv)
        .zip(calib)
        .map(
            |((((splits, values), increments), a), calibration)| ResponseSegments {
                splits,
                values,
                increments,
                advantages: a.into_iter().map(|x| x as f32).collect(),
                calibration,
            },
        )
        .collect())
}

fn check_group_size(n: usize, group_size: usize, min: usize) -> Result<()> {
    if group_size < min || !n.is_multiple_of(group_size) {
        return Err(OptimError::Config {
            field: "group_size",
            reason: format!(
                "{n} rewards are not a whole number of groups of {group_size} (at least {min})"
            ),
        });
    }
    Ok(())
}

/// ROSE token advantages `[B, T]` for a batch of groups (contiguous, `group_size` each): the
/// drop-in for `outcome_token_advantages`. `links` holds parent indices inside each group. A
/// response's length `L_b` is one past its last masked token; advantages are written where
/// `mask > 0` and are 0 elsewhere. Tree errors name the group and the response inside it.
pub fn rose_token_advantages(
    rewards: &[f32],
    links: &[TreeLink],
    correct: &[bool],
    group_size: usize,
    mask: &[f32],
    seq_len: usize,
    cfg: &RoseConfig,
) -> Result<RoseOutput> {
    check_group_size(rewards.len(), group_size, 2)?;
    check_len("links", rewards.len(), links.len())?;
    check_len("correct", rewards.len(), correct.len())?;
    check_len("mask", rewards.len() * seq_len, mask.len())?;
    if seq_len == 0 {
        return Err(OptimError::Config {
            field: "seq_len",
            reason: "must be at least 1".into(),
        });
    }
    let lens: Vec<usize> = mask
        .chunks(seq_len)
        .map(|row| row.iter().rposition(|&m| m > 0.0).map_or(0, |t| t + 1))
        .collect();
    let mut out = RoseOutput {
        advantages: vec![0.0; mask.len()],
        responses: Vec::with_capacity(rewards.len()),
    };
    for g in 0..rewards.len() / group_size {
        let span = g * group_size..(g + 1) * group_size;
        let segs = rose_group(
            &links[span.clone()],
            &lens[span.clone()],
            &rewards[span.clone()],
            &correct[span],
            cfg,
        )
        .map_err(|e| match e {
            OptimError::Tree {
                response, reason, ..
            } => OptimError::Tree {
                group: g,
                response,
                reason,
            },
            e => e,
        })?;
        out.responses.extend(segs);
    }
    for (b, seg) in out.responses.iter().enumerate() {
        let row = b * seq_len;
        for (t, &a) in seg.advantages.iter().enumerate() {
            if mask[row + t] > 0.0 {
                out.advantages[row + t] = a;
            }
        }
    }
    Ok(out)
}

/// Dynamic sampling (DAPO): `true` for each group (contiguous, `group_size` rewards) whose rewards
/// are not all equal. A group with equal rewards has zero advantage everywhere and is dropped.
pub fn informative_groups(rewards: &[f32], group_size: usize) -> Result<Vec<bool>> {
    check_group_size(rewards.len(), group_size, 1)?;
    Ok(rewards
        .chunks(group_size)
        .map(|g| g.iter().any(|&r| r != g[0]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-6;

    fn assert_close(got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < EPS, "{got:?} vs {want:?}");
        }
    }

    fn assert_close64(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < EPS, "{got:?} vs {want:?}");
        }
    }

    /// Sum of segment increments = R_b - group mean, for every response.
    fn assert_telescopes(segs: &[ResponseSegments], rewards: &[f32]) {
        let mean = rewards.iter().map(|&r| r as f64).sum::<f64>() / rewards.len() as f64;
        for (b, s) in segs.iter().enumerate() {
            let sum: f64 = s.increments.iter().sum();
            assert!(
                (sum - (rewards[b] as f64 - mean)).abs() < 1e-12,
                "response {b}"
            );
            assert_eq!(s.values[0], mean, "V_b(0) is the group mean");
        }
    }

    fn off() -> RoseConfig {
        RoseConfig::default()
    }

    #[test]
    fn root_only_group_is_reward_minus_mean() {
        // Four root responses: no splits, K_b = {0}; every token gets R_b - 0.5.
        let links = [TreeLink::ROOT; 4];
        let rewards = [1.0, 0.0, 0.0, 1.0];
        let segs = rose_group(&links, &[3, 2, 4, 1], &rewards, &[false; 4], &off()).unwrap();
        for s in &segs {
            assert_eq!(s.splits, vec![0]);
            assert_eq!(s.values, vec![0.5]);
        }
        assert_eq!(segs[0].advantages, vec![0.5; 3]);
        assert_eq!(segs[1].advantages, vec![-0.5; 2]);
        assert_eq!(segs[2].advantages, vec![-0.5; 4]);
        assert_eq!(segs[3].advantages, vec![0.5; 1]);
        assert_telescopes(&segs, &rewards);
        // Same as Dr.GRPO broadcast to the tokens.
        let drgrpo = crate::advantages::dr_grpo(&rewards, 4).unwrap();
        for (s, a) in segs.iter().zip(drgrpo) {
            assert!(s.advantages.iter().all(|&x| x == a));
        }
    }

    // The tree of the acceptance test (positions are response-token indices):
    //   r0: root, L = 6, R = 1
    //   r1: copies r0[0..2], L = 7, R = 0
    //   r2: copies r1[0..4] (so r0[0..2] too), L = 5, R = 1
    //   r3: root, L = 4, R = 0
    // Shared prefixes: r0-r1 = 2, r0-r2 = min(4, 2) = 2, r1-r2 = 4, r3-any = 0. Group mean 0.5.
    fn four_tree() -> ([TreeLink; 4], [usize; 4], [f32; 4]) {
        (
            [
                TreeLink::ROOT,
                TreeLink::branch(0, 2),
                TreeLink::branch(1, 4),
                TreeLink::ROOT,
            ],
            [6, 7, 5, 4],
            [1.0, 0.0, 1.0, 0.0],
        )
    }

    #[test]
    fn four_response_tree_hand_values() {
        let (links, lens, rewards) = four_tree();
        let segs = rose_group(&links, &lens, &rewards, &[false; 4], &off()).unwrap();
        // K_r0 = {0, 2} (2: where its descendants r1, r2 leave it).
        //   V(0) = 0.5, V(2) = mean{r0, r1, r2} = 2/3.
        //   [0,2): 2/3 - 1/2 = 1/6; [2,6): 1 - 2/3 = 1/3.
        assert_eq!(segs[0].splits, vec![0, 2]);
        assert_close64(&segs[0].values, &[0.5, 2.0 / 3.0]);
        let (a, b, c) = (1.0 / 6.0, 1.0 / 3.0, 0.5);
        assert_close(&segs[0].advantages, &[a, a, b, b, b, b]);
        // K_r1 = {0, 2, 4} (2: its own branch point, 4: its child r2's).
        //   V(2) = 2/3, V(4) = mean{r1, r2} = 1/2.
        //   [0,2): 1/6; [2,4): 1/2 - 2/3 = -1/6; [4,7): 0 - 1/2 = -1/2.
        assert_eq!(segs[1].splits, vec![0, 2, 4]);
        assert_close64(&segs[1].values, &[0.5, 2.0 / 3.0, 0.5]);
        assert_close(&segs[1].advantages, &[a, a, -a, -a, -c, -c, -c]);
        // K_r2 = {0, 2, 4} (2: its ancestor r1's branch point, 4: its own).
        //   [0,2): 1/6; [2,4): -1/6; [4,5): 1 - 1/2 = 1/2.
        assert_eq!(segs[2].splits, vec![0, 2, 4]);
        assert_close64(&segs[2].values, &[0.5, 2.0 / 3.0, 0.5]);
        assert_close(&segs[2].advantages, &[a, a, -a, -a, c]);
        // K_r3 = {0}: [0,4): 0 - 1/2.
        assert_eq!(segs[3].splits, vec![0]);
        assert_close(&segs[3].advantages, &[-c; 4]);
        // Telescoping: r0 1/6 + 1/3 = 1/2, r1 1/6 - 1/6 - 1/2 = -1/2, r2 1/6 - 1/6 + 1/2 = 1/2.
        assert_telescopes(&segs, &rewards);
        assert!(segs.iter().all(|s| s.calibration.is_none()));
        // No two subtrees split at the same index here, so the seed's keying agrees.
        let seed = RoseConfig {
            seed_compat: true,
            ..off()
        };
        assert_eq!(
            rose_group(&links, &lens, &rewards, &[false; 4], &seed).unwrap(),
            segs
        );
    }

    #[test]
    fn batch_layout_matches_outcome_advantages() {
        // Two groups of 4, T = 8: the tree above, then a root-only group. Rows are right-padded.
        let (links, lens, rewards) = four_tree();
        let t = 8;
        let all_lens = [lens[0], lens[1], lens[2], lens[3], 2, 3, 1, 8];
        let mut mask = vec![0.0f32; 8 * t];
        for (b, &l) in all_lens.iter().enumerate() {
            mask[b * t..b * t + l].fill(1.0);
        }
        let all_links: Vec<TreeLink> = links.iter().copied().chain([TreeLink::ROOT; 4]).collect();
        let all_rewards: Vec<f32> = rewards
            .iter()
            .copied()
            .chain([2.0, 0.0, 0.0, 0.0])
            .collect();
        let out = rose_token_advantages(&all_rewards, &all_links, &[false; 8], 4, &mask, t, &off())
            .unwrap();
        let (a, b, c) = (1.0 / 6.0, 1.0 / 3.0, 0.5);
        #[rustfmt::skip]
        let want = [
            a, a, b, b, b, b, 0.0, 0.0,
            a, a, -a, -a, -c, -c, -c, 0.0,
            a, a, -a, -a, c, 0.0, 0.0, 0.0,
            -c, -c, -c, -c, 0.0, 0.0, 0.0, 0.0,
            // Second group: mean 0.5, advantages 1.5, -0.5, -0.5, -0.5.
            1.5, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            -c, -c, -c, 0.0, 0.0, 0.0, 0.0, 0.0,
            -c, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            -c, -c, -c, -c, -c, -c, -c, -c,
        ];
        assert_close(&out.advantages, &want);
        assert_eq!(out.responses.len(), 8);
        assert_eq!(out.responses[1].splits, vec![0, 2, 4]);
        // Root-only rows equal Dr.GRPO broadcast to the tokens.
        let dr = crate::advantages::outcome_token_advantages(
            crate::advantages::AdvantageEstimator::DrGrpo,
            &all_rewards[4..],
            4,
            &mask[4 * t..],
            t,
        )
        .unwrap();
        assert_eq!(&out.advantages[4 * t..], &dr[..]);
    }

    #[test]
    fn seed_compat_merges_nodes_split_at_the_same_index() {
        // Two subtrees that both split at index 3:
        //   r0: root, L = 6, R = 1      r1: root, L = 6, R = 0
        //   r2: copies r0[0..3], L = 5, R = 1
        //   r3: copies r1[0..3], L = 5, R = 1
        //   r4: root, L = 4, R = 0
        // Group mean 3/5 = 0.6. Nodes at depth 3: A = {r0, r2} (mean 1), B = {r1, r3} (mean 0.5).
        let links = [
            TreeLink::ROOT,
            TreeLink::ROOT,
            TreeLink::branch(0, 3),
            TreeLink::branch(1, 3),
            TreeLink::ROOT,
        ];
        let lens = [6, 6, 5, 5, 4];
        let rewards = [1.0, 0.0, 1.0, 1.0, 0.0];
        let correct = [false; 5];

        // kiln (node-keyed):
        //   r0, r2: K = {0, 3}, V = (0.6, 1):   [0,3): 0.4,  [3,L): 1 - 1 = 0
        //   r1:     K = {0, 3}, V = (0.6, 0.5): [0,3): -0.1, [3,6): 0 - 0.5 = -0.5
        //   r3:     K = {0, 3}, V = (0.6, 0.5): [0,3): -0.1, [3,5): 1 - 0.5 = 0.5
        //   r4:     K = {0}:                    [0,4): -0.6
        let kiln = rose_group(&links, &lens, &rewards, &correct, &off()).unwrap();
        for s in &kiln[..4] {
            assert_eq!(s.splits, vec![0, 3]);
        }
        assert_close64(&kiln[0].values, &[0.6, 1.0]);
        assert_close64(&kiln[1].values, &[0.6, 0.5]);
        assert_close(&kiln[0].advantages, &[0.4, 0.4, 0.4, 0.0, 0.0, 0.0]);
        assert_close(&kiln[1].advantages, &[-0.1, -0.1, -0.1, -0.5, -0.5, -0.5]);
        assert_close(&kiln[2].advantages, &[0.4, 0.4, 0.4, 0.0, 0.0]);
        assert_close(&kiln[3].advantages, &[-0.1, -0.1, -0.1, 0.5, 0.5]);
        assert_close(&kiln[4].advantages, &[-0.6; 4]);
        assert_telescopes(&kiln, &rewards);

        // seed_compat (index-keyed): V(3) = mean over A u B = {r0, r1, r2, r3} = 3/4 for all four.
        //   r0, r2, r3: [0,3): 0.75 - 0.6 = 0.15, [3,L): 1 - 0.75 = 0.25
        //   r1:         [0,3): 0.15,              [3,6): 0 - 0.75 = -0.75
        //   r4 is unchanged: -0.6.
        let seed_cfg = RoseConfig {
            seed_compat: true,
            ..off()
        };
        let seed = rose_group(&links, &lens, &rewards, &correct, &seed_cfg).unwrap();
        for s in &seed[..4] {
            assert_eq!(s.splits, vec![0, 3]);
            assert_close64(&s.values, &[0.6, 0.75]);
        }
        assert_close(&seed[0].advantages, &[0.15, 0.15, 0.15, 0.25, 0.25, 0.25]);
        assert_close(
            &seed[1].advantages,
            &[0.15, 0.15, 0.15, -0.75, -0.75, -0.75],
        );
        assert_close(&seed[2].advantages, &[0.15, 0.15, 0.15, 0.25, 0.25]);
        assert_close(&seed[3].advantages, &[0.15, 0.15, 0.15, 0.25, 0.25]);
        assert_close(&seed[4].advantages, &[-0.6; 4]);
        // Still telescopes: the merged value cancels between consecutive segments.
        assert_telescopes(&seed, &rewards);
    }

    #[test]
    fn split_points_include_branches_off_an_ancestor_inside_the_prefix() {
        // r0 root L = 8; r1 copies r0[0..5] (L = 7); r2 copies r0[0..2] (L = 4).
        // r1's path: 2 (r2 leaves r0's prefix, which r1 shares), 5 (its own branch point).
        // Node at 2 = {r0, r1, r2}; node at 5 = {r0, r1}. Rewards 1, 1, 0: mean 2/3.
        let links = [
            TreeLink::ROOT,
            TreeLink::branch(0, 5),
            TreeLink::branch(0, 2),
        ];
        let rewards = [1.0, 1.0, 0.0];
        let segs = rose_group(&links, &[8, 7, 4], &rewards, &[false; 3], &off()).unwrap();
        assert_eq!(segs[0].splits, vec![0, 2, 5]);
        assert_eq!(segs[1].splits, vec![0, 2, 5]);
        assert_eq!(segs[2].splits, vec![0, 2]);
        assert_close64(&segs[1].values, &[2.0 / 3.0, 2.0 / 3.0, 1.0]);
        // r1: [0,2): 0, [2,5): 1/3, [5,7): 0.  r2: [0,2): 0, [2,4): 0 - 2/3.
        let t = 1.0 / 3.0;
        assert_close(&segs[1].advantages, &[0.0, 0.0, t, t, t, 0.0, 0.0]);
        assert_close(&segs[2].advantages, &[0.0, 0.0, -2.0 * t, -2.0 * t]);
        assert_telescopes(&segs, &rewards);
    }

    // Calibration tree:
    //   r0: root, L = 4, R = 1, correct       (the shortest correct: s)
    //   r1: copies r0[0..2], L = 6, R = 1, correct
    //   r2: copies r1[0..4], L = 5, R = 0, wrong
    //   r3: root, L = 8, R = 1, correct
    // Mean 3/4. Shares: r0-r1 = 2, r0-r2 = 2, r1-r2 = 4, r3-any = 0.
    // Before calibration:
    //   r0: K {0,2}, V (3/4, 2/3):        [0,2): -1/12, [2,4): 1/3
    //   r1: K {0,2,4}, V (3/4, 2/3, 1/2): [0,2): -1/12, [2,4): -1/6, [4,6): 1/2
    //   r2: K {0,2,4}:                    [0,2): -1/12, [2,4): -1/6, [4,5): -1/2
    //   r3: K {0}:                        [0,8): 1/4
    // Calibration, s = r0 (L_s = 4):
    //   r1: k_c = 2, rho = (4 - 2) / (6 - 2) = 1/2, tokens [2, 6)
    //   r3: k_c = 0, rho = 4 / 8 = 1/2, tokens [0, 8)
    fn calib_tree() -> ([TreeLink; 4], [usize; 4], [f32; 4], [bool; 4]) {
        (
            [
                TreeLink::ROOT,
                TreeLink::branch(0, 2),
                TreeLink::branch(1, 4),
                TreeLink::ROOT,
            ],
            [4, 6, 5, 8],
            [1.0, 1.0, 0.0, 1.0],
            [true, true, false, true],
        )
    }

    #[test]
    fn length_calibration_hand_values() {
        let (links, lens, rewards, correct) = calib_tree();
        let lam = |l: f64| RoseConfig {
            length_lambda: l,
            ..off()
        };
        let (e, s6) = (1.0 / 12.0, 1.0 / 6.0);
        let r0 = [-e, -e, 1.0 / 3.0, 1.0 / 3.0];
        let r2 = [-e, -e, -s6, -s6, -0.5];

        // lambda = 0: off, the plain segment advantages.
        let base = rose_group(&links, &lens, &rewards, &correct, &lam(0.0)).unwrap();
        assert_close(&base[0].advantages, &r0);
        assert_close(&base[1].advantages, &[-e, -e, -s6, -s6, 0.5, 0.5]);
        assert_close(&base[2].advantages, &r2);
        assert_close(&base[3].advantages, &[0.25; 8]);
        assert!(base.iter().all(|s| s.calibration.is_none()));

        // lambda = 1: 1 - rho = 1/2.
        //   r1 [2,6): -1/6 - 1/6 * 1/2 = -1/4; 1/2 - 1/2 * 1/2 = 1/4. [0,2) untouched.
        //   r3 [0,8): 1/4 - 1/4 * 1/2 = 1/8.
        let one = rose_group(&links, &lens, &rewards, &correct, &lam(1.0)).unwrap();
        assert_close(&one[0].advantages, &r0);
        assert_close(&one[1].advantages, &[-e, -e, -0.25, -0.25, 0.25, 0.25]);
        assert_close(&one[2].advantages, &r2);
        assert_close(&one[3].advantages, &[0.125; 8]);
        let c1 = one[1].calibration.unwrap();
        assert_eq!((c1.shortest, c1.shared, c1.rho), (0, 2, 0.5));
        let c3 = one[3].calibration.unwrap();
        assert_eq!((c3.shortest, c3.shared, c3.rho), (0, 0, 0.5));
        assert!(one[0].calibration.is_none() && one[2].calibration.is_none());

        // lambda = 2: 1 - rho^2 = 3/4.
        //   r1 [2,6): -1/6 - 1/6 * 3/4 = -7/24; 1/2 - 1/2 * 3/4 = 1/8.
        //   r3 [0,8): 1/4 - 1/4 * 3/4 = 1/16.
        let two = rose_group(&links, &lens, &rewards, &correct, &lam(2.0)).unwrap();
        assert_close(&two[0].advantages, &r0);
        let m = -7.0 / 24.0;
        assert_close(&two[1].advantages, &[-e, -e, m, m, 0.125, 0.125]);
        assert_close(&two[2].advantages, &r2);
        assert_close(&two[3].advantages, &[0.0625; 8]);
        // Segments (telemetry) are the uncalibrated ones.
        assert_eq!(two[1].increments, base[1].increments);

        // Fewer than 2 correct: unchanged whatever lambda.
        let only_one = [false, true, false, false];
        let single = rose_group(&links, &lens, &rewards, &only_one, &lam(2.0)).unwrap();
        assert_eq!(single, base);
    }

    #[test]
    fn length_calibration_edge_cases_are_no_ops() {
        // r0: root, L = 3, correct (s)
        // r1: copies all of r0 (k = 3), L = 3, correct: k_c = L_b = 3, empty range, skipped
        // r2: root, L = 3, correct: L_b = L_s, k_c = 0, rho = 3/3 = 1, no change
        // r3: root, L = 5, wrong
        let links = [
            TreeLink::ROOT,
            TreeLink::branch(0, 3),
            TreeLink::ROOT,
            TreeLink::ROOT,
        ];
        let lens = [3, 3, 3, 5];
        let rewards = [1.0, 1.0, 1.0, 0.0];
        let correct = [true, true, true, false];
        let base = rose_group(&links, &lens, &rewards, &correct, &off()).unwrap();
        let cfg = RoseConfig {
            length_lambda: 2.0,
            ..off()
        };
        let cal = rose_group(&links, &lens, &rewards, &correct, &cfg).unwrap();
        for b in 0..4 {
            assert_eq!(cal[b].advantages, base[b].advantages, "response {b}");
        }
        assert!(cal[1].calibration.is_none());
        assert_eq!(cal[2].calibration.unwrap().rho, 1.0);
        // r0 and r1 share everything: no split inside either (the share 3 = L is not a position).
        assert_eq!(base[0].splits, vec![0]);
        assert_eq!(base[1].splits, vec![0]);
        assert_close(&base[1].advantages, &[0.25; 3]);
    }

    #[test]
    fn invalid_trees_have_clear_errors() {
        let err = |links: &[TreeLink], lens: &[usize]| {
            let n = links.len();
            rose_group(links, lens, &vec![0.0; n], &vec![false; n], &off())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&[TreeLink::ROOT, TreeLink::branch(1, 0)], &[3, 3]),
            "invalid ROSE tree: group 0, response 1: parent 1 is not an earlier response of the \
             group (a parent must come before its children in generation order)"
        );
        assert_eq!(
            err(&[TreeLink::ROOT, TreeLink::branch(5, 0)], &[3, 3]),
            "invalid ROSE tree: group 0, response 1: parent 5 is not an earlier response of the \
             group (a parent must come before its children in generation order)"
        );
        assert_eq!(
            err(&[TreeLink::ROOT, TreeLink::branch(0, 4)], &[3, 9]),
            "invalid ROSE tree: group 0, response 1: branch_pos 4 is past the 3 response tokens \
             of its parent 0"
        );
        assert_eq!(
            err(&[TreeLink::ROOT, TreeLink::branch(0, 3)], &[6, 2]),
            "invalid ROSE tree: group 0, response 1: branch_pos 3 is past its own 2 response tokens"
        );
        let stray = TreeLink {
            parent: None,
            branch_pos: 2,
        };
        assert_eq!(
            err(&[TreeLink::ROOT, stray], &[3, 3]),
            "invalid ROSE tree: group 0, response 1: branch_pos 2 without a parent (a root \
             response copies nothing: branch_pos must be 0)"
        );
        // In a batch the error names the group and the index inside it.
        let links = [
            TreeLink::ROOT,
            TreeLink::ROOT,
            TreeLink::ROOT,
            TreeLink::branch(0, 3),
        ];
        let mask = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0];
        let e = rose_token_advantages(&[0.0; 4], &links, &[false; 4], 2, &mask, 3, &off())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid ROSE tree: group 1, response 1: branch_pos 3 is past the 2 response tokens \
             of its parent 0"
        );
        // Bad config and shapes.
        let bad = RoseConfig {
            length_lambda: -1.0,
            ..off()
        };
        let e = rose_group(&[TreeLink::ROOT], &[1], &[0.0], &[true], &bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid config `length_lambda`: must be finite and >= 0 (got -1)"
        );
        assert!(rose_group(&[TreeLink::ROOT], &[1, 2], &[0.0], &[true], &off()).is_err());
        assert!(
            rose_token_advantages(
                &[0.0; 3],
                &[TreeLink::ROOT; 3],
                &[false; 3],
                2,
                &[1.0; 3],
                1,
                &off()
            )
            .is_err()
        );
    }

    #[test]
    fn informative_groups_drop_equal_reward_groups() {
        let r = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 1.0, 0.0, 0.0];
        assert_eq!(
            informative_groups(&r, 3).unwrap(),
            vec![false, false, true, true]
        );
        assert_eq!(informative_groups(&r, 4).unwrap(), vec![true, true, true]);
        assert_eq!(informative_groups(&r, 1).unwrap(), vec![false; 12]);
        assert!(informative_groups(&r, 5).is_err());
        assert!(informative_groups(&r, 0).is_err());
    }
}
