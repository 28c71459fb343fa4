//! Semantic checks serde cannot express: ranges, batch geometry, cross-section rules, files that
//! must exist. All problems are collected so the user fixes them in one go.

use std::fmt::Debug;
use std::path::Path;

use kiln_optim::{EntropyReg, LrSchedule};

use super::error::RecipeError;
use super::schema::*;

/// Checks `recipe`; `origin` (the recipe file) names it in the error, which lists every problem.
pub fn validate(recipe: &Recipe, origin: &Path) -> Result<(), RecipeError> {
    let problems = problems(recipe);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RecipeError::Invalid {
            path: origin.to_path_buf(),
            problems,
        })
    }
}

/// Every problem of `recipe` as `(key, message)`; each message is a whole line that starts with
/// the key. Empty when the recipe is valid.
pub fn problems(recipe: &Recipe) -> Vec<(String, String)> {
    let mut p = Problems::default();
    top_level(recipe, &mut p);
    model(&recipe.model, &recipe.rollout, &mut p);
    if recipe.tasks.is_empty() {
        p.add(
            "tasks",
            "tasks: at least one task is required ([tasks.<name>])",
        );
    }
    for (name, task) in &recipe.tasks {
        self::task(&format!("tasks.{name}"), task, &mut p);
    }
    schedule(recipe, &mut p);
    if let Some(sft) = &recipe.sft {
        self::sft(sft, recipe, &mut p);
    }
    rollout(recipe, &mut p);
    train(recipe, &mut p);
    algorithm(recipe, &mut p);
    optim(&recipe.optim, &mut p);
    critic(recipe, &mut p);
    rose(recipe, &mut p);

    let e = &recipe.eval;
    p.at_least("eval.limit", e.limit, 1);
    p.check(
        e.temperature.is_finite() && e.temperature >= 0.0,
        "eval.temperature",
        e.temperature,
        "must be >= 0 (0 = greedy)",
    );
    if let Some(m) = e.max_new_tokens {
        p.at_least("eval.max_new_tokens", m, 1);
    }
    p.check(
        e.pass_temperature.is_finite() && e.pass_temperature > 0.0,
        "eval.pass_temperature",
        e.pass_temperature,
        "must be > 0 (pass@k samples)",
    );
    p.check(
        e.pass_top_p > 0.0 && e.pass_top_p <= 1.0,
        "eval.pass_top_p",
        e.pass_top_p,
        "must be in (0, 1]",
    );
    let l = &recipe.logging;
    p.at_least("logging.plot_every", l.plot_every, 1);
    if let Some(dir) = &l.run_dir {
        p.check(
            !dir.trim().is_empty(),
            "logging.run_dir",
            dir,
            "must not be empty",
        );
    }
    p.at_least("checkpoint.keep_last", recipe.checkpoint.keep_last, 1);
    p.0
}

/// The collected problems, with helpers that write `key = value: requirement` lines.
#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn add(&mut self, key: &str, message: impl Into<String>) {
        self.0.push((key.to_string(), message.into()));
    }

    /// Adds `key = value: requirement` unless `ok`. Values print with `Debug` (strings quoted,
    /// floats as written: `1e-6`, `0.0`).
    fn check(&mut self, ok: bool, key: &str, value: impl Debug, requirement: &str) {
        if !ok {
            self.add(key, format!("{key} = {value:?}: {requirement}"));
        }
    }

    fn at_least(&mut self, key: &str, value: usize, min: usize) {
        self.check(value >= min, key, value, &format!("must be at least {min}"));
    }

    /// `value` finite and > 0.
    fn positive(&mut self, key: &str, value: f64) {
        self.check(value.is_finite() && value > 0.0, key, value, "must be > 0");
    }

    /// `value` finite and >= 0.
    fn non_negative(&mut self, key: &str, value: f64) {
        self.check(
            value.is_finite() && value >= 0.0,
            key,
            value,
            "must be >= 0",
        );
    }

    /// `value` in `[lo, hi]` (`hi_open`: `[lo, hi)`).
    fn in_range(&mut self, key: &str, value: f64, lo: f64, hi: f64, hi_open: bool) {
        let ok = value >= lo && if hi_open { value < hi } else { value <= hi };
        let close = if hi_open { ')' } else { ']' };
        self.check(
            ok,
            key,
            value,
            &format!("must be in [{lo:?}, {hi:?}{close}"),
        );
    }

    /// A file or directory that must exist (relative paths: the working directory).
    fn exists(&mut self, key: &str, path: &str) {
        if !Path::new(path).exists() {
            self.add(key, format!("{key} = {path:?}: {}", missing(path)));
        }
    }
}

fn missing(path: &str) -> String {
    let cwd = std::env::current_dir()
        .map(|d| format!(" (relative to the working directory {})", d.display()))
        .unwrap_or_default();
    if Path::new(path).is_absolute() {
        "no such file or directory".into()
    } else {
        format!("no such file or directory{cwd}")
    }
}

fn top_level(recipe: &Recipe, p: &mut Problems) {
    let name = &recipe.name;
    // The name becomes `runs/<name>`: one path component that every OS accepts.
    let bad_char = name.chars().find(|c| {
        c.is_control() || matches!(c, '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*')
    });
    if name.trim().is_empty() {
        p.add(
            "name",
            "name: must not be empty (it names the run directory runs/<name>)",
        );
    } else if let Some(c) = bad_char {
        p.check(
            false,
            "name",
            name,
            &format!("{c:?} cannot be used in a directory name"),
        );
    } else if name == "." || name == ".." || name.trim() != name {
        p.check(false, "name", name, "is not usable as a directory name");
    }
    // TOML integers are signed 64-bit: a larger seed could not be saved in recipe.toml.
    p.check(
        i64::try_from(recipe.seed).is_ok(),
        "seed",
        recipe.seed,
        "must be at most 9223372036854775807",
    );
    if let Err(why) = check_device(&recipe.device) {
        p.check(false, "device", &recipe.device, &why);
    }
}

/// The syntax `kiln_model::parse_device` accepts. Only the syntax: parsing constructs the device,
/// which for a GPU backend initialises it, and whether a backend is compiled in is the
/// binary's business (it reports that when it opens the device).
fn check_device(name: &str) -> Result<(), String> {
    match name.trim() {
        "flex" | "cpu" | "wgpu" | "cuda" => Ok(()),
        n => match n.strip_prefix("cuda:") {
            Some(i) if i.parse::<usize>().is_ok() => Ok(()),
            Some(_) => Err("expected cuda:N with N a GPU index".into()),
            None => Err("unknown device (expected flex, cpu, wgpu or cuda:N)".into()),
        },
    }
}

fn model(m: &ModelSection, rollout: &RolloutSection, p: &mut Problems) {
    let path = m.path.as_str();
    let as_path = Path::new(path);
    if path.trim().is_empty() {
        p.add("model.path", "model.path: must not be empty");
    } else if m.init == ModelInit::Random {
        // A from-scratch model takes its config (and tokenizer) from a local directory.
        if !as_path.is_dir() {
            p.check(
                false,
                "model.path",
                path,
                "init = \"random\" needs a local directory holding config.json (and the \
                 tokenizer), and this is not a directory",
            );
        } else if !as_path.join("config.json").is_file() {
            p.check(
                false,
                "model.path",
                path,
                "init = \"random\": the directory has no config.json",
            );
        }
    } else if !as_path.exists() && looks_local(path) {
        p.check(
            false,
            "model.path",
            path,
            &format!(
                "{} (expected a model directory, a .gguf file, `smollm2`, or a Hugging Face repo \
                 id org/name)",
                missing(path)
            ),
        );
    }
    if let Some(ctx) = m.max_context {
        p.check(
            ctx > rollout.max_new_tokens,
            "model.max_context",
            ctx,
            &format!(
                "must be larger than rollout.max_new_tokens = {} (room for the prompt)",
                rollout.max_new_tokens
            ),
        );
    }
}

/// Whether a model argument that does not exist is meant as a local path (mirrors
/// `kiln_model::hub::resolve`: `smollm2` and `org/name` repo ids are not paths).
fn looks_local(path: &str) -> bool {
    if path.eq_ignore_ascii_case("smollm2") {
        return false;
    }
    let repo_id = path.split('/').count() == 2
        && !path.starts_with('.')
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.ends_with(".gguf");
    if repo_id {
        return false;
    }
    path.contains('/') || path.contains('\\') || path.starts_with('.') || path.ends_with(".gguf")
}

fn task(key: &str, t: &TaskSection, p: &mut Problems) {
    p.positive(&format!("{key}.weight"), t.weight);
    p.check(
        t.format_score.is_finite(),
        &format!("{key}.format_score"),
        t.format_score,
        "must be finite",
    );
    p.non_negative(&format!("{key}.verifier_weight"), t.verifier_weight);
    p.check(
        t.math_answer == MathAnswer::Boxed || t.verifier == VerifierKind::Math,
        &format!("{key}.math_answer"),
        "lenient",
        "only applies to verifier = \"math\"",
    );
    if let Some(rm) = &t.reward_model {
        p.check(
            rm.weight.is_finite(),
            &format!("{key}.reward_model.weight"),
            rm.weight,
            "must be finite",
        );
        p.at_least(&format!("{key}.reward_model.batch_size"), rm.batch_size, 1);
        p.check(
            !rm.path.trim().is_empty(),
            &format!("{key}.reward_model.path"),
            &rm.path,
            "must name a reward model directory",
        );
    }
    data(&format!("{key}.train"), &t.train, p);
    if let Some(eval) = &t.eval {
        data(&format!("{key}.eval"), eval, p);
    }
    // A verifier needs the reference its data carries: Countdown (target and numbers), format
    // rules, or an answer. JSONL carries whatever reference the file has.
    for (part, spec) in [("train", Some(&t.train)), ("eval", t.eval.as_ref())] {
        let Some(spec) = spec else { continue };
        let Some(needed) = verifier_for_data(spec) else {
            continue;
        };
        if !needed.contains(&t.verifier) {
            let names: Vec<String> = needed.iter().map(|v| format!("{:?}", kebab(v))).collect();
            p.add(
                &format!("{key}.verifier"),
                format!(
                    "{key}.verifier = {:?}: does not score {key}.{part} of kind {:?} \
                     (it goes with verifier {})",
                    kebab(&t.verifier),
                    data_kind(spec),
                    names.join(" or ")
                ),
            );
        }
    }
}

/// The verifiers that can score data of this kind (None: any, JSONL).
fn verifier_for_data(spec: &DataSpec) -> Option<&'static [VerifierKind]> {
    match spec {
        DataSpec::Countdown { .. } | DataSpec::CountdownSynthetic { .. } => {
            Some(&[VerifierKind::Countdown])
        }
        DataSpec::Instructions { .. } => Some(&[VerifierKind::Instructions]),
        DataSpec::Arithmetic { .. } | DataSpec::Math { .. } | DataSpec::Gsm8k { .. } => {
            Some(&[VerifierKind::Math, VerifierKind::Gsm8k])
        }
        DataSpec::Jsonl { .. } => None,
    }
}

/// `[[schedule]]`: phases name known tasks, weigh something, and only the last is open-ended.
fn schedule(recipe: &Recipe, p: &mut Problems) {
    let n = recipe.schedule.len();
    for (i, phase) in recipe.schedule.iter().enumerate() {
        let key = format!("schedule[{i}]");
        match phase.steps {
            Some(steps) => p.at_least(&format!("{key}.steps"), steps, 1),
            None if i + 1 < n => p.add(
                &format!("{key}.steps"),
                format!("{key}.steps: required (only the last phase may run to the end)"),
            ),
            None => {}
        }
        for (task, w) in &phase.weights {
            if !recipe.tasks.contains_key(task) {
                let known: Vec<&str> = recipe.tasks.keys().map(String::as_str).collect();
                p.check(
                    false,
                    &format!("{key}.weights"),
                    task,
                    &format!("no such task (the recipe's tasks: {})", known.join(", ")),
                );
            }
            p.check(
                w.is_finite() && *w >= 0.0,
                &format!("{key}.weights.{task}"),
                w,
                "must be finite and >= 0",
            );
        }
        if !phase.weights.values().any(|w| *w > 0.0) {
            p.add(
                &format!("{key}.weights"),
                format!("{key}.weights: at least one task needs a weight > 0"),
            );
        }
    }
}

fn data(key: &str, spec: &DataSpec, p: &mut Problems) {
    let k = |field: &str| format!("{key}.{field}");
    let limit = |limit: &Option<usize>, p: &mut Problems| {
        if let Some(l) = *limit {
            p.at_least(&k("limit"), l, 1);
        }
    };
    match spec {
        DataSpec::Arithmetic {
            min_digits,
            max_digits,
            ops,
            count,
            stream,
            ..
        } => {
            p.check(
                (1..=9).contains(min_digits),
                &k("min_digits"),
                min_digits,
                "must be in 1..=9",
            );
            p.check(
                (1..=9).contains(max_digits),
                &k("max_digits"),
                max_digits,
                "must be in 1..=9",
            );
            if min_digits > max_digits {
                p.add(
                    &k("max_digits"),
                    format!(
                        "{} = {max_digits}: must be at least {} = {min_digits}",
                        k("max_digits"),
                        k("min_digits")
                    ),
                );
            }
            if ops.is_empty() {
                p.add(
                    &k("ops"),
                    format!(
                        "{}: must name at least one operator (\"+\", \"-\", \"*\", \"/\")",
                        k("ops")
                    ),
                );
            }
            generated(&k, stream, count, p);
        }
        DataSpec::CountdownSynthetic {
            generator,
            stream,
            count,
        } => {
            if let Err(e) = generator.validate() {
                p.add(&k("generator"), format!("{}: {e}", k("generator")));
            }
            generated(&k, stream, count, p);
        }
        DataSpec::Instructions {
            generator,
            stream,
            count,
        } => {
            if let Err(e) = generator.validate() {
                p.add(&k("generator"), format!("{}: {e}", k("generator")));
            }
            generated(&k, stream, count, p);
        }
        DataSpec::Countdown { path, limit: l, .. } | DataSpec::Gsm8k { path, limit: l, .. } => {
            if let Some(path) = path {
                p.exists(&k("path"), path);
            }
            limit(l, p);
        }
        DataSpec::Math {
            path,
            levels,
            limit: l,
            ..
        } => {
            if let Some(path) = path {
                p.exists(&k("path"), path);
            }
            if let Some(levels) = levels {
                if levels.is_empty() {
                    p.add(
                        &k("levels"),
                        format!(
                            "{}: must not be empty (omit it to keep all levels)",
                            k("levels")
                        ),
                    );
                }
                for level in levels {
                    p.check(
                        (1..=5).contains(level),
                        &k("levels"),
                        level,
                        "MATH levels are 1..=5",
                    );
                }
            }
            limit(l, p);
        }
        DataSpec::Jsonl {
            path,
            prompt_field,
            answer_field,
            limit: l,
        } => {
            p.exists(&k("path"), path);
            p.check(
                !prompt_field.is_empty(),
                &k("prompt_field"),
                prompt_field,
                "must not be empty",
            );
            p.check(
                !answer_field.is_empty(),
                &k("answer_field"),
                answer_field,
                "must not be empty",
            );
            limit(l, p);
        }
    }
}

/// A generator's `stream` label and `count`.
fn generated(
    k: &dyn Fn(&str) -> String,
    stream: &Option<String>,
    count: &Option<u64>,
    p: &mut Problems,
) {
    if let Some(c) = *count {
        p.check(c >= 1, &k("count"), c, "must be at least 1");
    }
    if let Some(s) = stream {
        p.check(!s.is_empty(), &k("stream"), s, "must not be empty");
    }
}

fn sft(s: &SftSection, recipe: &Recipe, p: &mut Problems) {
    p.at_least("sft.steps", s.steps, 1);
    p.at_least("sft.batch_size", s.batch_size, 1);
    if let Some(micro) = s.micro_batch_size {
        if micro == 0 {
            p.at_least("sft.micro_batch_size", micro, 1);
        } else if s.batch_size >= 1 && !s.batch_size.is_multiple_of(micro) {
            p.add(
                "sft.micro_batch_size",
                format!(
                    "sft.micro_batch_size = {micro} does not divide sft.batch_size = {}",
                    s.batch_size
                ),
            );
        }
    }
    p.positive("sft.lr", s.lr);
    if s.data.is_empty() {
        p.add("sft.data", "sft.data: needs at least one source");
    }
    for (i, data) in s.data.iter().enumerate() {
        let key = if s.data.len() == 1 {
            "sft.data".to_string()
        } else {
            format!("sft.data[{i}]")
        };
        sft_data(&key, data, recipe, p);
    }
}

fn sft_data(key: &str, data: &SftData, recipe: &Recipe, p: &mut Problems) {
    let k = |field: &str| format!("{key}.{field}");
    // Generated demonstrations come from a task's generator of the matching kind.
    let task_of_kind = |task: &str, wanted: &str, p: &mut Problems| match recipe.tasks.get(task) {
        None => {
            let known: Vec<&str> = recipe.tasks.keys().map(String::as_str).collect();
            p.check(
                false,
                &k("task"),
                task,
                &format!("no such task (the recipe's tasks: {})", known.join(", ")),
            );
        }
        Some(t) if data_kind(&t.train) != wanted => p.check(
            false,
            &k("task"),
            task,
            &format!(
                "these demonstrations need a task whose train data is of kind {wanted:?}, \
                 and tasks.{task}.train is of kind {:?}",
                data_kind(&t.train)
            ),
        ),
        Some(_) => {}
    };
    match data {
        SftData::Arithmetic {
            task,
            wrong_carry_fraction,
            ..
        } => {
            task_of_kind(task, "arithmetic", p);
            p.in_range(
                &k("wrong_carry_fraction"),
                *wrong_carry_fraction,
                0.0,
                1.0,
                false,
            );
        }
        SftData::Countdown { task } => task_of_kind(task, "countdown-synthetic", p),
        SftData::Instructions {
            task,
            wrong_count_fraction,
        } => {
            task_of_kind(task, "instructions", p);
            p.in_range(
                &k("wrong_count_fraction"),
                *wrong_count_fraction,
                0.0,
                1.0,
                false,
            );
        }
        SftData::Jsonl {
            path,
            prompt_field,
            response_field,
        } => {
            p.exists(&k("path"), path);
            p.check(
                !prompt_field.is_empty(),
                &k("prompt_field"),
                prompt_field,
                "must not be empty",
            );
            p.check(
                !response_field.is_empty(),
                &k("response_field"),
                response_field,
                "must not be empty",
            );
        }
    }
}

fn rollout(recipe: &Recipe, p: &mut Problems) {
    let r = &recipe.rollout;
    let advantage = recipe.algorithm.advantage;
    if advantage.is_group() && r.n < 2 {
        p.check(
            false,
            "rollout.n",
            r.n,
            &format!(
                "must be at least 2: algorithm.advantage = {:?} compares the responses of a group",
                kebab(&advantage)
            ),
        );
    } else {
        p.at_least("rollout.n", r.n, 1);
    }
    p.check(
        r.temperature.is_finite() && r.temperature > 0.0,
        "rollout.temperature",
        r.temperature,
        "must be > 0 (RL needs sampled responses; greedy decoding gives a group no variety)",
    );
    p.check(
        r.top_p > 0.0 && r.top_p <= 1.0,
        "rollout.top_p",
        r.top_p,
        "must be in (0, 1]",
    );
    p.in_range("rollout.min_p", r.min_p, 0.0, 1.0, true);
    p.at_least("rollout.max_new_tokens", r.max_new_tokens, 1);
    if let Some(m) = r.max_batch_tokens {
        p.at_least("rollout.max_batch_tokens", m, 1);
    }
    if r.stop.iter().any(String::is_empty) {
        p.add(
            "rollout.stop",
            "rollout.stop: a stop string must not be empty",
        );
    }
}

fn train(recipe: &Recipe, p: &mut Problems) {
    let t = &recipe.train;
    let n = recipe.rollout.n;
    p.at_least("train.steps", t.steps, 1);
    p.at_least("train.prompts_per_step", t.prompts_per_step, 1);
    p.at_least("train.ppo_epochs", t.ppo_epochs, 1);
    p.at_least("train.chunk_size", t.chunk_size, 1);
    p.at_least("train.max_consecutive_skips", t.max_consecutive_skips, 1);

    // Batch geometry, only when its inputs are sane (else the messages above say enough).
    let Some(batch) = t.prompts_per_step.checked_mul(n) else {
        p.add(
            "train.prompts_per_step",
            format!(
                "train.prompts_per_step = {} x rollout.n = {n}: the batch is too large",
                t.prompts_per_step
            ),
        );
        return;
    };
    if batch == 0 {
        return;
    }
    let mini = t.mini_batch_size.unwrap_or(batch);
    let batch_text = format!(
        "the batch of {} prompts x {n} responses = {batch}",
        t.prompts_per_step
    );
    if mini == 0 {
        p.at_least("train.mini_batch_size", mini, 1);
    } else if !batch.is_multiple_of(mini) {
        p.add(
            "train.mini_batch_size",
            format!("train.mini_batch_size = {mini} does not divide {batch_text}"),
        );
    }
    let micro = t.micro_batch_size;
    if micro == 0 {
        p.at_least("train.micro_batch_size", micro, 1);
    } else if mini != 0 && !mini.is_multiple_of(micro) {
        let of = match t.mini_batch_size {
            Some(_) => format!("train.mini_batch_size = {mini}"),
            None => format!("train.mini_batch_size (default: {batch_text})"),
        };
        p.add(
            "train.micro_batch_size",
            format!("train.micro_batch_size = {micro} does not divide {of}"),
        );
    }
}

fn algorithm(recipe: &Recipe, p: &mut Problems) {
    let a = &recipe.algorithm;
    p.in_range("algorithm.clip_low", a.clip_low, 0.0, 1.0, true);
    p.non_negative("algorithm.clip_high", a.clip_high);
    if let Some(c) = a.dual_clip {
        p.check(
            c.is_finite() && c > 1.0,
            "algorithm.dual_clip",
            c,
            "must be > 1 (omit it to turn dual clip off)",
        );
    }
    p.non_negative("algorithm.kl_loss_coef", a.kl_loss_coef);
    p.non_negative("algorithm.kl_reward_coef", a.kl_reward_coef);
    match a.entropy {
        EntropyReg::None => {}
        EntropyReg::Global { coef } => p.non_negative("algorithm.entropy.coef", coef),
        EntropyReg::TreK { k, coef } => {
            p.at_least("algorithm.entropy.k", k, 1);
            p.non_negative("algorithm.entropy.coef", coef);
        }
        EntropyReg::TreP {
            p: top_p,
            max_region,
            coef,
        } => {
            p.check(
                top_p > 0.0 && top_p <= 1.0,
                "algorithm.entropy.p",
                top_p,
                "must be in (0, 1]",
            );
            p.at_least("algorithm.entropy.max_region", max_region, 1);
            p.non_negative("algorithm.entropy.coef", coef);
        }
    }
    p.in_range("algorithm.gamma", a.gamma, 0.0, 1.0, false);
    p.in_range("algorithm.lam", a.lam, 0.0, 1.0, false);
    if a.gradient_surgery.is_some() && recipe.tasks.len() < 2 {
        p.add(
            "algorithm.gradient_surgery",
            format!(
                "algorithm.gradient_surgery projects the tasks' gradients against each other: it needs at least two tasks (each task is a domain), the recipe has {}",
                recipe.tasks.len()
            ),
        );
    }
}

fn optim(o: &OptimSection, p: &mut Problems) {
    p.positive("optim.lr", o.lr);
    p.in_range("optim.beta1", o.beta1, 0.0, 1.0, true);
    p.in_range("optim.beta2", o.beta2, 0.0, 1.0, true);
    p.positive("optim.eps", o.eps);
    p.non_negative("optim.weight_decay", o.weight_decay);
    if let Some(g) = o.max_grad_norm {
        p.positive("optim.max_grad_norm", g);
    }
    match o.schedule {
        LrSchedule::Constant | LrSchedule::LinearWarmup { .. } => {}
        LrSchedule::Cosine {
            warmup_steps,
            total_steps,
            min_lr_ratio,
        } => {
            p.at_least("optim.schedule.total_steps", total_steps, 1);
            p.check(
                warmup_steps <= total_steps,
                "optim.schedule.warmup_steps",
                warmup_steps,
                &format!("must be at most optim.schedule.total_steps = {total_steps}"),
            );
            p.in_range("optim.schedule.min_lr_ratio", min_lr_ratio, 0.0, 1.0, false);
        }
    }
}

/// ROSE: tree rollouts and their advantage; dynamic sampling.
fn rose(recipe: &Recipe, p: &mut Problems) {
    if let Some(tree) = &recipe.rollout.tree {
        p.in_range("rollout.tree.epsilon", tree.epsilon, 0.0, 1.0, false);
        if recipe.algorithm.advantage == AdvantageKind::Gae {
            p.add(
                "rollout.tree",
                "rollout.tree: tree rollouts need a group advantage (\"rose\", or \"grpo\" and the like), not \"gae\"",
            );
        }
    }
    if recipe.algorithm.advantage == AdvantageKind::Rose && recipe.rollout.tree.is_none() {
        p.add(
            "algorithm.advantage",
            "algorithm.advantage = \"rose\": segment advantages need tree rollouts; add rollout.tree = { epsilon = 0.5 }",
        );
    }
    let l = recipe.algorithm.rose.length_lambda;
    p.check(
        l.is_finite() && l >= 0.0,
        "algorithm.rose.length_lambda",
        l,
        "must be finite and >= 0",
    );
    p.at_least(
        "train.max_sampling_rounds",
        recipe.train.max_sampling_rounds,
        1,
    );
    if recipe.train.dynamic_sampling && !recipe.algorithm.advantage.is_group() {
        p.add(
            "train.dynamic_sampling",
            "train.dynamic_sampling: drops groups with equal rewards, so it needs a group advantage, not \"gae\"",
        );
    }
}

fn critic(recipe: &Recipe, p: &mut Problems) {
    let gae = recipe.algorithm.advantage == AdvantageKind::Gae;
    match (&recipe.critic, gae) {
        (None, true) => p.add(
            "critic",
            "critic: algorithm.advantage = \"gae\" needs a [critic] section (the value network)",
        ),
        (Some(_), false) => p.add(
            "critic",
            format!(
                "critic: a [critic] section is only used with algorithm.advantage = \"gae\" \
                 (this recipe uses {:?}); remove it",
                kebab(&recipe.algorithm.advantage)
            ),
        ),
        _ => {}
    }
    if let Some(c) = &recipe.critic {
        p.positive("critic.lr", c.lr);
        p.positive("critic.value_clip", c.value_clip);
    }
}

/// An enum's name as a recipe writes it (its serde form).
fn kebab<T: serde::Serialize>(value: &T) -> String {
    match toml::Value::try_from(value) {
        Ok(toml::Value::String(s)) => s,
        _ => String::from("?"),
    }
}

fn data_kind(spec: &DataSpec) -> &'static str {
    match spec {
        DataSpec::Arithmetic { .. } => "arithmetic",
        DataSpec::Countdown { .. } => "countdown",
        DataSpec::CountdownSynthetic { .. } => "countdown-synthetic",
        DataSpec::Instructions { .. } => "instructions",
        DataSpec::Math { .. } => "math",
        DataSpec::Gsm8k { .. } => "gsm8k",
        DataSpec::Jsonl { .. } => "jsonl",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_syntax() {
        for ok in ["flex", "cpu", "wgpu", "cuda", "cuda:0", "cuda:3"] {
            assert!(check_device(ok).is_ok(), "{ok}");
        }
        for bad in ["tpu", "cuda:x", "cuda:", "gpu", ""] {
            assert!(check_device(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_paths_versus_hub_names() {
        for local in ["./m", "../m", "/abs/m", "a/b/c", "m.gguf", "dir\\m"] {
            assert!(looks_local(local), "{local}");
        }
        for hub in ["smollm2", "SmolLM2", "Qwen/Qwen2.5-0.5B", "bare-name"] {
            assert!(!looks_local(hub), "{hub}");
        }
    }
}
