//! `kiln plot`: one metric of several runs on one chart (e.g. GRPO against ROSE, one line per
//! run and seed), from each run directory's metrics.jsonl.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use kiln_train::metrics::{PlotOptions, plot_series_with, read_metrics_jsonl};

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Run directories (each holds metrics.jsonl); a line each, named after the directory.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// The metric to draw, e.g. `eval/countdown/accuracy`.
    #[arg(long)]
    pub key: String,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Chart title (default: the key).
    #[arg(long)]
    pub title: Option<String>,
    /// Make the y axis cover [0, 1] (accuracies, pass@k).
    #[arg(long)]
    pub unit_range: bool,
}

pub fn run(args: &PlotArgs) -> anyhow::Result<()> {
    let mut series = Vec::new();
    for dir in &args.runs {
        let path = dir.join("metrics.jsonl");
        let records =
            read_metrics_jsonl(&path).with_context(|| format!("reading {}", path.display()))?;
        let points: Vec<(f64, f64)> = records
            .iter()
            .filter_map(|(step, m)| m.get(&args.key).map(|v| (*step as f64, *v)))
            .collect();
        if points.is_empty() {
            bail!("{} has no values of {:?}", path.display(), args.key);
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        series.push((name, points));
    }
    let title = args.title.clone().unwrap_or_else(|| args.key.clone());
    let mut options = PlotOptions::new(&title, &args.key);
    if args.unit_range {
        options.y_range = Some((0.0, 1.0));
    }
    let refs: Vec<(&str, &[(f64, f64)])> = series
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_slice()))
        .collect();
    plot_series_with(&args.out, &options, &refs)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
