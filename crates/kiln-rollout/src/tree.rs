//! ROSE tree rollouts (ALGORITHMS.md section 3): the n responses of a prompt are grown as a tree.
//!
//! Round 0 samples one response per prompt from the root (the prompt). In each round 1..n-1 every
//! group gets one more response: with probability `epsilon` a fresh one from the root, otherwise a
//! *branch*: the position with the highest branch score over every position of every response
//! already in the group is chosen, the new response copies that response's first `k` tokens and
//! samples the rest (the token at `k` is drawn anew), continuing from the parent's retained KV
//! cache cut at k, so neither the prompt nor the prefix runs again.
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
//! Schedule: [`tree_rollouts_from`] runs the whole request as one engine decode batch. The
//! root-or-branch decision of a round does not depend on the responses, so it is drawn up front:
//! every root response of every round and prompt starts at once from the prompt's KV (prefilled
//! once), and a branch round starts, joining the running batch, as soon as the earlier responses
//! of its group have finished. [`tree_rollouts_by_rounds_from`] grows the same trees round by
//! round (one batched engine call per round), as the spec describes them.
//!
//! Determinism: response r of prompt p (r = the round) draws its tokens from the engine stream
//! keyed by (seed, p, r), root or branch alike, and the round's root-or-branch decision (and the
//! Random metric's position) from a separate stream keyed by the same triple. Nothing depends on
//! which other prompts share the call or on the schedule; [`tree_rollouts_from`] numbers prompts
//! from an offset so a long prompt list can be handed over in chunks.

use std::sync::Arc;

use kiln_model::CausalLm;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, KvRef, Pending, Rollout};
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

/// Whether round `round` of prompt `prompt` samples from the root, and its decision stream
/// after that draw (the Random metric draws its position from it next). Round 0 is always a
/// root and draws nothing.
fn coin(seed: u64, prompt: usize, round: usize, epsilon: f64) -> (bool, ChaCha8Rng) {
    let mut rng = decision_rng(seed, prompt, round);
    // `random::<f64>()` is in [0, 1): epsilon = 1 always takes the root, 0 never does.
    let root = round == 0 || rng.random::<f64>() < epsilon;
    (root, rng)
}

/// The best branch point over `scores` (every position of the earlier responses of a group):
/// `(response, position)`. A position `t` is a valid branch point when forking there leaves
/// room for at least one new token: `t < max_new_tokens` (a branch keeps the response budget)
/// and prompt + `t` inside the context. Every recorded position passes both today (the engine
/// caps responses at both limits); the check keeps the fork from ever failing. `None` when no
/// position is valid (cannot happen with responses of >= 1 token: the round samples from the
/// root then).
fn branch_point(
    scores: &[Vec<f32>],
    prompt_len: usize,
    metric: BranchMetric,
    rng: &mut ChaCha8Rng,
    max_new_tokens: usize,
    max_context: usize,
) -> Option<(usize, usize)> {
    let forkable = |t: usize| t < max_new_tokens && prompt_len + t < max_context;
    // Candidates in (response, position) order, so the first maximum is the earliest.
    let positions = scores.iter().enumerate().flat_map(|(b, s)| {
        s.iter()
            .enumerate()
            .filter(move |&(t, _)| forkable(t))
            .map(move |(t, &v)| (b, t, v))
    });
    let pick = match metric {
        BranchMetric::Random => {
            let total = positions.clone().count();
            if total == 0 {
                None
            } else {
                positions.clone().nth(rng.random_range(0..total))
            }
        }
        _ => positions.fold(None, first_max),
    };
    pick.map(|(b, t, _)| (b, t))
}

/// Folds candidates `(response, position, score)` to the first maximum: only a strictly greater
/// score replaces the best (ties keep the earliest); NaN scores never win.
fn first_max(
    best: Option<(usize, usize, f32)>,
    cur: (usize, usize, f32),
) -> Option<(usize, usize, f32)> {
    match best {
        Some(b) if cur.2 > b.2 => Some(cur),
        None if !cur.2.is_nan() => Some(cur),
        _ => best,
    }
}

/// The checks and request parameters shared by both schedules; `None`: no prompts.
fn prepare(
    engine: &Engine<'_>,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    tree: &TreeParams,
    embeddings: &TokenEmbeddings,
) -> Result<Option<SamplingParams>> {
    tree.validate()?;
    let mut base = SamplingParams {
        n: 1,
        retain_kv: false,
        ..params.clone()
    };
    if tree.metric == BranchMetric::SemanticEntropy && base.top_logprobs == 0 {
        base.top_logprobs = MAX_TOP_LOGPROBS;
    }
    engine.check_params(&base)?;
    if tree.metric == BranchMetric::SemanticEntropy && embeddings.vocab() < engine.vocab() {
        return Err(RolloutError::Tree(format!(
            "the token embeddings have {} rows, fewer than the policy's vocabulary of {}",
            embeddings.vocab(),
            engine.vocab()
        )));
    }
    for (i, p) in prompts.iter().enumerate() {
        engine.check_prompt(i, p)?;
    }
    Ok((!prompts.is_empty()).then_some(base))
}

/// The KV prefixes of `prompts` (every token but the last), prefilled once.
fn prompt_prefixes(engine: &Engine<'_>, prompts: &[&[u32]]) -> Result<Vec<Option<KvRef>>> {
    let heads: Vec<Vec<u32>> = prompts.iter().map(|p| p[..p.len() - 1].to_vec()).collect();
    engine.prefill_prefixes(&heads)
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
/// `retain_kv` is managed here (KV caches are dropped from the result); with
/// [`BranchMetric::SemanticEntropy`] and `top_logprobs == 0` the engine records the spec's
/// top-20 candidates (a value in 1..=19 is kept: fewer candidates, as asked). A branch keeps the
/// response budget: it samples at most `max_new_tokens - k` new tokens, so every response has at
/// most `max_new_tokens` tokens.
///
/// Schedule: the whole request is ONE engine decode batch (`Engine::run`). Each prompt's
/// prefix is prefilled once. Whether a round samples from the root is decided before anything
/// is sampled (its decision stream's first draw does not depend on the responses), so every
/// root response of every round starts at once, from the prompt's KV. A branch round r starts
/// the moment responses 0..r-1 of its group have all finished (its branch point needs their
/// scores), from its parent's retained KV cut at k, joining the running batch; finished rows
/// leave it. The result is the same as growing the trees round by round
/// ([`tree_rollouts_by_rounds_from`]): response r draws from the stream (seed, p, r) and sees
/// the same responses 0..r-1, whatever runs beside it.
///
/// Memory: at most `max_batch_tokens / (longest prompt + max_new_tokens)` groups are grown at
/// once (later prompts start as groups finish); the decode batch stays within
/// `max_batch_tokens`; a finished response keeps its KV only while a later branch round of its
/// group could still fork from it (with the argmax metrics: while no other finished response
/// beats its best score; with [`BranchMetric::Random`]: until its group's last branch round
/// starts).
pub fn tree_rollouts_from(
    engine: &Engine<'_>,
    first_prompt_index: usize,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    tree: &TreeParams,
    embeddings: &TokenEmbeddings,
) -> Result<Vec<TreeGroup>> {
    let Some(base) = prepare(engine, prompts, params, tree, embeddings)? else {
        return Ok(Vec::new());
    };
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(1);
    let max_open = (engine.max_batch_tokens() / (longest + base.max_new_tokens)).max(1);
    let mut grower = Grower {
        engine,
        params: &base,
        tree,
        embeddings,
        first: first_prompt_index,
        groups: prompts
            .iter()
            .enumerate()
            .map(|(i, p)| GroupState::new(first_prompt_index + i, p, &base, tree))
            .collect(),
        opened: 0,
        open: 0,
        max_open,
    };
    let initial = grower.open_groups()?;
    engine.run(initial, &base, &mut |done| grower.finished(done))?;
    grower
        .groups
        .into_iter()
        .map(GroupState::into_tree)
        .collect()
}

/// One tree being grown by [`tree_rollouts_from`].
struct GroupState {
    prompt_index: usize,
    prompt: Arc<Vec<u32>>,
    /// The prompt's KV prefix while a round may still sample from the root.
    prompt_kv: Option<KvRef>,
    /// Per round: sampled from the root (decided up front).
    root: Vec<bool>,
    /// Per round: its decision stream after the root-or-branch draw.
    rngs: Vec<ChaCha8Rng>,
    started: Vec<bool>,
    rollouts: Vec<Option<Rollout>>,
    links: Vec<TreeLink>,
    scores: Vec<Vec<f32>>,
    /// Per finished response: its best score at a valid branch point (the first maximum).
    best: Vec<Option<f32>>,
}

impl GroupState {
    fn new(prompt_index: usize, prompt: &[u32], base: &SamplingParams, tree: &TreeParams) -> Self {
        let (root, rngs): (Vec<bool>, Vec<ChaCha8Rng>) = (0..tree.n)
            .map(|r| coin(base.seed, prompt_index, r, tree.epsilon))
            .unzip();
        GroupState {
            prompt_index,
            prompt: Arc::new(prompt.to_vec()),
            prompt_kv: None,
            root,
            rngs,
            started: vec![false; tree.n],
            rollouts: vec![None; tree.n],
            links: vec![TreeLink::ROOT; tree.n],
            scores: vec![Vec::new(); tree.n],
            best: vec![None; tree.n],
        }
    }

    /// Whether a branch round after `round` exists (so response `round` may become a parent).
    fn branch_after(&self, round: usize) -> bool {
        self.root[round + 1..].iter().any(|&r| !r)
    }

    fn into_tree(self) -> Result<TreeGroup> {
        let rollouts = self
            .rollouts
            .into_iter()
            .map(|r| {
                let mut r = r.ok_or_else(|| {
                    RolloutError::Tree("a tree round did not finish (engine bug)".into())
                })?;
                r.drop_kv();
                Ok(r)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TreeGroup {
            prompt_index: self.prompt_index,
            prompt_ids: self.prompt.as_ref().clone(),
            rollouts,
            links: self.links,
            scores: self.scores,
        })
    }
}

/// The scheduler of [`tree_rollouts_from`]: starts rounds as their inputs are ready.
struct Grower<'r, 'e> {
    engine: &'r Engine<'e>,
    params: &'r SamplingParams,
    tree: &'r TreeParams,
    embeddings: &'r TokenEmbeddings,
    first: usize,
    groups: Vec<GroupState>,
    /// Groups opened so far (in order) and how many of them are not finished.
    opened: usize,
    open: usize,
    max_open: usize,
}

impl Grower<'_, '_> {
    /// Opens groups up to `max_open` unfinished ones: prefills their prompts (one call) and
    /// returns every root round of each.
    fn open_groups(&mut self) -> Result<Vec<Pending>> {
        let take = self
            .max_open
            .saturating_sub(self.open)
            .min(self.groups.len() - self.opened);
        if take == 0 {
            return Ok(Vec::new());
        }
        let range = self.opened..self.opened + take;
        self.opened += take;
        self.open += take;
        let prompts: Vec<&[u32]> = self.groups[range.clone()]
            .iter()
            .map(|g| g.prompt.as_slice())
            .collect();
        let kvs = prompt_prefixes(self.engine, &prompts)?;
        let mut out = Vec::new();
        for (g, kv) in self.groups[range].iter_mut().zip(kvs) {
            for r in 0..g.root.len() {
                if g.root[r] {
                    g.started[r] = true;
                    let p = self.engine.root_pending(
                        g.prompt_index,
                        r,
                        g.prompt.clone(),
                        kv.clone(),
                        self.params,
                    );
                    out.push(p.retain(g.branch_after(r)).with_priority(r));
                }
            }
            // Kept for a branch round that finds no branch point (and samples from the root).
            if g.root.iter().any(|&r| !r) {
                g.prompt_kv = kv;
            }
        }
        Ok(out)
    }

    /// Records finished responses, starts the branch rounds they unblock, releases KV no later
    /// round can fork from, and opens new groups as groups finish.
    fn finished(&mut self, done: Vec<Rollout>) -> Result<Vec<Pending>> {
        let mut out = Vec::new();
        for rollout in done {
            let gi = rollout.prompt_index - self.first;
            let round = rollout.sample_index;
            let g = &mut self.groups[gi];
            let link = g.links[round];
            // A branch copied its parent's candidates up to k: so are the scores there.
            let scores = match link.parent {
                Some(p) => {
                    let mut s = g.scores[p][..link.branch_pos].to_vec();
                    s.extend(scores_from(
                        &rollout,
                        self.embeddings,
                        self.tree.metric,
                        link.branch_pos,
                    ));
                    s
                }
                None => branch_scores(&rollout, self.embeddings, self.tree.metric),
            };
            let plen = g.prompt.len();
            let forkable =
                |t: usize| t < self.params.max_new_tokens && plen + t < self.engine.max_context();
            g.best[round] = scores
                .iter()
                .enumerate()
                .filter(|&(t, _)| forkable(t))
                .map(|(t, &v)| (round, t, v))
                .fold(None, first_max)
                .map(|b| b.2);
            g.scores[round] = scores;
            g.rollouts[round] = Some(rollout);
            if let Some(p) = self.start_branch(gi)? {
                out.push(p);
            }
            self.release(gi);
            if self.groups[gi].rollouts.iter().all(Option::is_some) {
                self.open -= 1;
                out.extend(self.open_groups()?);
            }
        }
        Ok(out)
    }

    /// Starts the group's next branch round when every earlier response has finished.
    fn start_branch(&mut self, gi: usize) -> Result<Option<Pending>> {
        let g = &mut self.groups[gi];
        let Some(round) = g.started.iter().position(|&s| !s) else {
            return Ok(None);
        };
        if g.rollouts[..round].iter().any(Option::is_none) {
            return Ok(None);
        }
        g.started[round] = true;
        let last = !g.started.contains(&false);
        let retain = g.branch_after(round);
        let point = branch_point(
            &g.scores[..round],
            g.prompt.len(),
            self.tree.metric,
            &mut g.rngs[round],
            self.params.max_new_tokens,
            self.engine.max_context(),
        );
        let pending = match point {
            Some((parent, at)) => {
                g.links[round] = TreeLink::branch(parent, at);
                let parent = g.rollouts[parent].as_ref().expect("finished");
                let kv = self.engine.fork_prefix_kv(parent, at)?;
                self.engine.fork_pending(
                    parent,
                    at,
                    kv,
                    round,
                    self.params.max_new_tokens - at,
                    self.params,
                )
            }
            None => self.engine.root_pending(
                g.prompt_index,
                round,
                g.prompt.clone(),
                g.prompt_kv.clone(),
                self.params,
            ),
        };
        if last {
            g.prompt_kv = None;
        }
        Ok(Some(pending.retain(retain).with_priority(round)))
    }

    /// Drops the KV of finished responses that no branch round still to start can fork from.
    /// Response b is a candidate of round r > b only if it holds the first maximum over rounds
    /// 0..r-1: once a finished earlier response scores at least as high, or a finished later one
    /// (before r) higher, it never will (scores are final, the set only grows with r).
    fn release(&mut self, gi: usize) {
        let g = &mut self.groups[gi];
        let metric = self.tree.metric;
        for b in 0..g.rollouts.len() {
            if !g.rollouts[b].as_ref().is_some_and(Rollout::has_kv) {
                continue;
            }
            let next = (b + 1..g.started.len()).find(|&r| !g.started[r]);
            let needed = match (next, metric) {
                (None, _) => false,
                (Some(_), BranchMetric::Random) => true,
                (Some(r), _) => match g.best[b] {
                    None => false,
                    Some(mine) => !(0..r).any(|a| {
                        a != b
                            && g.best[a].is_some_and(|s| if a < b { s >= mine } else { s > mine })
                    }),
                },
            };
            if !needed && let Some(r) = g.rollouts[b].as_mut() {
                r.drop_kv();
            }
        }
    }
}

/// The same trees as [`tree_rollouts_from`], grown round by round as the spec describes them:
/// each round is one batched engine call across all prompts (its root samples from the prompts'
/// KV, prefilled once, and its branches from their parents' KV cut at k, decoding together) and
/// waits for the previous one. Slower than [`tree_rollouts_from`] (round barriers, smaller
/// batches); kept as its reference (tests) and for the benchmark.
pub fn tree_rollouts_by_rounds_from(
    engine: &Engine<'_>,
    first_prompt_index: usize,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    tree: &TreeParams,
    embeddings: &TokenEmbeddings,
) -> Result<Vec<TreeGroup>> {
    let Some(base) = prepare(engine, prompts, params, tree, embeddings)? else {
        return Ok(Vec::new());
    };
    let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let kvs = prompt_prefixes(engine, &refs)?;
    let shared: Vec<Arc<Vec<u32>>> = prompts.iter().map(|p| Arc::new(p.clone())).collect();
    let mut groups: Vec<TreeGroup> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| TreeGroup {
            prompt_index: first_prompt_index + i,
            prompt_ids: p.clone(),
            rollouts: Vec::with_capacity(tree.n),
            links: Vec::with_capacity(tree.n),
            scores: Vec::with_capacity(tree.n),
        })
        .collect();
    for round in 0..tree.n {
        // Only responses a later round may branch from keep their KV.
        let retain = tree.epsilon < 1.0 && round + 1 < tree.n;
        let mut pending = Vec::with_capacity(groups.len());
        let mut links = Vec::with_capacity(groups.len());
        for (gi, g) in groups.iter().enumerate() {
            let (root, mut rng) = coin(base.seed, g.prompt_index, round, tree.epsilon);
            let point = if root {
                None
            } else {
                branch_point(
                    &g.scores,
                    g.prompt_ids.len(),
                    tree.metric,
                    &mut rng,
                    base.max_new_tokens,
                    engine.max_context(),
                )
            };
            let p = match point {
                Some((parent, at)) => {
                    let parent_r = &g.rollouts[parent];
                    let kv = engine.fork_prefix_kv(parent_r, at)?;
                    links.push(TreeLink::branch(parent, at));
                    engine.fork_pending(parent_r, at, kv, round, base.max_new_tokens - at, &base)
                }
                None => {
                    links.push(TreeLink::ROOT);
                    engine.root_pending(
                        g.prompt_index,
                        round,
                        shared[gi].clone(),
                        kvs[gi].clone(),
                        &base,
                    )
                }
            };
            pending.push(p.retain(retain).with_priority(gi));
        }
        tracing::debug!(
            round,
            branches = links.iter().filter(|l| l.parent.is_some()).count(),
            "tree round"
        );
        let mut added: Vec<Option<Rollout>> = vec![None; groups.len()];
        engine.run(pending, &base, &mut |done| {
            for r in done {
                let gi = r.prompt_index - first_prompt_index;
                added[gi] = Some(r);
            }
            Ok(Vec::new())
        })?;
        for ((g, r), link) in groups.iter_mut().zip(added).zip(links) {
            let rollout = r.expect("every group gets one response per round");
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
