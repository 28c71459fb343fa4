//! ROSE tree rollouts (ALGORITHMS.md section 3): the n responses of a prompt are grown as a tree.
//!
//! Round 0 samples one response per prompt from the root (the prompt). In each round 1..n-1 every
//! group gets one more response: with probability `epsilon` a fresh one from the root, otherwise a
//! *branch*: the position with the highest branch score over every position of every response
//! already in the group is chosen, the new response copies that response's first `k` tokens and
//! samples the rest (the token at `k` is drawn anew), continuing from the parent's retained KV
//! cache ([`Engine::fork`]), so neither the prompt nor the prefix runs again.
//!
//! The branch score of position t comes from the top-20 candidates the engine recorded there
//! (`SamplingParams::top_logprobs`), so scoring needs no forward pass: with `p_i = exp(logprob_i)`
//! (not renormalised) and `e_i` the L2-normalised input-embedding rows of the candidates,
//! `H_t = -sum_i p_i log p_i`, `F_t = sum_{i != j} p_i p_j cos(e_i, e_j)` and
//! `score_t = -F_t * H_t` ([`BranchMetric::SemanticEntropy`]). Two ablations:
//! [`BranchMetric::Entropy`] (`score_t = H_t`, FR3E-style) and [`BranchMetric::Random`].
//!
//! The result, [`TreeGroup`], lists each group's responses in generation order with a
//! [`TreeLink`] per response (parent index inside the group, `branch_pos = k`): field for field
//! what `kiln_optim::tree::TreeLink` takes, so the trainer maps one onto the other directly and
//! hands them to `rose_token_advantages`.
//!
//! Determinism: response r of prompt p (r = the round) draws its tokens from the engine stream
//! keyed by (seed, p, r), root or branch alike, and the round's root-or-branch decision (and the
//! Random metric's position) from a separate stream keyed by the same triple. Nothing depends on
//! which other prompts share the call; [`tree_rollouts_from`] numbers prompts from an offset so a
//! long prompt list can be handed over in chunks.

use std::collections::BTreeMap;

use kiln_model::CausalLm;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, ForkRequest, Rollout};
use crate::error::{Result, RolloutError};
use crate::params::{MAX_TOP_LOGPROBS, SamplingParams};

/// How a branch point is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BranchMetric {
    /// ROSE: `score_t = -F_t * H_t` from the recorded top candidates and the input embeddings.
    #[default]
    SemanticEntropy,
    /// Token entropy alone (FR3E-style): `score_t = H_t`, the entropy of the full sampling
    /// distribution as the engine recorded it (`Rollout::entropies`; no candidates needed).
    Entropy,
    /// A uniformly random position over every position of every response (ablation), drawn from
    /// the seeded decision stream.
    Random,
}

/// Shape of the trees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TreeParams {
    /// Responses per prompt (= rounds). Replaces `SamplingParams::n`, which is ignored.
    pub n: usize,
    /// Probability that a round samples from the root instead of branching; in [0, 1].
    pub epsilon: f64,
    pub metric: BranchMetric,
}

impl Default for TreeParams {
    fn default() -> Self {
        TreeParams {
            n: 8,
            epsilon: 0.5,
            metric: BranchMetric::SemanticEntropy,
        }
    }
}

impl TreeParams {
    /// Checks every field; the message names the field and the allowed range.
    pub fn validate(&self) -> Result<()> {
        if self.n == 0 {
            return Err(RolloutError::Tree(
                "n (responses per prompt) must be at least 1".into(),
            ));
        }
        if !(self.epsilon >= 0.0 && self.epsilon <= 1.0) {
            return Err(RolloutError::Tree(format!(
                "epsilon must be in [0, 1], got {}",
                self.epsilon
            )));
        }
        Ok(())
    }
}

/// Where a response came from inside its group. Field for field `kiln_optim::tree::TreeLink`:
/// `parent` is the index (inside the group, generation order) of the response it branched from,
/// `None` for a response sampled from the prompt; `branch_pos` is `k`, the number of the parent's
/// response tokens it copied (0 for root responses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TreeLink {
    pub parent: Option<usize>,
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

/// The tree of one prompt.
#[derive(Debug, Clone, Serialize)]
pub struct TreeGroup {
    pub prompt_index: usize,
    pub prompt_ids: Vec<u32>,
    /// Generation order: `rollouts[r]` was made in round r (its `sample_index` is r). A branch's
    /// `Rollout::fork` names its parent's `sample_index`, i.e. the same index as `links[r]`.
    /// Retained KV caches are dropped.
    pub rollouts: Vec<Rollout>,
    /// One per rollout.
    pub links: Vec<TreeLink>,
    /// The branch score of every position of every rollout under the metric used (telemetry;
    /// all 0 for [`BranchMetric::Random`]).
    pub scores: Vec<Vec<f32>>,
}

/// A host copy of the policy's input embedding table, each row L2-normalised (all-zero rows stay
/// zero). Built once per policy; 49152 x 576 floats (113 MB) for SmolLM2.
#[derive(Debug, Clone)]
pub struct TokenEmbeddings {
    dim: usize,
    data: Vec<f32>,
}

impl TokenEmbeddings {
    /// The `embed_tokens` table of `net` (its input embeddings, whether or not the LM head is
    /// tied to them), read back to the host.
    pub fn from_net(net: &CausalLm) -> Result<Self> {
        let w = net.embed_tokens.weight.val();
        let [_, dim] = w.dims();
        let data = w
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| RolloutError::Config(format!("reading the embedding table: {e:?}")))?;
        Self::from_rows(dim, data)
    }

    /// A table from row-major rows of width `dim` (normalised here).
    pub fn from_rows(dim: usize, mut data: Vec<f32>) -> Result<Self> {
        if dim == 0 || data.is_empty() || !data.len().is_multiple_of(dim) {
            return Err(RolloutError::Tree(format!(
                "an embedding table needs rows of a positive width: {} floats, width {dim}",
                data.len()
            )));
        }
        for row in data.chunks_exact_mut(dim) {
            let norm = row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
            }
        }
        Ok(TokenEmbeddings { dim, data })
    }

    /// Rows (the vocabulary of the embedding table).
    pub fn vocab(&self) -> usize {
        self.data.len() / self.dim
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The normalised row of token `id`. Panics when `id >= vocab()`.
    pub fn row(&self, id: u32) -> &[f32] {
        let i = id as usize * self.dim;
        &self.data[i..i + self.dim]
    }
}

/// Entropy and semantic similarity of one position's candidates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositionStats {
    /// `H = -sum_i p_i log p_i` over the candidates.
    pub entropy: f64,
    /// `F = sum_{i != j} p_i p_j cos(e_i, e_j)`.
    pub similarity: f64,
}

impl PositionStats {
    /// The ROSE branch score `-F * H`.
    pub fn score(&self) -> f64 {
        -self.similarity * self.entropy
    }
}

/// `H` and `F` of candidates `(id, logprob)` (as `Rollout::top_logprobs` records them).
pub fn position_stats(candidates: &[(u32, f32)], embeddings: &TokenEmbeddings) -> PositionStats {
    position_stats_with(candidates, embeddings, &mut vec![0.0; embeddings.dim()])
}

/// [`position_stats`] with a caller's buffer of `dim` floats for the weighted mean.
fn position_stats_with(
    candidates: &[(u32, f32)],
    embeddings: &TokenEmbeddings,
    mean: &mut [f64],
) -> PositionStats {
    mean.fill(0.0);
    let mut entropy = 0.0;
    let mut diagonal = 0.0;
    for &(id, lp) in candidates {
        let lp = lp as f64;
        let p = lp.exp();
        if p > 0.0 {
            entropy -= p * lp;
        }
        let e = embeddings.row(id);
        let mut sq = 0.0;
        for (m, &x) in mean.iter_mut().zip(e) {
            *m += p * x as f64;
            sq += x as f64 * x as f64;
        }
        diagonal += p * p * sq;
    }
    // With unit rows, sum_{i,j} p_i p_j cos(e_i, e_j) = ||sum_i p_i e_i||^2: one pass over the
    // candidates instead of 20 x 20 dot products. The i = j terms are p_i^2 ||e_i||^2 (p_i^2 for
    // unit rows, 0 for an all-zero row), subtracted to leave the i != j sum.
    let similarity = mean.iter().map(|m| m * m).sum::<f64>() - diagonal;
    PositionStats {
        entropy,
        similarity,
    }
}

/// The branch score of every response position of `rollout` under `metric`.
/// [`BranchMetric::SemanticEntropy`] reads `Rollout::top_logprobs` (all 0 without candidates);
/// [`BranchMetric::Entropy`] reads `Rollout::entropies`; [`BranchMetric::Random`] gives 0
/// everywhere (its position is drawn, not scored).
pub fn branch_scores(
    rollout: &Rollout,
    embeddings: &TokenEmbeddings,
    metric: BranchMetric,
) -> Vec<f32> {
    scores_from(rollout, embeddings, metric, 0)
}

/// The scores of positions `start..` of `rollout` (a branch's copied prefix has its parent's).
fn scores_from(
    rollout: &Rollout,
    embeddings: &TokenEmbeddings,
    metric: BranchMetric,
    start: usize,
) -> Vec<f32> {
    let len = rollout.response_ids.len();
    match metric {
        BranchMetric::SemanticEntropy => {
            let Some(top) = &rollout.top_logprobs else {
                return vec![0.0; len.saturating_sub(start)];
            };
            let mut mean = vec![0.0; embeddings.dim()];
            top[start.min(top.len())..]
                .iter()
                .map(|c| position_stats_with(c, embeddings, &mut mean).score() as f32)
                .collect()
        }
        BranchMetric::Entropy => rollout.entropies[start.min(len)..].to_vec(),
        BranchMetric::Random => vec![0.0; len.saturating_sub(start)],
    }
}

/// The stream of a round's decision for one prompt: separate from the engine's token streams
/// (different tag), keyed like them so it does not depend on batching.
fn decision_rng(seed: u64, prompt: usize, round: usize) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(prompt as u64).to_le_bytes());
    key[16..24].copy_from_slice(&(round as u64).to_le_bytes());
    key[24..].copy_from_slice(b"kilntree");
    ChaCha8Rng::from_seed(key)
}

/// What a round adds to a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Root,
    Branch { parent: usize, at: usize },
}

/// The round's choice for `group`. A position `t` is a valid branch point when forking there
/// leaves room for at least one new token: `t < max_new_tokens` (a branch keeps the response
/// budget) and prompt + `t` inside the context. Every recorded position passes both today (the
/// engine caps responses at both limits); the check keeps the fork call from ever failing.
fn choose(
    group: &TreeGroup,
    round: usize,
    seed: u64,
    tree: &TreeParams,
    max_new_tokens: usize,
    max_context: usize,
) -> Choice {
    let mut rng = decision_rng(seed, group.prompt_index, round);
    // `random::<f64>()` is in [0, 1): epsilon = 1 always takes the root, 0 never does.
    if rng.random::<f64>() < tree.epsilon {
        return Choice::Root;
    }
    let plen = group.prompt_ids.len();
    let forkable = |t: usize| t < max_new_tokens && plen + t < max_context;
    // Candidates in (response, position) order, so the first maximum is the earliest.
    let positions = group.scores.iter().enumerate().flat_map(|(b, s)| {
        s.iter()
            .enumerate()
            .filter(move |&(t, _)| forkable(t))
            .map(move |(t, &v)| (b, t, v))
    });
    let pick = match tree.metric {
        BranchMetric::Random => {
            let total = positions.clone().count();
            if total == 0 {
                None
            } else {
                positions.clone().nth(rng.random_range(0..total))
            }
        }
        _ => positions.fold(None, |best: Option<(usize, usize, f32)>, cur| {
            // Only a strictly greater score replaces the best: ties keep the earliest response,
            // then the earliest position. NaN scores never win.
            match best {
                Some(b) if cur.2 > b.2 => Some(cur),
                None if !cur.2.is_nan() => Some(cur),
                _ => best,
            }
        }),
    };
    match pick {
        Some((parent, at, _)) => Choice::Branch { parent, at },
        // No position to branch at (cannot happen with responses of >= 1 token): sample fresh.
        None => Choice::Root,
    }
}

/// [`tree_rollouts_from`] for prompts numbered from 0.
pub fn tree_rollouts(
    engine: &Engine<'_>,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    tree: &TreeParams,
    embeddings: &TokenEmbeddings,
) -> Result<Vec<TreeGroup>> {
    tree_rollouts_from(engine, 0, prompts, params, tree, embeddings)
}

/// Grows a tree of `tree.n` responses for each prompt (prompt i is numbered
/// `first_prompt_index + i`); see the module docs for the algorithm and the random streams.
///
/// `params` is used as given except: `n` is ignored (one response per group per round);
/// `retain_kv` is set while a later round may branch from the response (KV caches are dropped
/// from the result); with [`BranchMetric::SemanticEntropy`] and `top_logprobs == 0` the engine
/// records the spec's top-20 candidates (a value in 1..=19 is kept: fewer candidates, as asked).
/// A branch keeps the response budget: it samples at most `max_new_tokens - k` new tokens, so
/// every response has at most `max_new_tokens` tokens.
///
/// Each round makes one [`Engine::generate_indexed`] call for the groups that sample from the
/// root (batched across prompts) and one [`Engine::fork`] call per distinct branch position
/// (the new-token budget differs per position). The engine runs the requests of a fork call one
/// after another, so branches of different prompts do not share a decode batch yet.
pub fn tree_rollouts_from(
    engine: &Engine<'_>,
    first_prompt_index: usize,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    tree: &TreeParams,
    embeddings: &TokenEmbeddings,
) -> Result<Vec<TreeGroup>> {
    tree.validate()?;
    let mut base = SamplingParams {
        n: 1,
        ..params.clone()
    };
    if tree.metric == BranchMetric::SemanticEntropy && base.top_logprobs == 0 {
        base.top_logprobs = MAX_TOP_LOGPROBS;
    }
    base.validate()?;
    if tree.metric == BranchMetric::SemanticEntropy && embeddings.vocab() < engine.vocab() {
        return Err(RolloutError::Tree(format!(
            "the token embeddings have {} rows, fewer than the policy's vocabulary of {}",
            embeddings.vocab(),
            engine.vocab()
        )));
    }
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    // Only responses a later round may branch from keep their KV (a cache row each).
    let round_params = |round: usize| SamplingParams {
        retain_kv: tree.epsilon < 1.0 && round + 1 < tree.n,
        ..base.clone()
    };
    let indices: Vec<usize> = (first_prompt_index..first_prompt_index + prompts.len()).collect();
    let first = engine.generate_indexed(&indices, 0, prompts, &round_params(0), &mut |_| {})?;
    let mut groups: Vec<TreeGroup> = first
        .into_iter()
        .map(|g| {
            let scores = g
                .rollouts
                .iter()
                .map(|r| branch_scores(r, embeddings, tree.metric))
                .collect();
            TreeGroup {
                prompt_index: g.prompt_index,
                prompt_ids: g.prompt_ids,
                rollouts: g.rollouts,
                links: vec![TreeLink::ROOT],
                scores,
            }
        })
        .collect();

    for round in 1..tree.n {
        let rp = round_params(round);
        let mut roots: Vec<usize> = Vec::new();
        // Branch position -> (group, parent) of every fork this round.
        let mut forks: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
        for (gi, g) in groups.iter().enumerate() {
            match choose(
                g,
                round,
                base.seed,
                tree,
                base.max_new_tokens,
                engine.max_context(),
            ) {
                Choice::Root => roots.push(gi),
                Choice::Branch { parent, at } => forks.entry(at).or_default().push((gi, parent)),
            }
        }
        tracing::debug!(
            round,
            roots = roots.len(),
            branches = groups.len() - roots.len(),
            "tree round"
        );
        let mut added: Vec<Option<(Rollout, TreeLink)>> = vec![None; groups.len()];
        if !roots.is_empty() {
            let idx: Vec<usize> = roots.iter().map(|&gi| groups[gi].prompt_index).collect();
            let ps: Vec<Vec<u32>> = roots.iter().map(|&gi| prompts[gi].clone()).collect();
            // First sample index = round: the root response of round r uses stream (seed, p, r).
            let out = engine.generate_indexed(&idx, round, &ps, &rp, &mut |_| {})?;
            for (&gi, mut g) in roots.iter().zip(out) {
                added[gi] = g.rollouts.pop().map(|r| (r, TreeLink::ROOT));
            }
        }
        for (&at, reqs) in &forks {
            let fp = SamplingParams {
                max_new_tokens: rp.max_new_tokens - at,
                ..rp.clone()
            };
            let requests: Vec<ForkRequest<'_>> = reqs
                .iter()
                .map(|&(gi, parent)| ForkRequest {
                    parent: &groups[gi].rollouts[parent],
                    at,
                    n: 1,
                    first_sample_index: round,
                })
                .collect();
            let kids = engine.fork(&requests, &fp)?;
            for (&(gi, parent), kid) in reqs.iter().zip(kids) {
                added[gi] = Some((kid, TreeLink::branch(parent, at)));
            }
        }
        for (g, slot) in groups.iter_mut().zip(added) {
            let (rollout, link) = slot.expect("every group gets one response per round");
            // A branch copied its parent's candidates up to k: so are the scores there.
            let scores = match link.parent {
                Some(p) => {
                    let mut s = g.scores[p][..link.branch_pos].to_vec();
                    s.extend(scores_from(
                        &rollout,
                        embeddings,
                        tree.metric,
                        link.branch_pos,
                    ));
                    s
                }
                None => branch_scores(&rollout, embeddings, tree.metric),
            };
            g.rollouts.push(rollout);
            g.links.push(link);
            g.scores.push(scores);
        }
    }
    for r in groups.iter_mut().flat_map(|g| &mut g.rollouts) {
        r.drop_kv();
    }
    Ok(groups)
}
