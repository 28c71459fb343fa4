//! `kiln rm-train`: train a reward model on preference pairs (Bradley-Terry).

use std::path::PathBuf;

use clap::Args;
use kiln_train::rm_train::{RmOptions, RmRecipe, train_reward_model};

#[derive(Args, Debug)]
pub struct RmTrainArgs {
    /// Reward-model recipe (TOML), e.g. recipes/rm-instructions.toml.
    pub recipe: PathBuf,
    /// Override a recipe key: `--set train.steps=100` (values are TOML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Replace an earlier run in the output directory.
    #[arg(long)]
    pub overwrite: bool,
    /// No progress bar or evaluation lines.
    #[arg(long)]
    pub quiet: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &RmTrainArgs) -> anyhow::Result<()> {
    let recipe = RmRecipe::load(&args.recipe, &args.set)?;
    eprintln!(
        "kiln rm-train {} -> {}",
        recipe.name,
        recipe.run_dir().display()
    );
    let report = train_reward_model(
        &recipe,
        &RmOptions {
            progress: !args.quiet,
            overwrite: args.overwrite,
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    eprintln!(
        "done: {} steps in {:.0} s; held-out pair accuracy {:.1}% (was {:.1}%), loss {:.4}\nreward model: {}",
        report.steps,
        report.seconds,
        100.0 * report.eval_accuracy,
        100.0 * report.initial_eval_accuracy,
        report.eval_loss,
        report.model_dir.display()
    );
    if !report.eval_accuracy_by_group.is_empty() {
        let parts: Vec<String> = report
            .eval_accuracy_by_group
            .iter()
            .map(|(g, a)| format!("{g} {:.1}%", 100.0 * a))
            .collect();
        eprintln!("held-out accuracy by kind of pair: {}", parts.join(", "));
    }
    Ok(())
}
