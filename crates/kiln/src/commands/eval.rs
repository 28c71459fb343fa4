//! `kiln eval`: held-out accuracy of a model on a built-in task (greedy by default).

use std::collections::BTreeMap;

use anyhow::Context;
use clap::{Args, ValueEnum};
use kiln_data::{CountdownTemplate, MathTemplate};
use kiln_model::{Model, parse_device};
use kiln_rollout::{Engine, SamplingParams};
use kiln_train::eval::evaluate;
use kiln_train::recipe::{DataSpec, Recipe, Split, TaskSection, VerifierKind};
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

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model: a .gguf file, a Hugging Face directory (e.g. runs/quickstart/final), `smollm2`, or
    /// a HF repo id.
    #[arg(long)]
    pub model: String,
    #[arg(long, value_enum)]
    pub task: EvalTask,
    /// Problems to evaluate (the first N of the set).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Prompt template.
    #[arg(long, value_enum, default_value = "chat")]
    pub template: TemplateArg,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    /// `flex` (CPU), `wgpu`, `cuda:N`.
    #[arg(long, default_value = "flex")]
    pub device: String,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object instead of a table.
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
                limit: Some(args.limit),
            },
        ),
        EvalTask::Gsm8k => (
            VerifierKind::Gsm8k,
            DataSpec::Gsm8k {
                split: Split::Test,
                path: None,
                template: math_t,
                limit: Some(args.limit),
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
                limit: Some(args.limit),
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
                count: Some(args.limit as u64),
            },
        ),
    };
    let mut recipe: Recipe = toml::from_str(&format!(
        "name = \"eval\"\nseed = {}\n[model]\npath = {:?}\n[tasks]\n",
        args.seed, args.model
    ))?;
    recipe.eval.limit = args.limit;
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
        },
    )]);
    Ok(recipe)
}

pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let recipe = recipe_for(args)?;
    let tasks = TaskSet::from_recipe(&recipe)?;
    let device = parse_device(&args.device)?;
    let model =
        Model::load(&args.model, &device).with_context(|| format!("loading {}", args.model))?;
    let engine = Engine::from_model(&model);
    let params = SamplingParams {
        n: 1,
        temperature: args.temperature,
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        ..SamplingParams::default()
    };
    let task = &tasks.tasks[0];
    let t0 = std::time::Instant::now();
    let r = evaluate(
        &engine,
        &format!("{:?}", args.task).to_lowercase(),
        &task.eval,
        task.verifier.as_ref(),
        &params,
        false,
    )?;
    let secs = t0.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": args.model,
                "task": r.task,
                "problems": r.problems,
                "correct": r.correct,
                "accuracy": r.accuracy(),
                "mean_reward": r.mean_reward,
                "mean_response_tokens": r.mean_response_tokens,
                "seconds": secs,
            })
        );
    } else {
        println!("| model | task | problems | accuracy | mean response tokens |");
        println!("|---|---|---|---|---|");
        println!(
            "| {} | {} | {} | {:.1}% | {:.1} |",
            args.model,
            r.task,
            r.problems,
            100.0 * r.accuracy(),
            r.mean_response_tokens
        );
    }
    Ok(())
}
