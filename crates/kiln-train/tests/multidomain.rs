//! Multi-domain data: the shipped three-domain recipes' demonstrations and data schedules
//! (mixed at ratios, sequential phases), and a short sequential run that resumes exactly
//! across a phase boundary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_train::eval::reward_reference;
use kiln_train::metrics::read_metrics_jsonl;
use kiln_train::recipe::{SftData, load_recipe};
use kiln_train::sft::Demos;
use kiln_train::tasks::TaskSet;
use kiln_train::{Recipe, RunOptions, Trainer};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn recipe(name: &str, extra: &[&str]) -> Recipe {
    let model = root().join("recipes/models/tiny-arith");
    let mut sets = vec![format!("model.path={}", model.display())];
    sets.extend(extra.iter().map(|s| s.to_string()));
    load_recipe(&root().join("recipes").join(name), &sets).unwrap()
}

/// Task names of the next `steps` steps' prompts, `n` per step.
fn draws(tasks: &mut TaskSet, steps: usize, n: usize) -> Vec<Vec<String>> {
    (0..steps)
        .map(|_| {
            let drawn = tasks.next_prompts(n).unwrap();
            drawn
                .iter()
                .map(|d| tasks.tasks[d.task].name.clone())
                .collect()
        })
        .collect()
}

/// Sets the planted-error fractions of the multidomain recipe's demonstrations.
fn with_errors(mut r: Recipe, carry: f64, count: f64) -> Recipe {
    for d in &mut r.sft.as_mut().unwrap().data {
        match d {
            SftData::Arithmetic {
                wrong_carry_fraction,
                ..
            } => *wrong_carry_fraction = carry,
            SftData::Instructions {
                wrong_count_fraction,
                ..
            } => *wrong_count_fraction = count,
            _ => {}
        }
    }
    r
}

#[test]
fn demonstrations_pass_their_own_verifiers_unless_an_error_is_planted() {
    // Demonstration i comes from source i mod 3: arithmetic, countdown, instructions.
    let verdicts = |r: &Recipe| -> Vec<(String, bool, String)> {
        let tasks = TaskSet::from_recipe(r).unwrap();
        let demos = Demos::from_recipe(r, r.sft.as_ref().unwrap(), &tasks).unwrap();
        let order = ["arithmetic", "countdown", "instructions"];
        (0..300u64)
            .map(|i| {
                let name = order[(i % 3) as usize];
                let task = &tasks.tasks[tasks.index_of(name).unwrap()];
                let d = demos.get(i).unwrap();
                // The prompt the demonstration answers is an example of that task's generator.
                let prompt = d.prompt.as_text().unwrap().to_string();
                let example = task.train.get(0).unwrap();
                let reference = match name {
                    // Re-derive the reference from the prompt text, independently of the demo.
                    "arithmetic" => {
                        let (a, b) = prompt.trim_end_matches(" =").split_once(" + ").unwrap();
                        let sum = a.parse::<i64>().unwrap() + b.parse::<i64>().unwrap();
                        kiln_reward::Reference::text(sum.to_string())
                    }
                    "countdown" => {
                        let rest = prompt.strip_prefix("make ").unwrap().trim_end_matches(':');
                        let (target, nums) = rest.split_once(" from ").unwrap();
                        kiln_reward::Reference::Countdown {
                            target: target.parse().unwrap(),
                            nums: nums.split(' ').map(|n| n.parse().unwrap()).collect(),
                        }
                    }
                    _ => {
                        assert!(matches!(
                            reward_reference(&example.reference),
                            kiln_reward::Reference::Instructions(_)
                        ));
                        // "say fox 4 times, uppercase, end with !:"
                        let w: Vec<&str> = prompt.split(' ').collect();
                        let case = w[4].trim_end_matches("case,");
                        let end = w[7].trim_end_matches(':');
                        kiln_reward::Reference::Instructions(vec![
                            format!("words {}", w[2]),
                            format!("only {}", w[1]),
                            format!("case {case}"),
                            format!("ends-with {end}"),
                        ])
                    }
                };
                let v = task.verifier.score(&d.response, &reference);
                (name.to_string(), v.correct, prompt)
            })
            .collect()
    };
    let clean = verdicts(&with_errors(
        recipe("multidomain-mixed.toml", &[]),
        0.0,
        0.0,
    ));
    for (task, correct, prompt) in &clean {
        assert!(
            correct,
            "{task} demonstration for {prompt:?} fails its verifier"
        );
    }
    let planted = verdicts(&with_errors(
        recipe("multidomain-mixed.toml", &[]),
        1.0,
        1.0,
    ));
    for (task, correct, prompt) in &planted {
        let should_fail = match task.as_str() {
            "arithmetic" => {
                let (a, b) = prompt.trim_end_matches(" =").split_once(" + ").unwrap();
                a.parse::<i64>().unwrap() % 10 + b.parse::<i64>().unwrap() % 10 >= 10
            }
            "instructions" => prompt.split(' ').nth(2).unwrap().parse::<u32>().unwrap() >= 4,
            _ => false,
        };
        assert_eq!(!correct, should_fail, "{task}: {prompt:?}");
    }
    assert!(planted.iter().any(|(_, c, _)| !c) && planted.iter().any(|(_, c, _)| *c));
}

#[test]
fn sequential_schedule_draws_one_task_per_phase_and_resumes_mid_phase() {
    let r = recipe("multidomain-sequential.toml", &[]);
    let mut tasks = TaskSet::from_recipe(&r).unwrap();
    let steps = draws(&mut tasks, 20, 16);
    assert!(steps.iter().all(|s| s.iter().all(|t| t == "arithmetic")));
    let state = tasks.state();
    let first = tasks.next_prompts(16).unwrap();
    let next = draws(&mut tasks, 24, 16);
    assert!(first.iter().all(|d| d.example.domain == "countdown"));
    assert!(
        next[..19]
            .iter()
            .all(|s| s.iter().all(|t| t == "countdown"))
    );
    assert!(
        next[19..]
            .iter()
            .all(|s| s.iter().all(|t| t == "instructions"))
    );
    assert_eq!(tasks.phase(), 2);
    // A fresh task set restored to the saved position draws the same prompts.
    let mut resumed = TaskSet::from_recipe(&r).unwrap();
    resumed.restore(&state).unwrap();
    let again = resumed.next_prompts(16).unwrap();
    assert_eq!(
        again.iter().map(|d| &d.example).collect::<Vec<_>>(),
        first.iter().map(|d| &d.example).collect::<Vec<_>>()
    );
    assert_eq!(draws(&mut resumed, 24, 16), next);
}

#[test]
fn mixed_phase_draws_at_its_ratios() {
    let r = recipe(
        "multidomain-mixed.toml",
        &["schedule=[{ weights = { arithmetic = 3.0, countdown = 1.0 } }]"],
    );
    let mut tasks = TaskSet::from_recipe(&r).unwrap();
    let all: Vec<String> = draws(&mut tasks, 250, 16).concat();
    let share = |t: &str| all.iter().filter(|x| *x == t).count() as f64 / all.len() as f64;
    // 4000 draws: the binomial standard deviation of a 0.75 share is 0.007.
    assert!(
        (share("arithmetic") - 0.75).abs() < 0.03,
        "{}",
        share("arithmetic")
    );
    assert!((share("countdown") - 0.25).abs() < 0.03);
    assert_eq!(share("instructions"), 0.0);
    // Without [[schedule]], the tasks' weights (all 1) apply.
    let mut plain = TaskSet::from_recipe(&recipe("multidomain-mixed.toml", &[])).unwrap();
    let all: Vec<String> = draws(&mut plain, 250, 12).concat();
    for t in ["arithmetic", "countdown", "instructions"] {
        let s = all.iter().filter(|x| *x == t).count() as f64 / all.len() as f64;
        assert!((s - 1.0 / 3.0).abs() < 0.03, "{t}: {s}");
    }
}

#[test]
fn bad_schedules_and_sft_sources_are_named() {
    let path = root().join("recipes/multidomain-mixed.toml");
    let model = format!(
        "model.path={}",
        root().join("recipes/models/tiny-arith").display()
    );
    let err = |set: &str| {
        load_recipe(&path, &[model.clone(), set.to_string()])
            .unwrap_err()
            .to_string()
    };
    let msg = err("schedule=[{ weights = { arithmetic = 1.0 } }, { weights = { chess = 1.0 } }]");
    assert!(msg.contains("schedule[0].steps: required"), "{msg}");
    assert!(
        msg.contains("schedule[1].weights = \"chess\": no such task"),
        "{msg}"
    );
    let msg = err("schedule=[{ steps = 0, weights = { arithmetic = 0.0 } }]");
    assert!(msg.contains("schedule[0].steps"), "{msg}");
    assert!(
        msg.contains("schedule[0].weights: at least one task needs a weight > 0"),
        "{msg}"
    );
    let msg = err(
        "sft.data=[{ kind = \"arithmetic\", task = \"arithmetic\" }, { kind = \"instructions\", task = \"countdown\" }]",
    );
    assert!(
        msg.contains("sft.data[1].task = \"countdown\"")
            && msg.contains("of kind \"instructions\""),
        "{msg}"
    );
    let msg =
        err("sft.data=[{ kind = \"arithmetic\", task = \"arithmetic\" }, { kind = \"poems\" }]");
    assert!(msg.contains("source 1") && msg.contains("poems"), "{msg}");
    let msg = err("tasks.instructions.verifier=\"gsm8k\"");
    assert!(
        msg.contains("tasks.instructions.verifier = \"gsm8k\"")
            && msg.contains("it goes with verifier \"instructions\""),
        "{msg}"
    );
    let msg = err("tasks.countdown.train.generator.min_count=1");
    assert!(
        msg.contains("tasks.countdown.train.generator") && msg.contains("min_count"),
        "{msg}"
    );
}

/// A short sequential run (2 steps per phase) stopped inside the second phase and resumed ends
/// with the metrics of the run that never stopped; each step trains only its phase's task.
#[test]
fn sequential_run_resumes_exactly_across_phases() {
    let sets = [
        "sft.steps=3",
        "sft.batch_size=12",
        "train.steps=5",
        "train.prompts_per_step=3",
        "train.micro_batch_size=6",
        "rollout.n=4",
        "eval.limit=6",
        "eval.every=5",
        "checkpoint.every=1",
        "checkpoint.keep_last=2",
        "schedule=[{ steps = 2, weights = { arithmetic = 1.0 } }, { steps = 2, weights = { countdown = 1.0 } }, { weights = { instructions = 1.0 } }]",
    ];
    let tmp = tempfile::tempdir().unwrap();
    let opts = |dir: &Path, resume: bool, stop: Option<usize>| RunOptions {
        run_dir: Some(dir.to_path_buf()),
        resume,
        progress: false,
        stop_after: stop,
        ..Default::default()
    };
    let (full, cut) = (tmp.path().join("full"), tmp.path().join("cut"));
    let r = || recipe("multidomain-mixed.toml", &sets);
    Trainer::new(r(), opts(&full, false, None))
        .unwrap()
        .run()
        .unwrap();
    Trainer::new(r(), opts(&cut, false, Some(3)))
        .unwrap()
        .run()
        .unwrap();
    Trainer::new(r(), opts(&cut, true, None))
        .unwrap()
        .run()
        .unwrap();
    let strip = |dir: &Path| -> Vec<(u64, BTreeMap<String, String>)> {
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
    };
    let metrics = strip(&full);
    assert_eq!(metrics, strip(&cut));
    let phase_task = [
        "arithmetic",
        "arithmetic",
        "countdown",
        "countdown",
        "instructions",
    ];
    for (step, task) in (1..=5).zip(phase_task) {
        let m = metrics
            .iter()
            .find(|(s, m)| *s == step && m.contains_key("data/phase"))
            .map(|(_, m)| m)
            .unwrap_or_else(|| panic!("no step {step}"));
        let rewarded: Vec<&str> = ["arithmetic", "countdown", "instructions"]
            .into_iter()
            .filter(|t| m.contains_key(&format!("reward/{t}/mean")))
            .collect();
        assert_eq!(rewarded, [task], "step {step}");
    }
}
