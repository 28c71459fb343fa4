//! kiln-reward: verifiers for RL with verifiable rewards.
//!
//! Every verifier implements [`Verifier`]: it reads one model response and one [`Reference`] and
//! returns a [`Verdict`] (score, correctness, named parts, the extracted answer and, when scoring
//! failed, the reason). Verifiers are pure CPU string and number code; they never run model output
//! as code, and every parser that reads model output has bounded work (input length, recursion
//! depth, number sizes) plus a per-sample time budget (see [`budget`]).
//!
//! - [`CountdownVerifier`]: TinyZero's Countdown reward, quirk for quirk (see `countdown.rs`).
//! - [`MathVerifier`]: last `\boxed{}` answer, equivalence by normalisation then mathematics.
//! - [`Gsm8kVerifier`]: the number after `####` against the response's last number / boxed value.
//! - [`InstructionVerifier`]: IFEval-style format rules (word count, case, ending, ...).
//! - [`FormatReward`], [`OverlongPenalty`], [`Combined`]: shaping terms and a weighted sum.
//! - [`score_batch`]: parallel (rayon) scoring with panic isolation and a time budget per sample
//!   (CPU time of the scoring thread, 100 ms by default, with a wall-clock net at 10x): a panic
//!   or a blown budget gives that sample 0 with the reason in `Verdict::error`.
//! - [`jsonl::score_jsonl`]: the engine of `kiln score`.
//!
//! ```
//! use kiln_reward::{Combined, CountdownVerifier, FormatReward, MathVerifier, Reference, Verifier};
//!
//! let math = MathVerifier::default();
//! let v = math.score("... so the answer is $\\boxed{\\dfrac{1}{2}}$.", &Reference::text("0.5"));
//! assert_eq!((v.score, v.extracted.as_deref()), (1.0, Some("\\dfrac{1}{2}")));
//!
//! let reward = Combined::new()
//!     .with("countdown", 1.0, CountdownVerifier::new(0.0))
//!     .with("format", 0.1, FormatReward { think_opened_in_prompt: true });
//! let r = Reference::Countdown { target: 24, nums: vec![2, 3, 4] };
//! let v = reward.score(" 2*3*4 = 24 </think>\n<answer>2*3*4</answer>", &r);
//! assert_eq!(v.parts["countdown"], 1.0);
//! assert!((v.score - 1.1).abs() < 1e-12);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod batch;
pub mod budget;
pub mod countdown;
pub mod gsm8k;
pub mod instructions;
pub mod jsonl;
pub mod math;
pub mod shaping;

pub use batch::{BatchOptions, score_batch, score_batch_with};
pub use countdown::CountdownVerifier;
pub use gsm8k::Gsm8kVerifier;
pub use instructions::InstructionVerifier;
pub use math::{AnswerExtraction, MathVerifier};
pub use shaping::{Combined, FormatReward, OverlongPenalty};

/// What a response is checked against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reference {
    /// Countdown: reach `target` using each of `nums` exactly once.
    Countdown { target: i64, nums: Vec<i64> },
    /// A reference answer as text (MATH: the boxed answer; GSM8K: the solution with `#### N`, or N).
    Text(String),
    /// Instruction following: the rules the response must satisfy (see [`instructions`]).
    Instructions(Vec<String>),
    /// No reference (shaping terms that only look at the response, e.g. [`FormatReward`]).
    None,
}

impl Reference {
    pub fn text(s: impl Into<String>) -> Self {
        Reference::Text(s.into())
    }
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Reference::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// The outcome of scoring one response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The reward.
    pub score: f64,
    /// Whether the answer is right (for Countdown: the full score was earned).
    pub correct: bool,
    /// Named components of the score (every part of a [`Combined`] is reported, weighted).
    pub parts: BTreeMap<String, f64>,
    /// The answer the verifier read out of the response, when it found one.
    pub extracted: Option<String>,
    /// Why the score is what it is when something went wrong (bad reference, time budget, panic).
    pub error: Option<String>,
}

impl Verdict {
    pub fn new(score: f64, correct: bool) -> Self {
        Verdict {
            score,
            correct,
            parts: BTreeMap::new(),
            extracted: None,
            error: None,
        }
    }
    /// Score 0 with a reason (used for panics, blown budgets, bad references).
    pub fn failed(reason: impl Into<String>) -> Self {
        Verdict {
            error: Some(reason.into()),
            ..Verdict::new(0.0, false)
        }
    }
    pub fn with_extracted(mut self, e: Option<String>) -> Self {
        self.extracted = e;
        self
    }
    pub fn with_error(mut self, e: impl Into<String>) -> Self {
        self.error = Some(e.into());
        self
    }
    pub fn with_part(mut self, name: impl Into<String>, v: f64) -> Self {
        self.parts.insert(name.into(), v);
        self
    }
}

/// Longest `Verdict::extracted` kept; longer extractions are cut (on a char boundary) and end in
/// "…".
pub const MAX_EXTRACTED: usize = 4096;

/// `s`, cut to [`MAX_EXTRACTED`] bytes.
pub(crate) fn clip(s: &str) -> String {
    if s.len() <= MAX_EXTRACTED {
        return s.to_string();
    }
    let mut end = MAX_EXTRACTED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A reward function over one response.
pub trait Verifier: Send + Sync {
    /// Scores `response` against `reference`. Never panics on any input string (fuzzed); work is
    /// bounded by [`budget`].
    fn score(&self, response: &str, reference: &Reference) -> Verdict;
    /// A short name (used as the part name in [`Combined`] and in `kiln score`).
    fn name(&self) -> &str;
}

/// The built-in tasks of `kiln score`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    Countdown,
    Math,
    Gsm8k,
    Instructions,
}

impl std::str::FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "countdown" => Ok(Task::Countdown),
            "math" => Ok(Task::Math),
            "gsm8k" => Ok(Task::Gsm8k),
            "instructions" => Ok(Task::Instructions),
            other => Err(format!(
                "unknown task {other:?} (expected countdown, math, gsm8k or instructions)"
            )),
        }
    }
}
