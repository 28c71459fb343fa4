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

/// `kiln eval --model smollm2 --task math500` with `args` after it.
fn eval_math500(args: &[&str]) -> std::process::Output {
    let mut all = vec!["eval", "--model", "smollm2", "--task", "math500"];
    all.extend_from_slice(args);
    kiln(&all)
}

#[test]
fn eval_limit_mode_on_math500_reports_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("math500.jsonl");
    let out_s = out.to_str().unwrap();
    let run = |limit: &str| {
        let o = eval_math500(&[
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
    let o = eval_math500(&["--n", "2", "--temperature", "0"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--temperature"));
    let o = eval_math500(&[
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

/// `--answer lenient` reads answers that are not boxed (the greedy answer of every problem is
/// recorded with what was extracted) and keeps its results apart; arguments that cannot work are
/// refused before the model loads.
#[test]
fn lenient_answers_and_argument_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lenient.jsonl");
    let o = eval_math500(&[
        "--limit",
        "2",
        "--max-new-tokens",
        "24",
        "--answer",
        "lenient",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["settings"]["answer"], "lenient", "{header}");
    for line in lines {
        let record: Value = serde_json::from_str(line).unwrap();
        let greedy = &record["greedy"];
        let response = greedy["text"].as_str().unwrap();
        // Whatever the 24 tokens say, a response holding a digit has a lenient answer.
        if response.chars().any(|c| c.is_ascii_digit()) {
            assert!(greedy["extracted"].is_string(), "{record}");
        }
    }
    for (args, needle) in [
        (
            &["--task", "countdown", "--answer", "lenient"][..],
            "math500 only",
        ),
        (&["--task", "math500", "--limit", "0"][..], "--limit 0"),
    ] {
        let mut all = vec!["eval", "--model", "smollm2"];
        all.extend_from_slice(args);
        let o = kiln(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
    }
}
