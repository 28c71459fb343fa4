//! Crash safety of `kiln train`, end to end: the process is killed with SIGKILL at many points of
//! a run (SFT, evaluation, rollout, update, after the metrics, inside a checkpoint write, and at
//! seeded random moments from outside), then `kiln train --resume` finishes it. The final
//! weights and the metrics must equal, bit for bit, those of a run that was never interrupted.
//! A damaged newest checkpoint is skipped, with a warning, for the previous one.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use kiln_train::metrics::read_metrics_jsonl;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The quickstart, cut to seconds: 4 SFT steps, 6 RL steps, a checkpoint every 2 (2 kept),
/// evaluation every 3, a KL loss (so the frozen reference is saved and reloaded too).
fn train(run_dir: &Path, resume: bool, fault: Option<&str>) -> Command {
    let model = root().join("recipes/models/tiny-arith");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.current_dir(root())
        .arg("train")
        .arg("recipes/quickstart.toml")
        .arg("--quiet")
        .arg("--run-dir")
        .arg(run_dir);
    for set in [
        format!("model.path={}", model.display()),
        "sft.steps=4".into(),
        "sft.batch_size=16".into(),
        "train.steps=6".into(),
        "train.prompts_per_step=4".into(),
        "train.mini_batch_size=8".into(),
        "train.micro_batch_size=8".into(),
        "rollout.n=4".into(),
        "rollout.max_new_tokens=16".into(),
        "algorithm.kl_loss_coef=0.001".into(),
        "eval.limit=8".into(),
        "eval.every=3".into(),
        "checkpoint.every=2".into(),
        "checkpoint.keep_last=2".into(),
        "logging.plot_every=3".into(),
    ] {
        cmd.arg("--set").arg(set);
    }
    if resume {
        cmd.arg("--resume");
    }
    cmd.env_remove("KILN_FAULT").env("RUST_LOG", "warn");
    if let Some(f) = fault {
        cmd.env("KILN_FAULT", f);
    }
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("running kiln")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_killed(o: &Output, what: &str) {
    assert_eq!(
        o.status.signal(),
        Some(9),
        "{what}: expected death by SIGKILL, got {:?}\n{}",
        o.status,
        stderr(o)
    );
}

fn assert_ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what}: {:?}\n{}", o.status, stderr(o));
}

/// The metrics without wall-clock entries, each value as its exact bit pattern.
fn metrics(dir: &Path) -> Vec<(u64, BTreeMap<String, u64>)> {
    read_metrics_jsonl(&dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .map(|(s, m)| {
            let kept = m
                .into_iter()
                .filter(|(k, _)| !k.starts_with("time/") && k != "rollout/tokens_per_s")
                .map(|(k, v)| (k, v.to_bits()))
                .collect();
            (s, kept)
        })
        .collect()
}

/// Everything that must not depend on the interruptions: final weights, metrics, checkpoints.
struct Outcome {
    weights: Vec<u8>,
    metrics: Vec<(u64, BTreeMap<String, u64>)>,
    checkpoints: Vec<String>,
}

fn outcome(dir: &Path) -> Outcome {
    let mut checkpoints: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    checkpoints.sort();
    Outcome {
        weights: std::fs::read(dir.join("final/model.safetensors")).unwrap(),
        metrics: metrics(dir),
        checkpoints,
    }
}

fn assert_same(reference: &Outcome, dir: &Path, what: &str) {
    let got = outcome(dir);
    assert!(
        got.weights == reference.weights,
        "{what}: final weights differ from the uninterrupted run"
    );
    assert_eq!(
        got.metrics.len(),
        reference.metrics.len(),
        "{what}: metric lines"
    );
    for (a, b) in got.metrics.iter().zip(&reference.metrics) {
        assert_eq!(a, b, "{what}: metrics of step {}", b.0);
    }
    assert_eq!(
        got.checkpoints, reference.checkpoints,
        "{what}: checkpoints kept"
    );
}

#[test]
fn killed_runs_resume_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    let t0 = Instant::now();
    assert_ok(&run(train(&full, false, None)), "uninterrupted run");
    let full_time = t0.elapsed();
    let reference = outcome(&full);
    assert_eq!(reference.metrics.len(), 7, "steps 0..=6");
    assert_eq!(reference.checkpoints, ["step-000004", "step-000006"]);

    // Each plan kills the first attempt at one point; one resume finishes the run.
    let plans = [
        "kill@sft:2",
        "kill@eval:0",
        "kill@rollout:3",
        "kill@update:3",
        "kill@eval:3",
        "kill@metrics:4",
        "kill@checkpoint-files:4",
        "kill@checkpoint-rename:4",
        "kill@checkpoint-prune:4",
        "kill@rollout:1",
    ];
    for (i, plan) in plans.iter().enumerate() {
        let dir = tmp.path().join(format!("kill-{i}"));
        assert_killed(&run(train(&dir, false, Some(plan))), plan);
        assert_ok(
            &run(train(&dir, true, None)),
            &format!("resume after {plan}"),
        );
        assert_same(&reference, &dir, plan);
    }

    // Killed twice, the second time while resuming.
    let dir = tmp.path().join("twice");
    assert_killed(
        &run(train(&dir, false, Some("kill@update:2"))),
        "first kill",
    );
    assert_killed(
        &run(train(&dir, true, Some("kill@checkpoint-rename:6"))),
        "second kill",
    );
    assert_ok(&run(train(&dir, true, None)), "resume after two kills");
    assert_same(&reference, &dir, "two kills");

    // SIGKILL from outside at seeded random moments of the run's wall-clock. A kill that comes
    // after the run is over is retried earlier, so each of the three interrupts a run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for k in 0..3 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut fraction = 0.15 + 0.7 * (state % 1000) as f64 / 1000.0;
        let dir = tmp.path().join(format!("external-{k}"));
        let delay = loop {
            let delay = full_time.mul_f64(fraction);
            let mut child = train(&dir, false, None)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(delay);
            let _ = child.kill();
            if child.wait().unwrap().signal() == Some(9) {
                break delay;
            }
            assert!(fraction > 0.01, "no kill landed inside the run");
            fraction /= 2.0;
            std::fs::remove_dir_all(&dir).unwrap();
        };
        assert_ok(
            &run(train(&dir, true, None)),
            &format!("resume after an external kill at {delay:?}"),
        );
        assert_same(&reference, &dir, &format!("external kill at {delay:?}"));
    }
}

#[test]
fn a_damaged_newest_checkpoint_is_skipped_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    // Stop after step 4's checkpoint is renamed, before step 2's is pruned.
    assert_killed(
        &run(train(&dir, false, Some("kill@checkpoint-prune:4"))),
        "kill",
    );
    let newest = dir.join("checkpoints/step-000004/policy.bpk");
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&newest, bytes).unwrap();
    let out = run(train(&dir, true, None));
    assert_ok(&out, "resume");
    let err = stderr(&out);
    assert!(
        err.contains("skipping damaged checkpoint")
            && err.contains("step-000004")
            && err.contains("policy.bpk: checksum mismatch"),
        "{err}"
    );
    // Resumed from step 2, the run still reaches the uninterrupted result.
    let full = tmp.path().join("full");
    assert_ok(&run(train(&full, false, None)), "uninterrupted run");
    assert_same(&outcome(&full), &dir, "resume from the older checkpoint");
}
