//! Recipe loading end to end: defaults, `extends`, `--set` overrides, the error messages of bad
//! recipes (each must name the key), and the `to_toml` / `from_toml_str` round trip.
//!
//! Inputs live in `tests/recipes/`. Every path here is absolute: one test changes the working
//! directory to the workspace root (shipped recipes name paths relative to it).

use std::path::{Path, PathBuf};

use kiln_data::{ArithOp, MathTemplate};
use kiln_optim::{AggMode, EntropyReg, KlEstimator, LrSchedule};
use kiln_train::recipe::*;

fn input(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/recipes")
        .join(name)
}

fn load(name: &str) -> Result<Recipe, RecipeError> {
    load_recipe(&input(name), &[])
}

fn load_with(name: &str, overrides: &[&str]) -> Result<Recipe, RecipeError> {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    load_recipe(&input(name), &overrides)
}

/// The error's message, asserting that it is an error.
fn error(result: Result<Recipe, RecipeError>) -> (RecipeError, String) {
    let err = result.expect_err("the recipe must be rejected");
    let msg = err.to_string();
    (err, msg)
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            msg.contains(part),
            "expected {part:?} in the message:\n{msg}"
        );
    }
}

fn round_trip(recipe: &Recipe) {
    let text = to_toml(recipe);
    let back = from_toml_str(&text, "recipe.toml")
        .unwrap_or_else(|e| panic!("the saved recipe does not load: {e}\n{text}"));
    assert_eq!(&back, recipe, "round trip changed the recipe:\n{text}");
}

#[test]
fn minimal_recipe_loads_with_documented_defaults() {
    let r = load("minimal.toml").unwrap();
    assert_eq!(r.extends, None);
    assert_eq!(r.name, "minimal");
    assert_eq!(r.description, "");
    assert_eq!(r.seed, 1);
    assert_eq!(r.device, "flex");
    assert_eq!(r.model.path, "smollm2");
    assert_eq!(r.model.init, ModelInit::Pretrained);
    assert_eq!(r.model.max_context, None);

    let task = &r.tasks["arith"];
    assert_eq!(task.weight, 1.0);
    assert_eq!(task.verifier, VerifierKind::Gsm8k);
    assert_eq!(task.format_score, 0.1);
    assert_eq!(task.eval, None);
    assert_eq!(
        task.train,
        DataSpec::Arithmetic {
            min_digits: 1,
            max_digits: 2,
            ops: vec![ArithOp::Add],
            allow_negative: false,
            template: MathTemplate::Base,
            stream: None,
            count: None,
        }
    );
    assert_eq!(r.sft, None);
    assert_eq!(r.critic, None);

    let ro = &r.rollout;
    assert_eq!(
        (ro.n, ro.temperature, ro.top_k, ro.top_p, ro.min_p),
        (8, 1.0, 0, 1.0, 0.0)
    );
    assert_eq!(ro.max_new_tokens, 256);
    assert!(ro.stop.is_empty() && !ro.include_stop && ro.max_batch_tokens.is_none());

    let t = &r.train;
    assert_eq!(
        (t.steps, t.prompts_per_step, t.mini_batch_size),
        (100, 32, None)
    );
    assert_eq!(
        (t.micro_batch_size, t.ppo_epochs, t.chunk_size),
        (8, 1, 256)
    );
    assert_eq!(t.max_consecutive_skips, 5);
    assert_eq!(r.batch_size(), 256);
    assert_eq!(
        r.mini_batch_size(),
        256,
        "the default mini-batch is the whole batch"
    );
    assert_eq!(r.optimizer_steps_per_step(), 1);

    let a = &r.algorithm;
    assert_eq!(a.advantage, AdvantageKind::Grpo);
    assert_eq!((a.clip_low, a.clip_high, a.dual_clip), (0.2, 0.2, None));
    assert_eq!(a.loss_agg, AggMode::TokenMean);
    assert_eq!((a.kl_loss_coef, a.kl_reward_coef), (0.0, 0.0));
    assert_eq!(a.kl_estimator, KlEstimator::K3);
    assert_eq!(a.entropy, EntropyReg::None);
    assert_eq!((a.gamma, a.lam), (1.0, 1.0));

    let o = &r.optim;
    assert_eq!((o.lr, o.beta1, o.beta2, o.eps), (1e-6, 0.9, 0.999, 1e-8));
    assert_eq!((o.weight_decay, o.max_grad_norm), (0.01, Some(1.0)));
    assert_eq!(o.schedule, LrSchedule::Constant);

    assert_eq!(
        (r.eval.every, r.eval.limit, r.eval.temperature),
        (10, 200, 0.0)
    );
    assert_eq!(r.eval.max_new_tokens, None);
    assert_eq!(r.eval_max_new_tokens(), 256);
    assert_eq!(r.logging.run_dir, None);
    assert_eq!((r.logging.plot_every, r.logging.print_samples), (5, 0));
    assert_eq!(r.run_dir(), Path::new("runs/minimal"));
    assert_eq!((r.checkpoint.every, r.checkpoint.keep_last), (50, 2));
}

#[test]
fn extends_chain_merges_tables_and_replaces_arrays() {
    let r = load("extends/sub/child.toml").unwrap();
    assert_eq!(r.extends, None, "the resolved recipe has no extends");
    assert_eq!(r.name, "child");
    // From the grandparent, untouched by parent and child.
    assert_eq!(r.description, "set here, inherited by the child");
    assert_eq!(r.seed, 7);
    assert_eq!(r.model.max_context, Some(1024));
    assert_eq!(r.optim.lr, 2e-6);
    // Parent over grandparent: scalars replace, arrays replace, the rest of the table stays.
    assert_eq!(r.rollout.n, 8);
    assert_eq!(r.rollout.temperature, 0.9);
    assert_eq!(r.rollout.stop, ["</answer>"]);
    // A nested table (an inline table in the grandparent) merged key by key.
    let arith = &r.tasks["arith"];
    assert_eq!(
        arith.train,
        DataSpec::Arithmetic {
            min_digits: 1,
            max_digits: 2,
            ops: vec![ArithOp::Add, ArithOp::Sub],
            allow_negative: false,
            template: MathTemplate::Base,
            stream: None,
            count: None,
        }
    );
    assert!(matches!(
        arith.eval,
        Some(DataSpec::Arithmetic {
            count: Some(50),
            ..
        })
    ));
    // The child adds a task next to the inherited one.
    assert_eq!(r.tasks.len(), 2);
    assert_eq!(r.tasks["countdown"].weight, 2.0);
    // A changed `type` replaces the tagged table whole; an untagged one merges into it.
    assert_eq!(
        r.algorithm.entropy,
        EntropyReg::TreP {
            p: 0.95,
            max_region: 128,
            coef: 0.002
        }
    );
    assert_eq!(
        r.optim.schedule,
        LrSchedule::Cosine {
            warmup_steps: 10,
            total_steps: 100,
            min_lr_ratio: 0.1
        }
    );
    assert_eq!((r.train.prompts_per_step, r.train.micro_batch_size), (4, 4));
    assert_eq!(r.mini_batch_size(), 32);

    // The parent alone resolves too, with its own name and the grandparent's entropy.
    let parent = load("extends/parent.toml").unwrap();
    assert_eq!(parent.name, "parent");
    assert_eq!(
        parent.algorithm.entropy,
        EntropyReg::TreK { k: 2, coef: 0.001 }
    );
}

#[test]
fn extends_cycle_is_an_error_naming_the_files() {
    let (err, msg) = error(load("cycle/a.toml"));
    assert!(matches!(err, RecipeError::Extends { .. }), "{err:?}");
    assert_contains(&msg, &["cycle", "a.toml", "b.toml"]);
}

#[test]
fn extends_of_a_missing_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.toml");
    std::fs::write(&path, "extends = \"nope.toml\"\nname = \"x\"\n").unwrap();
    let (_, msg) = error(load_recipe(&path, &[]));
    assert_contains(&msg, &["extends", "nope.toml", "not a file"]);

    std::fs::write(&path, "extends = 3\nname = \"x\"\n").unwrap();
    let (_, msg) = error(load_recipe(&path, &[]));
    assert_contains(&msg, &["extends must be a string", "r.toml"]);
}

#[test]
fn overrides_set_values_of_every_kind() {
    let r = load_with(
        "minimal.toml",
        &[
            "optim.lr=2e-6",
            "rollout.n = 16",
            "rollout.include_stop=true",
            "model.path=/tmp",
            "device=cuda:0",
            "rollout.stop=[\"</answer>\", \"\\n\"]",
            "algorithm.entropy={ type = \"tre-k\", k = 2, coef = 0.001 }",
            // Creates [tasks.extra] and [logging] keys the file does not have.
            "tasks.extra.verifier=countdown",
            "tasks.extra.train={ kind = \"countdown\" }",
            "logging.run_dir=\"/tmp/kiln run\"",
            // Later overrides win.
            "rollout.n=4",
        ],
    )
    .unwrap();
    assert_eq!(r.optim.lr, 2e-6);
    assert_eq!(r.rollout.n, 4);
    assert!(r.rollout.include_stop);
    assert_eq!(r.model.path, "/tmp");
    assert_eq!(r.device, "cuda:0");
    assert_eq!(r.rollout.stop, ["</answer>", "\n"]);
    assert_eq!(r.algorithm.entropy, EntropyReg::TreK { k: 2, coef: 0.001 });
    assert_eq!(r.tasks["extra"].verifier, VerifierKind::Countdown);
    assert_eq!(r.logging.run_dir.as_deref(), Some("/tmp/kiln run"));

    // A whole new section from overrides alone: GAE with a critic.
    let r = load_with(
        "minimal.toml",
        &["algorithm.advantage=gae", "critic.lr=3e-5", "rollout.n=1"],
    )
    .unwrap();
    assert_eq!(r.algorithm.advantage, AdvantageKind::Gae);
    assert_eq!(r.critic.as_ref().unwrap().lr, 3e-5);
    assert_eq!(r.critic.as_ref().unwrap().value_clip, 0.5);
}

#[test]
fn malformed_overrides_are_errors_quoting_them() {
    for (text, want) in [
        ("optim.lr", "expected key=value"),
        ("=3", "key before `=` is empty"),
        ("a..b=1", "not a dotted key"),
        (
            "model.path.x=1",
            "`model.path`: it is a string (\"smollm2\")",
        ),
        ("extends=other.toml", "cannot be overridden"),
    ] {
        let (err, msg) = error(load_with("minimal.toml", &[text]));
        assert!(matches!(err, RecipeError::Override { .. }), "{err:?}");
        assert_contains(&msg, &[&format!("--set `{text}`"), want]);
    }
    // Well formed, but the value has the wrong type: the key error points at the override.
    let (_, msg) = error(load_with("minimal.toml", &["train.steps=many"]));
    assert_contains(
        &msg,
        &["train.steps", "invalid type", "--set `train.steps=many`"],
    );
}

#[test]
fn unknown_top_level_key_is_named() {
    let (err, msg) = error(load("bad/unknown_top_level.toml"));
    assert!(matches!(err, RecipeError::Key { .. }), "{err:?}");
    assert_contains(
        &msg,
        &[
            "unknown_top_level.toml",
            "learning_rate: unknown key",
            "rollout",
        ],
    );
}

#[test]
fn unknown_nested_key_is_named_with_a_suggestion() {
    let (_, msg) = error(load("bad/unknown_nested.toml"));
    assert_contains(
        &msg,
        &[
            "unknown_nested.toml",
            "rollout.temprature: unknown key",
            "did you mean `temperature`?",
            "expected one of",
        ],
    );
}

#[test]
fn unknown_key_in_a_data_spec_is_named() {
    let r = load_with("minimal.toml", &["tasks.arith.train.min_digit=2"]);
    let (_, msg) = error(r);
    assert_contains(&msg, &["tasks.arith.train", "min_digit", "unknown"]);
    let (_, msg) = error(load_with(
        "minimal.toml",
        &["tasks.arith.train.kind=algebra"],
    ));
    assert_contains(&msg, &["tasks.arith.train", "algebra", "arithmetic"]);
}

#[test]
fn wrong_type_is_named() {
    let (_, msg) = error(load("bad/wrong_type.toml"));
    assert_contains(
        &msg,
        &[
            "wrong_type.toml",
            "train.steps: invalid type: string \"ten\", expected usize",
        ],
    );
}

#[test]
fn missing_required_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.toml");
    std::fs::write(&path, "name = \"x\"\n[model]\ninit = \"random\"\n").unwrap();
    let (_, msg) = error(load_recipe(&path, &[]));
    assert_contains(&msg, &["model.path: missing"]);
}

#[test]
fn missing_model_path_is_named() {
    let (err, msg) = error(load("bad/missing_model.toml"));
    assert!(matches!(err, RecipeError::Invalid { .. }), "{err:?}");
    assert_contains(
        &msg,
        &[
            "model.path = \"./no/such/model.gguf\"",
            "no such file or directory",
        ],
    );
    // A repo id and `smollm2` are not local paths.
    load_with("minimal.toml", &["model.path=Qwen/Qwen2.5-0.5B"]).unwrap();
}

#[test]
fn random_init_needs_a_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().to_str().unwrap();
    let set_path = format!("model.path={model}");
    let (_, msg) = error(load_with("minimal.toml", &["model.init=random", &set_path]));
    assert_contains(&msg, &["model.path", "config.json"]);
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    load_with("minimal.toml", &["model.init=random", &set_path]).unwrap();
}

#[test]
fn zero_group_size_is_named() {
    let (_, msg) = error(load("bad/zero_n.toml"));
    assert_contains(&msg, &["rollout.n = 0: must be at least 2"]);
    // GAE does not compare a group: one response per prompt is enough, zero is not.
    let (_, msg) = error(load_with(
        "bad/zero_n.toml",
        &["algorithm.advantage=gae", "critic.lr=1e-5"],
    ));
    assert_contains(&msg, &["rollout.n = 0: must be at least 1"]);
}

#[test]
fn batch_not_divisible_by_mini_batch_is_named() {
    let (_, msg) = error(load("bad/mini_batch.toml"));
    assert_contains(
        &msg,
        &["train.mini_batch_size = 48 does not divide the batch of 32 prompts x 8 responses = 256"],
    );
}

#[test]
fn micro_batch_not_dividing_mini_batch_is_named() {
    let (_, msg) = error(load("bad/micro_batch.toml"));
    assert_contains(
        &msg,
        &["train.micro_batch_size = 24 does not divide train.mini_batch_size = 64"],
    );
}

#[test]
fn gae_and_critic_go_together() {
    let (_, msg) = error(load("bad/gae_without_critic.toml"));
    assert_contains(&msg, &["critic:", "needs a [critic] section"]);
    let (_, msg) = error(load_with("minimal.toml", &["critic.lr=1e-5"]));
    assert_contains(
        &msg,
        &["critic:", "only used with algorithm.advantage = \"gae\""],
    );
}

#[test]
fn sft_naming_an_unknown_task_is_named() {
    let (_, msg) = error(load("bad/sft_unknown_task.toml"));
    assert_contains(
        &msg,
        &["sft.data.task = \"addition\": no such task", "tasks: arith"],
    );
    // A task that exists but is not arithmetic.
    let (_, msg) = error(load_with(
        "bad/sft_unknown_task.toml",
        &[
            "sft.data.task=cd",
            "tasks.cd.verifier=countdown",
            "tasks.cd.train={ kind = \"countdown\" }",
        ],
    ));
    assert_contains(&msg, &["sft.data.task = \"cd\"", "of kind \"countdown\""]);
}

#[test]
fn toml_syntax_error_names_the_line() {
    let (err, msg) = error(load("bad/syntax.toml"));
    assert!(matches!(err, RecipeError::Parse { .. }), "{err:?}");
    assert_contains(&msg, &["syntax.toml", "line 4"]);
}

#[test]
fn several_problems_are_reported_together() {
    let (err, msg) = error(load("bad/many.toml"));
    let RecipeError::Invalid { problems, .. } = &err else {
        panic!("expected Invalid, got {err:?}");
    };
    let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
    for key in [
        "rollout.temperature",
        "rollout.top_p",
        "train.steps",
        "optim.lr",
        "critic",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    assert_contains(
        &msg,
        &[
            "many.toml has 5 problems:",
            "\n  rollout.temperature = 0.0: must be > 0",
            "\n  rollout.top_p = 1.5: must be in (0, 1]",
            "\n  train.steps = 0: must be at least 1",
            "\n  optim.lr = -1.0: must be > 0",
        ],
    );
}

#[test]
fn test_recipes_round_trip_through_to_toml() {
    for name in ["minimal.toml", "full.toml", "extends/sub/child.toml"] {
        let r = load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        round_trip(&r);
    }
    // JSONL data (the file must exist) and no gradient clipping.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    std::fs::write(&data, "{\"prompt\": \"1+1\", \"answer\": \"2\"}\n").unwrap();
    let spec = format!(
        "tasks.arith.train={{ kind = \"jsonl\", path = {:?}, prompt_field = \"q\", limit = 5 }}",
        data.to_str().unwrap()
    );
    let sft = format!(
        "sft={{ steps = 3, lr = 1e-5, data = {{ kind = \"jsonl\", path = {:?} }} }}",
        data.to_str().unwrap()
    );
    let r = load_with("minimal.toml", &[&spec, &sft, "optim.max_grad_norm=false"]).unwrap();
    assert_eq!(r.optim.max_grad_norm, None);
    round_trip(&r);
}

#[test]
fn from_toml_str_rejects_extends_and_validates() {
    let (err, _) = error(from_toml_str(
        "extends = \"base.toml\"\nname = \"x\"\n",
        "runs/x/recipe.toml",
    ));
    assert!(matches!(err, RecipeError::Extends { .. }), "{err:?}");
    let text = to_toml(&load("minimal.toml").unwrap()).replace("n = 8", "n = 0");
    let (_, msg) = error(from_toml_str(&text, "runs/x/recipe.toml"));
    assert_contains(&msg, &["recipe runs/x/recipe.toml: rollout.n = 0"]);
}

/// Every shipped recipe (`recipes/*.toml` at the workspace root) loads from the workspace root,
/// as `just train` runs it, and round-trips.
#[test]
fn shipped_recipes_load_and_round_trip() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("recipes");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return; // no recipes yet
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    // Shipped recipes name model and data paths relative to the workspace root.
    std::env::set_current_dir(&root).unwrap();
    let mut failures = Vec::new();
    for path in &paths {
        // `rm-*.toml` are reward-model recipes, for `kiln rm-train`.
        let name = path.file_name().unwrap().to_string_lossy();
        if name.starts_with("rm-") {
            if let Err(e) = kiln_train::rm_train::RmRecipe::load(path, &[]) {
                failures.push(e.to_string());
            }
            continue;
        }
        match load_recipe(path, &[]) {
            Ok(r) => round_trip(&r),
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn gradient_surgery_needs_two_tasks_and_a_known_type() {
    let (_, msg) = error(load_with(
        "minimal.toml",
        &["algorithm.gradient_surgery={ type = \"mgs\" }"],
    ));
    assert_contains(
        &msg,
        &[
            "algorithm.gradient_surgery projects the tasks' gradients against each other: it needs at least two tasks (each task is a domain), the recipe has 1",
        ],
    );
    let (_, msg) = error(load_with(
        "minimal.toml",
        &["algorithm.gradient_surgery={ type = \"mgs\", granularity = \"layer\" }"],
    ));
    assert_contains(&msg, &["algorithm.gradient_surgery", "layer"]);
}
