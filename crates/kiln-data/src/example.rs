//! The unit of data: [`Example`] with its [`Prompt`] and [`Reference`].

use serde::{Deserialize, Serialize};

/// Domain names used by the built-in loaders and generators. The verifier for an example is chosen
/// by its domain.
pub mod domain {
    /// MATH (train and MATH-500): `Reference::Answer` holding the last `\boxed{}` content.
    pub const MATH: &str = "math";
    /// GSM8K: `Reference::Answer` holding the number after the last `####`, commas removed.
    pub const GSM8K: &str = "gsm8k";
    /// Countdown: `Reference::Countdown { target, nums }`.
    pub const COUNTDOWN: &str = "countdown";
    /// Synthetic multi-digit arithmetic: `Reference::Answer` holding an integer. A GSM8K-style
    /// numeric verifier (last number or boxed value) scores it.
    pub const ARITHMETIC: &str = "arithmetic";
    /// Instruction following with format constraints: `Reference::Instructions` holding the
    /// rules (kiln-reward's `InstructionVerifier` checks them).
    pub const INSTRUCTIONS: &str = "instructions";
}

/// One chat message. Field names follow the Hugging Face / OpenAI convention (`role`, `content`)
/// so a message list serialises into what chat templates expect.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// "system", "user" or "assistant".
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// What the policy is conditioned on.
///
/// Serialised externally tagged: `{"text": "..."}` or `{"chat": [{"role": .., "content": ..}, ..]}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// Raw text fed to the tokenizer as it is (base-model prompts such as TinyZero's "base").
    Text(String),
    /// Chat messages, to be rendered through the model's chat template (in kiln-model).
    ///
    /// Convention: when the LAST message has role `assistant`, it is a prefill. The renderer
    /// renders the messages before it with the generation prompt and appends the prefill's
    /// content verbatim, so the model continues it (Hugging Face's `continue_final_message`).
    /// Otherwise the renderer adds the generation prompt (`add_generation_prompt`).
    Chat(Vec<ChatMessage>),
}

impl Prompt {
    /// The raw text, if this is a text prompt.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Prompt::Text(t) => Some(t),
            Prompt::Chat(_) => None,
        }
    }

    /// The messages, if this is a chat prompt.
    pub fn messages(&self) -> Option<&[ChatMessage]> {
        match self {
            Prompt::Text(_) => None,
            Prompt::Chat(m) => Some(m),
        }
    }

    /// Whether this is a chat prompt.
    pub fn is_chat(&self) -> bool {
        matches!(self, Prompt::Chat(_))
    }

    /// For a chat prompt: the messages to render with the generation prompt, and the assistant
    /// prefill to append after it (the last message when its role is `assistant`).
    pub fn split_prefill(&self) -> Option<(&[ChatMessage], Option<&str>)> {
        let m = self.messages()?;
        match m.split_last() {
            Some((last, rest)) if last.role == "assistant" => Some((rest, Some(&last.content))),
            _ => Some((m, None)),
        }
    }
}

/// What a verifier compares the response against.
///
/// Serialised externally tagged: `{"answer": "18"}`,
/// `{"countdown": {"target": 36, "nums": [79, 17, 60]}}` or
/// `{"instructions": ["words 3", "case upper"]}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reference {
    /// The reference answer text (MATH: last boxed content, unnormalised; GSM8K: the final number).
    Answer(String),
    /// Countdown: reach `target` using each of `nums` exactly once.
    Countdown { target: i64, nums: Vec<i64> },
    /// Instruction following: rules the response must satisfy, in kiln-reward's rule syntax
    /// (`words 4`, `only fox`, `case upper`, `ends-with !`; see [`crate::instructions`]).
    Instructions(Vec<String>),
}

impl Reference {
    /// The answer text, for `Answer`.
    pub fn answer(&self) -> Option<&str> {
        match self {
            Reference::Answer(a) => Some(a),
            Reference::Countdown { .. } | Reference::Instructions(_) => None,
        }
    }
}

/// One prompt with its reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// Stable, unique id (e.g. `test/precalculus/807.json`, `math/train/17`, `countdown/test/3`).
    pub id: String,
    /// The domain, which selects the verifier (see [`domain`]).
    pub domain: String,
    /// What the policy sees.
    pub prompt: Prompt,
    /// What the verifier checks against.
    pub reference: Reference,
    /// Anything else worth keeping: subject, level, worked solution, source file.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub meta: serde_json::Map<String, serde_json::Value>,
}
