//! `kiln train` and `kiln sft`: run a recipe.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use kiln_train::fault::FaultPlan;
use kiln_train::recipe::load_recipe;
use kiln_train::{RunOptions, Trainer, run_dir_of, sft_only};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Recipe file (TOML), e.g. recipes/quickstart.toml.
    pub recipe: PathBuf,
    /// Override a recipe key: `--set optim.lr=2e-6 --set rollout.n=4` (values are TOML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue the run in the run directory from its newest valid checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Run directory (default: the recipe's logging.run_dir, else runs/<name>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// No progress bar or per-step lines (metrics still go to the run directory).
    #[arg(long)]
    pub quiet: bool,
}

fn options(args: &TrainArgs) -> anyhow::Result<RunOptions> {
    Ok(RunOptions {
        run_dir: args.run_dir.clone(),
        resume: args.resume,
        progress: !args.quiet,
        stop_after: None,
        // Fault injection for the reliability tests (docs/reliability.md); unset in normal use.
        faults: FaultPlan::from_env()?,
    })
}

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let recipe = load_recipe(&args.recipe, &args.set)?;
    let opts = options(args)?;
    let dir = run_dir_of(&recipe, &opts);
    eprintln!("kiln train {} -> {}", recipe.name, dir.display());
    let mut trainer = Trainer::new(recipe, opts)?;
    let last = trainer.run()?;
    let out = trainer.run_dir.join("final");
    trainer
        .export(&out)
        .with_context(|| format!("exporting the policy to {}", out.display()))?;
    let accuracy: Vec<String> = last
        .iter()
        .filter(|(k, _)| k.starts_with("eval/") && k.ends_with("/accuracy"))
        .map(|(k, v)| format!("{k} = {:.1}%", 100.0 * v))
        .collect();
    eprintln!(
        "done: {} steps; {}\nrun directory: {} (metrics.jsonl, plots/, tb/, checkpoints/, final/)",
        trainer.step,
        if accuracy.is_empty() {
            "no eval sets".to_string()
        } else {
            accuracy.join(", ")
        },
        trainer.run_dir.display()
    );
    Ok(())
}

pub fn run_sft(args: &TrainArgs) -> anyhow::Result<()> {
    let recipe = load_recipe(&args.recipe, &args.set)?;
    let out = sft_only(recipe, options(args)?)?;
    eprintln!("SFT done: the policy is in {}", out.display());
    Ok(())
}
