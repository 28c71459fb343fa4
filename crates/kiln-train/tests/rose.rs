//! ROSE in the trainer: tree rollouts, segment advantages and dynamic sampling on the tiny model
//! (the shipped tiny-countdown-rose recipe, shortened), and the recipe checks that go with them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_train::metrics::read_metrics_jsonl;
use kiln_train::recipe::load_recipe;
use kiln_train::{Recipe, RunOptions, Trainer};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn recipe(name: &str, extra: &[&str]) -> Result<Recipe, String> {
    let model = root().join("recipes/models/tiny-arith");
    let mut sets = vec![
        format!("model.path={}", model.display()),
        "sft.steps=40".into(),
        "sft.batch_size=32".into(),
        "train.steps=3".into(),
        "train.prompts_per_step=4".into(),
        "train.micro_batch_size=8".into(),
        "eval.limit=4".into(),
        "eval.every=3".into(),
        "eval.pass_k=2".into(),
        "checkpoint.every=1".into(),
        "checkpoint.keep_last=2".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    load_recipe(&root().join("recipes").join(name), &sets).map_err(|e| e.to_string())
}

fn opts(dir: &Path, resume: bool, stop: Option<usize>) -> RunOptions {
    RunOptions {
        run_dir: Some(dir.to_path_buf()),
        resume,
        progress: false,
        stop_after: stop,
        ..Default::default()
    }
}

fn metrics(dir: &Path) -> Vec<(u64, BTreeMap<String, String>)> {
    read_metrics_jsonl(&dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .map(|(s, m)| {
            let kept = m
                .into_iter()
                .filter(|(k, _)| !k.starts_with("time/") && k != "rollout/tokens_per_s")
                .map(|(k, v)| (k, format!("{v:?}")))
                .collect();
            (s, kept)
        })
        .collect()
}

/// Tree rollouts reuse prefixes (fewer generated than response tokens), dynamic sampling keeps
/// only informative groups, pass@k is logged, and a run stopped after step 2 and resumed ends
/// with the same metrics as one that never stopped.
#[test]
fn rose_run_reuses_prefixes_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (full, cut) = (tmp.path().join("full"), tmp.path().join("cut"));
    let r = || recipe("tiny-countdown-rose.toml", &[]).unwrap();
    Trainer::new(r(), opts(&full, false, None))
        .unwrap()
        .run()
        .unwrap();
    Trainer::new(r(), opts(&cut, false, Some(2)))
        .unwrap()
        .run()
        .unwrap();
    Trainer::new(r(), opts(&cut, true, None))
        .unwrap()
        .run()
        .unwrap();
    let m = metrics(&full);
    assert_eq!(m, metrics(&cut));
    let num = |m: &BTreeMap<String, String>, k: &str| -> f64 {
        m.get(k)
            .unwrap_or_else(|| panic!("no {k} in {m:?}"))
            .parse()
            .unwrap()
    };
    let steps: Vec<&BTreeMap<String, String>> = m
        .iter()
        .filter(|(_, m)| m.contains_key("rollout/generated_tokens"))
        .map(|(_, m)| m)
        .collect();
    assert_eq!(steps.len(), 3);
    let (mut generated, mut responses) = (0.0, 0.0);
    for s in &steps {
        generated += num(s, "rollout/generated_tokens");
        responses += num(s, "rollout/new_tokens");
        let kept = num(s, "rollout/kept_groups");
        assert!((0.0..=4.0).contains(&kept));
        assert!((1.0..=3.0).contains(&num(s, "rollout/sampling_rounds")));
    }
    assert!(
        generated < responses,
        "branches copy their parents' prefixes: {generated} generated of {responses} tokens"
    );
    let last = m
        .iter()
        .rev()
        .find(|(_, m)| m.contains_key("eval/countdown/pass@2"));
    let (_, last) = last.expect("pass@2 logged");
    assert!(num(last, "eval/countdown/pass@2") >= num(last, "eval/countdown/accuracy") - 1.0);
}

#[test]
fn rose_needs_tree_rollouts_and_trees_need_a_group_advantage() {
    let err = recipe(
        "tiny-countdown-grpo.toml",
        &["algorithm.advantage=\"rose\""],
    )
    .unwrap_err();
    assert!(
        err.contains("algorithm.advantage = \"rose\": segment advantages need tree rollouts"),
        "{err}"
    );
    let err = recipe(
        "tiny-countdown-rose.toml",
        &[
            "rollout.tree.epsilon=1.5",
            "algorithm.rose.length_lambda=-1.0",
        ],
    )
    .unwrap_err();
    assert!(err.contains("rollout.tree.epsilon = 1.5"), "{err}");
    assert!(err.contains("algorithm.rose.length_lambda = -1.0"), "{err}");
    let err = recipe(
        "tiny-countdown-rose.toml",
        &["rollout.tree.metric=\"perplexity\""],
    )
    .unwrap_err();
    assert!(err.contains("perplexity"), "{err}");
}
