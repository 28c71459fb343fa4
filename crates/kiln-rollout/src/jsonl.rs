//! Batch mode of `kiln generate`: prompts from JSONL in, one JSONL line per rollout out.
//!
//! Input: one JSON object per line (blank lines skipped) with exactly one of
//! - `"prompt"`: text, tokenized with the tokenizer's special tokens (BOS), or wrapped as a user
//!   message in the chat template when `JsonlOptions::chat` is set;
//! - `"messages"`: `[{"role": .., "content": ..}, ..]`, rendered with the chat template;
//! - `"prompt_ids"`: token ids, used as they are;
//!
//! and optionally `"id"` (any JSON value, echoed back). Other keys are ignored (datasets carry
//! answers and metadata).
//!
//! Output, per rollout, in input order then sample order: `{"id", "line", "sample", "text",
//! "finish_reason", "stop_string" (when stopped by one), "prompt_ids", "response_ids",
//! "logprobs", "entropies", "top_logprobs" (when asked for), "fork"}`. `line` is the 1-based input
//! line. Random streams are keyed by the prompt's position among the prompts of the file, so the
//! output does not depend on how the file is chunked.

use std::io::{BufRead, Write};

use kiln_model::ChatMessage;
use serde_json::{Value, json};

use crate::engine::{Engine, Rollout};
use crate::error::{Result, RolloutError};
use crate::params::SamplingParams;

#[derive(Debug, Clone)]
pub struct JsonlOptions {
    /// Wrap `"prompt"` text as a user message in the chat template.
    pub chat: bool,
    /// Prompts handed to the engine at once (output is written after each chunk).
    pub chunk_prompts: usize,
}

impl Default for JsonlOptions {
    fn default() -> Self {
        JsonlOptions {
            chat: false,
            chunk_prompts: 256,
        }
    }
}

/// What a batch run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonlSummary {
    pub prompts: usize,
    pub rollouts: usize,
    pub new_tokens: usize,
}

struct Request {
    line: usize,
    id: Value,
    ids: Vec<u32>,
}

fn parse_line(
    engine: &Engine<'_>,
    opts: &JsonlOptions,
    line: usize,
    text: &str,
) -> Result<Request> {
    let bad = |message: String| RolloutError::InputLine { line, message };
    let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("expected a JSON object".into()))?;
    let given: Vec<&str> = ["prompt", "messages", "prompt_ids"]
        .into_iter()
        .filter(|k| obj.contains_key(*k))
        .collect();
    if given.len() != 1 {
        return Err(bad(format!(
            "expected exactly one of \"prompt\", \"messages\", \"prompt_ids\"; found {given:?}"
        )));
    }
    let tokenizer = || {
        engine
            .tokenizer()
            .ok_or_else(|| bad("text prompts need a model with a tokenizer".into()))
    };
    let ids = match given[0] {
        "prompt_ids" => obj["prompt_ids"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
                    .collect::<Option<Vec<u32>>>()
            })
            .ok_or_else(|| bad("\"prompt_ids\" must be an array of token ids".into()))?,
        "messages" => {
            let messages: Vec<ChatMessage> = serde_json::from_value(obj["messages"].clone())
                .map_err(|e| bad(format!("\"messages\": {e}")))?;
            tokenizer()?
                .encode_chat(&messages, true)
                .map_err(|e| bad(e.to_string()))?
        }
        _ => {
            let prompt = obj["prompt"]
                .as_str()
                .ok_or_else(|| bad("\"prompt\" must be a string".into()))?;
            let tok = tokenizer()?;
            if opts.chat {
                tok.encode_chat(&[ChatMessage::new("user", prompt)], true)
            } else {
                tok.encode(prompt, true)
            }
            .map_err(|e| bad(e.to_string()))?
        }
    };
    if ids.is_empty() {
        return Err(bad("the prompt has no tokens".into()));
    }
    Ok(Request {
        line,
        id: obj.get("id").cloned().unwrap_or(Value::Null),
        ids,
    })
}

/// The JSON line of one rollout.
pub fn rollout_json(r: &Rollout, id: &Value, line: usize) -> Value {
    let mut out = json!({
        "id": id,
        "line": line,
        "sample": r.sample_index,
        "text": r.text,
        "finish_reason": r.finish_reason.as_str(),
        "prompt_ids": r.prompt_ids,
        "response_ids": r.response_ids,
        "logprobs": r.logprobs,
        "entropies": r.entropies,
    });
    if let crate::engine::FinishReason::StopString(s) = &r.finish_reason {
        out["stop_string"] = json!(s);
    }
    if let Some(top) = &r.top_logprobs {
        out["top_logprobs"] = json!(top);
    }
    if let Some(f) = &r.fork {
        out["fork"] = json!(f);
    }
    out
}

/// Reads prompts from `input` (JSONL, see the module docs), generates `params.n` rollouts for
/// each and writes one JSON line per rollout to `output`. Every line is checked before any
/// generation starts, so a bad line fails fast with its line number.
pub fn generate_jsonl<R: BufRead, W: Write>(
    engine: &Engine<'_>,
    params: &SamplingParams,
    opts: &JsonlOptions,
    input: R,
    mut output: W,
) -> Result<JsonlSummary> {
    params.validate()?;
    let mut requests = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        requests.push(parse_line(engine, opts, i + 1, &line)?);
    }
    let mut summary = JsonlSummary::default();
    for (c, chunk) in requests.chunks(opts.chunk_prompts.max(1)).enumerate() {
        let first = c * opts.chunk_prompts.max(1);
        let prompts: Vec<Vec<u32>> = chunk.iter().map(|r| r.ids.clone()).collect();
        let groups = engine
            .generate_from(first, &prompts, params, &mut |_| {})
            .map_err(|e| match e {
                RolloutError::Prompt { index, message } => RolloutError::InputLine {
                    line: chunk[index].line,
                    message,
                },
                other => other,
            })?;
        for (req, group) in chunk.iter().zip(&groups) {
            summary.prompts += 1;
            for r in &group.rollouts {
                summary.rollouts += 1;
                summary.new_tokens += r.response_ids.len();
                writeln!(output, "{}", rollout_json(r, &req.id, req.line))?;
            }
        }
        output.flush()?;
    }
    Ok(summary)
}
