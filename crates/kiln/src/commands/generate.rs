//! `kiln generate`: one prompt (streamed, or one JSON object) or a JSONL file of prompts.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use kiln_model::{ChatMessage, Model, parse_device};
use kiln_rollout::jsonl::{JsonlOptions, generate_jsonl};
use kiln_rollout::{Engine, SamplingParams};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Model: a Hugging Face directory, a .gguf file, `smollm2`, or a HF repo id.
    #[arg(long)]
    pub model: String,
    /// The prompt text (or use --input for a file of prompts).
    #[arg(long, required_unless_present = "input", conflicts_with = "input")]
    pub prompt: Option<String>,
    /// Batch mode: a JSONL file, one object per line with `prompt`, `messages` or `prompt_ids`
    /// (and an optional `id`); one JSON line per sample is written to --output.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Batch mode output file (default: stdout).
    #[arg(long, requires = "input")]
    pub output: Option<PathBuf>,
    /// Wrap prompt text as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Greedy decoding (the same as --temperature 0, the default).
    #[arg(long, conflicts_with = "temperature")]
    pub greedy: bool,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of tokens with this much probability, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Drop tokens below this fraction of the most likely token's probability.
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Samples per prompt.
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    /// Stop when the text contains this string (repeatable); the string is trimmed.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Random seed (each sample has its own stream derived from it).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Single prompt: print one JSON object with prompt_ids, generated_ids, text, logprobs.
    #[arg(long)]
    pub json: bool,
    /// Device: flex (CPU), wgpu, cuda:N.
    #[arg(long, default_value = "flex")]
    pub device: String,
}

pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    if args.max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1");
    }
    let params = SamplingParams {
        n: args.n,
        temperature: if args.greedy { 0.0 } else { args.temperature },
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        max_new_tokens: args.max_new_tokens,
        stop_strings: args.stop.clone(),
        seed: args.seed,
        ..SamplingParams::default()
    };
    params.validate()?;
    let device = parse_device(&args.device)?;
    let model =
        Model::load(&args.model, &device).with_context(|| format!("loading {}", args.model))?;
    let engine = Engine::from_model(&model);

    if let Some(input) = &args.input {
        let reader = BufReader::new(
            File::open(input).with_context(|| format!("opening {}", input.display()))?,
        );
        let out: Box<dyn Write> = match &args.output {
            Some(p) => Box::new(BufWriter::new(
                File::create(p).with_context(|| format!("creating {}", p.display()))?,
            )),
            None => Box::new(std::io::stdout().lock()),
        };
        let opts = JsonlOptions {
            chat: args.chat,
            ..JsonlOptions::default()
        };
        let summary = generate_jsonl(&engine, &params, &opts, reader, out)
            .with_context(|| format!("generating from {}", input.display()))?;
        eprintln!(
            "{} prompts, {} samples, {} new tokens",
            summary.prompts, summary.rollouts, summary.new_tokens
        );
        return Ok(());
    }

    let prompt = args.prompt.as_deref().unwrap_or_default();
    let tok = &model.tokenizer;
    let prompt_ids = if args.chat {
        tok.encode_chat(&[ChatMessage::new("user", prompt)], true)?
    } else {
        tok.encode(prompt, true)?
    };
    // Stream the first sample's text as it is produced (byte-level BPE tokens may split a
    // character: print only what a decode of everything so far adds).
    let stream = !args.json;
    let (mut so_far, mut printed) = (Vec::new(), String::new());
    let groups = engine.generate_with(&[prompt_ids], &params, &mut |e| {
        if stream && e.sample_index == 0 {
            so_far.push(e.token);
            if let Ok(text) = tok.decode(&so_far, true)
                && text.len() > printed.len()
                && text.starts_with(&printed)
            {
                print!("{}", &text[printed.len()..]);
                std::io::stdout().flush().ok();
                printed = text;
            }
        }
    })?;
    let group = &groups[0];
    for (i, r) in group.rollouts.iter().enumerate() {
        let text = match &r.text {
            Some(t) => t.clone(),
            None => tok.decode(&r.response_ids, true)?,
        };
        if args.json {
            let obj = serde_json::json!({
                "prompt_ids": group.prompt_ids,
                "generated_ids": r.response_ids,
                "text": text,
                "logprobs": r.logprobs,
                "sample": i,
            });
            println!("{obj}");
        } else if i == 0 {
            println!();
        } else {
            println!("--- sample {i} ---\n{text}");
        }
    }
    Ok(())
}
