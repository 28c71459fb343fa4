//! Prompt templates.
//!
//! Countdown: TinyZero's two templates, reproduced character for character from
//! `examples/data_preprocess/countdown.py` (Jiayi-Pan/TinyZero), plus a chat-message form of the
//! instruct one. In TinyZero the numbers are written as a Python list (`[44, 19, 35]`).
//!
//! MATH / GSM8K / arithmetic: verl's instruction, appended to the problem after one space:
//! `Let's think step by step and output the final answer within \boxed{}.`
//! (the same suffix as in verl's `math_dataset.py` and in the MATH train parquet our MATH data
//! came from, see `shared/data/math/SOURCE.md`).

use serde::{Deserialize, Serialize};

use crate::example::{ChatMessage, Prompt};

/// System prompt of TinyZero's `qwen-instruct` template (its grammar left as it is).
pub const COUNTDOWN_SYSTEM: &str = "You are a helpful assistant. You first thinks about the reasoning process in the mind and then provides the user with the answer.";

/// First sentence of TinyZero's `base` template.
pub const COUNTDOWN_BASE_PREAMBLE: &str = "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant first thinks about the reasoning process in the mind and then provides the user with the answer.";

/// What both TinyZero templates put at the start of the assistant turn.
pub const COUNTDOWN_ASSISTANT_PREFILL: &str = "Let me solve this step by step.\n<think>";

/// The instruction appended (after one space) to MATH, GSM8K and arithmetic problems.
pub const MATH_INSTRUCTION: &str =
    "Let's think step by step and output the final answer within \\boxed{}.";

/// Which Countdown prompt to build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CountdownTemplate {
    /// TinyZero `base`: a User/Assistant frame as raw text, ending in
    /// `Assistant: Let me solve this step by step.\n<think>`. The standard Countdown prompt.
    #[default]
    Base,
    /// TinyZero `qwen-instruct`: raw text with Qwen's `<|im_start|>` tokens written in, exactly as
    /// TinyZero feeds it (TinyZero does not apply the tokenizer's chat template).
    QwenInstruct,
    /// The same request as chat messages: system [`COUNTDOWN_SYSTEM`], user request, and an
    /// assistant prefill [`COUNTDOWN_ASSISTANT_PREFILL`]. Rendered through Qwen2.5's chat template
    /// (continue-final-message) it gives exactly the `QwenInstruct` text; the user message keeps
    /// TinyZero's leading space for that reason.
    Chat,
    /// A short raw-text request for tiny from-scratch models: `make 22 from 3 5 7:`, answered
    /// `<answer>3 * 5 + 7</answer>` (the verifier reads the last `<answer>` on the last line).
    Terse,
}

/// Which MATH / GSM8K / arithmetic prompt to build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MathTemplate {
    /// One user message: `"{problem} Let's think step by step and output the final answer within
    /// \boxed{}."` (verl's wording).
    #[default]
    Chat,
    /// Raw text for base (and tiny from-scratch) models: `"Question: {problem}\nAnswer:"`.
    Base,
    /// The arithmetic generator's bare expression, `"47 + 38 ="` (tiny from-scratch models: a
    /// short prompt at fixed positions). Elsewhere the same as `Base`.
    Terse,
}

/// Formats integers as a Python list does: `[44, 19, 35]`.
pub fn python_list(nums: &[i64]) -> String {
    let items: Vec<String> = nums.iter().map(|n| n.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// TinyZero's Countdown request sentence(s), shared by both templates.
pub fn countdown_request(nums: &[i64], target: i64) -> String {
    format!(
        "Using the numbers {}, create an equation that equals {target}. You can use basic arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags. And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.",
        python_list(nums)
    )
}

/// The Countdown prompt for `nums` and `target`.
pub fn countdown_prompt(nums: &[i64], target: i64, template: CountdownTemplate) -> Prompt {
    let request = countdown_request(nums, target);
    match template {
        CountdownTemplate::Base => Prompt::Text(format!(
            "{COUNTDOWN_BASE_PREAMBLE}\nUser: {request}\nAssistant: {COUNTDOWN_ASSISTANT_PREFILL}"
        )),
        CountdownTemplate::QwenInstruct => Prompt::Text(format!(
            "<|im_start|>system\n{COUNTDOWN_SYSTEM}<|im_end|>\n<|im_start|>user\n {request}<|im_end|>\n<|im_start|>assistant\n{COUNTDOWN_ASSISTANT_PREFILL}"
        )),
        CountdownTemplate::Chat => Prompt::Chat(vec![
            ChatMessage::system(COUNTDOWN_SYSTEM),
            ChatMessage::user(format!(" {request}")),
            ChatMessage::assistant(COUNTDOWN_ASSISTANT_PREFILL),
        ]),
        CountdownTemplate::Terse => {
            let nums: Vec<String> = nums.iter().map(|n| n.to_string()).collect();
            Prompt::Text(format!("make {target} from {}:", nums.join(" ")))
        }
    }
}

/// The MATH / GSM8K / arithmetic prompt for `problem`.
pub fn math_prompt(problem: &str, template: MathTemplate) -> Prompt {
    match template {
        MathTemplate::Chat => Prompt::Chat(vec![ChatMessage::user(format!(
            "{problem} {MATH_INSTRUCTION}"
        ))]),
        MathTemplate::Base | MathTemplate::Terse => {
            Prompt::Text(format!("Question: {problem}\nAnswer:"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ChatML renderer (Qwen2.5's template for system/user/assistant turns), enough to check
    /// that the chat form and TinyZero's text form agree.
    fn render_chatml(p: &Prompt) -> String {
        let (msgs, prefill) = p.split_prefill().unwrap();
        let mut s = String::new();
        for m in msgs {
            s.push_str(&format!(
                "<|im_start|>{}\n{}<|im_end|>\n",
                m.role, m.content
            ));
        }
        s.push_str("<|im_start|>assistant\n");
        s.push_str(prefill.unwrap_or(""));
        s
    }

    #[test]
    fn countdown_base_is_tinyzero_text() {
        let p = countdown_prompt(&[44, 19, 35], 98, CountdownTemplate::Base);
        let expected = "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant first thinks about the reasoning process in the mind and then provides the user with the answer.\nUser: Using the numbers [44, 19, 35], create an equation that equals 98. You can use basic arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags. And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.\nAssistant: Let me solve this step by step.\n<think>";
        assert_eq!(p.as_text(), Some(expected));
    }

    #[test]
    fn countdown_qwen_instruct_is_tinyzero_text() {
        let p = countdown_prompt(&[1, 2, 3, 4], 10, CountdownTemplate::QwenInstruct);
        let expected = "<|im_start|>system\nYou are a helpful assistant. You first thinks about the reasoning process in the mind and then provides the user with the answer.<|im_end|>\n<|im_start|>user\n Using the numbers [1, 2, 3, 4], create an equation that equals 10. You can use basic arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags. And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.<|im_end|>\n<|im_start|>assistant\nLet me solve this step by step.\n<think>";
        assert_eq!(p.as_text(), Some(expected));
    }

    #[test]
    fn countdown_chat_renders_to_qwen_instruct() {
        let chat = countdown_prompt(&[7, 3, 50], 29, CountdownTemplate::Chat);
        let text = countdown_prompt(&[7, 3, 50], 29, CountdownTemplate::QwenInstruct);
        assert_eq!(render_chatml(&chat), text.as_text().unwrap());
        let (msgs, prefill) = chat.split_prefill().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(prefill, Some(COUNTDOWN_ASSISTANT_PREFILL));
    }

    #[test]
    fn countdown_terse_is_short_text() {
        assert_eq!(
            countdown_prompt(&[3, 5, 7], 22, CountdownTemplate::Terse),
            Prompt::Text("make 22 from 3 5 7:".into())
        );
    }

    #[test]
    fn math_prompts() {
        let p = math_prompt("What is $1+1$?", MathTemplate::Chat);
        assert_eq!(
            p,
            Prompt::Chat(vec![ChatMessage::user(
                "What is $1+1$? Let's think step by step and output the final answer within \\boxed{}."
            )])
        );
        assert_eq!(p.split_prefill().unwrap().1, None);
        let b = math_prompt("What is 47 + 38?", MathTemplate::Base);
        assert_eq!(b.as_text(), Some("Question: What is 47 + 38?\nAnswer:"));
    }

    #[test]
    fn prompt_serde_shape() {
        let p = Prompt::Chat(vec![ChatMessage::user("hi")]);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"chat": [{"role": "user", "content": "hi"}]})
        );
        let t: Prompt = serde_json::from_value(serde_json::json!({"text": "x"})).unwrap();
        assert_eq!(t, Prompt::Text("x".into()));
    }
}
