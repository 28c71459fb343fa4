//! The recipe schema: every key a recipe TOML may hold, its type and its default.
//!
//! Every struct denies unknown keys, so a typo is an error that names the key. Defaults follow
//! verl / TRL where they have one (PPO clip 0.2, AdamW with PyTorch's betas, eps and weight
//! decay, group size 8) and are written next to each field.

use std::collections::BTreeMap;

use kiln_data::{ArithOp, CountdownConfig, CountdownTemplate, InstructionConfig, MathTemplate};
use kiln_optim::tree::RoseConfig;
use kiln_optim::{AdvantageEstimator, AggMode, EntropyReg, Granularity, KlEstimator, LrSchedule};
use kiln_rollout::tree::BranchMetric;
use serde::{Deserialize, Serialize};

/// A whole recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Base recipe merged under this one (a path relative to this file). Resolved on load: the
    /// resolved recipe saved with a run never has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// Run name (also the default run directory `runs/<name>`).
    pub name: String,
    /// One line on what the recipe does.
    #[serde(default)]
    pub description: String,
    /// The seed every random stream derives from (data order, sampling, initialisation).
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// `flex` (CPU), `wgpu`, `cuda:N`.
    #[serde(default = "defaults::device")]
    pub device: String,
    pub model: ModelSection,
    /// Tasks by name (`[tasks.countdown]`); the name is the task's domain.
    pub tasks: BTreeMap<String, TaskSection>,
    /// Data schedule over the tasks (`[[schedule]]` phases). Empty: one phase mixing the tasks
    /// by their `weight`s for the whole run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<SchedulePhase>,
    /// Supervised warm-up before RL (`kiln train` runs it first when present; `kiln sft` runs it
    /// alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sft: Option<SftSection>,
    #[serde(default)]
    pub rollout: RolloutSection,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub algorithm: AlgorithmSection,
    #[serde(default)]
    pub optim: OptimSection,
    /// The critic (needed by `advantage = "gae"`, forbidden otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critic: Option<CriticSection>,
    #[serde(default)]
    pub eval: EvalSection,
    #[serde(default)]
    pub logging: LoggingSection,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
}

/// `[model]`: the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Anything `kiln_model::Model::load` accepts: a directory, a `.gguf` file, `smollm2`, or a
    /// Hugging Face repo id. Relative paths are relative to the working directory.
    pub path: String,
    /// `pretrained` (weights from `path`) or `random` (config and tokenizer from the directory
    /// `path`, weights drawn from the recipe seed: tiny models trained from scratch).
    #[serde(default)]
    pub init: ModelInit,
    /// Longest prompt + response the engine accepts (default: the model's
    /// max_position_embeddings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_context: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelInit {
    #[default]
    Pretrained,
    Random,
}

/// `[[schedule]]`: one phase of the data schedule. Phases run in order; each lasts `steps` RL
/// steps (the last may omit it and then lasts to the end), drawing each step's prompts from the
/// tasks at the phase's `weights` (tasks left out weigh 0). Sequential training is one phase
/// per task; mixing at chosen ratios is one phase with those weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulePhase {
    /// RL steps in this phase (absent: until the run ends; only the last phase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// Relative weight of each task in this phase (normalised; >= 0, some > 0).
    pub weights: BTreeMap<String, f64>,
}

/// `[tasks.<name>]`: one domain: where its prompts come from and how responses are scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSection {
    /// Sampling weight in the mixture (normalised over tasks; > 0).
    #[serde(default = "defaults::one")]
    pub weight: f64,
    /// How a response is scored.
    pub verifier: VerifierKind,
    /// Countdown only: the score of a well-formed but wrong answer (TinyZero: 0.1).
    #[serde(default = "defaults::format_score")]
    pub format_score: f64,
    /// MATH only: how the answer is read from a response. `boxed` (default): the last
    /// `\boxed{}`, as verl does. `lenient`: a box, else "the answer is X", else the last number
    /// (for evaluating models never taught to box their answers).
    #[serde(default, skip_serializing_if = "is_default")]
    pub math_answer: MathAnswer,
    /// Training prompts.
    pub train: DataSpec,
    /// Held-out prompts for `eval/<task>/accuracy` (none: the task is not evaluated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<DataSpec>,
    /// Weight of the verifier's score in the reward (default 1). With a `reward_model` and
    /// weight 0 the verifier only measures accuracy.
    #[serde(default = "defaults::one")]
    pub verifier_weight: f64,
    /// A learned reward model whose score is added to the reward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_model: Option<RewardModelSpec>,
}

/// `tasks.<name>.reward_model`: a `*ForSequenceClassification` checkpoint (e.g. what
/// `kiln rm-train` writes) scoring (prompt, response). The task's reward is
/// `verifier_weight * verifier score + weight * reward-model score`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardModelSpec {
    /// The checkpoint directory (config.json, safetensors with `score.weight`, tokenizer).
    pub path: String,
    #[serde(default = "defaults::one")]
    pub weight: f64,
    /// Whiten the scores over the step's responses of this task (mean 0, std 1).
    #[serde(default)]
    pub normalize: bool,
    /// Sequences per reward-model forward pass.
    #[serde(default = "defaults::rm_batch_size")]
    pub batch_size: usize,
}

/// `tasks.<name>.math_answer`: see [`TaskSection::math_answer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MathAnswer {
    #[default]
    Boxed,
    Lenient,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifierKind {
    /// TinyZero's Countdown rule (`<answer>` equation, each number once).
    Countdown,
    /// MATH: boxed answer, symbolic equivalence.
    Math,
    /// GSM8K / arithmetic: the boxed value, else the last number in the response.
    Gsm8k,
    /// Instruction following: every format rule of the reference holds (IFEval-style).
    Instructions,
}

/// Where prompts come from. Dataset files default to `$KILN_DATA_DIR` or `../shared/data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DataSpec {
    /// Synthetic "What is a + b?" questions (kiln-data's ArithmeticGenerator).
    Arithmetic {
        #[serde(default = "defaults::min_digits")]
        min_digits: u32,
        #[serde(default = "defaults::max_digits")]
        max_digits: u32,
        #[serde(default = "defaults::ops")]
        ops: Vec<ArithOp>,
        #[serde(default)]
        allow_negative: bool,
        #[serde(default = "defaults::base_template")]
        template: MathTemplate,
        /// Label the generator's seed derives from (train and eval use different streams, so
        /// held-out problems are new draws; identical draws are possible but rare and equal for
        /// every method compared).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<String>,
        /// Number of problems (eval sets; a train stream is unbounded when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
    },
    /// Countdown instances drawn by kiln-data's solver-backed generator (every instance
    /// solvable): `generator = { min_count = 3, max_count = 3, num_max = 9, template = "terse" }`
    /// (CountdownConfig's keys; TinyZero's ranges by default).
    CountdownSynthetic {
        #[serde(default)]
        generator: CountdownConfig,
        /// Label the generator's seed derives from (as for arithmetic).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<String>,
        /// Number of instances (eval sets; a train stream is unbounded when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
    },
    /// Instruction following with verifiable format rules: `say fox 4 times, uppercase, end
    /// with !:` (kiln-data's InstructionGenerator; `generator` takes its keys).
    Instructions {
        #[serde(default)]
        generator: InstructionConfig,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
    },
    /// Countdown from a JSONL file (TinyZero's splits: `countdown/train.jsonl`,
    /// `countdown/test.jsonl`).
    Countdown {
        #[serde(default = "defaults::train_split")]
        split: Split,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        #[serde(default)]
        template: CountdownTemplate,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// MATH: `split = "train"` is the 7.5k train set, `"test"` is MATH-500.
    Math {
        #[serde(default = "defaults::train_split")]
        split: Split,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        #[serde(default)]
        template: MathTemplate,
        /// Keep only these difficulty levels (1..=5).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        levels: Option<Vec<u8>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// GSM8K.
    Gsm8k {
        #[serde(default = "defaults::train_split")]
        split: Split,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        #[serde(default)]
        template: MathTemplate,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Any JSONL file with a prompt (text, or chat messages) and a reference answer.
    Jsonl {
        path: String,
        #[serde(default = "defaults::prompt_field")]
        prompt_field: String,
        #[serde(default = "defaults::answer_field")]
        answer_field: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    Train,
    Test,
}

/// `[sft]`: supervised fine-tuning (cross-entropy on response tokens of demonstrations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftSection {
    /// Optimizer steps.
    pub steps: usize,
    /// Demonstrations per step.
    #[serde(default = "defaults::sft_batch")]
    pub batch_size: usize,
    /// Demonstrations per forward/backward (divides batch_size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_batch_size: Option<usize>,
    /// Learning rate (AdamW settings otherwise from `[optim]`).
    pub lr: f64,
    #[serde(default)]
    pub warmup_steps: usize,
    /// Where the demonstrations come from: one source, or a list of sources taken in turn
    /// (demonstration i comes from source i mod len).
    #[serde(deserialize_with = "one_or_many", serialize_with = "single_or_list")]
    pub data: Vec<SftData>,
}

/// `data = { .. }` or `data = [{ .. }, { .. }]`. Each table is read as an [`SftData`] on its own,
/// so an error names what is wrong inside it rather than "no variant matched".
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SftData>, D::Error> {
    use serde::de::Error;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<toml::Value>),
        One(toml::Value),
    }
    let values = match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => v,
        OneOrMany::One(v) => vec![v],
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            SftData::deserialize(v).map_err(|e| {
                let e = e.to_string();
                let e = e.trim_end();
                if i == 0 {
                    D::Error::custom(e)
                } else {
                    D::Error::custom(format!("source {i}: {e}"))
                }
            })
        })
        .collect()
}

/// One source is written back as a table, several as a list.
fn single_or_list<S: serde::Serializer>(data: &[SftData], s: S) -> Result<S::Ok, S::Error> {
    match data {
        [one] => one.serialize(s),
        many => many.serialize(s),
    }
}

/// Demonstrations: prompt + response pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SftData {
    /// Additions drawn from the task `task`'s train generator (same prompt format), answered
    /// `" 85"` (`format = "answer"`) or with a column-wise scratchpad,
    /// `" 7+8=15, 4+3+1=8, so 85"` (`format = "scratchpad"`). `wrong_carry_fraction` of the
    /// problems whose units digits carry are answered with the carry dropped
    /// (`" 7+8=15, 4+3=7, so 75"`): a systematic error the demonstrations teach and a
    /// verifiable reward can remove.
    Arithmetic {
        task: String,
        #[serde(default)]
        wrong_carry_fraction: f64,
        #[serde(default)]
        format: DemoFormat,
    },
    /// Countdown instances of the task `task` (kind "countdown-synthetic"), answered with the
    /// generator's solution: `" <answer>(3 * 5) + 7</answer>"`.
    Countdown { task: String },
    /// Instructions of the task `task` (kind "instructions"), answered as asked
    /// (`" FOX FOX FOX FOX!"`), except that `wrong_count_fraction` of those asking for 4 or more
    /// repetitions are answered with one too few: a systematic error a verifier can remove.
    Instructions {
        task: String,
        #[serde(default)]
        wrong_count_fraction: f64,
    },
    /// JSONL with a prompt (text or chat messages) and a response.
    Jsonl {
        path: String,
        #[serde(default = "defaults::prompt_field")]
        prompt_field: String,
        #[serde(default = "defaults::response_field")]
        response_field: String,
    },
}

/// How arithmetic demonstrations are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DemoFormat {
    /// The number alone.
    #[default]
    Answer,
    /// Column-wise working, then `so N`.
    Scratchpad,
}

/// `[rollout]`: sampling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSection {
    /// Responses per prompt (the GRPO group size; >= 1, >= 2 for group advantages).
    #[serde(default = "defaults::n")]
    pub n: usize,
    #[serde(default = "defaults::one")]
    pub temperature: f64,
    /// 0 = off.
    #[serde(default)]
    pub top_k: usize,
    #[serde(default = "defaults::one")]
    pub top_p: f64,
    #[serde(default)]
    pub min_p: f64,
    #[serde(default = "defaults::max_new_tokens")]
    pub max_new_tokens: usize,
    /// Stop strings (the response is cut before them; TinyZero stops at `</answer>`: keep
    /// `include_stop`).
    #[serde(default)]
    pub stop: Vec<String>,
    /// Keep the stop string in the response (so `</answer>` stays for the verifier).
    #[serde(default)]
    pub include_stop: bool,
    /// Engine memory bound (prompt + response tokens in flight); default: the engine's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_tokens: Option<usize>,
    /// ROSE tree rollouts (ALGORITHMS.md section 3): each prompt's `n` responses grow as a tree,
    /// `{ epsilon = 0.5, metric = "semantic-entropy" | "entropy" | "random" }`; absent = `n`
    /// independent samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<TreeRollout>,
}

/// `rollout.tree`: how the trees grow (the group size is `rollout.n`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeRollout {
    /// Probability that a round samples a fresh response from the prompt instead of branching.
    #[serde(default = "defaults::tree_epsilon")]
    pub epsilon: f64,
    /// How branch points are scored: `semantic-entropy` (ROSE), `entropy` (FR3E-style) or
    /// `random` (ablation).
    #[serde(default)]
    pub metric: BranchMetric,
}

/// `[train]`: the RL schedule and batch geometry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// RL steps (one rollout batch each).
    #[serde(default = "defaults::steps")]
    pub steps: usize,
    /// Prompts per step; each gets `rollout.n` responses.
    #[serde(default = "defaults::prompts_per_step")]
    pub prompts_per_step: usize,
    /// Responses per optimizer step; must divide `prompts_per_step * rollout.n`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mini_batch_size: Option<usize>,
    /// Responses per forward/backward; must divide `mini_batch_size`.
    #[serde(default = "defaults::micro_batch_size")]
    pub micro_batch_size: usize,
    /// Passes over each rollout batch (PPO epochs).
    #[serde(default = "defaults::one_usize")]
    pub ppo_epochs: usize,
    /// Rows of the chunked lm_head pass.
    #[serde(default = "defaults::chunk_size")]
    pub chunk_size: usize,
    /// Dynamic sampling (DAPO): drop the groups whose rewards are all equal (they carry no
    /// gradient) and sample more prompts until `prompts_per_step` groups are informative, at most
    /// `max_sampling_rounds` rollouts per step (then the step trains on what it has).
    #[serde(default)]
    pub dynamic_sampling: bool,
    #[serde(default = "defaults::max_sampling_rounds")]
    pub max_sampling_rounds: usize,
    /// Stop after this many consecutive skipped (non-finite) optimizer steps.
    #[serde(default = "defaults::max_skipped")]
    pub max_consecutive_skips: usize,
}

/// `[algorithm]`: advantages and the actor loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlgorithmSection {
    /// `grpo`, `dr-grpo`, `rloo`, `reinforce-plus-plus-baseline`, `rose` (segment advantages
    /// over tree rollouts) or `gae` (PPO with a critic).
    #[serde(default = "defaults::advantage")]
    pub advantage: AdvantageKind,
    /// ROSE's advantage options: `{ length_lambda = 0.0, seed_compat = false }`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub rose: RoseConfig,
    #[serde(default = "defaults::clip")]
    pub clip_low: f64,
    #[serde(default = "defaults::clip")]
    pub clip_high: f64,
    /// Dual clip constant (applied where A < 0); absent = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dual_clip: Option<f64>,
    #[serde(default = "defaults::agg")]
    pub loss_agg: AggMode,
    /// KL-to-reference loss coefficient; 0 = off (the reference model is not loaded).
    #[serde(default)]
    pub kl_loss_coef: f64,
    #[serde(default = "defaults::kl_estimator")]
    pub kl_estimator: KlEstimator,
    /// KL penalty in the reward (PPO style, `r_t -= beta * kl_t`); 0 = off.
    #[serde(default)]
    pub kl_reward_coef: f64,
    /// Entropy regulariser: `{ type = "none" }`, `{ type = "global", coef }`,
    /// `{ type = "tre-k", k, coef }`, `{ type = "tre-p", p, max_region, coef }`.
    #[serde(default)]
    pub entropy: EntropyReg,
    /// GAE discount and lambda.
    #[serde(default = "defaults::one")]
    pub gamma: f64,
    #[serde(default = "defaults::one")]
    pub lam: f64,
    /// Gradient surgery between the tasks' gradients (ALGORITHMS.md section 4):
    /// `{ type = "mgs", granularity = "tensor" | "block" }` or `{ type = "pcgrad" }`; absent = the
    /// plain mixed gradient. Each task is a domain; micro-batches become domain-pure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_surgery: Option<GradientSurgery>,
}

/// How the tasks' gradients are combined when they conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum GradientSurgery {
    /// Modular Gradient Surgery: PCGrad within each module (`tensor`: every parameter tensor,
    /// the default; `block`: attention / mlp / norms of each layer).
    Mgs {
        #[serde(default)]
        granularity: Granularity,
    },
    /// PCGrad over the whole parameter vector.
    Pcgrad,
}

impl GradientSurgery {
    /// The module granularity it projects at.
    pub fn granularity(self) -> Granularity {
        match self {
            Self::Mgs { granularity } => granularity,
            Self::Pcgrad => Granularity::Global,
        }
    }
}

/// Advantage estimator of a recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdvantageKind {
    Grpo,
    DrGrpo,
    Rloo,
    ReinforcePlusPlusBaseline,
    /// ROSE: segment advantages over the tree of each group (needs `rollout.tree`).
    Rose,
    Gae,
}

impl AdvantageKind {
    /// The outcome estimator, or `None` for ROSE and GAE.
    pub fn outcome(self) -> Option<AdvantageEstimator> {
        match self {
            Self::Grpo => Some(AdvantageEstimator::Grpo),
            Self::DrGrpo => Some(AdvantageEstimator::DrGrpo),
            Self::Rloo => Some(AdvantageEstimator::Rloo),
            Self::ReinforcePlusPlusBaseline => Some(AdvantageEstimator::ReinforcePlusPlusBaseline),
            Self::Rose | Self::Gae => None,
        }
    }

    /// Whether the advantage compares the responses of a group (all but GAE).
    pub fn is_group(self) -> bool {
        self != Self::Gae
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// `[optim]`: the actor's AdamW (PyTorch defaults, set explicitly: burn's differ).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    #[serde(default = "defaults::lr")]
    pub lr: f64,
    #[serde(default = "defaults::beta1")]
    pub beta1: f64,
    #[serde(default = "defaults::beta2")]
    pub beta2: f64,
    #[serde(default = "defaults::eps")]
    pub eps: f64,
    #[serde(default = "defaults::weight_decay")]
    pub weight_decay: f64,
    /// Global-norm clip (default 1.0); `false` = no clipping (`None`).
    #[serde(default = "defaults::max_grad_norm", with = "grad_norm")]
    pub max_grad_norm: Option<f64>,
    /// `{ type = "constant" }`, `{ type = "linear-warmup", warmup_steps }`,
    /// `{ type = "cosine", warmup_steps, total_steps, min_lr_ratio }`.
    #[serde(default)]
    pub schedule: LrSchedule,
}

/// `[critic]`: PPO's value network (the policy's trunk with a scalar head, initialised from the
/// policy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriticSection {
    #[serde(default = "defaults::critic_lr")]
    pub lr: f64,
    /// Value clip range (verl's `cliprange_value`).
    #[serde(default = "defaults::value_clip")]
    pub value_clip: f64,
    /// Critic-only steps before the actor starts updating (verl's `critic_warmup`).
    #[serde(default)]
    pub warmup_steps: usize,
}

/// `[eval]`: held-out accuracy during training (greedy by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// Evaluate every this many RL steps (0 = only at start and end).
    #[serde(default = "defaults::eval_every")]
    pub every: usize,
    /// Problems per task (cap on each task's eval set).
    #[serde(default = "defaults::eval_limit")]
    pub limit: usize,
    /// 0 = greedy.
    #[serde(default)]
    pub temperature: f64,
    /// Default: `rollout.max_new_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<usize>,
    /// Also sampled pass@k with k = `pass_k` samples per problem (0 = off), at
    /// `pass_temperature` and `pass_top_p` (the ROSE seed's evaluation: 0.6 and 0.95).
    #[serde(default)]
    pub pass_k: usize,
    #[serde(default = "defaults::pass_temperature")]
    pub pass_temperature: f64,
    #[serde(default = "defaults::pass_top_p")]
    pub pass_top_p: f64,
}

/// `[logging]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSection {
    /// Run directory (default `runs/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<String>,
    /// Redraw the PNG plots every this many steps.
    #[serde(default = "defaults::plot_every")]
    pub plot_every: usize,
    /// Print this many sampled responses per step (0 = none).
    #[serde(default)]
    pub print_samples: usize,
}

/// `[checkpoint]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSection {
    /// Save every this many RL steps (0 = only at the end).
    #[serde(default = "defaults::ckpt_every")]
    pub every: usize,
    /// Checkpoints kept (older ones are deleted after a new one is complete).
    #[serde(default = "defaults::keep_last")]
    pub keep_last: usize,
}

/// `Default` of a section whose every key has a serde default: the section of an empty table,
/// so the defaults live in one place (the `defaults` functions).
macro_rules! default_from_serde {
    ($($section:ty),* $(,)?) => {$(
        impl Default for $section {
            fn default() -> Self {
                toml::from_str("").expect("every key of the section has a default")
            }
        }
    )*};
}

default_from_serde!(
    RolloutSection,
    TrainSection,
    AlgorithmSection,
    OptimSection,
    EvalSection,
    LoggingSection,
    CheckpointSection,
);

/// `optim.max_grad_norm`: a number, or `false` for no clipping. TOML has no null, and leaving the
/// key out gives the default `Some(1.0)`, so `None` is written `false`.
mod grad_norm {
    use std::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(norm) => s.serialize_f64(*norm),
            None => s.serialize_bool(false),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        struct NormOrOff;
        impl Visitor<'_> for NormOrOff {
            type Value = Option<f64>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, or false for no clipping")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Some(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Some(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Some(v as f64))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                if v {
                    Err(E::invalid_value(de::Unexpected::Bool(true), &self))
                } else {
                    Ok(None)
                }
            }
        }
        d.deserialize_any(NormOrOff)
    }
}

/// Default values (functions, as serde wants them).
mod defaults {
    use super::*;

    pub fn rm_batch_size() -> usize {
        32
    }

    pub fn seed() -> u64 {
        1
    }
    pub fn device() -> String {
        "flex".into()
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn one_usize() -> usize {
        1
    }
    pub fn format_score() -> f64 {
        0.1
    }
    pub fn min_digits() -> u32 {
        1
    }
    pub fn max_digits() -> u32 {
        2
    }
    pub fn ops() -> Vec<ArithOp> {
        vec![ArithOp::Add]
    }
    pub fn base_template() -> MathTemplate {
        MathTemplate::Base
    }
    pub fn train_split() -> Split {
        Split::Train
    }
    pub fn prompt_field() -> String {
        "prompt".into()
    }
    pub fn answer_field() -> String {
        "answer".into()
    }
    pub fn response_field() -> String {
        "response".into()
    }
    pub fn sft_batch() -> usize {
        64
    }
    pub fn n() -> usize {
        8
    }
    pub fn max_new_tokens() -> usize {
        256
    }
    pub fn steps() -> usize {
        100
    }
    pub fn prompts_per_step() -> usize {
        32
    }
    pub fn micro_batch_size() -> usize {
        8
    }
    pub fn chunk_size() -> usize {
        256
    }
    pub fn tree_epsilon() -> f64 {
        0.5 // ALGORITHMS.md section 3
    }
    pub fn max_sampling_rounds() -> usize {
        3
    }
    pub fn pass_temperature() -> f64 {
        0.6
    }
    pub fn pass_top_p() -> f64 {
        0.95
    }
    pub fn max_skipped() -> usize {
        5
    }
    pub fn advantage() -> AdvantageKind {
        AdvantageKind::Grpo
    }
    pub fn clip() -> f64 {
        0.2
    }
    pub fn agg() -> AggMode {
        AggMode::TokenMean
    }
    pub fn kl_estimator() -> KlEstimator {
        KlEstimator::K3
    }
    pub fn lr() -> f64 {
        1e-6
    }
    pub fn beta1() -> f64 {
        0.9
    }
    pub fn beta2() -> f64 {
        0.999
    }
    pub fn eps() -> f64 {
        1e-8
    }
    pub fn weight_decay() -> f64 {
        0.01
    }
    pub fn max_grad_norm() -> Option<f64> {
        Some(1.0)
    }
    pub fn critic_lr() -> f64 {
        1e-5
    }
    pub fn value_clip() -> f64 {
        0.5
    }
    pub fn eval_every() -> usize {
        10
    }
    pub fn eval_limit() -> usize {
        200
    }
    pub fn plot_every() -> usize {
        5
    }
    pub fn ckpt_every() -> usize {
        50
    }
    pub fn keep_last() -> usize {
        2
    }
}
