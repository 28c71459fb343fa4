//! The trainer end to end on the tiny character model: a run resumed from a checkpoint ends
//! with the same metrics and bit-identical weights as a run that never stopped; and one real
//! GRPO step on SmolLM2-135M.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_model::loader::hf_tensors;
use kiln_train::metrics::read_metrics_jsonl;
use kiln_train::recipe::load_recipe;
use kiln_train::{RunOptions, Trainer};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The quickstart, shortened: a few SFT steps, 4 RL steps, checkpoints every 2.
fn short_quickstart(extra: &[&str]) -> kiln_train::Recipe {
    let model = root().join("recipes/models/tiny-arith");
    let mut sets: Vec<String> = vec![
        format!("model.path={}", model.display()),
        "sft.steps=4".into(),
        "sft.batch_size=16".into(),
        "train.steps=4".into(),
        "train.prompts_per_step=4".into(),
        "train.mini_batch_size=16".into(),
        "train.micro_batch_size=8".into(),
        "rollout.n=4".into(),
        "eval.limit=8".into(),
        "eval.every=2".into(),
        "checkpoint.every=2".into(),
        "checkpoint.keep_last=3".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    load_recipe(&root().join("recipes/quickstart.toml"), &sets).unwrap()
}

fn without_time(
    records: Vec<(u64, BTreeMap<String, f64>)>,
) -> Vec<(u64, BTreeMap<String, String>)> {
    records
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

#[test]
fn resumed_run_matches_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    let cut = tmp.path().join("cut");
    let opts = |dir: &Path, resume: bool, stop: Option<usize>| RunOptions {
        run_dir: Some(dir.to_path_buf()),
        resume,
        progress: false,
        stop_after: stop,
    };
    let mut uninterrupted = Trainer::new(short_quickstart(&[]), opts(&full, false, None)).unwrap();
    uninterrupted.run().unwrap();
    // Interrupted after step 2 (its checkpoint is written), then resumed by a new process.
    Trainer::new(short_quickstart(&[]), opts(&cut, false, Some(2)))
        .unwrap()
        .run()
        .unwrap();
    assert!(
        Trainer::new(short_quickstart(&[]), opts(&cut, false, None)).is_err(),
        "a second fresh start into a run directory with checkpoints is refused"
    );
    let mut resumed = Trainer::new(short_quickstart(&[]), opts(&cut, true, None)).unwrap();
    assert_eq!(resumed.step, 2);
    resumed.run().unwrap();
    let a = without_time(read_metrics_jsonl(&full.join("metrics.jsonl")).unwrap());
    let b = without_time(read_metrics_jsonl(&cut.join("metrics.jsonl")).unwrap());
    assert_eq!(a.len(), 5, "steps 0..=4");
    assert_eq!(a, b, "metrics of the resumed run");
    // Parameter ids differ between processes; the values must not.
    assert!(
        hf_tensors(&uninterrupted.model.net) == hf_tensors(&resumed.model.net),
        "final weights differ"
    );
    assert!(cut.join("checkpoints/step-000004/policy.bpk").is_file());
    // Every step logged the rollout/training log-prob gap; the same code computes both.
    for (_, m) in &a[1..] {
        let gap: f64 = m["rollout/logprob_abs_diff"].parse().unwrap();
        assert!(gap < 1e-4, "log-prob gap {gap}");
    }
    assert!(full.join("plots/reward.png").is_file());
    assert!(full.join("recipe.toml").is_file());
}

#[test]
fn ppo_with_a_critic_runs_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ppo");
    let recipe = || {
        short_quickstart(&[
            "algorithm.advantage=\"gae\"",
            "critic={ lr = 1e-3 }",
            "algorithm.kl_reward_coef=0.01",
            "train.steps=2",
            "checkpoint.every=1",
        ])
    };
    let opts = |resume: bool, stop: Option<usize>| RunOptions {
        run_dir: Some(dir.clone()),
        resume,
        progress: false,
        stop_after: stop,
    };
    Trainer::new(recipe(), opts(false, Some(1)))
        .unwrap()
        .run()
        .unwrap();
    let mut t = Trainer::new(recipe(), opts(true, None)).unwrap();
    assert_eq!(t.step, 1);
    let m = t.run().unwrap();
    for k in [
        "critic/loss",
        "critic/grad_norm",
        "actor/kl_in_reward",
        "actor/grad_norm",
    ] {
        assert!(m[k].is_finite(), "{k} = {}", m[k]);
    }
}

/// One real GRPO step on SmolLM2-135M-Instruct (small batch, short responses).
#[test]
fn smollm2_grpo_step() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = load_recipe(
        &root().join("recipes/smollm2-arith-grpo.toml"),
        &[
            "train.steps=1".into(),
            "train.prompts_per_step=2".into(),
            "rollout.n=2".into(),
            "rollout.max_new_tokens=12".into(),
            "train.micro_batch_size=2".into(),
            "eval.limit=2".into(),
            "eval.max_new_tokens=12".into(),
        ],
    )
    .unwrap();
    let mut t = Trainer::new(
        recipe,
        RunOptions {
            run_dir: Some(tmp.path().join("run")),
            ..Default::default()
        },
    )
    .unwrap();
    let m = t.run().unwrap();
    assert_eq!(t.step, 1);
    for k in [
        "reward/mean",
        "actor/grad_norm",
        "actor/pg_loss",
        "rollout/logprob_abs_diff",
        "eval/arithmetic/accuracy",
    ] {
        assert!(m[k].is_finite(), "{k} = {}", m[k]);
    }
    assert!(
        m["rollout/logprob_abs_diff"] < 1e-3,
        "gap {}",
        m["rollout/logprob_abs_diff"]
    );
    assert_eq!(m["actor/updates"], 1.0);
}

/// The quickstart, shortened (its full SFT stage, 16 of its 40 RL steps, 100 eval problems),
/// fixed seed: GRPO raises both the training reward and the held-out greedy accuracy of the
/// SFT'd model (here 0.53 -> about 0.8). Margins are loose because float rounding differs
/// between CPUs (AVX2 vs AVX-512 kernels). About 4 minutes on 2 cores.
#[test]
fn shortened_quickstart_learns() {
    let tmp = tempfile::tempdir().unwrap();
    let model = root().join("recipes/models/tiny-arith");
    let recipe = load_recipe(
        &root().join("recipes/quickstart.toml"),
        &[
            format!("model.path={}", model.display()),
            "train.steps=16".into(),
            "eval.limit=100".into(),
            "eval.every=0".into(),
            "checkpoint.every=0".into(),
        ],
    )
    .unwrap();
    let dir = tmp.path().join("run");
    let mut t = Trainer::new(
        recipe,
        RunOptions {
            run_dir: Some(dir.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    t.run().unwrap();
    let records = read_metrics_jsonl(&dir.join("metrics.jsonl")).unwrap();
    let acc = |i: usize| records[i].1["eval/arithmetic/accuracy"];
    let (start, end) = (acc(0), acc(records.len() - 1));
    let reward = |r: &[(u64, BTreeMap<String, f64>)]| {
        r.iter().map(|(_, m)| m["reward/mean"]).sum::<f64>() / r.len() as f64
    };
    let (early, late) = (
        reward(&records[1..5]),
        reward(&records[records.len() - 4..]),
    );
    println!("accuracy {start} -> {end}; reward {early:.3} -> {late:.3}");
    assert!(start > 0.2, "the SFT stage taught the task: {start}");
    assert!(late > early + 0.05, "reward rises: {early:.3} -> {late:.3}");
    assert!(
        end > start + 0.08,
        "held-out accuracy rises: {start} -> {end}"
    );
}
