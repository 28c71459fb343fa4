use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use kiln_model::{Model, parse_device};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Model to export: a .gguf file, a Hugging Face directory, `smollm2`, or a HF repo id.
    #[arg(long)]
    pub model: String,
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let device = parse_device("flex")?;
    let model =
        Model::load(&args.model, &device).with_context(|| format!("loading {}", args.model))?;
    model
        .save_hf(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
