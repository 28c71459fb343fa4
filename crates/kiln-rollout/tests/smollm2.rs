//! The engine on SmolLM2-135M-Instruct (GGUF, as kiln-model's tests): greedy parity with
//! transformers, stop strings across token boundaries, streaming, and JSONL batch mode.

mod common;

use burn::prelude::*;
use common::fixture;
use kiln_model::Model;
use kiln_rollout::jsonl::{JsonlOptions, generate_jsonl};
use kiln_rollout::{Engine, FinishReason, SamplingParams};
use serde_json::Value;

fn cases() -> Vec<Value> {
    let path = fixture("smollm2-135m").join("logit_cases.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn smollm2_engine() {
    let model = Model::load("smollm2", &Device::flex()).expect("load SmolLM2");
    let engine = Engine::from_model(&model);
    let tok = &model.tokenizer;

    // Greedy: alone and all cases batched with n = 2, equal to transformers' ids up to the first
    // step whose top-2 margin is too small to be decided by float order (as kiln-model's test).
    let cases = cases();
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["input_ids"])).collect();
    let longest = cases
        .iter()
        .map(|c| ids(&c["greedy_ids"]).len())
        .max()
        .unwrap();
    let params = SamplingParams {
        n: 2,
        ..SamplingParams::greedy(longest)
    };
    let batched = engine.generate(&prompts, &params).unwrap();
    for (i, case) in cases.iter().enumerate() {
        let want = ids(&case["greedy_ids"]);
        let decided = case["greedy_top2_margins"]
            .as_array()
            .unwrap()
            .iter()
            .take_while(|m| m.as_f64().unwrap() > 1e-2)
            .count();
        let alone = engine
            .generate(&prompts[i..=i], &SamplingParams::greedy(want.len()))
            .unwrap();
        for r in alone[0].rollouts.iter().chain(&batched[i].rollouts) {
            assert!(r.response_ids.len() >= decided);
            assert_eq!(r.response_ids[..decided], want[..decided], "case {i}");
            if decided == want.len() && tok.eos_ids.contains(want.last().unwrap()) {
                assert_eq!(r.response_ids, want);
                assert_eq!(r.finish_reason, FinishReason::Eos);
            }
        }
        println!(
            "case {i}: {decided}/{} greedy ids decided and equal",
            want.len()
        );
    }

    // Streaming: the callback sees every token of the row, in order.
    let mut streamed = Vec::new();
    let out = engine
        .generate_with(&prompts[..1], &SamplingParams::greedy(12), &mut |e| {
            assert_eq!((e.prompt_index, e.sample_index), (0, 0));
            streamed.push(e.token)
        })
        .unwrap();
    assert_eq!(streamed, out[0].rollouts[0].response_ids);

    // A stop string made of the end of one token and the start of the next.
    let base = engine
        .generate(
            &prompts[..1],
            &SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(24)
            },
        )
        .unwrap();
    let resp = &base[0].rollouts[0].response_ids;
    let full = tok.decode(resp, true).unwrap();
    let mut found = None;
    for i in 0..resp.len() - 1 {
        let a = tok.decode(&resp[..=i], true).unwrap();
        let b = tok.decode(&resp[..=i + 1], true).unwrap();
        let (Some(last), true) = (a.chars().last(), b.starts_with(&a) && b.len() > a.len()) else {
            continue;
        };
        let first = b[a.len()..].chars().next().unwrap();
        let stop = format!("{last}{first}");
        let at = a.len() - last.len_utf8();
        if at > 0 && !last.is_whitespace() && full.find(&stop) == Some(at) {
            found = Some((i, stop, a[..at].to_string()));
            break;
        }
    }
    let (i, stop, want_text) = found.expect("a stop string straddling two tokens");
    let params = SamplingParams {
        stop_strings: vec!["never appears \u{1}".into(), stop.clone()],
        ignore_eos: true,
        ..SamplingParams::greedy(24)
    };
    let r = &engine.generate(&prompts[..1], &params).unwrap()[0].rollouts[0];
    println!("stop string {stop:?} after token {i}: text {:?}", r.text);
    assert_eq!(r.finish_reason, FinishReason::StopString(stop));
    assert_eq!(
        r.response_ids,
        resp[..=i + 1],
        "ids end with the token completing the stop string"
    );
    assert_eq!(
        r.text.as_deref(),
        Some(want_text.as_str()),
        "text is cut before the stop string"
    );

    // JSONL batch mode: three input forms, ids echoed, n lines per prompt in order; the output
    // does not depend on chunking.
    let input = r#"{"id": "a", "prompt": "What is 2 + 2?"}

{"id": 7, "messages": [{"role": "user", "content": "Name a colour."}]}
{"prompt_ids": [1, 504, 3458], "extra": "ignored"}
"#;
    let params = SamplingParams {
        n: 2,
        temperature: 0.8,
        top_p: 0.95,
        max_new_tokens: 10,
        seed: 11,
        top_logprobs: 3,
        ..Default::default()
    };
    let run = |chunk| {
        let mut out = Vec::new();
        let opts = JsonlOptions {
            chat: true,
            chunk_prompts: chunk,
        };
        let summary = generate_jsonl(&engine, &params, &opts, input.as_bytes(), &mut out).unwrap();
        assert_eq!((summary.prompts, summary.rollouts), (3, 6));
        String::from_utf8(out).unwrap()
    };
    let parse = |s: String| {
        s.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect::<Vec<Value>>()
    };
    let lines = parse(run(256));
    // Chunked, the waves differ (so floats may differ in the last bits); the tokens do not.
    for (a, b) in lines.iter().zip(parse(run(1))) {
        assert_eq!(a["response_ids"], b["response_ids"]);
        assert_eq!(a["text"], b["text"]);
        for (x, y) in a["logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .zip(b["logprobs"].as_array().unwrap())
        {
            assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-3);
        }
    }
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["id"], "a");
    assert_eq!(lines[2]["id"], 7);
    assert_eq!(lines[4]["line"], 4);
    assert_eq!(lines[4]["prompt_ids"], serde_json::json!([1, 504, 3458]));
    for (k, l) in lines.iter().enumerate() {
        assert_eq!(l["sample"], k % 2);
        let n = l["response_ids"].as_array().unwrap().len();
        assert_eq!(l["logprobs"].as_array().unwrap().len(), n);
        assert_eq!(l["top_logprobs"].as_array().unwrap().len(), n);
        assert!(l["text"].is_string());
    }
    // A bad line fails before anything is generated, naming the line.
    let bad = "{\"prompt\": \"ok\"}\n{\"prompt\": 3}\n";
    let err = generate_jsonl(
        &engine,
        &params,
        &JsonlOptions::default(),
        bad.as_bytes(),
        Vec::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}
