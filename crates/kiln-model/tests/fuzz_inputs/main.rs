//! Fuzz targets for every parser of outside input in kiln-model: GGUF files (header, metadata,
//! tensor infos, and the Hugging Face config, tensors and tokenizer rebuilt from them), Hugging
//! Face model directories (config.json, the safetensors header, tokenizer.json,
//! tokenizer_config.json, chat_template.jinja) and chat templates (any source, any message).
//!
//! The property, for every input: the parser returns `Ok`, or an `Err` whose message names the
//! file; it does so within [`SLOW`]; and it never asks for a huge allocation because a header
//! said so (the global allocator of this test binary refuses any request over [`ALLOC_CAP`],
//! which aborts the run with "memory allocation of N bytes failed").
//!
//! Inputs come from the seed corpus in `tests/fuzz-corpus/<target>/` (small valid files, written
//! by `cargo test -p kiln-model --test fuzz_inputs -- --ignored write_seed_corpus`), mutated at
//! random: bit flips, byte overwrites, insertions, deletions, truncation, extreme values written
//! over 4- and 8-byte fields (the length and count fields of a GGUF file in particular), numbers
//! in text replaced by extreme ones, JSON nodes replaced by other values, and splices. Besides,
//! structure-aware generators build GGUF files from edited key/value lists and tensor tables,
//! safetensors files from edited headers, and chat templates from Jinja fragments.
//!
//! Each target runs a fixed number of cases (`KILN_FUZZ_CASES=N` sets every target's count) and
//! prints `fuzz <target>: N executions in T`. proptest saves the seed of a failing case in
//! `main.proptest-regressions` beside this file (commit it): it is replayed first on every
//! later run.

mod gguf_gen;
mod harness;
mod jinja;
mod mutate;
mod seeds;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use burn::prelude::*;
use kiln_model::chat_template::ChatTemplate;
use kiln_model::gguf::{self, GgufFile, MetaValue};
use kiln_model::hub::ModelLocation;
use kiln_model::weights::{SafetensorsSource, TensorSource};
use kiln_model::{ChatMessage, Model, ModelConfig, TokenBatch, Tokenizer, loader};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed, TestRunner};
use serde_json::{Value, json};

use gguf_gen::*;
use harness::*;
use jinja::*;
use mutate::*;
use seeds::*;

/// This file, for proptest's failure persistence (`main.proptest-regressions` beside it).
const SOURCE: &str = file!();

// ---------------------------------------------------------------------------------------------
// What each target does with an input.

const SAMPLE_TEXT: &str = "The 12 cats\n\tate <|im_start|>é\u{301} ab c <|eot_id|>";

fn sample_messages() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "What is 12 + 30?"),
        ChatMessage::new("assistant", "<think>add</think>42"),
        ChatMessage::new("user", "{{ 7 * 7 }}"),
    ]
}

/// Uses a loaded model the way kiln does: a forward pass, the tokenizer, the chat template.
fn use_model(model: &Model) {
    let batch = TokenBatch::new(&[vec![0, 0]]).unwrap();
    let logits = model.forward(&batch);
    assert_eq!(logits.dims(), [1, 2, model.config.vocab_size]);
    use_tokenizer(&model.tokenizer);
}

fn use_tokenizer(tok: &Tokenizer) {
    for special in [false, true] {
        if let Ok(ids) = tok.encode(SAMPLE_TEXT, special) {
            let _ = tok.decode(&ids, special);
        }
    }
    let _ = tok.decode(&[0, 1, 2, u32::MAX], false);
    let messages = sample_messages();
    let _ = tok.encode_prompt(&messages[..2]);
    let _ = tok.render_prompt(&messages[..3]);
    let _ = tok.encode_chat(&messages, false);
}

/// Every entry point that reads a GGUF file.
fn gguf_case(path: &Path) {
    let name = path.file_name().unwrap().to_str().unwrap();
    let file = match GgufFile::open(path) {
        Ok(f) => f,
        Err(e) => return assert_names(&e, name),
    };
    for (key, _) in file.metadata() {
        let _ = file.get_str(key);
        let _ = file.get_u64(key);
        let _ = file.get_u32(key);
        let _ = file.get_f32(key);
        let _ = file.get_bool(key);
        let _ = file.get_str_array(key);
        let _ = file.get_int_array(key);
    }
    for t in file.tensor_infos() {
        let _ = t.n_bytes();
        match file.tensor_f32(&t.name) {
            Ok((shape, data)) => assert_eq!(shape.iter().product::<usize>(), data.len()),
            Err(e) => assert_names(&e, name),
        }
    }
    match gguf::hf_config(&file) {
        Ok(cfg) => {
            let _ = ModelConfig::from_json(&cfg, path);
        }
        Err(e) => assert_names(&e, name),
    }
    for (hf, _) in gguf::hf_tensor_names(&file) {
        if let Err(e) = gguf::hf_tensor(&file, &hf) {
            assert_names(&e, name);
        }
    }
    match gguf::load_tokenizer(&file) {
        Ok(tok) => {
            if let Ok(enc) = tok.encode(SAMPLE_TEXT, true) {
                let _ = tok.decode(enc.get_ids(), false);
            }
        }
        Err(e) => assert_names(&e, name),
    }
    if let Err(e) = gguf::tokenizer_config(&file) {
        assert_names(&e, name);
    }
    match Tokenizer::from_gguf(path) {
        Ok(tok) => use_tokenizer(&tok),
        Err(e) => assert_names(&e, name),
    }
    match Model::load_from(ModelLocation::Gguf(path.to_path_buf()), &device()) {
        Ok(model) => use_model(&model),
        Err(e) => assert_names(&e, name),
    }
}

/// Every entry point that reads a Hugging Face model directory.
fn hf_dir_case(dir: &Path) {
    let name = dir.file_name().unwrap().to_str().unwrap();
    match SafetensorsSource::open_dir(dir) {
        Ok(source) => {
            let names: Vec<String> = source.names().map(str::to_owned).collect();
            for t in names {
                match source.tensor(&t) {
                    Ok(Some(t)) => assert_eq!(t.shape.iter().product::<usize>(), t.data.len()),
                    Ok(None) => panic!("listed tensor {t} is missing"),
                    Err(e) => assert_names(&e, name),
                }
            }
        }
        Err(e) => assert_names(&e, name),
    }
    match loader::load_network(dir, &device()) {
        Ok((_, net, rope)) => {
            let batch = TokenBatch::new(&[vec![0]]).unwrap();
            let _ = net.forward(&rope, &batch).into_data();
        }
        Err(e) => assert_names(&e, name),
    }
    match Model::load_from(ModelLocation::HfDir(dir.to_path_buf()), &device()) {
        Ok(model) => use_model(&model),
        Err(e) => assert_names(&e, name),
    }
}

/// Loads, uses, saves and reloads the tokenizer of a directory.
fn tokenizer_case(dir: &Path, out: &Path) {
    let name = dir.file_name().unwrap().to_str().unwrap();
    match Tokenizer::from_hf_dir(dir, &[1]) {
        Ok(tok) => {
            use_tokenizer(&tok);
            // Export, and read the export back. The tokenizers crate may write a corrupt
            // vocabulary (ids with holes) as one it cannot read again: an error, not a panic.
            match tok.save_hf(out) {
                Ok(()) => match Tokenizer::from_hf_dir(out, &[1]) {
                    Ok(back) => assert_eq!(back.chat_template_source, tok.chat_template_source),
                    Err(e) => assert_names(&e, "out"),
                },
                Err(e) => assert_names(&e, "out"),
            }
        }
        Err(e) => assert_names(&e, name),
    }
}

// ---------------------------------------------------------------------------------------------
// GGUF targets.

#[test]
fn fuzz_gguf_bytes() {
    // Each seed with the offsets of its length, count and type fields.
    let seeds: Vec<(Vec<u8>, Fields)> = corpus_files("gguf")
        .into_iter()
        .map(|(_, bytes)| {
            let fields = gguf_fields(&bytes);
            (bytes, fields)
        })
        .collect();
    fuzz(
        "gguf-bytes",
        1000,
        (any::<Index>(), mutations(6)),
        |scratch, (seed, ms)| {
            let (bytes, fields) = &seeds[seed.index(seeds.len())];
            let path = scratch.path("case.gguf");
            std::fs::write(&path, mutated(bytes, &ms, fields)).unwrap();
            gguf_case(&path);
        },
    );
}

#[test]
fn fuzz_gguf_structure() {
    let seeds = gguf_seeds();
    fuzz(
        "gguf-structure",
        1000,
        (
            any::<Index>(),
            proptest::collection::vec(gguf_edit(), 1..6),
            proptest::collection::vec(mutation(), 0..2),
        ),
        |scratch, (seed, edits, ms)| {
            let mut spec = seeds[seed.index(seeds.len())].1.clone();
            for e in &edits {
                edit(&mut spec, e);
            }
            let bytes = spec.to_bytes();
            let fields = gguf_fields(&bytes);
            let path = scratch.path("case.gguf");
            std::fs::write(&path, mutated(&bytes, &ms, &fields)).unwrap();
            gguf_case(&path);
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Hugging Face directory targets.

#[test]
fn fuzz_safetensors_dir() {
    let seeds = corpus_dirs("safetensors");
    let tokenizers: Vec<Files> = seeds
        .iter()
        .map(|(name, _)| corpus_files(&format!("tokenizer/{}", tokenizer_for(name))))
        .collect();
    fuzz(
        "safetensors-dir",
        1000,
        (any::<Index>(), any::<Index>(), file_mutations(5)),
        |scratch, (seed, file, (binary, text))| {
            let i = seed.index(seeds.len());
            let (_, files) = &seeds[i];
            let dir = scratch.dir("model");
            write_files(&dir, &tokenizers[i]);
            let (name, bytes) = &files[file.index(files.len())];
            write_files(&dir, files);
            let bytes = if is_text(name) {
                mutated(bytes, &text, &[])
            } else {
                // The header length is the field that matters most in a safetensors file.
                mutated(bytes, &binary, &[(0, 8)])
            };
            std::fs::write(dir.join(name), bytes).unwrap();
            hf_dir_case(&dir);
        },
    );
}

#[test]
fn fuzz_safetensors_header() {
    let seeds = corpus_dirs("safetensors");
    fuzz(
        "safetensors-header",
        1000,
        (
            any::<Index>(),
            proptest::collection::vec(header_edit(), 1..5),
            proptest::option::weighted(0.1, extreme_u64()),
        ),
        |scratch, (seed, edits, length)| {
            let (_, files) = &seeds[seed.index(seeds.len())];
            let dir = scratch.dir("model");
            write_files(&dir, files);
            let (name, bytes) = files
                .iter()
                .find(|(n, _)| n == "model.safetensors")
                .unwrap();
            std::fs::write(dir.join(name), edit_safetensors(bytes, &edits, length)).unwrap();
            hf_dir_case(&dir);
        },
    );
}

#[test]
fn fuzz_tokenizer_files() {
    let seeds = corpus_dirs("tokenizer");
    fuzz(
        "tokenizer-files",
        1000,
        (
            any::<Index>(),
            any::<Index>(),
            file_mutations(4),
            any::<bool>(),
        ),
        |scratch, (seed, file, (binary, text), as_text)| {
            let (_, files) = &seeds[seed.index(seeds.len())];
            let dir = scratch.dir("tok");
            write_files(&dir, files);
            let (name, bytes) = &files[file.index(files.len())];
            let ms = if as_text { &text } else { &binary };
            std::fs::write(dir.join(name), mutated(bytes, ms, &[])).unwrap();
            tokenizer_case(&dir, &scratch.dir("out"));
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Chat templates.

fn seed_templates() -> Vec<(String, String)> {
    corpus_files("chat-template")
        .into_iter()
        .map(|(name, bytes)| (name, String::from_utf8(bytes).unwrap()))
        .collect()
}

#[test]
fn fuzz_chat_template_source() {
    let seeds: Vec<String> = seed_templates().into_iter().map(|(_, s)| s).collect();
    fuzz(
        "chat-template-source",
        1000,
        (template_source(seeds), messages(), any::<bool>()),
        |scratch, (src, messages, add_generation_prompt)| {
            scratch.note(&(&src, &messages));
            let t = match ChatTemplate::new(&src, "<s>".into(), "</s>".into()) {
                Ok(t) => t,
                Err(e) => return assert!(!e.to_string().is_empty()),
            };
            if let Err(e) = t.render(&messages, add_generation_prompt) {
                assert!(!e.to_string().is_empty());
            }
            let mut extra = serde_json::Map::new();
            extra.insert(
                "tools".into(),
                json!([{"name": "f", "parameters": {"x": 1}}]),
            );
            extra.insert("enable_thinking".into(), json!(false));
            let _ = t.render_with(&messages, add_generation_prompt, &extra);
        },
    );
}

/// Message content is data: whatever it holds, the shipped-style templates render it, and the
/// ones that print it verbatim contain it verbatim.
#[test]
fn fuzz_chat_message_content() {
    let seeds: Vec<(String, ChatTemplate)> = seed_templates()
        .into_iter()
        .map(|(name, src)| {
            let t = ChatTemplate::new(&src, "<s>".into(), "</s>".into()).unwrap();
            (name, t)
        })
        .collect();
    let role = select(&["system", "user", "assistant"][..]);
    let messages = proptest::collection::vec(
        (role, content()).prop_map(|(r, c)| ChatMessage::new(r, c)),
        1..5,
    );
    fuzz(
        "chat-message-content",
        1000,
        (any::<Index>(), messages),
        |scratch, (seed, messages)| {
            let (name, t) = &seeds[seed.index(seeds.len())];
            scratch.note(&(name, &messages));
            let out = t
                .render(&messages, true)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            if name != "qwen3-like.jinja" {
                for m in &messages {
                    assert!(
                        out.contains(&m.content),
                        "{name}: {:?} not in {out:?}",
                        m.content
                    );
                }
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile size fields, one by one.

/// A header that claims the impossible (2^60 tensors, a 2^62-byte string, a 2^62-element shape,
/// billions of layers) is an error that names the file, returned at once: never an abort, an
/// out-of-memory or a panic.
#[test]
fn hostile_size_fields_are_errors() {
    let scratch = Scratch::new("hostile");
    let device = device();
    let t0 = Instant::now();

    // GGUF: every count and length field of the llama seed set to huge values in turn.
    let (_, llama) = gguf_seeds().remove(0);
    let bytes = llama.to_bytes();
    let path = scratch.path("hostile.gguf");
    for (offset, width) in gguf_fields(&bytes) {
        for value in [1u64 << 60, 1 << 62, u64::MAX] {
            let mut b = bytes.clone();
            let v = value.to_le_bytes();
            b[offset..offset + width as usize].copy_from_slice(&v[..width as usize]);
            std::fs::write(&path, &b).unwrap();
            gguf_case(&path);
        }
    }
    // The ones the requirement names, with their messages.
    let mut b = bytes.clone();
    b[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let err = GgufFile::open(&path).unwrap_err().to_string();
    assert!(err.contains("1152921504606846976 tensor infos"), "{err}");
    let mut b = bytes.clone();
    b[24..32].copy_from_slice(&(1u64 << 62).to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let err = GgufFile::open(&path).unwrap_err().to_string();
    assert!(err.contains("string of 4611686018427387904 bytes"), "{err}");
    // block_count = u32::MAX: the file has one layer.
    let mut spec = llama.clone();
    spec.kv
        .iter_mut()
        .find(|(k, _)| k == "llama.block_count")
        .unwrap()
        .1 = MetaValue::U32(u32::MAX);
    std::fs::write(&path, spec.to_bytes()).unwrap();
    let err = Model::load_from(ModelLocation::Gguf(path.clone()), &device).unwrap_err();
    assert!(
        err.to_string()
            .contains("tensor `model.layers.1.self_attn.q_proj.weight` is missing"),
        "{err}"
    );

    // safetensors: a header length of 2^62, a shape of 2^62 x 2^62, offsets past the end.
    let (name, files) = corpus_dirs("safetensors").remove(0);
    let st = &files
        .iter()
        .find(|(n, _)| n == "model.safetensors")
        .unwrap()
        .1;
    let dir = scratch.dir(&name);
    write_files(&dir, &files);
    write_files(
        &dir,
        &corpus_files(&format!("tokenizer/{}", tokenizer_for(&name))),
    );
    let first = |field: &'static str, value: Value| {
        move |h: &mut serde_json::Map<String, Value>| {
            let name = h.keys().find(|k| *k != "__metadata__").unwrap().clone();
            h[&name][field] = value;
        }
    };
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "header length",
            rebuild_safetensors(st, Some(1 << 62), |_| {}),
        ),
        (
            "shape",
            rebuild_safetensors(st, None, first("shape", json!([1u64 << 62, 1u64 << 62]))),
        ),
        (
            "offsets",
            rebuild_safetensors(st, None, first("data_offsets", json!([0, 1u64 << 62]))),
        ),
    ];
    for (what, b) in cases {
        std::fs::write(dir.join("model.safetensors"), b).unwrap();
        let err = Model::load_from(ModelLocation::HfDir(dir.clone()), &device).unwrap_err();
        assert!(
            err.to_string().contains("model.safetensors"),
            "{what}: {err}"
        );
        hf_dir_case(&dir);
    }
    write_files(&dir, &files);

    // config.json: sizes whose products overflow, and billions of layers.
    let config: Value =
        serde_json::from_slice(&files.iter().find(|(n, _)| n == "config.json").unwrap().1).unwrap();
    for (key, value) in [
        ("num_hidden_layers", json!(1u64 << 62)),
        ("head_dim", json!(1u64 << 62)),
        ("vocab_size", json!(u64::MAX)),
        ("intermediate_size", json!(1u64 << 62)),
        ("num_attention_heads", json!(1u64 << 62)),
    ] {
        let mut c = config.clone();
        c[key] = value;
        std::fs::write(dir.join("config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
        let err = Model::load_from(ModelLocation::HfDir(dir.clone()), &device).unwrap_err();
        assert!(err.to_string().contains(&name), "{key}: {err}");
        hf_dir_case(&dir);
    }
    // The overflow made real: 2 heads x head_dim 2^63 wraps to 0 rows, and the attention
    // weights are stored with 0 rows to match. Without the check this built the model and then
    // asked for 2^62 rotary frequencies.
    let mut c = config.clone();
    c["num_key_value_heads"] = json!(2);
    c["head_dim"] = json!(1u64 << 63);
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
    let (_, mut tensors) = hf_seed("llama", 99, true);
    for (name, shape, _) in &mut tensors {
        if name.contains("_proj.weight") && name.contains("self_attn") {
            *shape = if name.contains("o_proj") {
                vec![8, 0]
            } else {
                vec![0, 8]
            };
        }
    }
    std::fs::write(dir.join("model.safetensors"), safetensors_bytes(&tensors)).unwrap();
    let err = Model::load_from(ModelLocation::HfDir(dir.clone()), &device).unwrap_err();
    assert!(
        err.to_string()
            .contains("config.json: invalid config: the sizes overflow"),
        "{err}"
    );
    hf_dir_case(&dir);
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
}
