//! The checkpoint's tokenizer (the `tokenizers` crate) with its chat template (minijinja) and
//! special token ids, loaded from a Hugging Face directory or rebuilt from a GGUF file.

use std::path::Path;

use serde_json::Value;

pub use crate::chat_template::ChatMessage;
use crate::chat_template::ChatTemplate;
use crate::error::{ModelError, Result, io_err};

pub struct Tokenizer {
    pub inner: tokenizers::Tokenizer,
    chat_template: Option<ChatTemplate>,
    /// The template source, kept for export.
    pub chat_template_source: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub bos_id: Option<u32>,
    /// Every id that ends a generation (the tokenizer's eos plus the config's eos ids).
    pub eos_ids: Vec<u32>,
    pub pad_id: Option<u32>,
    /// tokenizer_config.json as loaded (or rebuilt), kept for export.
    pub config_json: Value,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .field("bos_id", &self.bos_id)
            .field("eos_ids", &self.eos_ids)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

/// Runs the tokenizers crate, turning a panic inside it into an error message.
fn guarded<T>(f: impl FnOnce() -> tokenizers::Result<T>) -> std::result::Result<T, String> {
    crate::error::catch_panic("the tokenizers crate", f)?.map_err(|e| e.to_string())
}

/// "an array", "a string", ... for messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A token string from tokenizer_config.json: either `"<s>"` or `{"content": "<s>", ...}`.
fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json`, `tokenizer_config.json` and (transformers 5) `chat_template.jinja`
    /// from a Hugging Face model directory. `config_eos` are the model config's eos ids.
    pub fn from_hf_dir(dir: &Path, config_eos: &[u32]) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.exists() {
            return Err(ModelError::NotFound {
                path: tok_path,
                hint: String::new(),
            });
        }
        let tok_err = |message: String| ModelError::Tokenizer {
            origin: tok_path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(&tok_path).map_err(io_err(&tok_path))?;
        // The JSON syntax first: the tokenizers crate panics on some malformed documents (one
        // truncated inside `decoder`, found by fuzzing) instead of returning its error.
        serde_json::from_str::<serde::de::IgnoredAny>(&text)
            .map_err(|e| tok_err(format!("not valid JSON: {e}")))?;
        let inner: tokenizers::Tokenizer = text.parse().map_err(|e| tok_err(format!("{e}")))?;
        // A trial encoding: the tokenizers crate reads some inconsistent files (a post-processor
        // template naming a special token it does not define, found by fuzzing) and panics on
        // their first use.
        guarded(|| inner.encode("a", true)).map_err(|e| tok_err(format!("unusable: {e}")))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let mut config_json = if cfg_path.exists() {
            let cfg_err = |message: String| ModelError::Tokenizer {
                origin: cfg_path.display().to_string(),
                message,
            };
            let text = std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
            let value: Value =
                serde_json::from_str(&text).map_err(|e| cfg_err(format!("not valid JSON: {e}")))?;
            // Anything else made the `chat_template` insertion below panic (found by fuzzing).
            if !value.is_object() {
                return Err(cfg_err(format!(
                    "expected a JSON object, found {}",
                    json_kind(&value)
                )));
            }
            value
        } else {
            serde_json::json!({})
        };
        let jinja = dir.join("chat_template.jinja");
        if jinja.exists() {
            let text = std::fs::read_to_string(&jinja).map_err(io_err(&jinja))?;
            config_json["chat_template"] = Value::String(text);
        }
        Self::from_parts(
            inner,
            config_json,
            config_eos,
            &cfg_path.display().to_string(),
        )
    }

    /// Builds the tokenizer from a `tokenizers::Tokenizer` and a tokenizer_config.json value.
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        config_json: Value,
        config_eos: &[u32],
        origin: &str,
    ) -> Result<Self> {
        let bos_token = token_string(config_json.get("bos_token"));
        let eos_token = token_string(config_json.get("eos_token"));
        let pad_token = token_string(config_json.get("pad_token"));
        let id = |t: &Option<String>| t.as_deref().and_then(|t| inner.token_to_id(t));
        let bos_id = id(&bos_token);
        let mut eos_ids: Vec<u32> = id(&eos_token).into_iter().collect();
        for &e in config_eos {
            if !eos_ids.contains(&e) {
                eos_ids.push(e);
            }
        }
        let pad_id = id(&pad_token).or(eos_ids.first().copied());
        let chat_template_source = match config_json.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // Older checkpoints list named templates; "default" is the chat one.
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or(list.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        };
        let chat_template = chat_template_source
            .as_deref()
            .map(|src| {
                ChatTemplate::new(
                    src,
                    bos_token.clone().unwrap_or_default(),
                    eos_token.clone().unwrap_or_default(),
                )
                .map_err(|e| ModelError::ChatTemplate(format!("{origin}: {e}")))
            })
            .transpose()?;
        Ok(Tokenizer {
            inner,
            chat_template,
            chat_template_source,
            bos_token,
            eos_token,
            pad_token,
            bos_id,
            eos_ids,
            pad_id,
            config_json,
        })
    }

    /// Token ids of `text`; `add_special` adds what the tokenizer's post-processor adds (BOS).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        guarded(|| self.inner.encode(text, add_special))
            .map(|e| e.get_ids().to_vec())
            .map_err(|message| ModelError::Tokenizer {
                origin: "encode".into(),
                message,
            })
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        guarded(|| self.inner.decode(ids, skip_special)).map_err(|message| ModelError::Tokenizer {
            origin: "decode".into(),
            message,
        })
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Renders `messages` with the checkpoint's own chat template.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let t = self.chat_template.as_ref().ok_or_else(|| {
            ModelError::ChatTemplate("this checkpoint has no chat template".into())
        })?;
        t.render(messages, add_generation_prompt)
            .map_err(|e| ModelError::ChatTemplate(e.to_string()))
    }

    /// The ids of a chat prompt, as transformers' `apply_chat_template(..., tokenize=True)`:
    /// the rendered text tokenized without adding special tokens (the template has them).
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        self.encode(
            &self.apply_chat_template(messages, add_generation_prompt)?,
            false,
        )
    }

    /// Renders a chat prompt for generation. When the last message has role `assistant` it is
    /// a prefill: the messages before it are rendered with the generation prompt and its text is
    /// appended verbatim (transformers' `continue_final_message`), so the model continues it.
    pub fn render_prompt(&self, messages: &[ChatMessage]) -> Result<String> {
        match messages.split_last() {
            Some((last, before)) if last.role == "assistant" => {
                let mut text = self.apply_chat_template(before, true)?;
                text.push_str(&last.content);
                Ok(text)
            }
            _ => self.apply_chat_template(messages, true),
        }
    }

    /// The ids of [`Tokenizer::render_prompt`] (special tokens come from the template).
    pub fn encode_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.encode(&self.render_prompt(messages)?, false)
    }

    /// The tokenizer of a GGUF file alone, without loading its weights.
    pub fn from_gguf(path: &Path) -> Result<Self> {
        let file = crate::gguf::GgufFile::open(path)?;
        let config = crate::config::ModelConfig::from_json(&crate::gguf::hf_config(&file)?, path)?;
        Self::from_parts(
            crate::gguf::load_tokenizer(&file)?,
            crate::gguf::tokenizer_config(&file)?,
            &config.eos_token_ids,
            &path.display().to_string(),
        )
    }

    /// The character-level tokenizer of the tiny from-scratch recipes (see
    /// [`crate::init::char_vocab`]), built in memory: the same as loading
    /// `recipes/models/tiny-arith`.
    pub fn char_level() -> Result<Self> {
        let json = crate::init::char_tokenizer_json()?;
        let inner: tokenizers::Tokenizer = json.parse().map_err(|e| ModelError::Tokenizer {
            origin: "character tokenizer".into(),
            message: format!("{e}"),
        })?;
        Self::from_parts(
            inner,
            crate::init::char_tokenizer_config_json(),
            &[crate::init::CHAR_EOS_ID],
            "character tokenizer",
        )
    }

    /// Writes tokenizer.json and tokenizer_config.json (with the chat template) into `dir`.
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        let tok_path = dir.join("tokenizer.json");
        self.inner
            .save(&tok_path, true)
            .map_err(|e| ModelError::Tokenizer {
                origin: tok_path.display().to_string(),
                message: e.to_string(),
            })?;
        let mut cfg = self.config_json.clone();
        if !cfg.is_object() {
            cfg = serde_json::json!({});
        }
        if let Some(src) = &self.chat_template_source {
            cfg["chat_template"] = Value::String(src.clone());
        }
        cfg.as_object_mut().map(|o| {
            o.entry("tokenizer_class")
                .or_insert("PreTrainedTokenizerFast".into())
        });
        let path = dir.join("tokenizer_config.json");
        let text = serde_json::to_string_pretty(&cfg).map_err(|e| ModelError::Tokenizer {
            origin: path.display().to_string(),
            message: e.to_string(),
        })?;
        std::fs::write(&path, text).map_err(io_err(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (tests/fuzz_inputs): a tokenizer.json cut inside its `decoder` made
    /// the tokenizers crate panic ("Helper") instead of returning an error.
    #[test]
    fn a_truncated_tokenizer_json_is_an_error() {
        let dir = std::env::temp_dir().join(format!("kiln-tok-truncated-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = crate::init::char_tokenizer_json().unwrap();
        let decoder = json.find("\"decoder\"").unwrap();
        let cut = decoder + json[decoder..].find("Fuse").unwrap() + 2;
        std::fs::write(dir.join("tokenizer.json"), &json[..cut]).unwrap();
        let err = Tokenizer::from_hf_dir(&dir, &[]).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        let want = format!(
            "tokenizer ({}): not valid JSON: EOF while parsing a string",
            dir.join("tokenizer.json").display()
        );
        assert!(err.starts_with(&want), "{err}");
    }

    /// Found by fuzzing: a post-processor template naming a special token that its
    /// `special_tokens` do not define loaded, then panicked on every encode.
    #[test]
    fn a_template_with_an_undefined_special_token_is_an_error() {
        let dir = std::env::temp_dir().join(format!("kiln-tok-template-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut json: Value = crate::init::char_tokenizer_json().unwrap().parse().unwrap();
        json["post_processor"] = serde_json::json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<eos>": {"id": "<eos>", "ids": [1], "tokens": ["<eos>"]}},
        });
        std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
        let err = Tokenizer::from_hf_dir(&dir, &[]).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        let want = format!(
            "tokenizer ({}): unusable: the tokenizers crate panicked: no entry found for key",
            dir.join("tokenizer.json").display()
        );
        assert_eq!(err, want);
    }

    /// Found by fuzzing: a tokenizer_config.json holding an array (or any non-object) beside a
    /// chat_template.jinja panicked ("cannot access key in JSON array").
    #[test]
    fn a_tokenizer_config_that_is_not_an_object_is_an_error() {
        let dir = std::env::temp_dir().join(format!("kiln-tok-cfg-array-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        crate::init::write_char_tokenizer(&dir).unwrap();
        std::fs::write(dir.join("tokenizer_config.json"), "[]").unwrap();
        std::fs::write(dir.join("chat_template.jinja"), "{{ messages }}").unwrap();
        let err = Tokenizer::from_hf_dir(&dir, &[]).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        let want = format!(
            "tokenizer ({}): expected a JSON object, found an array",
            dir.join("tokenizer_config.json").display()
        );
        assert_eq!(err, want);
    }
}
