use std::io::Write;

use anyhow::{Context, bail};
use clap::Args;
use kiln_model::{ChatMessage, Model, generate::greedy, parse_device};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Model: a Hugging Face directory, a .gguf file, `smollm2`, or a HF repo id.
    #[arg(long)]
    pub model: String,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Greedy decoding (the only mode until the rollout engine lands; accepted for clarity).
    #[arg(long)]
    pub greedy: bool,
    /// Print one JSON object: prompt_ids, generated_ids, text, logprobs.
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
    let device = parse_device(&args.device)?;
    let model =
        Model::load(&args.model, &device).with_context(|| format!("loading {}", args.model))?;
    let tok = &model.tokenizer;
    let prompt_ids = if args.chat {
        tok.encode_chat(&[ChatMessage::new("user", &args.prompt)], true)?
    } else {
        tok.encode(&args.prompt, true)?
    };
    let stream = !args.json;
    let mut printed = String::new();
    let mut so_far = Vec::new();
    let out = greedy(
        &model.net,
        &model.rope,
        &prompt_ids,
        args.max_new_tokens,
        &tok.eos_ids,
        model.config.max_position_embeddings,
        |t| {
            if stream {
                // Decode the whole text so far and print what is new: byte-level BPE tokens
                // may split a character, which only a longer decode completes.
                so_far.push(t);
                if let Ok(text) = tok.decode(&so_far, true)
                    && text.len() > printed.len()
                    && text.starts_with(&printed)
                {
                    print!("{}", &text[printed.len()..]);
                    std::io::stdout().flush().ok();
                    printed = text;
                }
            }
        },
    )?;
    let text = tok.decode(&out.generated_ids, true)?;
    if args.json {
        let obj = serde_json::json!({
            "prompt_ids": out.prompt_ids,
            "generated_ids": out.generated_ids,
            "text": text,
            "logprobs": out.logprobs,
        });
        println!("{obj}");
    } else {
        if text.len() > printed.len() && text.starts_with(&printed) {
            print!("{}", &text[printed.len()..]);
        }
        println!();
    }
    Ok(())
}
