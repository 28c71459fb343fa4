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
    /// The response text of each problem, in order (what the verifier saw).
    pub responses: Vec<String>,
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
        kiln_data::Reference::Instructions(rules) => RewardRef::Instructions(rules.clone()),
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

/// One scored response.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    /// What the verifier saw.
    pub text: String,
    pub correct: bool,
    pub score: f64,
    /// The answer the verifier read out of the response (majority votes count these).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted: Option<String>,
    /// Response tokens.
    pub tokens: usize,
}

/// Generates `params.n` responses to each of `examples` and scores them with `verifier`: the
/// one routine behind every evaluation (during training, `kiln eval`, pass@k).
pub fn answer(
    engine: &Engine,
    examples: &[Example],
    verifier: &dyn Verifier,
    params: &SamplingParams,
    include_stop: bool,
) -> Result<Vec<Vec<Answer>>> {
    let tokenizer = engine
        .tokenizer()
        .ok_or_else(|| TrainError::recipe("eval", "the engine has no tokenizer"))?;
    let prompts = examples
        .iter()
        .map(|e| encode_prompt(tokenizer, &e.prompt))
        .collect::<Result<Vec<_>>>()?;
    let groups = engine.generate(&prompts, params)?;
    Ok(groups
        .iter()
        .zip(examples)
        .map(|(g, e)| {
            let items: Vec<_> = g
                .rollouts
                .iter()
                .map(|r| {
                    (
                        response_text(r, include_stop),
                        reward_reference(&e.reference),
                    )
                })
                .collect();
            let verdicts = score_batch(verifier, &items);
            items
                .into_iter()
                .zip(verdicts)
                .zip(&g.rollouts)
                .map(|(((text, _), v), r)| Answer {
                    text,
                    correct: v.correct,
                    score: v.score,
                    extracted: v.extracted,
                    tokens: r.response_ids.len(),
                })
                .collect()
        })
        .collect())
}

/// Answers `examples` with `engine` (one response each, `params` otherwise) and scores them.
pub fn evaluate(
    engine: &Engine,
    task: &str,
    examples: &[Example],
    verifier: &dyn Verifier,
    params: &SamplingParams,
    include_stop: bool,
) -> Result<TaskEval> {
    let params = SamplingParams {
        n: 1,
        ..params.clone()
    };
    let answers: Vec<Answer> = answer(engine, examples, verifier, &params, include_stop)?
        .into_iter()
        .filter_map(|mut a| a.pop())
        .collect();
    let n = answers.len().max(1) as f64;
    Ok(TaskEval {
        task: task.to_string(),
        problems: examples.len(),
        correct: answers.iter().filter(|a| a.correct).count(),
        mean_reward: answers.iter().map(|a| a.score).sum::<f64>() / n,
        mean_response_tokens: answers.iter().map(|a| a.tokens as f64).sum::<f64>() / n,
        responses: answers.into_iter().map(|a| a.text).collect(),
    })
}

/// The unbiased pass@k estimator (Chen et al. 2021) of one problem with `n` samples of which
/// `c` are correct: `1 - C(n - c, k) / C(n, k)`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if c == 0 {
        return 0.0;
    }
    if n - c < k {
        return 1.0;
    }
    // C(n-c, k) / C(n, k) = prod_{i = n-c+1}^{n} (1 - k / i)
    1.0 - ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product::<f64>()
}

/// Sampled pass@k over `examples`: `params.n` samples per problem (`params.n >= k`), scored by
/// `verifier`, averaged with [`pass_at_k`].
pub fn sampled_pass_at_k(
    engine: &Engine,
    examples: &[Example],
    verifier: &dyn Verifier,
    params: &SamplingParams,
    k: usize,
    include_stop: bool,
) -> Result<f64> {
    let answers = answer(engine, examples, verifier, params, include_stop)?;
    let total: f64 = answers
        .iter()
        .map(|a| pass_at_k(a.len(), a.iter().filter(|x| x.correct).count(), k))
        .sum();
    Ok(total / examples.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::pass_at_k;

    #[test]
    fn pass_at_k_matches_the_closed_form() {
        // n = k: any correct sample passes.
        assert_eq!(pass_at_k(8, 0, 8), 0.0);
        assert_eq!(pass_at_k(8, 1, 8), 1.0);
        // k = 1: the fraction correct.
        assert!((pass_at_k(10, 3, 1) - 0.3).abs() < 1e-12);
        // n = 4, c = 1, k = 2: 1 - C(3,2)/C(4,2) = 1 - 3/6.
        assert!((pass_at_k(4, 1, 2) - 0.5).abs() < 1e-12);
        // No samples, or none correct: 0.
        assert_eq!(pass_at_k(0, 0, 1), 0.0);
        assert_eq!(pass_at_k(4, 0, 2), 0.0);
    }
}
