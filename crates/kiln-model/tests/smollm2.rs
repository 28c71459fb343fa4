//! SmolLM2-135M-Instruct from its GGUF file against transformers' numbers
//! (../shared/fixtures/smollm2-135m): tokenizer, chat template, logits, log-probs and greedy
//! decoding; then the same after exporting to a Hugging Face directory and reloading it.

mod common;

use burn::tensor::activation::log_softmax;
use common::*;
use kiln_model::{ChatMessage, Model, TokenBatch};
use serde_json::Value;

fn fixture_json(file: &str) -> Value {
    let path = fixture("smollm2-135m").join(file);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn check_tokenizer(model: &Model, label: &str) {
    let cases = fixture_json("tokenizer_cases.json");
    for case in cases["tokenization"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = model.tokenizer.encode(text, false).unwrap();
        assert_eq!(got, ids(&case["ids"]), "{label}: tokenization of {text:?}");
        let decoded = model.tokenizer.decode(&got, false).unwrap();
        assert_eq!(
            decoded,
            case["decoded"].as_str().unwrap(),
            "{label}: decode of {text:?}"
        );
    }
    for case in cases["chat_template"].as_array().unwrap() {
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let rendered = model
            .tokenizer
            .apply_chat_template(&messages, true)
            .unwrap();
        assert_eq!(
            rendered,
            case["rendered"].as_str().unwrap(),
            "{label}: chat template"
        );
        let got = model.tokenizer.encode_chat(&messages, true).unwrap();
        assert_eq!(got, ids(&case["ids"]), "{label}: chat ids");
    }
    let special = &cases["special_tokens"];
    assert_eq!(
        model.tokenizer.bos_id,
        Some(special["bos"].as_u64().unwrap() as u32)
    );
    assert_eq!(
        model.tokenizer.eos_ids[0],
        special["eos"].as_u64().unwrap() as u32
    );
    assert_eq!(
        model.tokenizer.pad_id,
        Some(special["pad"].as_u64().unwrap() as u32)
    );
}

/// Top-50 logits at the last position and teacher-forced log-probs within 2e-3; greedy argmax
/// identical at every step whose top-2 margin (in transformers) is above 1e-2.
fn check_logits(model: &Model, label: &str) {
    let cases = fixture_json("logit_cases.json");
    for case in cases["cases"].as_array().unwrap() {
        let input = ids(&case["input_ids"]);
        let greedy = ids(&case["greedy_ids"]);
        let margins = floats(&case["greedy_top2_margins"]);
        // One pass over prompt + reference greedy continuation gives every number we compare.
        let full: Vec<u32> = input.iter().chain(&greedy).copied().collect();
        let logits = model.forward(&TokenBatch::new(std::slice::from_ref(&full)).unwrap());
        let [_, s, v] = logits.dims();
        let logp = to_vec(log_softmax(logits.clone().reshape([s, v]), 1));
        let logits = to_vec(logits);
        let n = input.len();

        let last = &logits[(n - 1) * v..n * v];
        let mut err = 0f64;
        for (id, want) in ids(&case["last_top50_ids"])
            .iter()
            .zip(floats(&case["last_top50_logits"]))
        {
            err = err.max((last[*id as usize] as f64 - want).abs());
        }
        assert!(err < 2e-3, "{label}: top-50 logits differ by {err}");

        let mut lp_err = 0f64;
        for (t, want) in floats(&case["teacher_forced_logprobs"]).iter().enumerate() {
            let got = logp[t * v + input[t + 1] as usize] as f64;
            lp_err = lp_err.max((got - want).abs());
        }
        assert!(
            lp_err < 2e-3,
            "{label}: teacher-forced log-probs differ by {lp_err}"
        );

        for (step, (&want, &margin)) in greedy.iter().zip(&margins).enumerate() {
            let row = &logits[(n - 1 + step) * v..(n + step) * v];
            let (got, _) = kiln_model::generate::argmax(row);
            if margin > 1e-2 {
                assert_eq!(got, want, "{label}: greedy step {step} (margin {margin})");
            }
        }
        println!(
            "{label}: {:?}: top-50 err {err:.2e}, log-prob err {lp_err:.2e}",
            case["prompt"]
        );
    }
}

/// Free-running greedy decoding through the KV cache reproduces transformers' ids up to the
/// first step whose margin is too small to be decided by float order.
fn check_greedy_generation(model: &Model, label: &str) {
    let cases = fixture_json("logit_cases.json");
    for case in cases["cases"].as_array().unwrap() {
        let input = ids(&case["input_ids"]);
        let want = ids(&case["greedy_ids"]);
        let margins = floats(&case["greedy_top2_margins"]);
        let decided = margins.iter().take_while(|&&m| m > 1e-2).count();
        let out = kiln_model::generate::greedy(
            &model.net,
            &model.rope,
            &input,
            want.len(),
            &model.tokenizer.eos_ids,
            model.config.max_position_embeddings,
            |_| {},
        )
        .unwrap();
        assert_eq!(
            out.generated_ids[..decided],
            want[..decided],
            "{label}: greedy ids"
        );
        if decided == want.len() {
            let text = model.tokenizer.decode(&out.generated_ids, false).unwrap();
            assert_eq!(text, case["greedy_text"].as_str().unwrap(), "{label}");
        }
    }
}

#[test]
fn smollm2_gguf_matches_transformers_and_survives_export() {
    let device = device();
    let model = Model::load("smollm2", &device).expect("load SmolLM2 GGUF");
    assert_eq!(model.config.num_hidden_layers, 30);
    assert_eq!(model.config.hidden_size, 576);
    assert!(model.config.tie_word_embeddings);
    check_tokenizer(&model, "gguf");
    check_logits(&model, "gguf");
    check_greedy_generation(&model, "gguf");

    // GGUF -> Hugging Face directory -> reload: the same tensors, hence the same parity.
    let dir = std::env::temp_dir().join(format!("kiln-export-test-{}", std::process::id()));
    model.save_hf(&dir).unwrap();
    let reloaded = Model::load(dir.to_str().unwrap(), &device).unwrap();
    let a = kiln_model::loader::hf_tensors(&model.net);
    let b = kiln_model::loader::hf_tensors(&reloaded.net);
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta == tb, "tensor {na} changed in the round trip");
    }
    check_tokenizer(&reloaded, "exported");
    check_logits(&reloaded, "exported");
    std::fs::remove_dir_all(&dir).ok();
}
