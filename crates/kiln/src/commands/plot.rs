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
    /// Draw the mean of each point and the N - 1 before it (noisy per-step metrics such as
    /// `reward/mean`); 1 draws the raw values.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub smooth: u64,
}

/// The trailing mean over `window` points (the first points average what there is).
fn smoothed(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    (0..points.len())
        .map(|i| {
            let from = (i + 1).saturating_sub(window);
            let part = &points[from..=i];
            let mean = part.iter().map(|p| p.1).sum::<f64>() / part.len() as f64;
            (points[i].0, mean)
        })
        .collect()
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
        series.push((name, smoothed(&points, args.smooth as usize)));
    }
    let title = args.title.clone().unwrap_or_else(|| match args.smooth {
        1 => args.key.clone(),
        n => format!("{} (mean of the last {n} steps)", args.key),
    });
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

#[cfg(test)]
mod tests {
    use super::smoothed;

    #[test]
    fn trailing_mean_by_hand() {
        let p = [(1.0, 2.0), (2.0, 4.0), (3.0, 9.0)];
        assert_eq!(smoothed(&p, 2), vec![(1.0, 2.0), (2.0, 3.0), (3.0, 6.5)]);
        assert_eq!(smoothed(&p, 1), p.to_vec());
    }
}
