//! Rebuilds a checkpoint's tokenizer from GGUF metadata as a `tokenizers::Tokenizer` equal to
//! the Hugging Face `tokenizer.json` it was converted from, and writes the matching
//! `tokenizer_config.json` fields.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = "gpt2"`, used by Llama 3, Qwen2/3 and SmolLM2)
//! is supported. What llama.cpp stores as a pre-tokenizer *name* (`tokenizer.ggml.pre`) is
//! mapped back to the HF pre-tokenizer it stands for.

use serde_json::{Map, Value, json};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::sequence::Sequence as ProcessorSequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::{GgufError, GgufFile};

/// llama.cpp token types that HF keeps as added tokens.
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Llama 3's split regex (tokenizer.json of meta-llama/Meta-Llama-3-8B).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split regex: Llama 3's with single digits.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The HF pipeline pieces a `tokenizer.ggml.pre` value stands for.
struct PreTokenizerSpec {
    pre_tokenizer: PreTokenizerWrapper,
    /// Qwen2 normalizes to NFC first.
    nfc: bool,
    /// Llama 3's BPE takes a pre-token whole when it is in the vocabulary (`ignore_merges`).
    ignore_merges: bool,
}

fn pre_tokenizer_for(pre: &str) -> Result<PreTokenizerSpec, tokenizers::Error> {
    let split = |regex: &str| -> Result<PreTokenizerWrapper, tokenizers::Error> {
        Ok(Split::new(
            SplitPattern::Regex(regex.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )?
        .into())
    };
    let byte_level_no_regex = ByteLevel::new(false, true, false).into();
    Ok(match pre {
        // GPT-2's regex inside ByteLevel.
        "gpt-2" | "gpt2" | "default" => PreTokenizerSpec {
            pre_tokenizer: ByteLevel::new(false, true, true).into(),
            nfc: false,
            ignore_merges: false,
        },
        // Digits split one by one, then GPT-2's regex (llama.cpp groups these names together).
        "smollm" | "starcoder" | "refact" | "codeshell" => PreTokenizerSpec {
            pre_tokenizer: Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            nfc: false,
            ignore_merges: false,
        },
        "llama-bpe" | "llama3" => PreTokenizerSpec {
            pre_tokenizer: Sequence::new(vec![split(LLAMA3_REGEX)?, byte_level_no_regex]).into(),
            nfc: false,
            ignore_merges: true,
        },
        "qwen2" | "deepseek-r1-qwen" => PreTokenizerSpec {
            pre_tokenizer: Sequence::new(vec![split(QWEN2_REGEX)?, byte_level_no_regex]).into(),
            nfc: true,
            ignore_merges: false,
        },
        _ => return Err(format!("pre-tokenizer `{pre}`").into()),
    })
}

/// The special-token strings and ids the checkpoint declares.
struct SpecialTokens<'a> {
    tokens: Vec<&'a str>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
}

impl SpecialTokens<'_> {
    fn text(&self, id: Option<u32>) -> Option<&str> {
        id.and_then(|i| self.tokens.get(i as usize).copied())
    }
}

fn special_tokens(file: &GgufFile) -> Result<SpecialTokens<'_>, GgufError> {
    let tokens = file.require(
        "tokenizer.ggml.tokens",
        file.get_str_array("tokenizer.ggml.tokens"),
    )?;
    let id = |k: &str| file.get_u32(&format!("tokenizer.ggml.{k}_token_id"));
    let specials = SpecialTokens {
        bos: id("bos")?,
        eos: id("eos")?,
        unk: id("unknown")?,
        pad: id("padding")?,
        tokens,
    };
    for (name, id) in [
        ("bos", specials.bos),
        ("eos", specials.eos),
        ("unknown", specials.unk),
        ("padding", specials.pad),
    ] {
        if let Some(id) = id
            && id as usize >= specials.tokens.len()
        {
            return Err(GgufError::Corrupt {
                file: file.path().to_path_buf(),
                what: format!(
                    "tokenizer.ggml.{name}_token_id = {id} is outside the vocabulary of {}",
                    specials.tokens.len()
                ),
            });
        }
    }
    Ok(specials)
}

fn check_model(file: &GgufFile) -> Result<(), GgufError> {
    let model = file.require("tokenizer.ggml.model", file.get_str("tokenizer.ggml.model"))?;
    if model != "gpt2" {
        return Err(GgufError::Unsupported {
            file: file.path().to_path_buf(),
            what: format!(
                "tokenizer model `{model}` (tokenizer.ggml.model); kiln rebuilds only byte-level BPE (`gpt2`) tokenizers"
            ),
        });
    }
    Ok(())
}

/// The checkpoint's tokenizer, equivalent to its Hugging Face `tokenizer.json`.
pub fn load_tokenizer(file: &GgufFile) -> Result<Tokenizer, GgufError> {
    check_model(file)?;
    let tok_err = |message: String| GgufError::Tokenizer {
        file: file.path().to_path_buf(),
        message,
    };
    let specials = special_tokens(file)?;
    let tokens = &specials.tokens;
    let merges = file.require(
        "tokenizer.ggml.merges",
        file.get_str_array("tokenizer.ggml.merges"),
    )?;
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| {
                    tok_err(format!(
                        "tokenizer.ggml.merges[{i}] = {m:?} is not two tokens separated by a space"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let token_types = file
        .get_int_array("tokenizer.ggml.token_type")?
        .unwrap_or_default();
    if !token_types.is_empty() && token_types.len() != tokens.len() {
        return Err(tok_err(format!(
            "tokenizer.ggml.token_type has {} entries for {} tokens",
            token_types.len(),
            tokens.len()
        )));
    }
    let pre = file.require("tokenizer.ggml.pre", file.get_str("tokenizer.ggml.pre"))?;
    let spec = pre_tokenizer_for(pre).map_err(|_| GgufError::Unsupported {
        file: file.path().to_path_buf(),
        what: format!(
            "pre-tokenizer `{pre}` (tokenizer.ggml.pre); supported: gpt-2, smollm, starcoder, refact, codeshell, llama-bpe, qwen2, deepseek-r1-qwen"
        ),
    })?;

    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| ((*t).to_owned(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(spec.ignore_merges)
        .build()
        .map_err(|e| tok_err(e.to_string()))?;
    let mut tokenizer = Tokenizer::new(bpe);
    if spec.nfc {
        tokenizer.with_normalizer(Some(NFC));
    }
    tokenizer.with_pre_tokenizer(Some(spec.pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    tokenizer.with_post_processor(Some(post_processor(file, &specials).map_err(tok_err)?));

    // Control tokens are HF "special" added tokens; user-defined ones are plain added tokens.
    let added = |kind: i64, special: bool| -> Vec<AddedToken> {
        token_types
            .iter()
            .zip(tokens.iter())
            .filter(|(t, _)| **t == kind)
            .map(|(_, tok)| AddedToken::from(*tok, special).normalized(false))
            .collect()
    };
    tokenizer.add_special_tokens(&added(TOKEN_TYPE_CONTROL, true));
    tokenizer.add_tokens(&added(TOKEN_TYPE_USER_DEFINED, false));
    Ok(tokenizer)
}

/// ByteLevel offsets handling, plus BOS/EOS insertion when the checkpoint asks for it
/// (`tokenizer.ggml.add_bos_token`, as Llama 3's TemplateProcessing does).
fn post_processor(file: &GgufFile, specials: &SpecialTokens) -> Result<ProcessorSequence, String> {
    let flag = |k: &str| {
        file.get_bool(k)
            .map(|b| b.unwrap_or(false))
            .map_err(|e| e.to_string())
    };
    let add_bos = flag("tokenizer.ggml.add_bos_token")?;
    let add_eos = flag("tokenizer.ggml.add_eos_token")?;
    let mut steps = vec![ByteLevel::new(false, false, true).into()];
    if add_bos || add_eos {
        let mut special = Vec::new();
        let mut piece = |id: Option<u32>, name: &str| -> Result<String, String> {
            let text = specials.text(id).ok_or(format!(
                "tokenizer.ggml.add_{name}_token is set but there is no {name} token"
            ))?;
            special.push((text.to_owned(), id.unwrap_or_default()));
            Ok(text.to_owned())
        };
        let bos = if add_bos {
            Some(piece(specials.bos, "bos")?)
        } else {
            None
        };
        let eos = if add_eos {
            Some(piece(specials.eos, "eos")?)
        } else {
            None
        };
        let wrap = |seq: &str, type_id: u32| {
            let mut parts = Vec::new();
            parts.extend(bos.as_ref().map(|b| format!("{b}:{type_id}")));
            parts.push(format!("{seq}:{type_id}"));
            parts.extend(eos.as_ref().map(|e| format!("{e}:{type_id}")));
            parts.join(" ")
        };
        let template = TemplateProcessing::builder()
            .try_single(wrap("$A", 0))?
            .try_pair(format!("{} {}", wrap("$A", 0), wrap("$B", 1)))?
            .special_tokens(special)
            .build()
            .map_err(|e| e.to_string())?;
        steps.push(template.into());
    }
    Ok(ProcessorSequence::new(steps))
}

/// `tokenizer_config.json` fields for the checkpoint, in transformers' layout.
pub fn tokenizer_config(file: &GgufFile) -> Result<Value, GgufError> {
    check_model(file)?;
    let specials = special_tokens(file)?;
    let token_types = file
        .get_int_array("tokenizer.ggml.token_type")?
        .unwrap_or_default();
    let mut added = Map::new();
    for (id, (kind, tok)) in token_types.iter().zip(&specials.tokens).enumerate() {
        if *kind == TOKEN_TYPE_CONTROL || *kind == TOKEN_TYPE_USER_DEFINED {
            added.insert(
                id.to_string(),
                json!({
                    "content": tok, "lstrip": false, "normalized": false, "rstrip": false,
                    "single_word": false, "special": *kind == TOKEN_TYPE_CONTROL,
                }),
            );
        }
    }
    let arch = file.get_str("general.architecture")?.unwrap_or_default();
    let max_len = file.get_u64(&format!("{arch}.context_length"))?;
    Ok(json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": specials.text(specials.bos),
        "eos_token": specials.text(specials.eos),
        "pad_token": specials.text(specials.pad),
        "unk_token": specials.text(specials.unk),
        "add_bos_token": file.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false),
        "add_eos_token": file.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
        "chat_template": file.get_str("tokenizer.chat_template")?,
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": false,
        "added_tokens_decoder": added,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{Writer, smollm2_fixture, smollm2_gguf, str_array};
    use super::super::value::{MetaValue, type_id};
    use super::*;

    fn ids(v: &Value) -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    }

    #[test]
    fn smollm2_matches_hf_tokenizer() {
        let (Some(path), Some(cases)) = (
            smollm2_gguf("smollm2_matches_hf_tokenizer"),
            smollm2_fixture("smollm2_matches_hf_tokenizer", "tokenizer_cases.json"),
        ) else {
            return;
        };
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.get_str("tokenizer.ggml.pre").unwrap(), Some("smollm"));
        let tok = load_tokenizer(&file).unwrap();
        let mut n = 0;
        for case in cases["tokenization"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let enc = tok.encode(text, false).unwrap();
            assert_eq!(enc.get_ids(), ids(&case["ids"]), "ids of {text:?}");
            let decoded = tok.decode(enc.get_ids(), false).unwrap();
            assert_eq!(
                decoded,
                case["decoded"].as_str().unwrap(),
                "decode of {text:?}"
            );
            n += 1;
        }
        assert!(n >= 10);
        let sp = &cases["special_tokens"];
        let cfg = tokenizer_config(&file).unwrap();
        let id_of = |k: &str| tok.token_to_id(cfg[k].as_str().unwrap());
        assert_eq!(id_of("bos_token"), Some(sp["bos"].as_u64().unwrap() as u32));
        assert_eq!(id_of("eos_token"), Some(sp["eos"].as_u64().unwrap() as u32));
        assert_eq!(id_of("pad_token"), Some(sp["pad"].as_u64().unwrap() as u32));
        assert_eq!(
            tok.token_to_id("<|im_start|>"),
            Some(sp["im_start"].as_u64().unwrap() as u32)
        );
        assert_eq!(
            tok.token_to_id("<|im_end|>"),
            Some(sp["im_end"].as_u64().unwrap() as u32)
        );
        assert_eq!(
            cfg["chat_template"].as_str(),
            cases["chat_template_source"].as_str()
        );
        assert_eq!(cfg["add_bos_token"], false);
        assert_eq!(cfg["model_max_length"], 8192);
        // No BOS is added even when special tokens are requested (add_bos_token is false).
        assert_eq!(
            tok.encode("Hello world", true).unwrap().get_ids(),
            &[19556, 905]
        );
    }

    /// A tiny byte-level BPE vocabulary: the 256 byte symbols, one merge, two control tokens.
    fn tiny_tokenizer(model: &str, pre: &str) -> Writer {
        let bytes: Vec<String> = (0..=255u8).map(byte_symbol).collect();
        let mut tokens: Vec<&str> = vec!["<s>", "</s>"];
        tokens.extend(bytes.iter().map(String::as_str));
        tokens.push("ab");
        let mut types = vec![TOKEN_TYPE_CONTROL as i32; 2];
        types.extend(std::iter::repeat_n(1, 257));
        Writer::new()
            .str("general.architecture", "llama")
            .str("tokenizer.ggml.model", model)
            .str("tokenizer.ggml.pre", pre)
            .kv("tokenizer.ggml.tokens", str_array(&tokens))
            .kv("tokenizer.ggml.merges", str_array(&["a b"]))
            .kv(
                "tokenizer.ggml.token_type",
                MetaValue::Array {
                    elem_type: type_id::I32,
                    items: types.into_iter().map(MetaValue::I32).collect(),
                },
            )
            .u32("tokenizer.ggml.bos_token_id", 0)
            .u32("tokenizer.ggml.eos_token_id", 1)
    }

    /// GPT-2's byte-to-unicode table.
    fn byte_symbol(b: u8) -> String {
        let printable =
            (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        if printable {
            char::from(b).to_string()
        } else {
            let rank = (0..b)
                .filter(|&x| {
                    !((b'!'..=b'~').contains(&x)
                        || (0xA1..=0xAC).contains(&x)
                        || (0xAE..=0xFF).contains(&x))
                })
                .count();
            char::from_u32(256 + rank as u32).unwrap().to_string()
        }
    }

    #[test]
    fn each_supported_pre_tokenizer_builds() {
        for pre in ["gpt-2", "smollm", "llama-bpe", "qwen2"] {
            let f = tiny_tokenizer("gpt2", pre).write(pre);
            let g = GgufFile::open(f.path()).unwrap();
            let tok = load_tokenizer(&g).unwrap();
            let enc = tok.encode("<s>ab a", false).unwrap();
            // "<s>" is special; "ab" merged; " a" is two byte tokens (space = Ġ).
            assert_eq!(enc.get_ids(), &[0, 258, 2 + 32, 2 + 97], "{pre}");
            // Qwen2 normalizes to NFC: e + U+0301 becomes é (C3 A9) before byte-level BPE.
            let ids = tok.encode("e\u{301}", false).unwrap().get_ids().to_vec();
            let want: Vec<u32> = if pre == "qwen2" {
                vec![2 + 0xC3, 2 + 0xA9]
            } else {
                vec![2 + 101, 2 + 0xCC, 2 + 0x81]
            };
            assert_eq!(ids, want, "{pre}");
        }
    }

    /// How each `tokenizer.ggml.pre` splits text before BPE (Ġ is the byte-level space).
    #[test]
    fn pre_tokenizer_splits() {
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
        let split = |pre: &str, text: &str| -> Vec<String> {
            let spec = pre_tokenizer_for(pre).unwrap();
            let mut pts = PreTokenizedString::from(text);
            spec.pre_tokenizer.pre_tokenize(&mut pts).unwrap();
            pts.get_splits(OffsetReferential::Original, OffsetType::Char)
                .into_iter()
                .map(|(s, _, _)| s.to_owned())
                .collect()
        };
        let text = "I'm 12345 ok";
        assert_eq!(split("gpt-2", text), ["I", "'m", "Ġ12345", "Ġok"]);
        assert_eq!(
            split("smollm", text),
            ["I", "'m", "Ġ", "1", "2", "3", "4", "5", "Ġok"]
        );
        assert_eq!(
            split("llama-bpe", text),
            ["I", "'m", "Ġ", "123", "45", "Ġok"]
        );
        assert_eq!(
            split("qwen2", text),
            ["I", "'m", "Ġ", "1", "2", "3", "4", "5", "Ġok"]
        );
        // Llama 3 / Qwen2 keep a newline run apart and case-fold contractions.
        assert_eq!(split("llama-bpe", "A\n\nB'S"), ["A", "ĊĊ", "B", "'S"]);
        assert!(pre_tokenizer_for("falcon").is_err());
    }

    #[test]
    fn add_bos_token_inserts_bos() {
        let f = tiny_tokenizer("gpt2", "llama-bpe")
            .kv("tokenizer.ggml.add_bos_token", MetaValue::Bool(true))
            .write("add-bos");
        let g = GgufFile::open(f.path()).unwrap();
        let tok = load_tokenizer(&g).unwrap();
        assert_eq!(tok.encode("ab", true).unwrap().get_ids(), &[0, 258]);
        assert_eq!(tok.encode("ab", false).unwrap().get_ids(), &[258]);
        assert_eq!(tokenizer_config(&g).unwrap()["add_bos_token"], true);
    }

    #[test]
    fn unsupported_model_and_pre_tokenizer_are_named() {
        let f = tiny_tokenizer("llama", "default").write("spm");
        let err = load_tokenizer(&GgufFile::open(f.path()).unwrap()).unwrap_err();
        assert!(err.to_string().contains("tokenizer model `llama`"), "{err}");
        let f = tiny_tokenizer("gpt2", "mystery").write("pre");
        let err = load_tokenizer(&GgufFile::open(f.path()).unwrap()).unwrap_err();
        assert!(err.to_string().contains("pre-tokenizer `mystery`"), "{err}");
    }
}
