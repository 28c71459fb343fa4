use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use kiln_model::{Model, parse_device};
use kiln_train::checkpoint;
use kiln_train::recipe::from_toml_str;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Model to export: a .gguf file, a Hugging Face directory, `smollm2`, or a HF repo id.
    #[arg(long, conflicts_with = "run", required_unless_present = "run")]
    pub model: Option<String>,
    /// A run directory: export the policy of its newest valid checkpoint (or of `--step`).
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// With `--run`: the checkpoint after this many RL steps.
    #[arg(long, requires = "run")]
    pub step: Option<usize>,
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

fn load_run(run: &Path, step: Option<usize>) -> anyhow::Result<Model> {
    let recipe_path = run.join("recipe.toml");
    let text = std::fs::read_to_string(&recipe_path)
        .with_context(|| format!("reading {}", recipe_path.display()))?;
    let recipe = from_toml_str(&text, &recipe_path.display().to_string())?;
    let root = run.join("checkpoints");
    let dir = match step {
        Some(s) => {
            let dir = root.join(checkpoint::dir_name(s));
            checkpoint::verify(&dir)?;
            dir
        }
        None => match checkpoint::latest_valid(&root) {
            Some((dir, _)) => dir,
            None => bail!("{} has no valid checkpoint", root.display()),
        },
    };
    let device = parse_device(&recipe.device)?;
    let mut model = kiln_train::load_policy(&recipe, &device)?;
    model.net = checkpoint::load_module(model.net, &dir.join("policy.bpk"))?;
    eprintln!("policy of {}", dir.display());
    Ok(model)
}

pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let model = match (&args.model, &args.run) {
        (_, Some(run)) => load_run(run, args.step)?,
        (Some(m), None) => {
            let device = parse_device("flex")?;
            Model::load(m, &device).with_context(|| format!("loading {m}"))?
        }
        (None, None) => bail!("give --model or --run"),
    };
    model
        .save_hf(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
