//! `kiln eval`: held-out accuracy of a model on a built-in task (greedy by default).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use kiln_data::{CountdownTemplate, MathTemplate};
use kiln_model::{Model, parse_device};
use kiln_rollout::{Engine, SamplingParams};
use kiln_train::harness::{HarnessParams, run_harness};
use kiln_train::recipe::{DataSpec, MathAnswer, Recipe, Split, TaskSection, VerifierKind};
use kiln_train::tasks::TaskSet;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EvalTask {
    /// MATH-500 (boxed answers).
    Math500,
    /// Countdown test split (TinyZero).
    Countdown,
    /// GSM8K test split.
    Gsm8k,
    /// Synthetic 2-digit additions (with `--template terse`: the quickstart's held-out set).
    Arithmetic,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TemplateArg {
    /// Chat messages through the model's chat template.
    Chat,
    /// Raw text ("Question: ...\nAnswer:" for math; TinyZero's base text for Countdown).
    Base,
    /// The bare expression "47 + 38 =" (arithmetic only; the quickstart's format).
    Terse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AnswerArg {
    Boxed,
    Lenient,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model: a .gguf file, a Hugging Face directory (e.g. runs/quickstart/final), `smollm2`, or
    /// a HF repo id.
    #[arg(long)]
    pub model: String,
    #[arg(long, value_enum)]
    pub task: EvalTask,
    /// Problems to evaluate (the first N of the set; default: all of it, 200 for arithmetic).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Prompt template.
    #[arg(long, value_enum, default_value = "chat")]
    pub template: TemplateArg,
    /// Samples per problem for pass@k and maj@k (k = N); 0: greedy pass@1 only.
    #[arg(long, default_value_t = 0)]
    pub n: usize,
    /// Temperature of the N samples (greedy pass@1 is always temperature 0).
    #[arg(long, default_value_t = 0.6)]
    pub temperature: f32,
    /// Nucleus mass of the N samples.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    /// MATH-500: how an answer is read. `boxed`: the last \boxed{} (verl's rule, as in
    /// training); `lenient`: a box, else "the answer is X", else the last number (for models
    /// never taught to box; results go to a separate file).
    #[arg(long, value_enum, default_value = "boxed")]
    pub answer: AnswerArg,
    /// `flex` (CPU), `wgpu`, `cuda:N`.
    #[arg(long, default_value = "flex")]
    pub device: String,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Results file (JSONL, one finished problem per line): a stopped run continues from it
    /// (default: runs/eval/<model>-<task>-<template>.jsonl).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Discard earlier results in the results file.
    #[arg(long)]
    pub fresh: bool,
    /// Problems per engine call (the samples depend on it, so a results file keeps it).
    #[arg(long, default_value_t = 32)]
    pub chunk: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print one JSON object (the report) instead of Markdown tables.
    #[arg(long)]
    pub json: bool,
}

fn recipe_for(args: &EvalArgs) -> anyhow::Result<Recipe> {
    let math_t = match args.template {
        TemplateArg::Chat => MathTemplate::Chat,
        TemplateArg::Base => MathTemplate::Base,
        TemplateArg::Terse => MathTemplate::Terse,
    };
    let (verifier, eval) = match args.task {
        EvalTask::Math500 => (
            VerifierKind::Math,
            DataSpec::Math {
                split: Split::Test,
                path: None,
                template: math_t,
                levels: None,
                limit: args.limit,
            },
        ),
        EvalTask::Gsm8k => (
            VerifierKind::Gsm8k,
            DataSpec::Gsm8k {
                split: Split::Test,
                path: None,
                template: math_t,
                limit: args.limit,
            },
        ),
        EvalTask::Countdown => (
            VerifierKind::Countdown,
            DataSpec::Countdown {
                split: Split::Test,
                path: None,
                template: match args.template {
                    TemplateArg::Chat => CountdownTemplate::Chat,
                    TemplateArg::Base | TemplateArg::Terse => CountdownTemplate::Base,
                },
                limit: args.limit,
            },
        ),
        EvalTask::Arithmetic => (
            VerifierKind::Gsm8k,
            DataSpec::Arithmetic {
                min_digits: 2,
                max_digits: 2,
                ops: vec![kiln_data::ArithOp::Add],
                allow_negative: false,
                template: math_t,
                stream: Some("kiln-train/arithmetic/eval".into()),
                count: Some(args.limit.unwrap_or(200) as u64),
            },
        ),
    };
    let mut recipe: Recipe = toml::from_str(&format!(
        "name = \"eval\"\nseed = {}\n[model]\npath = {:?}\n[tasks]\n",
        args.seed, args.model
    ))?;
    recipe.eval.limit = args.limit.unwrap_or(usize::MAX);
    recipe.tasks = BTreeMap::from([(
        "eval".to_string(),
        TaskSection {
            weight: 1.0,
            verifier,
            format_score: 0.1,
            train: eval.clone(),
            eval: Some(eval),
            verifier_weight: 1.0,
            reward_model: None,
            math_answer: match args.answer {
                AnswerArg::Boxed => MathAnswer::Boxed,
                AnswerArg::Lenient => MathAnswer::Lenient,
            },
        },
    )]);
    Ok(recipe)
}

/// The settings that make two runs' per-problem results interchangeable (the results file's
/// header): a change in any of them starts a new file.
fn settings(args: &EvalArgs) -> serde_json::Value {
    let mut settings = serde_json::json!({
        "model": args.model,
        "task": format!("{:?}", args.task).to_lowercase(),
        "template": format!("{:?}", args.template).to_lowercase(),
        "max_new_tokens": args.max_new_tokens,
        "n": args.n,
        // As written on the command line (f32 -> f64 would print 0.6000000238418579).
        "temperature": args.temperature.to_string(),
        "top_p": args.top_p.to_string(),
        "seed": args.seed,
        "chunk": args.chunk,
    });
    // Only when lenient, so that results files made before the option stay valid.
    if args.answer == AnswerArg::Lenient {
        settings["answer"] = "lenient".into();
    }
    settings
}

fn default_out(args: &EvalArgs) -> PathBuf {
    let slug: String = args
        .model
        .trim_end_matches('/')
        .rsplit('/')
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    PathBuf::from("runs/eval").join(format!(
        "{slug}-{}-{}{}.jsonl",
        format!("{:?}", args.task).to_lowercase(),
        format!("{:?}", args.template).to_lowercase(),
        if args.answer == AnswerArg::Lenient {
            "-lenient"
        } else {
            ""
        }
    ))
}

pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    if args.n > 0 && (args.temperature.is_nan() || args.temperature <= 0.0) {
        anyhow::bail!(
            "--n {} samples need --temperature > 0 (greedy pass@1 is always computed)",
            args.n
        );
    }
    if args.answer == AnswerArg::Lenient && !matches!(args.task, EvalTask::Math500) {
        anyhow::bail!("--answer lenient applies to --task math500 only");
    }
    if args.limit == Some(0) {
        anyhow::bail!("--limit 0 evaluates nothing: give at least 1 (or leave it out for all)");
    }
    let recipe = recipe_for(args)?;
    let tasks = TaskSet::from_recipe(&recipe)?;
    let device = parse_device(&args.device)?;
    let model =
        Model::load(&args.model, &device).with_context(|| format!("loading {}", args.model))?;
    let engine = Engine::from_model(&model);
    let greedy = SamplingParams {
        n: 1,
        temperature: 0.0,
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        ..SamplingParams::default()
    };
    let params = HarnessParams {
        sampled: SamplingParams {
            n: args.n,
            temperature: args.temperature,
            top_p: args.top_p,
            ..greedy.clone()
        },
        greedy,
        include_stop: false,
        chunk: args.chunk,
    };
    let out = args.out.clone().unwrap_or_else(|| default_out(args));
    if args.fresh && out.exists() {
        std::fs::remove_file(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    let task = &tasks.tasks[0];
    let name = format!("{:?}", args.task).to_lowercase();
    let settings = settings(args);
    let report = run_harness(
        &engine,
        &name,
        &task.eval,
        task.verifier.as_ref(),
        &params,
        Some((&out, &settings)),
        !args.quiet,
    )?;
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["model"] = serde_json::json!(args.model);
        v["results"] = serde_json::json!(out);
        println!("{v}");
    } else {
        print!("{}", report.markdown(&args.model));
    }
    eprintln!(
        "{} problems ({} answered now, {:.0} s); per-problem results: {}",
        report.overall.problems,
        report.answered_now,
        report.seconds,
        out.display()
    );
    Ok(())
}
