//! `kiln bench train` and `kiln bench score` end to end on a tiny random Llama (the tiny-arith
//! config, written once as a Hugging Face directory): the JSON report of one timed step, with
//! and without gradient surgery across domains, the scored log-probs, and the errors for
//! impossible shapes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln::model::Model;
use serde_json::Value;

fn tiny_model(dir: &Path) -> PathBuf {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/models/tiny-arith");
    let out = dir.join("tiny");
    Model::random(&config, &burn::prelude::Device::flex(), 3)
        .unwrap()
        .save_hf(&out)
        .unwrap();
    out
}

/// Runs `kiln bench train` on `model`: one step of 4 rows x 24 tokens (8 prompt), micro-batches
/// of 2, one thread; `extra` adds flags or replaces those values.
fn bench(model: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<(&str, Option<&str>)> = [
        ("--batch", "4"),
        ("--seq", "24"),
        ("--prompt-len", "8"),
        ("--micro-batch", "2"),
        ("--steps", "1"),
        ("--warmup", "0"),
        ("--threads", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k, Some(v)))
    .collect();
    let mut rest = extra.iter().peekable();
    while let Some(&flag) = rest.next() {
        let value = rest.next_if(|v| !v.starts_with("--")).copied();
        match args.iter_mut().find(|(k, _)| *k == flag) {
            Some(slot) => slot.1 = value,
            None => args.push((flag, value)),
        }
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(["bench", "train", "--model"]).arg(model);
    for (k, v) in args {
        cmd.arg(k).args(v);
    }
    cmd.env("RUST_LOG", "warn").output().expect("running kiln")
}

/// The one JSON object a successful `kiln bench ... --json` prints.
fn json_of(out: Output) -> Value {
    assert!(
        out.status.success(),
        "{:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

fn report(model: &Path, extra: &[&str]) -> Value {
    json_of(bench(model, &[extra, &["--json"]].concat()))
}

fn num(r: &Value, key: &str) -> f64 {
    r[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing or not a number in {r}"))
}

#[test]
fn train_bench_reports_one_step() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());

    let r = report(&model, &[]);
    for key in [
        "step_s",
        "backward_s",
        "optimizer_s",
        "peak_rss_mb",
        "tokens_per_s",
    ] {
        assert!(num(&r, key) > 0.0, "{key} in {r}");
    }
    assert!(
        num(&r, "combine_s") < 1e-3,
        "one domain, nothing to combine: {r}"
    );
    let (step, tps) = (num(&r, "step_s"), num(&r, "tokens_per_s"));
    assert!((tps * step - 4.0 * 24.0).abs() < 1e-6 * tps * step, "{r}");
    assert!(num(&r, "backward_s") + num(&r, "optimizer_s") <= step * (1.0 + 1e-9));
    assert!(
        num(&r, "loss").is_finite() && num(&r, "grad_norm") > 0.0,
        "{r}"
    );
    assert_eq!(r["surgery"], "none");
    assert_eq!(
        (r["batch"].as_u64(), r["seq"].as_u64()),
        (Some(4), Some(24))
    );
    assert_eq!(r["domains"].as_u64(), Some(1));

    let r = report(&model, &["--domains", "2", "--surgery", "mgs"]);
    assert_eq!(r["surgery"], "mgs");
    assert_eq!(r["domains"].as_u64(), Some(2));
    assert!(num(&r, "combine_s") > 0.0, "{r}");
    let conflict = num(&r, "conflict_frac");
    assert!((0.0..=1.0).contains(&conflict), "{r}");
    assert!(
        num(&r, "grad_norm") > 0.0 && num(&r, "tokens_per_s") > 0.0,
        "{r}"
    );

    // The human table.
    let out = bench(&model, &["--domains", "2", "--surgery", "pcgrad"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("surgery pcgrad") && text.contains("| combine |"),
        "{text}"
    );
}

#[test]
fn train_bench_rejects_impossible_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    for (args, needle) in [
        (&["--batch", "0"][..], "must be positive"),
        (&["--seq", "8"][..], "must exceed --prompt-len"),
        (&["--seq", "300"][..], "exceeds the context"),
        (&["--domains", "5"][..], "exceeds --batch"),
        (&["--domains", "3"][..], "not a multiple of --domains"),
        (&["--surgery", "magic"][..], "possible values"),
    ] {
        let out = bench(&model, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// `kiln bench score` on the same tiny model: `extra` adds flags to 4 rows x 24 tokens.
fn score_report(model: &Path, extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["bench", "score", "--model"])
        .arg(model)
        .args(["--batch", "4", "--seq", "24", "--prompt-len", "8"])
        .args(["--iters", "1", "--threads", "1", "--json"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running kiln");
    json_of(out)
}

#[test]
fn score_bench_reports_log_probs_independent_of_batching() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let whole = score_report(&model, &["--micro-batch", "4"]);
    for key in ["step_s", "peak_rss_mb", "tokens_per_s"] {
        assert!(num(&whole, key) > 0.0, "{key} in {whole}");
    }
    assert!((num(&whole, "tokens_per_s") * num(&whole, "step_s") - 96.0).abs() < 1e-6);
    // 4 rows x 16 response tokens, each log-prob below 0 and above log(1e-12).
    let sum = num(&whole, "logp_sum");
    assert!(sum < 0.0 && sum > 64.0 * (1e-12f64).ln(), "{whole}");
    // Rows scored one at a time, or with entropies, give the same log-probs.
    let single = score_report(&model, &["--micro-batch", "1"]);
    let with_entropy = score_report(&model, &["--micro-batch", "4", "--entropy"]);
    for other in [&single, &with_entropy] {
        assert!(
            (num(other, "logp_sum") - sum).abs() < 1e-3,
            "{other} vs {whole}"
        );
    }
    // A row without a response token is refused, naming the flags.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["bench", "score", "--model"])
        .arg(&model)
        .args(["--seq", "8", "--prompt-len", "8"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--seq 8") && err.contains("--prompt-len 8"),
        "{err}"
    );
}
