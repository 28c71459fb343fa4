//! The rollout engine: batched sampling decode over a kiln-model policy without autodiff.
//!
//! How a request runs:
//! 1. Prompts are sorted by length and cut into *waves* that fit `max_batch_tokens` (prompt
//!    tokens of one prefill, and KV slots of one decode batch). A prompt longer than the budget
//!    runs alone; nothing is ever refused for size.
//! 2. A wave's prompts are prefilled once, left-padded, in one forward pass. All but each
//!    prompt's last token go through the trunk only (no `[tokens x vocab]` logits: the LM head is
//!    swapped for a 1-wide stub), then the last tokens run as one step through the real head.
//! 3. The n samples of a prompt get copies of its KV rows (`KvCache::select_rows`) and sample
//!    their first token from the prompt's logits, each from its own random stream.
//! 4. Live rows decode in lock-step, one token per row per forward call. Finished rows leave the
//!    batch (the cache is compacted) as soon as carrying them would cost more than the copy, so
//!    the cost follows the live rows.
//!
//! 5. Rows can also *join* a running batch: a row waiting with the KV of everything before its
//!    next input token (a fork's parent cut at k, a prompt prefilled without its last token)
//!    joins when the budget allows; the cache is rebuilt with `KvCache::gather` (live rows and
//!    the new prefixes, right-aligned) and the new rows' pending tokens run in the same forward
//!    call as the live rows' last tokens.
//!
//! [`Engine::fork`] continues rollouts from response position k: with the parents' KV retained
//! (`SamplingParams::retain_kv`) no prompt token runs again, and the children of every request,
//! whatever their parents, decode in one batch. Tree rollouts (`crate::tree`) run a whole request
//! as one such batch, adding each branch as soon as its branch point is known.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::nn::LinearConfig;
use burn::prelude::*;
use kiln_model::{CausalLm, KvCache, Model, PackedWeights, Rope, TokenBatch, Tokenizer};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Result, RolloutError};
use crate::params::SamplingParams;
use crate::sampler::{Draw, row_rng, sample};

/// Default bound on the KV slots (rows x slots) of one decode batch and on the prompt tokens of
/// one prefill.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 32 * 1024;

/// KV-cache room is reserved at least this many slots at a time (or the remaining budget, if
/// smaller); decode steps write into it in place, and growing copies the whole cache.
/// - Where attention runs over every slot with the unused ones masked (burn's attention, e.g. on
///   wgpu), room costs compute: reserving a whole 512-token budget up front made early steps
///   attend over hundreds of empty slots. There room grows by this step.
/// - Where it reads the used slots only (kiln's CPU decode kernel), room costs memory alone, so
///   it grows geometrically: the prompt plus twice its length at first, then the capacity
///   doubles (a 1024-token response copies the cache a few times, not once per 64 steps).
const KV_ROOM_STEP: usize = 64;

/// Why a response ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An eos id or one of `stop_token_ids` was sampled (it is the last response id).
    Eos,
    /// The decoded text reached this stop string (see `SamplingParams::stop_strings`).
    StopString(String),
    /// `max_new_tokens` tokens, or the model's context is full.
    Length,
}

impl FinishReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Eos => "eos",
            FinishReason::StopString(_) => "stop_string",
            FinishReason::Length => "length",
        }
    }
}

/// Where a forked rollout came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ForkOrigin {
    /// `sample_index` of the parent (same prompt).
    pub parent_sample: usize,
    /// The parent's first `at` response tokens were kept; the token at `at` was drawn anew.
    pub at: usize,
}

/// One sampled response.
#[derive(Debug, Clone, Serialize)]
pub struct Rollout {
    pub prompt_index: usize,
    pub sample_index: usize,
    pub prompt_ids: Vec<u32>,
    pub response_ids: Vec<u32>,
    /// Behaviour log-prob of each response token under the distribution it was sampled from
    /// (temperature and filters applied, renormalised; greedy: softmax of the raw logits).
    pub logprobs: Vec<f32>,
    /// Entropy (nats) of that distribution at each response position.
    pub entropies: Vec<f32>,
    /// With `SamplingParams::top_logprobs = k`: at each position the k most likely (id, log-prob)
    /// of that distribution, most likely first (fewer where the filters kept fewer).
    pub top_logprobs: Option<Vec<Vec<(u32, f32)>>>,
    pub finish_reason: FinishReason,
    /// The decoded response (special tokens skipped; cut before a stop string). `None` without
    /// a tokenizer.
    pub text: Option<String>,
    /// Set on rollouts made by [`Engine::fork`].
    pub fork: Option<ForkOrigin>,
    #[serde(skip)]
    kv: Option<Arc<RetainedKv>>,
}

impl Rollout {
    /// Whether this rollout kept its KV cache (forks from it need no prompt prefill).
    pub fn has_kv(&self) -> bool {
        self.kv.is_some()
    }

    /// Drops the retained KV cache (frees its memory).
    pub fn drop_kv(&mut self) {
        self.kv = None;
    }
}

/// The KV of one finished row: one cache row holding `real` tokens after its left padding (the
/// prompt and every response token but the last).
#[derive(Debug)]
struct RetainedKv {
    cache: Arc<KvCache>,
    real: usize,
}

/// A prefix of one cache row: slots `..slots` of row `row`.
#[derive(Debug, Clone)]
pub(crate) struct KvRef {
    cache: Arc<KvCache>,
    row: usize,
    slots: usize,
}

/// A row waiting to join a decode batch: the KV of everything before its next input token
/// (`None`: nothing), and that token.
pub(crate) struct Pending {
    row: Row,
    kv: Option<KvRef>,
    feed: u32,
    /// Rows join lowest first (ties: in the order given).
    priority: usize,
}

impl Pending {
    /// Whether the finished row keeps its KV (`Rollout::has_kv`) for later forks.
    pub(crate) fn retain(mut self, retain: bool) -> Self {
        self.row.retain = retain;
        self
    }

    pub(crate) fn with_priority(mut self, priority: usize) -> Self {
        self.priority = priority;
        self
    }
}

/// A finished row with its KV when retained.
type Finished = (Row, Option<Arc<RetainedKv>>);

/// The slots of row `row` of `cache` up to and including its `real`-th real token (0: none).
fn slots_holding(cache: &KvCache, row: usize, real: usize) -> usize {
    if real == 0 {
        return 0;
    }
    let mut seen = 0;
    for s in 0..cache.len() {
        if cache.is_valid(row, s) {
            seen += 1;
            if seen == real {
                return s + 1;
            }
        }
    }
    cache.len()
}

/// What the KV of a fork of `parent` at `at` must hold: prompt + response[..at - 1] (the token
/// after it is fed to get the logits of position `at`).
fn fork_prefix(parent: &Rollout, at: usize) -> Vec<u32> {
    let mut seq: Vec<u32> = parent
        .prompt_ids
        .iter()
        .chain(&parent.response_ids[..at])
        .copied()
        .collect();
    seq.pop();
    seq
}

/// The n rollouts of one prompt, in sample order.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutGroup {
    pub prompt_index: usize,
    pub prompt_ids: Vec<u32>,
    pub rollouts: Vec<Rollout>,
}

/// A token as it is sampled (for streaming).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenEvent {
    pub prompt_index: usize,
    pub sample_index: usize,
    pub token: u32,
}

/// Continue `parent` from response position `at` with `n` new samples, numbered
/// `first_sample_index..first_sample_index + n` (their random streams are keyed by those).
#[derive(Debug, Clone, Copy)]
pub struct ForkRequest<'r> {
    pub parent: &'r Rollout,
    pub at: usize,
    pub n: usize,
    pub first_sample_index: usize,
}

/// Work counters since the engine was built (or [`Engine::reset_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Forward calls that prefilled prompts (or fork prefixes without a retained KV).
    pub prefill_calls: usize,
    /// Real prompt tokens run through prefill.
    pub prefill_tokens: usize,
    /// Decode forward calls (one token per row).
    pub decode_steps: usize,
    /// Row-steps of those calls (live rows plus finished rows not yet compacted away).
    pub decode_rows: usize,
    /// Tokens sampled.
    pub sampled_tokens: usize,
    /// Cache compactions (finished rows leaving a batch).
    pub compactions: usize,
    /// Times rows joined a running batch (forks and tree rows: the cache rebuilt with
    /// `KvCache::gather`).
    pub joins: usize,
    /// Times a decode step found the cache full and grew it (a copy of the whole cache; see
    /// `KV_ROOM_STEP`).
    pub kv_grows: usize,
}

/// The rollout engine over a policy network (see the module docs).
pub struct Engine<'a> {
    net: CausalLm,
    /// The same network with a 1-wide LM head: prefill without `[tokens x vocab]` logits.
    trunk: CausalLm,
    /// `net`'s weights packed for the CPU decode kernel (`None` where it does not run): decode
    /// steps read them instead of burn's layout (docs/benchmarks.md, Rollouts).
    packed: Option<PackedWeights>,
    rope: Rope,
    tokenizer: Option<&'a Tokenizer>,
    eos_ids: Vec<u32>,
    pad_id: u32,
    vocab: usize,
    max_context: usize,
    max_batch_tokens: usize,
    /// Whether the network's decode attention reads only a cache's used slots (KV room then
    /// grows geometrically, see `KV_ROOM_STEP`).
    geometric_room: bool,
    stats: Mutex<EngineStats>,
}

/// Internal state of one row being decoded.
struct Row {
    /// Index of the row's prompt in the request (its group in the output of a generate call).
    group: usize,
    prompt_index: usize,
    sample_index: usize,
    prompt: Arc<Vec<u32>>,
    response: Vec<u32>,
    logprobs: Vec<f32>,
    entropies: Vec<f32>,
    top: Vec<Vec<(u32, f32)>>,
    rng: ChaCha8Rng,
    /// Response length at which the row stops (`Length`).
    cap: usize,
    finish: Option<FinishReason>,
    text: Option<String>,
    fork: Option<ForkOrigin>,
    /// Keep the KV cache row when the row finishes.
    retain: bool,
}

impl<'a> Engine<'a> {
    /// An engine over `net` (autodiff is dropped: the engine keeps `net.valid()`), its rotary
    /// tables and context length. Without a tokenizer there is no text and no stop strings.
    pub fn new(net: &CausalLm, rope: &Rope, max_context: usize) -> Self {
        let net = net.clone().valid();
        let device = net.device();
        let hidden = net.norm.gamma.dims()[0];
        let mut trunk = net.clone();
        trunk.lm_head = Some(LinearConfig::new(hidden, 1).with_bias(false).init(&device));
        let geometric_room = net.decode_reads_used_slots_only();
        Engine {
            vocab: net.vocab_size(),
            packed: net.pack_for_decode(),
            net,
            trunk,
            rope: rope.clone(),
            tokenizer: None,
            eos_ids: Vec::new(),
            pad_id: 0,
            max_context,
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            geometric_room,
            stats: Mutex::new(EngineStats::default()),
        }
    }

    /// An engine over a loaded checkpoint, with its tokenizer, eos ids and context length.
    pub fn from_model(model: &'a Model) -> Self {
        let mut e = Engine::new(
            &model.net,
            &model.rope,
            model.config.max_position_embeddings,
        );
        e.eos_ids = model.tokenizer.eos_ids.clone();
        e.pad_id = model.tokenizer.pad_id.unwrap_or(0);
        e.tokenizer = Some(&model.tokenizer);
        e
    }

    pub fn with_tokenizer(mut self, tokenizer: &'a Tokenizer) -> Self {
        self.eos_ids = tokenizer.eos_ids.clone();
        self.pad_id = tokenizer.pad_id.unwrap_or(0);
        self.tokenizer = Some(tokenizer);
        self
    }

    /// Ids that end a response (default: the tokenizer's eos ids; none without a tokenizer).
    pub fn with_eos_ids(mut self, eos: Vec<u32>) -> Self {
        self.eos_ids = eos;
        self
    }

    /// Bound on rows x KV slots of one decode batch and on the prompt tokens of one prefill.
    pub fn with_max_batch_tokens(mut self, tokens: usize) -> Self {
        self.max_batch_tokens = tokens.max(1);
        self
    }

    pub fn max_batch_tokens(&self) -> usize {
        self.max_batch_tokens
    }

    /// Vocabulary size of the policy (rows of its logits).
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Context length: prompt plus response tokens never exceed it.
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    pub fn tokenizer(&self) -> Option<&'a Tokenizer> {
        self.tokenizer
    }

    pub fn stats(&self) -> EngineStats {
        *self.stats.lock().unwrap()
    }

    pub fn reset_stats(&self) {
        *self.stats.lock().unwrap() = EngineStats::default();
    }

    /// `params.n` rollouts for each prompt, grouped by prompt in input order.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
    ) -> Result<Vec<RolloutGroup>> {
        self.generate_with(prompts, params, &mut |_| {})
    }

    /// As [`Engine::generate`], calling `on_token` for every token as it is sampled.
    pub fn generate_with(
        &self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        on_token: &mut dyn FnMut(TokenEvent),
    ) -> Result<Vec<RolloutGroup>> {
        self.generate_from(0, prompts, params, on_token)
    }

    /// As [`Engine::generate_with`] for prompts numbered from `first_prompt_index` (their
    /// `prompt_index` and random streams): a long list handed over in chunks samples exactly
    /// as it would in one call.
    pub fn generate_from(
        &self,
        first_prompt_index: usize,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        on_token: &mut dyn FnMut(TokenEvent),
    ) -> Result<Vec<RolloutGroup>> {
        let indices: Vec<usize> =
            (first_prompt_index..first_prompt_index + prompts.len()).collect();
        self.generate_indexed(&indices, 0, prompts, params, on_token)
    }

    /// As [`Engine::generate_with`] with explicit numbering: `prompts[i]` is prompt
    /// `prompt_indices[i]` and its samples are numbered from `first_sample_index` (their
    /// `prompt_index`, `sample_index` and random streams). Any subset of a prompt list thus
    /// samples exactly as the same prompts would in a call over the whole list; tree rollouts
    /// use it to add one response to some of their groups per round.
    pub fn generate_indexed(
        &self,
        prompt_indices: &[usize],
        first_sample_index: usize,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        on_token: &mut dyn FnMut(TokenEvent),
    ) -> Result<Vec<RolloutGroup>> {
        if prompt_indices.len() != prompts.len() {
            return Err(RolloutError::Config(format!(
                "{} prompt indices for {} prompts",
                prompt_indices.len(),
                prompts.len()
            )));
        }
        self.check_params(params)?;
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        for (i, p) in prompts.iter().enumerate() {
            self.check_prompt(i, p)?;
        }
        // Longest first: waves pad little, and the longest prompt bounds each wave.
        let mut order: Vec<usize> = (0..prompts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(prompts[i].len()));
        let mut finished: Vec<Finished> = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let longest = prompts[order[start]].len();
            let footprint = longest + params.max_new_tokens;
            let fit = (self.max_batch_tokens / footprint).max(1);
            let end = (start + fit).min(order.len());
            let wave = &order[start..end];
            start = end;
            let rows: Vec<Vec<u32>> = wave.iter().map(|&i| prompts[i].clone()).collect();
            let (pcache, plogits) = self.prefill(&rows, params.max_new_tokens)?;
            let shared: Vec<Arc<Vec<u32>>> = rows.into_iter().map(Arc::new).collect();
            let mut all_rows = Vec::with_capacity(wave.len() * params.n);
            for (j, &pi) in wave.iter().enumerate() {
                for s in 0..params.n {
                    let mut row = self.new_row(
                        prompt_indices[pi],
                        first_sample_index + s,
                        shared[j].clone(),
                        params,
                        None,
                    );
                    row.group = pi;
                    all_rows.push((j, row));
                }
            }
            let per_batch = (self.max_batch_tokens / (pcache.len() + params.max_new_tokens)).max(1);
            let mut pcache = Some(pcache);
            let mut it = all_rows.into_iter().peekable();
            while let Some(prefilled) = pcache.as_ref()
                && it.peek().is_some()
            {
                let chunk: Vec<(usize, Row)> = it.by_ref().take(per_batch).collect();
                let src: Vec<usize> = chunk.iter().map(|(j, _)| *j).collect();
                // One sample per prompt in one batch: the prefill cache is the batch's cache.
                // Handed over, not shared: a cache tensor with another handle is copied whole at
                // its first write (30 copies of the cache, 9 ms each, at SmolLM2 batch 32).
                let identity = src.len() == prefilled.batch_size()
                    && src.iter().enumerate().all(|(i, &j)| i == j);
                let cache = match (identity, it.peek().is_none()) {
                    (true, true) => pcache.take().expect("checked above"),
                    (true, false) => prefilled.clone(),
                    (false, _) => prefilled.select_rows(&src),
                };
                let logits: Vec<f32> = src
                    .iter()
                    .flat_map(|&j| {
                        plogits[j * self.vocab..(j + 1) * self.vocab]
                            .iter()
                            .copied()
                    })
                    .collect();
                let rows = chunk.into_iter().map(|(_, r)| r).collect();
                self.decode(
                    cache,
                    rows,
                    logits,
                    Vec::new(),
                    params,
                    on_token,
                    &mut |done| {
                        finished.extend(done);
                        Ok(Vec::new())
                    },
                )?;
            }
        }
        let mut groups: Vec<RolloutGroup> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| RolloutGroup {
                prompt_index: prompt_indices[i],
                prompt_ids: p.clone(),
                rollouts: Vec::with_capacity(params.n),
            })
            .collect();
        for (row, kv) in finished {
            let pi = row.group;
            groups[pi]
                .rollouts
                .push(self.finish_rollout(row, kv, params));
        }
        for g in &mut groups {
            g.rollouts.sort_by_key(|r| r.sample_index);
        }
        Ok(groups)
    }

    /// Continues each request's parent from response position `at` with `n` new samples. The
    /// children keep the parent's first `at` response tokens (ids, log-probs, entropies,
    /// candidates) exactly and draw the rest. With the parent's KV retained
    /// (`SamplingParams::retain_kv` when it was generated) no prompt or prefix token runs again;
    /// otherwise the prefixes of such requests are prefilled together, once per request.
    /// `max_new_tokens` counts tokens after `at`. The children of every request decode together
    /// in one lock-step batch (the parents' KV prefixes, of different lengths, gathered into one
    /// cache with `KvCache::gather`), within `max_batch_tokens`; output in request order.
    pub fn fork(
        &self,
        requests: &[ForkRequest<'_>],
        params: &SamplingParams,
    ) -> Result<Vec<Rollout>> {
        self.check_params(params)?;
        for (index, req) in requests.iter().enumerate() {
            let parent = req.parent;
            let bad = |message: String| RolloutError::Fork { index, message };
            if req.at > parent.response_ids.len() {
                return Err(bad(format!(
                    "position {} is past the parent's {} response tokens",
                    req.at,
                    parent.response_ids.len()
                )));
            }
            let plen = parent.prompt_ids.len();
            if req.n > 0 && plen + req.at >= self.max_context {
                return Err(bad(format!(
                    "prompt ({plen}) + prefix ({}) leave no room in the context of {}",
                    req.at, self.max_context
                )));
            }
        }
        // Parents without a retained KV: their prefixes prefilled together.
        let bare: Vec<usize> = (0..requests.len())
            .filter(|&i| {
                requests[i].n > 0
                    && self
                        .retained_prefix(requests[i].parent, requests[i].at)
                        .is_none()
            })
            .collect();
        let seqs: Vec<Vec<u32>> = bare
            .iter()
            .map(|&i| fork_prefix(requests[i].parent, requests[i].at))
            .collect();
        let mut prefilled: HashMap<usize, Option<KvRef>> = bare
            .into_iter()
            .zip(self.prefill_prefixes(&seqs)?)
            .collect();
        let mut pending = Vec::new();
        for (index, req) in requests.iter().enumerate() {
            let kv = match prefilled.remove(&index) {
                Some(kv) => kv,
                None => self.retained_prefix(req.parent, req.at),
            };
            for c in 0..req.n {
                let mut p = self.fork_pending(
                    req.parent,
                    req.at,
                    kv.clone(),
                    req.first_sample_index + c,
                    params.max_new_tokens,
                    params,
                );
                p.row.group = pending.len();
                p.priority = pending.len();
                pending.push(p);
            }
        }
        let mut out: Vec<Option<Rollout>> = vec![None; pending.len()];
        self.decode(
            self.net.new_cache(0),
            Vec::new(),
            Vec::new(),
            pending,
            params,
            &mut |_| {},
            &mut |done| {
                for (row, kv) in done {
                    let i = row.group;
                    out[i] = Some(self.finish_rollout(row, kv, params));
                }
                Ok(Vec::new())
            },
        )?;
        Ok(out
            .into_iter()
            .map(|r| r.expect("every fork row finishes"))
            .collect())
    }

    /// Runs `initial` rows (and whatever `sink` adds as rows finish) to completion in one
    /// lock-step decode batch; `sink` receives every finished rollout as soon as it finishes.
    pub(crate) fn run(
        &self,
        initial: Vec<Pending>,
        params: &SamplingParams,
        sink: &mut dyn FnMut(Vec<Rollout>) -> Result<Vec<Pending>>,
    ) -> Result<()> {
        self.check_params(params)?;
        self.decode(
            self.net.new_cache(0),
            Vec::new(),
            Vec::new(),
            initial,
            params,
            &mut |_| {},
            &mut |done| {
                let rollouts = done
                    .into_iter()
                    .map(|(row, kv)| self.finish_rollout(row, kv, params))
                    .collect();
                sink(rollouts)
            },
        )
    }

    /// The prefix of `parent` a fork at `at` continues from (everything before the token fed
    /// first), when its KV was retained.
    fn retained_prefix(&self, parent: &Rollout, at: usize) -> Option<KvRef> {
        let keep = parent.prompt_ids.len() + at - 1;
        let kv = parent.kv.as_ref().filter(|kv| kv.real >= keep)?;
        Some(KvRef {
            slots: slots_holding(&kv.cache, 0, keep),
            cache: kv.cache.clone(),
            row: 0,
        })
    }

    /// A row that continues `parent` from response position `at` (the parent's first `at` tokens
    /// copied), numbered `sample_index`, with `max_new_tokens` new tokens at most. `kv` holds
    /// prompt + response[..at - 1] (`None`: empty, a one-token prompt forked at 0).
    pub(crate) fn fork_pending(
        &self,
        parent: &Rollout,
        at: usize,
        kv: Option<KvRef>,
        sample_index: usize,
        max_new_tokens: usize,
        params: &SamplingParams,
    ) -> Pending {
        let plen = parent.prompt_ids.len();
        let mut row = self.new_row(
            parent.prompt_index,
            sample_index,
            Arc::new(parent.prompt_ids.clone()),
            params,
            Some(ForkOrigin {
                parent_sample: parent.sample_index,
                at,
            }),
        );
        row.response = parent.response_ids[..at].to_vec();
        row.logprobs = parent.logprobs[..at].to_vec();
        row.entropies = parent.entropies[..at].to_vec();
        row.top = match &parent.top_logprobs {
            Some(t) => t[..at].to_vec(),
            None => vec![Vec::new(); at],
        };
        row.cap = (at + max_new_tokens).min(self.max_context - plen);
        let feed = if at == 0 {
            *parent.prompt_ids.last().expect("a rollout has a prompt")
        } else {
            parent.response_ids[at - 1]
        };
        Pending {
            row,
            kv,
            feed,
            priority: 0,
        }
    }

    /// The prefix [`Engine::fork_pending`] needs for a fork of `parent` at `at`: its retained KV,
    /// or a prefill of prompt + response[..at - 1].
    pub(crate) fn fork_prefix_kv(&self, parent: &Rollout, at: usize) -> Result<Option<KvRef>> {
        match self.retained_prefix(parent, at) {
            Some(kv) => Ok(Some(kv)),
            None => Ok(self
                .prefill_prefixes(&[fork_prefix(parent, at)])?
                .pop()
                .flatten()),
        }
    }

    /// A row sampled from the prompt (response numbered `sample_index`) whose KV prefix `kv`
    /// holds every prompt token but the last (from [`Engine::prefill_prefixes`]).
    pub(crate) fn root_pending(
        &self,
        prompt_index: usize,
        sample_index: usize,
        prompt: Arc<Vec<u32>>,
        kv: Option<KvRef>,
        params: &SamplingParams,
    ) -> Pending {
        let feed = *prompt.last().expect("prompts are checked non-empty");
        Pending {
            row: self.new_row(prompt_index, sample_index, prompt, params, None),
            kv,
            feed,
            priority: 0,
        }
    }

    /// Runs `seqs` through the trunk (no LM head) into KV caches, left-padded, in waves of at
    /// most `max_batch_tokens` slots; one prefix per sequence (`None` for an empty one).
    pub(crate) fn prefill_prefixes(&self, seqs: &[Vec<u32>]) -> Result<Vec<Option<KvRef>>> {
        let mut out: Vec<Option<KvRef>> = vec![None; seqs.len()];
        let mut order: Vec<usize> = (0..seqs.len()).filter(|&i| !seqs[i].is_empty()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].len()));
        let mut start = 0;
        while start < order.len() {
            let longest = seqs[order[start]].len();
            let fit = (self.max_batch_tokens / longest).max(1);
            let end = (start + fit).min(order.len());
            let wave = &order[start..end];
            start = end;
            let p = wave.len();
            let mut ids = Vec::with_capacity(p * longest);
            let mut mask = Vec::with_capacity(p * longest);
            for &i in wave {
                let pad = longest - seqs[i].len();
                ids.extend(std::iter::repeat_n(self.pad_id, pad));
                mask.extend(std::iter::repeat_n(false, pad));
                ids.extend_from_slice(&seqs[i]);
                mask.extend(std::iter::repeat_n(true, seqs[i].len()));
            }
            let all_real = mask.iter().all(|&m| m);
            let block = TokenBatch {
                ids,
                batch: p,
                seq: longest,
                mask: (!all_real).then_some(mask),
                positions: None,
            };
            let mut cache = self.net.new_cache(p);
            on_pool(|| self.trunk.forward_cached(&self.rope, &block, &mut cache));
            self.count(|s| {
                s.prefill_calls += 1;
                s.prefill_tokens += wave.iter().map(|&i| seqs[i].len()).sum::<usize>();
            });
            let cache = Arc::new(cache);
            for (j, &i) in wave.iter().enumerate() {
                out[i] = Some(KvRef {
                    cache: cache.clone(),
                    row: j,
                    slots: longest,
                });
            }
        }
        Ok(out)
    }

    pub(crate) fn check_params(&self, params: &SamplingParams) -> Result<()> {
        params.validate()?;
        if !params.stop_strings.is_empty() && self.tokenizer.is_none() {
            return Err(RolloutError::Params(
                "stop_strings need a tokenizer (Engine::with_tokenizer)".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn check_prompt(&self, index: usize, prompt: &[u32]) -> Result<()> {
        let bad = |message: String| Err(RolloutError::Prompt { index, message });
        if prompt.is_empty() {
            return bad("the prompt has no tokens".into());
        }
        if prompt.len() >= self.max_context {
            return bad(format!(
                "{} tokens leave no room for a response in the context of {}",
                prompt.len(),
                self.max_context
            ));
        }
        if let Some(&t) = prompt.iter().find(|&&t| t as usize >= self.vocab) {
            return bad(format!(
                "token id {t} is outside the vocabulary of {}",
                self.vocab
            ));
        }
        Ok(())
    }

    fn new_row(
        &self,
        prompt_index: usize,
        sample_index: usize,
        prompt: Arc<Vec<u32>>,
        params: &SamplingParams,
        fork: Option<ForkOrigin>,
    ) -> Row {
        let cap = params.max_new_tokens.min(self.max_context - prompt.len());
        Row {
            group: 0,
            prompt_index,
            sample_index,
            prompt,
            response: Vec::new(),
            logprobs: Vec::new(),
            entropies: Vec::new(),
            top: Vec::new(),
            rng: row_rng(params.seed, prompt_index as u64, sample_index as u64),
            cap,
            finish: None,
            text: None,
            fork,
            retain: params.retain_kv,
        }
    }

    fn count(&self, f: impl FnOnce(&mut EngineStats)) {
        f(&mut self.stats.lock().unwrap());
    }

    fn read_logits(&self, logits: Tensor<3>) -> Result<Vec<f32>> {
        let [b, s, v] = logits.dims();
        let last = if s == 1 {
            logits
        } else {
            logits.narrow(1, s - 1, 1)
        };
        last.reshape([b, v])
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| RolloutError::Config(format!("reading logits: {e:?}")))
    }

    /// Prefills `prompts` (left-padded) into a fresh cache with room for `room` more slots;
    /// returns it with the logits `[P, V]` of each prompt's last position.
    fn prefill(&self, prompts: &[Vec<u32>], room: usize) -> Result<(KvCache, Vec<f32>)> {
        let p = prompts.len();
        let mut cache = self.net.new_cache(p);
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        cache.reserve(longest + self.kv_room(room, 2 * longest));
        if longest > 1 {
            // Everything but the last token: trunk only (the stub head's logits are ignored).
            let seq = longest - 1;
            let mut ids = Vec::with_capacity(p * seq);
            let mut mask = Vec::with_capacity(p * seq);
            for r in prompts {
                let head = &r[..r.len() - 1];
                let pad = seq - head.len();
                ids.extend(std::iter::repeat_n(self.pad_id, pad));
                mask.extend(std::iter::repeat_n(false, pad));
                ids.extend_from_slice(head);
                mask.extend(std::iter::repeat_n(true, head.len()));
            }
            let all_real = mask.iter().all(|&m| m);
            let block = TokenBatch {
                ids,
                batch: p,
                seq,
                mask: (!all_real).then_some(mask),
                positions: None,
            };
            on_pool(|| self.trunk.forward_cached(&self.rope, &block, &mut cache));
        }
        let last: Vec<Vec<u32>> = prompts.iter().map(|r| vec![*r.last().unwrap()]).collect();
        let last = TokenBatch::new(&last)?;
        let logits = on_pool(|| {
            self.net
                .forward_cached_packed(&self.rope, &last, &mut cache, self.packed.as_ref())
        });
        self.count(|s| {
            s.prefill_calls += 1;
            s.prefill_tokens += prompts.iter().map(Vec::len).sum::<usize>();
        });
        Ok((cache, self.read_logits(logits)?))
    }

    /// Slots of KV room to reserve for rows whose longest remaining budget is `budget`, with
    /// `doubling` the room that geometric growth asks for (see `KV_ROOM_STEP`).
    fn kv_room(&self, budget: usize, doubling: usize) -> usize {
        let step = if self.geometric_room {
            doubling.max(KV_ROOM_STEP)
        } else {
            KV_ROOM_STEP
        };
        budget.min(step)
    }

    fn stop_ids(&self, params: &SamplingParams) -> Vec<u32> {
        let mut ids = params.stop_token_ids.clone();
        if !params.ignore_eos {
            ids.extend(&self.eos_ids);
        }
        ids
    }

    /// Lock-step decode. `rows` (cache row i = rows[i]) have their next-token logits in `logits`
    /// (`[rows, V]`); `waiting` rows join the batch as the budget allows, lowest `priority` first.
    /// Every row that finishes goes to `sink` at once (with its KV when it is retained), and the
    /// rows `sink` returns wait to join. Joining rebuilds the cache with `KvCache::gather` (live
    /// rows, then the new rows' prefixes) and feeds each new row its pending token in the same
    /// forward call as the live rows' last tokens.
    #[allow(clippy::too_many_arguments)]
    fn decode(
        &self,
        mut cache: KvCache,
        rows: Vec<Row>,
        mut logits: Vec<f32>,
        mut waiting: Vec<Pending>,
        params: &SamplingParams,
        on_token: &mut dyn FnMut(TokenEvent),
        sink: &mut dyn FnMut(Vec<Finished>) -> Result<Vec<Pending>>,
    ) -> Result<()> {
        let vocab = self.vocab;
        let stop_ids = self.stop_ids(params);
        let tokenizer = self.tokenizer;
        // `None`: a finished row already handed to `sink` whose cache row is not compacted away.
        let mut rows: Vec<Option<Row>> = rows.into_iter().map(Some).collect();
        waiting.sort_by_key(|p| p.priority);
        loop {
            // Sample every live row (rows are independent: each has its own stream).
            let newly: Vec<bool> = rows
                .par_iter_mut()
                .zip(logits.par_chunks(vocab))
                .map(|(slot, z)| {
                    let Some(row) = slot else {
                        return false;
                    };
                    let Draw {
                        token,
                        logprob,
                        entropy,
                        top,
                    } = sample(z, params, &mut row.rng);
                    row.response.push(token);
                    row.logprobs.push(logprob);
                    row.entropies.push(entropy);
                    row.top.push(top);
                    if stop_ids.contains(&token) {
                        row.finish = Some(FinishReason::Eos);
                    } else if let (false, Some(tok)) = (params.stop_strings.is_empty(), tokenizer)
                        && let Ok(text) = tok.decode(&row.response, true)
                        && let Some((pos, s)) = earliest_stop(&text, &params.stop_strings)
                    {
                        row.text = Some(text[..pos].to_string());
                        row.finish = Some(FinishReason::StopString(s.to_string()));
                    } else if row.response.len() >= row.cap {
                        row.finish = Some(FinishReason::Length);
                    }
                    row.finish.is_some()
                })
                .collect();
            let event = |r: &Row| TokenEvent {
                prompt_index: r.prompt_index,
                sample_index: r.sample_index,
                token: *r.response.last().unwrap(),
            };
            for r in rows.iter().flatten().filter(|r| r.finish.is_none()) {
                on_token(event(r));
            }
            let mut done = Vec::new();
            for (i, &n) in newly.iter().enumerate() {
                if n {
                    let r = rows[i].take().expect("a newly finished row is live");
                    on_token(event(&r));
                    // The cache holds prompt + response[..len-1] for this row right now.
                    let kv = r.retain.then(|| {
                        Arc::new(RetainedKv {
                            cache: Arc::new(cache.select_rows(&[i])),
                            real: r.prompt.len() + r.response.len() - 1,
                        })
                    });
                    done.push((r, kv));
                }
            }
            let live = rows.iter().flatten().count();
            let sampled = live + done.len();
            self.count(|s| s.sampled_tokens += sampled);
            if !done.is_empty() {
                let more = sink(done)?;
                if !more.is_empty() {
                    waiting.extend(more);
                    waiting.sort_by_key(|p| p.priority);
                }
            }
            let admit = self.admissible(rows.iter().flatten(), cache.len(), &waiting);
            if live == 0 && admit == 0 {
                debug_assert!(waiting.is_empty());
                return Ok(());
            }
            let ids: Vec<u32>;
            if admit > 0 {
                // New rows join: one cache of the live rows and the new rows' prefixes.
                let joining: Vec<Pending> = waiting.drain(..admit).collect();
                let empty = self.net.new_cache(1);
                let keep: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].is_some()).collect();
                let mut parts: Vec<(&KvCache, usize, usize)> =
                    keep.iter().map(|&i| (&cache, i, cache.len())).collect();
                parts.extend(joining.iter().map(|p| match &p.kv {
                    Some(kv) => (kv.cache.as_ref(), kv.row, kv.slots),
                    None => (&empty, 0, 0),
                }));
                let gathered = KvCache::gather(&parts);
                drop(parts);
                cache = gathered;
                let mut next: Vec<Option<Row>> = rows.into_iter().filter(Option::is_some).collect();
                let mut feed: Vec<u32> = next
                    .iter()
                    .flatten()
                    .map(|r| *r.response.last().unwrap())
                    .collect();
                for p in joining {
                    feed.push(p.feed);
                    next.push(Some(p.row));
                }
                rows = next;
                ids = feed;
                self.count(|s| s.joins += 1);
            } else {
                // Compact when carrying the finished rows for the remaining steps would cost
                // more than copying the cache once.
                let dead = rows.len() - live;
                let remaining = rows
                    .iter()
                    .flatten()
                    .map(|r| r.cap - r.response.len())
                    .max()
                    .unwrap_or(0);
                if dead > 0 && dead * remaining >= rows.len() {
                    let keep: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].is_some()).collect();
                    cache = cache.select_rows(&keep);
                    rows.retain(Option::is_some);
                    self.count(|s| s.compactions += 1);
                }
                ids = rows
                    .iter()
                    .map(|r| match r {
                        Some(r) => *r.response.last().unwrap(),
                        None => self.pad_id,
                    })
                    .collect();
            }
            let step = TokenBatch {
                ids,
                batch: rows.len(),
                seq: 1,
                mask: None,
                positions: None,
            };
            // A full cache grows (see `KV_ROOM_STEP`), so that the next steps write in place.
            if cache.len() == cache.capacity() {
                let budget = rows
                    .iter()
                    .flatten()
                    .map(|r| r.cap - r.response.len() + 1)
                    .max()
                    .unwrap_or(1);
                cache.reserve(self.kv_room(budget, cache.capacity()));
                self.count(|s| s.kv_grows += 1);
            }
            let out = on_pool(|| {
                self.net
                    .forward_cached_packed(&self.rope, &step, &mut cache, self.packed.as_ref())
            });
            logits = self.read_logits(out)?;
            self.count(|s| {
                s.decode_steps += 1;
                s.decode_rows += rows.len();
            });
        }
    }

    /// How many of `waiting` (in order) can join a batch of `live` rows whose cache has
    /// `slots` slots: rows x (widest prefix + longest remaining budget) stays within
    /// `max_batch_tokens`, and an empty batch always takes one.
    fn admissible<'r>(
        &self,
        live: impl Iterator<Item = &'r Row>,
        slots: usize,
        waiting: &[Pending],
    ) -> usize {
        let (mut count, mut rest) = (0usize, 0usize);
        for r in live {
            count += 1;
            rest = rest.max(r.cap - r.response.len());
        }
        let mut width = if count > 0 { slots } else { 0 };
        let mut n = 0;
        for p in waiting {
            let w = width.max(p.row.prompt.len() + p.row.response.len());
            let r = rest.max(p.row.cap - p.row.response.len());
            if count > 0 && (count + 1) * (w + r) > self.max_batch_tokens {
                break;
            }
            (count, width, rest, n) = (count + 1, w, r, n + 1);
        }
        n
    }

    fn finish_rollout(
        &self,
        row: Row,
        kv: Option<Arc<RetainedKv>>,
        params: &SamplingParams,
    ) -> Rollout {
        let text = match (&row.text, self.tokenizer) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(tok)) => tok.decode(&row.response, true).ok(),
            (None, None) => None,
        };
        Rollout {
            prompt_index: row.prompt_index,
            sample_index: row.sample_index,
            prompt_ids: row.prompt.as_ref().clone(),
            response_ids: row.response,
            logprobs: row.logprobs,
            entropies: row.entropies,
            top_logprobs: (params.top_logprobs > 0).then_some(row.top),
            finish_reason: row.finish.unwrap_or(FinishReason::Length),
            text,
            fork: row.fork,
            kv,
        }
    }
}

/// The earliest occurrence of any stop string in `text`: (byte offset, the stop string).
pub fn earliest_stop<'s>(text: &str, stops: &'s [String]) -> Option<(usize, &'s str)> {
    stops
        .iter()
        .filter_map(|s| text.find(s.as_str()).map(|p| (p, s.as_str())))
        .min_by_key(|&(p, _)| p)
}

/// Runs a forward pass on a thread of rayon's pool. Its many small parallel kernels (about ten
/// per layer in a decode step) then share work with the other threads directly; started from
/// a thread outside the pool, each would hand its work over and sleep until it is done, and
/// those hand-overs cost about 7% of a decode step at batch 32 (`kiln bench rollout`).
fn on_pool<T: Send>(forward: impl FnOnce() -> T + Send) -> T {
    rayon::scope(|_| forward())
}
