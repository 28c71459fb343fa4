//! Preference pairs for reward-model training: a prompt, a chosen and a rejected response.
//!
//! Two sources:
//! - [`load_preferences`]: JSONL in TRL's preference layouts, one pair per line:
//!   `{"prompt": "...", "chosen": "...", "rejected": "..."}`, or the conversational form
//!   where `prompt` is a message list and `chosen` / `rejected` are lists ending with the
//!   assistant's reply. An optional numeric `margin` is kept (TRL's margin loss).
//! - [`InstructionPairGenerator`]: the project's own synthetic preferences over the
//!   instruction-following task (`say fox 4 times, uppercase, end with !:`). The chosen
//!   response follows every rule; the rejected one breaks exactly one, drawn uniformly among
//!   the count (one more or one fewer), the word, the case and the final mark. Pair `i`
//!   depends only on `(config, seed, i)`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{DataError, Loc, Result};
use crate::example::{ChatMessage, Prompt};
use crate::instructions::{Instruction, InstructionConfig, InstructionGenerator, LetterCase};
use crate::synth::{item_rng, uniform_below};

/// One preference: `chosen` is the better response to `prompt`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreferencePair {
    pub prompt: Prompt,
    pub chosen: String,
    pub rejected: String,
    /// How much better `chosen` is (TRL's `margin`), when the data says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
}

/// Which rule a rejected instruction response breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokenRule {
    Count,
    Word,
    Case,
    Ending,
}

/// Synthetic preferences over the instruction-following task.
#[derive(Clone, Debug)]
pub struct InstructionPairGenerator {
    prompts: InstructionGenerator,
    seed: u64,
}

impl InstructionPairGenerator {
    /// Needs at least two words and two endings (a broken word or ending must differ).
    pub fn new(config: InstructionConfig, seed: u64) -> Result<Self> {
        if config.words.len() < 2 || config.endings.len() < 2 {
            return Err(DataError::Config(
                "instruction pairs: need at least two `words` and two `endings` to break a rule"
                    .into(),
            ));
        }
        Ok(Self {
            prompts: InstructionGenerator::new(config, seed)?,
            seed,
        })
    }

    /// Pair `index` and the rule its rejected response breaks.
    pub fn pair_with_rule(&self, index: u64) -> (PreferencePair, BrokenRule) {
        let inst = self.prompts.instance(index);
        let c = self.prompts.config();
        // A stream of its own, so the prompt draw is the instruction generator's.
        let mut rng = item_rng(self.seed ^ 0x7072_6566_6572_656e, index);
        let rule = [
            BrokenRule::Count,
            BrokenRule::Word,
            BrokenRule::Case,
            BrokenRule::Ending,
        ][uniform_below(&mut rng, 4) as usize];
        let mut other = |from: &[String], not: &str| {
            let rest: Vec<&String> = from.iter().filter(|x| x.as_str() != not).collect();
            rest[uniform_below(&mut rng, rest.len() as u64) as usize].clone()
        };
        let bad = match rule {
            BrokenRule::Count => {
                let up = inst.count == 1 || uniform_below(&mut rng, 2) == 0;
                let count = if up { inst.count + 1 } else { inst.count - 1 };
                inst.answer_with(count)
            }
            BrokenRule::Word => Instruction {
                word: other(&c.words, &inst.word),
                ..inst.clone()
            }
            .answer_with(inst.count),
            BrokenRule::Case => Instruction {
                case: match inst.case {
                    LetterCase::Upper => LetterCase::Lower,
                    LetterCase::Lower => LetterCase::Upper,
                },
                ..inst.clone()
            }
            .answer_with(inst.count),
            BrokenRule::Ending => Instruction {
                ending: other(&c.endings, &inst.ending),
                ..inst.clone()
            }
            .answer_with(inst.count),
        };
        let pair = PreferencePair {
            prompt: Prompt::Text(inst.prompt()),
            chosen: inst.answer_with(inst.count),
            rejected: bad,
            margin: None,
        };
        (pair, rule)
    }

    pub fn pair(&self, index: u64) -> PreferencePair {
        self.pair_with_rule(index).0
    }

    /// Pairs `0..n`.
    pub fn generate(&self, n: u64) -> Vec<PreferencePair> {
        (0..n).map(|i| self.pair(i)).collect()
    }
}

/// Reads preference pairs from a JSONL file (layouts in the module docs). Errors name the file,
/// the line and the field.
pub fn load_preferences(path: &Path) -> Result<Vec<PreferencePair>> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let loc = Loc::Line(i + 1);
        let value: Value = serde_json::from_str(line).map_err(|source| DataError::Json {
            path: path.to_path_buf(),
            loc,
            source,
        })?;
        let Value::Object(obj) = &value else {
            return Err(DataError::NotAnObject {
                path: path.to_path_buf(),
                loc,
                found: value.to_string(),
            });
        };
        let bad = |field: &str, message: &str| DataError::BadField {
            path: path.to_path_buf(),
            loc,
            field: field.into(),
            message: message.into(),
        };
        let get = |field: &str| {
            obj.get(field)
                .filter(|v| !v.is_null())
                .ok_or_else(|| DataError::MissingField {
                    path: path.to_path_buf(),
                    loc,
                    field: field.into(),
                })
        };
        let prompt = match get("prompt")? {
            Value::String(s) => Prompt::Text(s.clone()),
            Value::Array(_) => Prompt::Chat(
                messages(get("prompt")?)
                    .ok_or_else(|| bad("prompt", "expected messages {role, content}"))?,
            ),
            _ => return Err(bad("prompt", "expected a string or a message list")),
        };
        let response = |field: &str| -> Result<String> {
            match get(field)? {
                Value::String(s) => Ok(s.clone()),
                v @ Value::Array(_) => messages(v)
                    .and_then(|m| m.last().filter(|m| m.role == "assistant").cloned())
                    .map(|m| m.content)
                    .ok_or_else(|| bad(field, "expected a list ending with an assistant message")),
                _ => Err(bad(field, "expected a string or a message list")),
            }
        };
        let (chosen, rejected) = (response("chosen")?, response("rejected")?);
        let margin = match obj.get("margin") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .filter(|m| m.is_finite())
                    .ok_or_else(|| bad("margin", "expected a finite number"))?,
            ),
        };
        out.push(PreferencePair {
            prompt,
            chosen,
            rejected,
            margin,
        });
    }
    if out.is_empty() {
        return Err(DataError::Config(format!(
            "{}: no preference pairs in the file",
            path.display()
        )));
    }
    Ok(out)
}

fn messages(v: &Value) -> Option<Vec<ChatMessage>> {
    serde_json::from_value(v.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_responses_break_exactly_the_drawn_rule() {
        let g = InstructionPairGenerator::new(InstructionConfig::default(), 5).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..400 {
            let (p, rule) = g.pair_with_rule(i);
            assert_eq!(p, g.pair(i));
            assert_ne!(p.chosen, p.rejected);
            let words = |s: &str| s.split_whitespace().count();
            let mark = |s: &str| s.chars().last().unwrap();
            let body = |s: &str| s[..s.len() - 1].to_string();
            match rule {
                BrokenRule::Count => {
                    assert_eq!(words(&p.chosen).abs_diff(words(&p.rejected)), 1)
                }
                BrokenRule::Case => assert_eq!(
                    body(&p.chosen).to_lowercase(),
                    body(&p.rejected).to_lowercase()
                ),
                BrokenRule::Ending => {
                    assert_eq!(body(&p.chosen), body(&p.rejected));
                    assert_ne!(mark(&p.chosen), mark(&p.rejected));
                }
                BrokenRule::Word => {
                    assert_eq!(words(&p.chosen), words(&p.rejected));
                    assert_eq!(mark(&p.chosen), mark(&p.rejected));
                }
            }
            seen.insert(format!("{rule:?}"));
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn jsonl_pairs_in_both_layouts_and_named_errors() {
        let dir = std::env::temp_dir().join(format!("kiln-prefs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"prompt": "2+2=", "chosen": "4", "rejected": "5", "margin": 1.5}"#,
                "\n\n",
                r#"{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}], "rejected": [{"role": "assistant", "content": "go away"}]}"#,
                "\n"
            ),
        )
        .unwrap();
        let pairs = load_preferences(&path).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].margin, Some(1.5));
        assert_eq!(pairs[1].chosen, "hello");
        assert!(matches!(&pairs[1].prompt, Prompt::Chat(m) if m[0].content == "hi"));
        for (line, want) in [
            (
                r#"{"prompt": "x", "chosen": "y"}"#,
                "line 1: missing field `rejected`",
            ),
            (
                r#"{"prompt": 3, "chosen": "y", "rejected": "z"}"#,
                "field `prompt`",
            ),
            (
                r#"{"prompt": "x", "chosen": "y", "rejected": "z", "margin": "a"}"#,
                "field `margin`",
            ),
            (
                r#"{"prompt": "x", "chosen": [{"role": "user", "content": "y"}], "rejected": "z"}"#,
                "assistant",
            ),
            ("[1]", "expected a JSON object"),
            ("{", "invalid JSON"),
        ] {
            std::fs::write(&path, line).unwrap();
            let err = load_preferences(&path).unwrap_err().to_string();
            assert!(
                err.contains(want) && err.contains("p.jsonl"),
                "{line}: {err}"
            );
        }
        std::fs::write(&path, "\n").unwrap();
        assert!(
            load_preferences(&path)
                .unwrap_err()
                .to_string()
                .contains("no preference pairs")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
