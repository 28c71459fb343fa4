//! Models trained from scratch: the character tokenizer and config of recipes/models/tiny-arith,
//! random initialisation (determinism, Hugging Face statistics, initial loss), and the
//! save_hf -> load round trip of a random model.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use kiln_model::init::{self, CHAR_EOS_ID, CHAR_PAD_ID, CHAR_UNK_ID};
use kiln_model::{Model, ModelConfig, Padding, TokenBatch, Tokenizer, loader, random_network};

fn tiny_arith() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../recipes/models/tiny-arith")
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn tiny_config() -> ModelConfig {
    ModelConfig::from_file(&tiny_arith().join("config.json")).unwrap()
}

/// A fresh, empty directory under the target's temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-random-init-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn tiny_arith_files_match_the_generator() {
    let dir = tiny_arith();
    if std::env::var_os("KILN_WRITE_TINY_ARITH").is_some() {
        init::write_char_tokenizer(&dir).unwrap();
    }
    let generated = scratch("gen");
    init::write_char_tokenizer(&generated).unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        assert_eq!(
            read_json(&dir.join(file)),
            read_json(&generated.join(file)),
            "{file} differs from init::write_char_tokenizer: rerun with KILN_WRITE_TINY_ARITH=1"
        );
    }
    // config.json agrees with the tokenizer and is the architecture the quickstart expects.
    let cfg = tiny_config();
    assert_eq!(cfg.vocab_size, init::char_vocab().len());
    assert_eq!(cfg.eos_token_ids, vec![CHAR_EOS_ID]);
    assert_eq!(cfg.pad_token_id, Some(CHAR_PAD_ID));
    assert_eq!(cfg.bos_token_id, None);
    assert_eq!(cfg.architecture, kiln_model::Architecture::Llama);
    assert_eq!((cfg.hidden_size, cfg.intermediate_size), (128, 384));
    assert_eq!((cfg.num_attention_heads, cfg.num_key_value_heads), (4, 2));
    assert_eq!((cfg.num_hidden_layers, cfg.head_dim), (4, 32));
    assert!(cfg.tie_word_embeddings);
    assert_eq!(cfg.num_parameters(), 800_256);
    let _ = std::fs::remove_dir_all(generated);
}

#[test]
fn char_tokenizer_round_trips_arithmetic_text() {
    let tok = Tokenizer::from_hf_dir(&tiny_arith(), &[CHAR_EOS_ID]).unwrap();
    assert_eq!(tok.pad_id, Some(CHAR_PAD_ID));
    assert_eq!(tok.eos_ids, vec![CHAR_EOS_ID]);
    assert_eq!(tok.bos_id, None);
    assert_eq!(tok.inner.get_vocab_size(true), 99);

    let text = "Question: What is 47 + 38?\nAnswer: 85";
    let ids = tok.encode(text, true).unwrap();
    assert_eq!(ids.len(), text.chars().count(), "one id per character");
    let vocab = init::char_vocab();
    for (c, &id) in text.chars().zip(&ids) {
        assert_eq!(vocab[id as usize], c.to_string());
    }
    assert_eq!(ids[text.find('\n').unwrap()], 3, "newline is id 3");
    assert_eq!(tok.encode(" ", false).unwrap(), vec![4]);
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    assert_eq!(tok.decode(&ids, true).unwrap(), text);

    // Special tokens: kept by decode(skip_special = false), dropped with true.
    let mut with_specials = vec![CHAR_PAD_ID, CHAR_PAD_ID];
    with_specials.extend(tok.encode(" 85", false).unwrap());
    with_specials.push(CHAR_EOS_ID);
    assert_eq!(tok.decode(&with_specials, true).unwrap(), " 85");
    assert_eq!(
        tok.decode(&with_specials, false).unwrap(),
        "<pad><pad> 85<eos>"
    );
    // Every printable ASCII character and all of whitespace-heavy text round-trip.
    let ascii: String = (0x20u8..=0x7e).map(|b| b as char).collect::<String>() + "\n\n  a  \n";
    let ids = tok.encode(&ascii, false).unwrap();
    assert!(!ids.contains(&CHAR_UNK_ID));
    assert_eq!(tok.decode(&ids, false).unwrap(), ascii);
    // Outside the vocabulary: one <unk> per character.
    assert_eq!(
        tok.encode("a\té", false).unwrap(),
        vec![
            vocab.iter().position(|t| t == "a").unwrap() as u32,
            CHAR_UNK_ID,
            CHAR_UNK_ID
        ]
    );
    // The in-memory constructor is the same tokenizer.
    let mem = Tokenizer::char_level().unwrap();
    assert_eq!(
        mem.encode(text, true).unwrap(),
        tok.encode(text, true).unwrap()
    );
    assert_eq!(
        (mem.pad_id, mem.eos_ids.clone()),
        (tok.pad_id, tok.eos_ids.clone())
    );
}

#[test]
fn random_init_is_deterministic_and_hf_shaped() {
    let cfg = tiny_config();
    let dev = Device::flex();
    let tensors = |seed| loader::hf_tensors(&random_network(&cfg, &dev, seed).unwrap());
    let a = tensors(42);
    let b = tensors(42);
    let c = tensors(43);
    assert_eq!(a, b, "same seed, same weights");
    for ((name, x), (_, y)) in a.iter().zip(&c) {
        if name.ends_with("norm.weight") {
            assert_eq!(x, y, "{name}: norms are 1 whatever the seed");
        } else {
            assert_ne!(x, y, "{name}: a different seed must change it");
        }
    }
    for (name, t) in &a {
        if name.ends_with("norm.weight") {
            assert!(t.data.iter().all(|&v| v == 1.0), "{name} is not all ones");
        }
    }
    let (_, up) = a
        .iter()
        .find(|(n, _)| n == "model.layers.2.mlp.up_proj.weight")
        .unwrap();
    let n = up.data.len() as f64;
    let mean = up.data.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (up
        .data
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    assert!(mean.abs() < 1e-3, "mean {mean}");
    assert!(
        (std - 0.02).abs() < 0.002,
        "std {std} not within 10% of 0.02"
    );
    // Tied head: no lm_head tensor; the padding embedding row is zero (nn.Embedding padding_idx).
    assert!(a.iter().all(|(n, _)| n != "lm_head.weight"));
    let (_, emb) = &a[0];
    assert_eq!(emb.shape, vec![99, 128]);
    assert!(emb.data[..128].iter().all(|&v| v == 0.0));
}

#[test]
fn initial_loss_is_close_to_uniform() {
    let model = Model::random(&tiny_arith(), &Device::flex(), 7).unwrap();
    let (batch, seq, vocab) = (8usize, 48usize, model.config.vocab_size);
    // Random non-special tokens from a fixed LCG: the model has seen nothing yet.
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        3 + ((state >> 33) as usize % (vocab - 3)) as u32
    };
    let rows: Vec<Vec<u32>> = (0..batch)
        .map(|_| (0..seq).map(|_| next()).collect())
        .collect();
    let logits = model.forward(&TokenBatch::new(&rows).unwrap());
    let logp = to_vec(log_softmax(logits, 2));
    assert!(logp.iter().all(|x| x.is_finite()));
    let mut nll = 0f64;
    for (r, row) in rows.iter().enumerate() {
        for t in 0..seq - 1 {
            nll -= logp[(r * seq + t) * vocab + row[t + 1] as usize] as f64;
        }
    }
    let ce = nll / (batch * (seq - 1)) as f64;
    let uniform = (vocab as f64).ln();
    println!("initial cross-entropy {ce:.4} nats, ln(vocab) = {uniform:.4}");
    assert!(
        (ce - uniform).abs() < 0.5,
        "initial CE {ce} vs ln(V) {uniform}"
    );
}

#[test]
fn padded_batch_forward_matches_unpadded_rows() {
    let model = Model::random(&tiny_arith(), &Device::flex(), 1).unwrap();
    let tok = &model.tokenizer;
    let prompts = [
        "Question: What is 47 + 38?\nAnswer:",
        "Question: What is 5 + 9?\nAnswer: 14",
        "1+1=",
    ];
    let rows: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| tok.encode(p, true).unwrap())
        .collect();
    let pad = tok.pad_id.unwrap();
    let vocab = model.config.vocab_size;
    let batch = TokenBatch::padded(&rows, pad, Padding::Left).unwrap();
    let logits = model.forward(&batch);
    assert_eq!(logits.dims(), [3, batch.seq, vocab]);
    let padded = to_vec(logits);
    assert!(padded.iter().all(|x| x.is_finite()));
    for (r, row) in rows.iter().enumerate() {
        let alone = to_vec(model.forward(&TokenBatch::new(std::slice::from_ref(row)).unwrap()));
        let offset = batch.seq - row.len();
        let start = (r * batch.seq + offset) * vocab;
        let got = &padded[start..start + row.len() * vocab];
        let err = got
            .iter()
            .zip(&alone)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-4, "row {r}: padded logits differ by {err}");
    }
}

#[test]
fn save_hf_then_load_gives_identical_logits() {
    let dev = Device::flex();
    let model = Model::random(&tiny_arith(), &dev, 2024).unwrap();
    assert_eq!(
        model.location,
        kiln_model::ModelLocation::HfDir(tiny_arith())
    );
    let out = scratch("saved");
    model.save_hf(&out).unwrap();
    assert!(out.join("model.safetensors").is_file());
    let loaded = Model::load(out.to_str().unwrap(), &dev).unwrap();
    assert_eq!(loaded.config, model.config);
    assert_eq!(
        loader::hf_tensors(&loaded.net),
        loader::hf_tensors(&model.net)
    );
    let text = "Question: What is 12 + 30?\nAnswer: 42";
    let ids = loaded.tokenizer.encode(text, true).unwrap();
    assert_eq!(ids, model.tokenizer.encode(text, true).unwrap());
    assert_eq!(loaded.tokenizer.decode(&ids, true).unwrap(), text);
    let batch = TokenBatch::new(&[ids]).unwrap();
    let (a, b) = (
        to_vec(model.forward(&batch)),
        to_vec(loaded.forward(&batch)),
    );
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "reloaded logits are not bit-identical"
    );
    // The same seed reinitialises the same model.
    let again = Model::random(&tiny_arith(), &dev, 2024).unwrap();
    assert_eq!(to_vec(again.forward(&batch)), a);
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn random_model_errors_name_the_file() {
    let dev = Device::flex();
    // No config.json.
    let empty = scratch("empty");
    let e = Model::random(&empty, &dev, 0).unwrap_err().to_string();
    assert!(e.contains("config.json"), "{e}");
    // A config whose vocabulary is smaller than the tokenizer's.
    let small = scratch("small");
    let mut cfg = read_json(&tiny_arith().join("config.json"));
    cfg["vocab_size"] = 50.into();
    std::fs::write(small.join("config.json"), cfg.to_string()).unwrap();
    init::write_char_tokenizer(&small).unwrap();
    let e = Model::random(&small, &dev, 0).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("vocab_size"), "{e}");
    // A bad initializer_range.
    cfg["vocab_size"] = 99.into();
    cfg["initializer_range"] = (-1.0).into();
    std::fs::write(small.join("config.json"), cfg.to_string()).unwrap();
    let e = Model::random(&small, &dev, 0).unwrap_err().to_string();
    assert!(e.contains("initializer_range"), "{e}");
    // No tokenizer.
    std::fs::remove_file(small.join("tokenizer.json")).unwrap();
    cfg["initializer_range"] = 0.02.into();
    std::fs::write(small.join("config.json"), cfg.to_string()).unwrap();
    let e = Model::random(&small, &dev, 0).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    let _ = std::fs::remove_dir_all(empty);
    let _ = std::fs::remove_dir_all(small);
}
