//! The benchmark harness (`kiln eval`'s engine) on the tiny character model: a run stopped
//! between chunks and continued from its results file ends with exactly the records of an
//! uninterrupted run; a torn last line is dropped; other settings are refused; greedy pass@1 is
//! what the trainer's evaluation computes; breakdowns group by level and subject.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use kiln_data::{ArithmeticConfig, ArithmeticGenerator, Example, MathTemplate};
use kiln_model::Model;
use kiln_reward::Gsm8kVerifier;
use kiln_rollout::{Engine, SamplingParams};
use kiln_train::eval::evaluate;
use kiln_train::harness::{HarnessParams, ProblemRecord, run_harness};
use serde_json::json;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn examples(n: u64) -> Vec<Example> {
    let config = ArithmeticConfig {
        template: MathTemplate::Terse,
        ..ArithmeticConfig::default()
    };
    let mut out = ArithmeticGenerator::new(config, 5).unwrap().generate(n);
    for (i, e) in out.iter_mut().enumerate() {
        e.meta.insert("level".into(), json!(1 + i % 2));
        e.meta.insert(
            "subject".into(),
            json!(if i < 3 { "Algebra" } else { "Geometry" }),
        );
    }
    out
}

fn params(n: usize) -> HarnessParams {
    let greedy = SamplingParams {
        n: 1,
        temperature: 0.0,
        max_new_tokens: 6,
        seed: 9,
        ..SamplingParams::default()
    };
    HarnessParams {
        sampled: SamplingParams {
            n,
            temperature: 1.0,
            ..greedy.clone()
        },
        greedy,
        include_stop: false,
        chunk: 4,
    }
}

fn records(path: &Path) -> Vec<ProblemRecord> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_stopped_eval_continues_to_the_same_results() {
    let model = Model::random(
        &root().join("recipes/models/tiny-arith"),
        &Device::flex(),
        4,
    )
    .unwrap();
    let engine = Engine::from_model(&model);
    let verifier = Gsm8kVerifier::default();
    let all = examples(12);
    let settings = json!({ "test": 1 });
    let tmp = tempfile::tempdir().unwrap();
    let (full, cut) = (tmp.path().join("full.jsonl"), tmp.path().join("cut.jsonl"));
    let p = params(4);
    let whole = run_harness(
        &engine,
        "arith",
        &all,
        &verifier,
        &p,
        Some((&full, &settings)),
        false,
    )
    .unwrap();
    assert_eq!(whole.answered_now, 12);
    // Stopped after two chunks (8 problems), with a torn line from the kill.
    run_harness(
        &engine,
        "arith",
        &all[..8],
        &verifier,
        &p,
        Some((&cut, &settings)),
        false,
    )
    .unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&cut)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"id\": \"arith"))
        .unwrap();
    let resumed = run_harness(
        &engine,
        "arith",
        &all,
        &verifier,
        &p,
        Some((&cut, &settings)),
        false,
    )
    .unwrap();
    assert_eq!(resumed.answered_now, 4);
    assert_eq!(records(&full), records(&cut));
    assert_eq!(whole.overall, resumed.overall);
    assert_eq!(records(&full).len(), 12);
    assert!(records(&full).iter().all(|r| r.samples.len() == 4));
    // Greedy pass@1 is the trainer's evaluation of the same problems.
    let trainer = evaluate(&engine, "arith", &all, &verifier, &p.greedy, false).unwrap();
    assert_eq!(whole.overall.pass_at_1, trainer.accuracy());
    assert_eq!(
        records(&full)
            .iter()
            .map(|r| r.greedy.text.clone())
            .collect::<Vec<_>>(),
        trainer.responses
    );
    // Breakdowns: levels 1 / 2 alternate, subjects split 3 / 9.
    assert_eq!(
        whole.by_level.keys().collect::<Vec<_>>(),
        ["Level 1", "Level 2"]
    );
    assert_eq!(whole.by_level["Level 1"].problems, 6);
    assert_eq!(whole.by_subject["Algebra"].problems, 3);
    assert_eq!(whole.by_subject["Geometry"].problems, 9);
    let md = whole.markdown("tiny");
    assert!(
        md.contains("| level | problems | pass@1 (greedy) | pass@1 (sampled) | pass@4 | maj@4 |"),
        "{md}"
    );
    // Other settings are refused, naming the file.
    let e = run_harness(
        &engine,
        "arith",
        &all,
        &verifier,
        &p,
        Some((&full, &json!({ "test": 2 }))),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("full.jsonl") && e.contains("--fresh"), "{e}");
    // Without samples only greedy numbers are reported.
    let greedy_only =
        run_harness(&engine, "arith", &all, &verifier, &params(0), None, false).unwrap();
    assert_eq!(greedy_only.overall.pass_at_k, None);
    assert_eq!(greedy_only.overall.pass_at_1, whole.overall.pass_at_1);
}
