//! The `kiln` command line. Each subcommand lives in `commands/`; this file only dispatches.

mod commands;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc. A training step frees and allocates gigabytes of
/// activations; glibc hands large blocks back to the OS (munmap) at once, so every step faulted
/// them in again and the kernel zeroed each page: a quarter of a SmolLM2 step in `perf`, ~10%
/// of a decode step (docs/benchmarks.md). See [`keep_freed_memory`].
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, `mi_option_e`), which `libmimalloc-sys`
/// does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to return freed memory to the OS (purge delay -1). With its default
/// (10 ms), or even 1 s, a training step took longer than with glibc. Resident memory stays at
/// the run's peak instead, which a training or rollout loop needs again at its next step
/// anyway. mimalloc's own `MIMALLOC_PURGE_DELAY` (milliseconds) still wins when set.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets one integer option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[derive(Parser, Debug)]
#[command(name = "kiln", version, about = "RL post-training for LLM reasoning", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a recipe: optional SFT warm-up, then RL, into a run directory.
    Train(commands::train::TrainArgs),
    /// Run only a recipe's [sft] stage and write the policy as a Hugging Face directory.
    Sft(commands::train::TrainArgs),
    /// Train a reward model on preference pairs (Bradley-Terry loss).
    ///
    /// Writes a Hugging Face `*ForSequenceClassification` directory that a recipe's
    /// `tasks.<name>.reward_model` can use (docs/reward-models.md).
    RmTrain(commands::rm_train::RmTrainArgs),
    /// Benchmark a model on MATH-500, Countdown, GSM8K or arithmetic: pass@1, pass@k, maj@k.
    Eval(commands::eval::EvalArgs),
    /// Generate from a model: one prompt (streamed) or a JSONL file of prompts.
    Generate(commands::generate::GenerateArgs),
    /// Write a model as a Hugging Face directory (config.json, model.safetensors, tokenizer).
    Export(commands::export::ExportArgs),
    /// Measure speed and memory.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
    /// Score responses with a verifier (countdown, math, gsm8k): one JSON verdict per line.
    Score(commands::score::ScoreArgs),
    /// Fetch SmolLM2-135M-Instruct (GGUF) into kiln's cache and print its path.
    FetchModel,
    /// Draw one metric of several runs on one chart (a PNG).
    Plot(commands::plot::PlotArgs),
}

fn main() {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => commands::train::run(&args),
        Command::Sft(args) => commands::train::run_sft(&args),
        Command::RmTrain(args) => commands::rm_train::run(&args),
        Command::Eval(args) => commands::eval::run(&args),
        Command::Generate(args) => commands::generate::run(&args),
        Command::Export(args) => commands::export::run(&args),
        Command::Bench(cmd) => commands::bench::run(&cmd),
        Command::Score(args) => commands::score::run(&args),
        Command::Plot(args) => commands::plot::run(&args),
        Command::FetchModel => kiln_model::hub::smollm2_gguf()
            .map(|p| println!("{}", p.display()))
            .map_err(Into::into),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
