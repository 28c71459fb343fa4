//! Held-out evaluation during training: each task's eval set answered by the current policy
//! (greedy unless the recipe says otherwise), scored by the task's verifier.

use std::collections::BTreeMap;

use kiln_data::{Example, Prompt};
use kiln_model::{ChatMessage, Tokenizer};
use kiln_reward::{Reference as RewardRef, Verifier, score_batch};
use kiln_rollout::{Engine, SamplingParams};

use crate::error::{Result, TrainError};

/// Accuracy of one task's eval set.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEval {
    pub task: String,
    pub problems: usize,
    pub correct: usize,
    pub mean_reward: f64,
    pub mean_response_tokens: f64,
}

impl TaskEval {
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.problems.max(1) as f64
    }

    /// `eval/<task>/accuracy` and friends.
    pub fn metrics(&self, out: &mut BTreeMap<String, f64>) {
        let k = |s: &str| format!("eval/{}/{s}", self.task);
        out.insert(k("accuracy"), self.accuracy());
        out.insert(k("reward"), self.mean_reward);
        out.insert(k("response_length"), self.mean_response_tokens);
    }
}

/// The prompt's token ids: text as it is (with the tokenizer's bos if it adds one), chat
/// messages through the chat template (a trailing assistant message is a prefill).
pub fn encode_prompt(tokenizer: &Tokenizer, prompt: &Prompt) -> Result<Vec<u32>> {
    Ok(match prompt {
        Prompt::Text(t) => tokenizer.encode(t, true)?,
        Prompt::Chat(msgs) => {
            let msgs: Vec<ChatMessage> = msgs
                .iter()
                .map(|m| ChatMessage {
                    role: m.role.clone(),
                    content: m.content.clone(),
                })
                .collect();
            tokenizer.encode_prompt(&msgs)?
        }
    })
}

/// The verifier's view of a data reference.
pub fn reward_reference(r: &kiln_data::Reference) -> RewardRef {
    match r {
        kiln_data::Reference::Answer(a) => RewardRef::Text(a.clone()),
        kiln_data::Reference::Countdown { target, nums } => RewardRef::Countdown {
            target: *target,
            nums: nums.clone(),
        },
    }
}

/// The text a verifier sees: the decoded response, with the stop string that ended it put back
/// when the recipe keeps it (`rollout.include_stop`, e.g. TinyZero's `</answer>`).
pub fn response_text(r: &kiln_rollout::Rollout, include_stop: bool) -> String {
    let mut text = r.text.clone().unwrap_or_default();
    if include_stop && let kiln_rollout::FinishReason::StopString(s) = &r.finish_reason {
        text.push_str(s);
    }
    text
}

/// Answers `examples` with `engine` and scores them.
pub fn evaluate(
    engine: &Engine,
    task: &str,
    examples: &[Example],
    verifier: &dyn Verifier,
    params: &SamplingParams,
    include_stop: bool,
) -> Result<TaskEval> {
    let tokenizer = engine
        .tokenizer()
        .ok_or_else(|| TrainError::recipe("eval", "the engine has no tokenizer"))?;
    let prompts = examples
        .iter()
        .map(|e| encode_prompt(tokenizer, &e.prompt))
        .collect::<Result<Vec<_>>>()?;
    let params = SamplingParams {
        n: 1,
        ..params.clone()
    };
    let groups = engine.generate(&prompts, &params)?;
    let mut items = Vec::with_capacity(examples.len());
    let mut tokens = 0usize;
    for (g, e) in groups.iter().zip(examples) {
        let r = &g.rollouts[0];
        tokens += r.response_ids.len();
        items.push((
            response_text(r, include_stop),
            reward_reference(&e.reference),
        ));
    }
    let verdicts = score_batch(verifier, &items);
    let correct = verdicts.iter().filter(|v| v.correct).count();
    let mean_reward = verdicts.iter().map(|v| v.score).sum::<f64>() / verdicts.len().max(1) as f64;
    Ok(TaskEval {
        task: task.to_string(),
        problems: examples.len(),
        correct,
        mean_reward,
        mean_response_tokens: tokens as f64 / examples.len().max(1) as f64,
    })
}
