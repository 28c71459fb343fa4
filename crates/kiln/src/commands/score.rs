//! `kiln score`: score a JSONL file of responses with a built-in verifier, one verdict per line.
//! All the logic lives in `kiln_reward::jsonl`; this is argument handling only.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use kiln_reward::Task;
use kiln_reward::jsonl::{ScoreOptions, score_jsonl};

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// Task: countdown ({response, target, nums}), math or gsm8k ({response, reference}), or
    /// instructions ({response, reference: ["words 3", "case upper", ...]}).
    #[arg(long)]
    pub task: Task,
    /// Input JSONL file, one record per line.
    #[arg(long)]
    pub input: PathBuf,
    /// Output JSONL file (default: stdout). Each line: {line, score, correct, parts, extracted, error}.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Countdown: the score of a well-formed but wrong answer (TinyZero: 0.1; TRE recipes: 0).
    #[arg(long, default_value_t = 0.1)]
    pub format_score: f64,
}

pub fn run(args: &ScoreArgs) -> anyhow::Result<()> {
    let input =
        File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
    let opts = ScoreOptions {
        format_score: args.format_score,
        ..ScoreOptions::default()
    };
    let out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(out);
    let summary = score_jsonl(args.task, &opts, BufReader::new(input), &mut out)
        .with_context(|| format!("scoring {}", args.input.display()))?;
    out.flush()?;
    eprintln!(
        "{} records: mean score {:.4}, {} correct ({:.1}%), {} with a recorded reason",
        summary.records,
        summary.mean_score,
        summary.correct,
        100.0 * summary.correct as f64 / summary.records.max(1) as f64,
        summary.errors
    );
    Ok(())
}
