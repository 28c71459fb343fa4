//! `kiln eval` in its `--limit` mode on SmolLM2-135M and MATH-500 (what CI runs; the full
//! benchmark is in docs/benchmarks.md): the JSON report with the level and subject breakdown,
//! the results file it continues from, and its argument errors.

use std::process::Command;

use serde_json::Value;

fn kiln(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running kiln")
}

#[test]
fn eval_limit_mode_on_math500_reports_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("math500.jsonl");
    let out_s = out.to_str().unwrap();
    let run = |limit: &str| {
        let o = kiln(&[
            "eval",
            "--model",
            "smollm2",
            "--task",
            "math500",
            "--limit",
            limit,
            "--max-new-tokens",
            "12",
            "--n",
            "2",
            "--chunk",
            "2",
            "--out",
            out_s,
            "--quiet",
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<Value>(&o.stdout).expect("one JSON report")
    };
    let first = run("2");
    assert_eq!(first["overall"]["problems"], 2);
    assert_eq!(first["answered_now"], 2);
    assert_eq!(first["k"], 2);
    for key in [
        "pass_at_1",
        "sampled_pass_at_1",
        "pass_at_k",
        "maj_at_k",
        "mean_response_tokens",
    ] {
        let v = first["overall"][key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in {first}"));
        assert!((0.0..=12.0).contains(&v), "{key} = {v}");
    }
    // MATH-500 problems carry a level and a subject.
    assert!(
        !first["by_level"].as_object().unwrap().is_empty(),
        "{first}"
    );
    assert!(
        !first["by_subject"].as_object().unwrap().is_empty(),
        "{first}"
    );
    // Two more problems: the first two come from the results file.
    let second = run("4");
    assert_eq!(second["overall"]["problems"], 4);
    assert_eq!(second["answered_now"], 2);
    let lines = std::fs::read_to_string(&out).unwrap().lines().count();
    assert_eq!(lines, 1 + 4, "a header and one line per problem");
    // Samples need a temperature; a different setting is refused for this results file.
    let o = kiln(&[
        "eval",
        "--model",
        "smollm2",
        "--task",
        "math500",
        "--n",
        "2",
        "--temperature",
        "0",
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--temperature"));
    let o = kiln(&[
        "eval",
        "--model",
        "smollm2",
        "--task",
        "math500",
        "--limit",
        "2",
        "--max-new-tokens",
        "13",
        "--n",
        "2",
        "--chunk",
        "2",
        "--out",
        out_s,
        "--quiet",
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--fresh"));
}
