//! The trainer end to end on the tiny character model: a run resumed from a checkpoint ends
//! with the same metrics and bit-identical weights as a run that never stopped; and one real
//! GRPO step on SmolLM2-135M.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_model::loader::hf_tensors;
use kiln_train::fault::FaultPlan;
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
        ..Default::default()
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
        ..Default::default()
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

/// The quickstart, shortened (its full SFT stage, 16 of its 40 RL steps, its 200 eval
/// problems), fixed seed: GRPO raises both the training reward and the held-out greedy
/// accuracy of the SFT'd model (here 0.54 -> 0.70). Margins are loose because float rounding
/// differs between CPUs (AVX2 vs AVX-512 kernels) and changes the sampled trajectory; with only
/// 100 eval problems the rise (0.56 -> 0.64 after 2026-12-01's fused kernels) sat on the 0.08
/// margin, within the eval's own noise. About a minute on 2 cores.
#[test]
fn shortened_quickstart_learns() {
    let tmp = tempfile::tempdir().unwrap();
    let model = root().join("recipes/models/tiny-arith");
    let recipe = load_recipe(
        &root().join("recipes/quickstart.toml"),
        &[
            format!("model.path={}", model.display()),
            "train.steps=16".into(),
            "eval.limit=200".into(),
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

/// A NaN loss (injected through the advantages of step 2) skips that optimizer step and is
/// logged; the weights are those of step 1 and training goes on at step 3.
#[test]
fn a_nan_loss_skips_the_step_and_training_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = |name: &str, stop: usize, faults: &str| RunOptions {
        run_dir: Some(tmp.path().join(name)),
        stop_after: Some(stop),
        faults: FaultPlan::parse(faults).unwrap(),
        ..Default::default()
    };
    let recipe = || short_quickstart(&["eval.every=0", "checkpoint.every=0"]);
    let mut clean = Trainer::new(recipe(), opts("clean", 1, "")).unwrap();
    clean.run().unwrap();
    let mut poisoned = Trainer::new(recipe(), opts("nan", 3, "nan@advantages:2")).unwrap();
    poisoned.run().unwrap();
    let records = read_metrics_jsonl(&tmp.path().join("nan/metrics.jsonl")).unwrap();
    let step = |s: u64| &records.iter().find(|(k, _)| *k == s).unwrap().1;
    assert_eq!(step(2)["actor/skipped_steps"], 1.0, "step 2 skipped");
    assert!(
        step(2)["actor/loss"].is_nan(),
        "the NaN loss is logged (null)"
    );
    assert_eq!(step(3)["actor/skipped_steps"], 0.0, "step 3 trains");
    assert!(step(3)["actor/loss"].is_finite());
    // Replay the poisoned run to step 2 only: its weights are step 1's, untouched by the NaN.
    let mut to_two = Trainer::new(recipe(), opts("nan2", 2, "nan@advantages:2")).unwrap();
    to_two.run().unwrap();
    assert!(
        hf_tensors(&to_two.model.net) == hf_tensors(&clean.model.net),
        "a skipped step leaves the weights unchanged"
    );
}

/// NaN losses step after step: after `train.max_consecutive_skips` the run stops with an error
/// that names the step and the setting.
#[test]
fn consecutive_nan_steps_stop_the_run_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = short_quickstart(&[
        "eval.every=0",
        "checkpoint.every=0",
        "train.max_consecutive_skips=2",
    ]);
    let mut t = Trainer::new(
        recipe,
        RunOptions {
            run_dir: Some(tmp.path().join("run")),
            faults: FaultPlan::parse("nan@advantages:2-4").unwrap(),
            ..Default::default()
        },
    )
    .unwrap();
    let e = t.run().unwrap_err().to_string();
    assert!(
        e.starts_with("step 4: 3 consecutive optimizer steps had a non-finite gradient")
            && e.contains("train.max_consecutive_skips = 2"),
        "{e}"
    );
    // Steps 2 and 3 were skipped and logged before the run stopped.
    let records = read_metrics_jsonl(&tmp.path().join("run/metrics.jsonl")).unwrap();
    assert_eq!(records.last().unwrap().0, 3);
}

/// A run directory that cannot be created or written is an error before the model is loaded,
/// naming the directory.
#[test]
fn an_unwritable_run_directory_fails_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let dir = file.join("run");
    let Err(e) = Trainer::new(
        short_quickstart(&[]),
        RunOptions {
            run_dir: Some(dir.clone()),
            ..Default::default()
        },
    ) else {
        panic!("a run directory under a file was accepted");
    };
    let e = e.to_string();
    assert!(
        e.starts_with(&format!("{}: ", dir.display())) && e.contains("Not a directory"),
        "{e}"
    );
}

/// MGS's premise: gradients accumulated per domain over domain-pure micro-batches, with loss
/// weights from the whole mini-batch's counts (what the trainer does under
/// `algorithm.gradient_surgery`), add up to the gradient of the mixed mini-batch.
#[test]
fn per_domain_gradients_sum_to_the_mixed_gradient() {
    use burn::optim::GradientsParams;
    use burn::prelude::*;
    use kiln_optim::ChunkOptions;
    use kiln_optim::hook::{NamedParams, accumulate, grad_flat};
    use kiln_optim::loss::{AggMode, GlobalCounts, TokenBatch, agg_weights};
    use kiln_train::policy::{SeqBatch, actor_grads, score};
    use kiln_train::trainer::loss_config;

    let recipe = short_quickstart(&[]);
    let device = kiln_model::parse_device("flex").unwrap().autodiff();
    let model = kiln_train::load_policy(&recipe, &device).unwrap();
    let params = NamedParams::from_module(&model.net);
    let cfg = loss_config(&recipe);
    let opts = ChunkOptions::default();
    // Four (prompt, response) rows of different lengths: rows 0 and 2 are domain A, 1 and 3 B.
    let prompts: [&[u32]; 4] = [&[5, 6, 7], &[8, 9], &[10, 11, 12, 13], &[14]];
    let responses: [&[u32]; 4] = [&[20, 21, 22], &[23, 24, 25, 26, 27], &[28], &[29, 30]];
    let advantage = [1.0f32, -0.5, 0.3, -1.2];
    let t = 5;
    let mut mask = vec![0.0f32; 4 * t];
    for (i, r) in responses.iter().enumerate() {
        mask[i * t..i * t + r.len()].fill(1.0);
    }
    let counts = GlobalCounts::from_mask(&mask, t, t);
    let pg_w = agg_weights(&mask, t, AggMode::SeqMeanTokenMean, &counts).unwrap();
    let tok_w = agg_weights(&mask, t, AggMode::TokenMean, &counts).unwrap();
    let valid = model.net.clone().valid();
    let grads_of = |rows: &[usize]| -> GradientsParams {
        let pairs: Vec<(&[u32], &[u32])> =
            rows.iter().map(|&i| (prompts[i], responses[i])).collect();
        let batch = SeqBatch::new(&pairs, 0).unwrap();
        // Old log-probs = current ones, so every ratio is 1 and no token is clipped.
        let (old, _) = score(&valid, &model.rope, &batch, &opts, false).unwrap();
        let real = |w: &[f32]| -> Vec<f32> {
            rows.iter()
                .flat_map(|&i| w[i * t..i * t + responses[i].len()].to_vec())
                .collect()
        };
        let adv: Vec<f32> = rows
            .iter()
            .flat_map(|&i| vec![advantage[i]; responses[i].len()])
            .collect();
        let f = |v: &[f32]| Tensor::<1>::from_floats(v, &device);
        let lb = TokenBatch {
            targets: Tensor::<1, Int>::from_ints(batch.targets.as_slice(), &device),
            old_logp: f(&old),
            advantages: f(&adv),
            ref_logp: None,
            pg_weight: f(&real(&pg_w)),
            token_weight: f(&real(&tok_w)),
            pg_token_mask: None,
            kl_cov_mask: None,
        };
        actor_grads(&model.net, &model.rope, &batch, &lb, &cfg, &opts)
            .unwrap()
            .grads
    };
    let mixed = grads_of(&[0, 1, 2, 3]);
    let mut summed = GradientsParams::new();
    accumulate(&mut summed, grads_of(&[0, 2]), &params).unwrap();
    accumulate(&mut summed, grads_of(&[1, 3]), &params).unwrap();
    let (mut worst, mut scale) = (0.0f32, 0.0f32);
    for p in params.iter() {
        let a = grad_flat(&mixed, p)
            .unwrap()
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let b = grad_flat(&summed, p)
            .unwrap()
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for (x, y) in a.iter().zip(&b) {
            worst = worst.max((x - y).abs());
            scale = scale.max(x.abs());
        }
    }
    assert!(scale > 1e-4, "the gradient is not trivially zero: {scale}");
    assert!(
        worst < 1e-6,
        "per-domain sum differs from the mixed gradient by {worst}"
    );
}

/// Two tasks under MGS: the conflict telemetry is logged, and a resumed run (the hook's random
/// orders restored) ends with the same weights and metrics as an uninterrupted one.
#[test]
fn mgs_over_two_tasks_logs_conflicts_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = || {
        short_quickstart(&[
            "tasks.sub={ verifier = \"gsm8k\", train = { kind = \"arithmetic\", min_digits = 2, max_digits = 2, ops = [\"-\"], template = \"terse\" } }",
            "algorithm.gradient_surgery={ type = \"mgs\" }",
            "train.steps=3",
            "checkpoint.every=1",
            "eval.every=0",
        ])
    };
    let opts = |name: &str, resume: bool, stop: Option<usize>| RunOptions {
        run_dir: Some(tmp.path().join(name)),
        resume,
        stop_after: stop,
        ..Default::default()
    };
    let mut full = Trainer::new(recipe(), opts("full", false, None)).unwrap();
    full.run().unwrap();
    Trainer::new(recipe(), opts("cut", false, Some(2)))
        .unwrap()
        .run()
        .unwrap();
    let mut resumed = Trainer::new(recipe(), opts("cut", true, None)).unwrap();
    resumed.run().unwrap();
    let a = without_time(read_metrics_jsonl(&tmp.path().join("full/metrics.jsonl")).unwrap());
    let b = without_time(read_metrics_jsonl(&tmp.path().join("cut/metrics.jsonl")).unwrap());
    assert_eq!(a, b, "metrics of the resumed run");
    assert!(
        hf_tensors(&full.model.net) == hf_tensors(&resumed.model.net),
        "final weights differ"
    );
    for (_, m) in &a[1..] {
        let c: f64 = m["surgery/conflict_frac"].parse().unwrap();
        assert!((0.0..=1.0).contains(&c), "conflict fraction {c}");
        assert!(m.contains_key("surgery/conflict_frac/layer.0/mlp"), "{m:?}");
    }
    assert!(
        tmp.path()
            .join("full/plots/surgery_conflicts.png")
            .is_file()
    );
}
