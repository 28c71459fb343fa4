//! Supervised warm-up: cross-entropy on the response tokens of demonstrations (token mean over
//! each batch), so a small model learns a task's format before RL. The result is kept in
//! `<run>/sft/policy.bpk`; a resumed run reloads it instead of training again.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use burn::optim::GradientsParams;
use indicatif::ProgressBar;
use kiln_data::{ArithOp, Prompt, derive_seed};
use kiln_model::Model;
use kiln_optim::hook::{NamedParams, accumulate};
use kiln_optim::{AdamWSettings, ChunkOptions, LrSchedule, Optimizer};
use rand::{Rng, SeedableRng};

use crate::checkpoint;
use crate::error::{Result, TrainError};
use crate::eval::encode_prompt;
use crate::metrics::MetricsSink;
use crate::policy::{SeqBatch, sft_grads};
use crate::recipe::{DemoFormat, Recipe, SftData, SftSection};
use crate::tasks::{TaskSet, arithmetic_generator, countdown_generator, instruction_generator};
use crate::trainer::RunOptions;

/// One demonstration.
#[derive(Debug, Clone)]
pub struct Demo {
    pub prompt: Prompt,
    pub response: String,
}

/// The demonstrations of a recipe: `get(i)` is demonstration `i` (deterministic), taken from
/// the sources in turn (source `i mod len`, its item `i / len`).
pub struct Demos {
    sources: Vec<DemoSource>,
}

/// One source of demonstrations.
pub enum DemoSource {
    /// Drawn from an arithmetic generator (unbounded).
    Arithmetic {
        generator: kiln_data::ArithmeticGenerator,
        wrong_carry_fraction: f64,
        format: DemoFormat,
        seed: u64,
    },
    /// Countdown instances answered with the generator's solution (unbounded).
    Countdown(kiln_data::CountdownGenerator),
    /// Instructions answered as asked, a fraction of the long ones one word short (unbounded).
    Instructions {
        generator: kiln_data::InstructionGenerator,
        wrong_count_fraction: f64,
        seed: u64,
    },
    /// Loaded from a file (cycled).
    List(Vec<Demo>),
}

impl Demos {
    pub fn from_recipe(recipe: &Recipe, sft: &SftSection, tasks: &TaskSet) -> Result<Self> {
        let sources = sft
            .data
            .iter()
            .map(|data| DemoSource::from_spec(recipe, data, tasks))
            .collect::<Result<Vec<_>>>()?;
        if sources.is_empty() {
            return Err(TrainError::recipe("sft.data", "needs at least one source"));
        }
        Ok(Self { sources })
    }

    /// Demonstration `i`.
    pub fn get(&self, i: u64) -> Result<Demo> {
        let n = self.sources.len() as u64;
        self.sources[(i % n) as usize].get(i / n)
    }
}

impl DemoSource {
    fn from_spec(recipe: &Recipe, data: &SftData, tasks: &TaskSet) -> Result<Self> {
        let train_spec = |task: &str| {
            tasks
                .index_of(task)
                .map(|i| &tasks.tasks[i].section.train)
                .ok_or_else(|| TrainError::recipe("sft.data.task", format!("no task `{task}`")))
        };
        let wrong_kind = |task: &str, kind: &str| {
            TrainError::recipe(
                "sft.data.task",
                format!("task `{task}` is not of kind {kind}"),
            )
        };
        let noise_seed =
            |task: &str| derive_seed(recipe.seed, &format!("kiln-train/sft/noise/{task}"));
        match data {
            SftData::Arithmetic {
                task,
                wrong_carry_fraction,
                format,
            } => {
                let generator = arithmetic_generator(train_spec(task)?, task, recipe.seed, "sft")
                    .ok_or_else(|| wrong_kind(task, "arithmetic"))?;
                Ok(Self::Arithmetic {
                    generator,
                    wrong_carry_fraction: *wrong_carry_fraction,
                    format: *format,
                    seed: derive_seed(recipe.seed, "kiln-train/sft/noise"),
                })
            }
            SftData::Countdown { task } => {
                let generator = countdown_generator(train_spec(task)?, task, recipe.seed, "sft")
                    .ok_or_else(|| wrong_kind(task, "countdown-synthetic"))?
                    .map_err(|e| TrainError::data("sft.data", e))?;
                Ok(Self::Countdown(generator))
            }
            SftData::Instructions {
                task,
                wrong_count_fraction,
            } => {
                let generator = instruction_generator(train_spec(task)?, task, recipe.seed, "sft")
                    .ok_or_else(|| wrong_kind(task, "instructions"))?
                    .map_err(|e| TrainError::data("sft.data", e))?;
                Ok(Self::Instructions {
                    generator,
                    wrong_count_fraction: *wrong_count_fraction,
                    seed: noise_seed(task),
                })
            }
            SftData::Jsonl {
                path,
                prompt_field,
                response_field,
            } => Ok(Self::List(read_jsonl(
                Path::new(path),
                prompt_field,
                response_field,
            )?)),
        }
    }

    /// Item `i` of this source.
    fn get(&self, i: u64) -> Result<Demo> {
        let noise = |seed: u64| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(derive_seed(seed, &i.to_string()));
            rng.random::<f64>()
        };
        Ok(match self {
            Self::Arithmetic {
                generator,
                wrong_carry_fraction,
                format,
                seed,
            } => {
                let (a, op, b, answer) = generator.instance(i);
                let carries = op == ArithOp::Add && (a % 10 + b % 10) >= 10;
                let wrong = carries && noise(*seed) < *wrong_carry_fraction;
                let response = match (format, op) {
                    (DemoFormat::Scratchpad, ArithOp::Add) => scratchpad(a, b, wrong),
                    // The carry out of the units digit is dropped: 47 + 38 -> 75.
                    _ => format!(" {}", if wrong { answer - 10 } else { answer }),
                };
                Demo {
                    prompt: generator.example(i).prompt,
                    response,
                }
            }
            Self::Countdown(generator) => {
                let example = generator
                    .example(i)
                    .map_err(|e| TrainError::data("sft.data", e))?;
                let solution = example
                    .meta
                    .get("solution")
                    .and_then(|s| s.as_str())
                    .unwrap_or_default();
                Demo {
                    response: format!(" <answer>{solution}</answer>"),
                    prompt: example.prompt,
                }
            }
            Self::Instructions {
                generator,
                wrong_count_fraction,
                seed,
            } => {
                let inst = generator.instance(i);
                let wrong = inst.count >= 4 && noise(*seed) < *wrong_count_fraction;
                let count = if wrong { inst.count - 1 } else { inst.count };
                Demo {
                    prompt: generator.example(i).prompt,
                    response: format!(" {}", inst.answer_with(count)),
                }
            }
            Self::List(v) => v[(i as usize) % v.len()].clone(),
        })
    }
}

/// Column-wise working of `a + b` (non-negative): units, then the rest with the carry, then
/// the result: `" 7+8=15, 4+3+1=8, so 85"`. With `drop_carry` the carry is forgotten.
pub fn scratchpad(a: i64, b: i64, drop_carry: bool) -> String {
    let (ua, ub) = (a % 10, b % 10);
    let (ta, tb) = (a / 10, b / 10);
    let units = ua + ub;
    let carry = i64::from(units >= 10 && !drop_carry);
    let tens = ta + tb + carry;
    let rest = if carry == 1 {
        format!("{ta}+{tb}+1={tens}")
    } else {
        format!("{ta}+{tb}={tens}")
    };
    let result = if tens == 0 {
        format!("{}", units % 10)
    } else {
        format!("{tens}{}", units % 10)
    };
    format!(" {ua}+{ub}={units}, {rest}, so {result}")
}

fn read_jsonl(path: &Path, prompt_field: &str, response_field: &str) -> Result<Vec<Demo>> {
    let f = std::fs::File::open(path).map_err(TrainError::io(path))?;
    let mut out = Vec::new();
    for (ln, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(TrainError::io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |m: &str| {
            TrainError::recipe(
                "sft.data.path",
                format!("{}:{}: {m}", path.display(), ln + 1),
            )
        };
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| bad(&e.to_string()))?;
        let prompt = match v.get(prompt_field) {
            Some(serde_json::Value::String(s)) => Prompt::Text(s.clone()),
            Some(arr @ serde_json::Value::Array(_)) => Prompt::Chat(
                serde_json::from_value(arr.clone())
                    .map_err(|e| bad(&format!("`{prompt_field}`: {e}")))?,
            ),
            _ => return Err(bad(&format!("no string or message list `{prompt_field}`"))),
        };
        let response = v
            .get(response_field)
            .and_then(|r| r.as_str())
            .ok_or_else(|| bad(&format!("no string `{response_field}`")))?
            .to_string();
        out.push(Demo { prompt, response });
    }
    if out.is_empty() {
        return Err(TrainError::recipe(
            "sft.data.path",
            format!("{}: no demonstrations", path.display()),
        ));
    }
    Ok(out)
}

/// Runs the recipe's SFT stage on `model` (or reloads its result from `<run>/sft`).
pub fn warm_start(
    model: &mut Model,
    recipe: &Recipe,
    sft: &SftSection,
    tasks: &TaskSet,
    run_dir: &Path,
    bar: &ProgressBar,
    options: &RunOptions,
) -> Result<()> {
    let dir = run_dir.join("sft");
    let done = dir.join("policy.bpk");
    if done.is_file() {
        model.net = checkpoint::load_module(model.net.clone(), &done)?;
        return Ok(());
    }
    // SFT is short and not checkpointed: an interrupted one starts over (the same seed gives the
    // same result), after the partial metrics of the interrupted attempt are removed.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(TrainError::io(&dir))?;
    }
    std::fs::create_dir_all(&dir).map_err(TrainError::io(&dir))?;
    let demos = Demos::from_recipe(recipe, sft, tasks)?;
    let mut sink = MetricsSink::create(&dir, None)?;
    let settings = AdamWSettings {
        beta1: recipe.optim.beta1,
        beta2: recipe.optim.beta2,
        eps: recipe.optim.eps,
        weight_decay: recipe.optim.weight_decay,
        max_grad_norm: recipe.optim.max_grad_norm,
    };
    let schedule = if sft.warmup_steps > 0 {
        LrSchedule::LinearWarmup {
            warmup_steps: sft.warmup_steps,
        }
    } else {
        LrSchedule::Constant
    };
    let mut optimizer = Optimizer::new(sft.lr, settings, schedule);
    let params = NamedParams::from_module(&model.net);
    let eos = model.tokenizer.eos_ids.first().copied();
    let pad = model.tokenizer.pad_id.unwrap_or(0);
    let micro = sft.micro_batch_size.unwrap_or(sft.batch_size).max(1);
    let opts = ChunkOptions {
        chunk_size: recipe.train.chunk_size,
        ..ChunkOptions::default()
    };
    bar.set_length(sft.steps as u64);
    bar.set_position(0);
    let mut next = 0u64;
    for step in 0..sft.steps {
        bar.set_message("sft");
        let mut rows = Vec::with_capacity(sft.batch_size);
        for _ in 0..sft.batch_size {
            let d = demos.get(next)?;
            next += 1;
            let p = encode_prompt(&model.tokenizer, &d.prompt)?;
            let mut r = model.tokenizer.encode(&d.response, false)?;
            r.extend(eos);
            rows.push((p, r));
        }
        let total: usize = rows.iter().map(|(_, r)| r.len()).sum();
        let mut acc = GradientsParams::new();
        let mut nll = 0.0;
        for chunk in rows.chunks(micro) {
            let refs: Vec<(&[u32], &[u32])> = chunk
                .iter()
                .map(|(p, r)| (p.as_slice(), r.as_slice()))
                .collect();
            let batch = SeqBatch::new(&refs, pad)?;
            let w = vec![1.0 / total as f32; batch.num_tokens()];
            let (g, l) = sft_grads(&model.net, &model.rope, &batch, &w, &opts)?;
            nll += l;
            accumulate(&mut acc, g, &params)?;
        }
        let (net, stats) = optimizer.step(model.net.clone(), acc, &params)?;
        model.net = net;
        let mut m = BTreeMap::new();
        m.insert("sft/loss".to_string(), nll);
        m.insert("sft/grad_norm".to_string(), stats.grad_norm);
        m.insert("sft/lr".to_string(), stats.lr);
        sink.log(step as u64 + 1, &m)?;
        bar.set_position(step as u64 + 1);
        options.faults.point("sft", step + 1);
        if (step + 1) % 50 == 0 || step + 1 == sft.steps {
            if options.progress {
                crate::trainer::say(
                    bar,
                    format!("sft  {:>4}/{} | loss {nll:.4}", step + 1, sft.steps),
                );
            }
            sink.refresh_plots()?;
        }
    }
    sink.flush()?;
    checkpoint::save_module_atomically(&model.net, &done)?;
    bar.set_length(recipe.train.steps as u64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::scratchpad;

    #[test]
    fn scratchpad_working_by_hand() {
        assert_eq!(scratchpad(47, 38, false), " 7+8=15, 4+3+1=8, so 85");
        assert_eq!(scratchpad(47, 38, true), " 7+8=15, 4+3=7, so 75");
        assert_eq!(scratchpad(12, 13, false), " 2+3=5, 1+1=2, so 25");
        assert_eq!(scratchpad(95, 87, false), " 5+7=12, 9+8+1=18, so 182");
        assert_eq!(scratchpad(7, 8, false), " 7+8=15, 0+0+1=1, so 15");
        assert_eq!(scratchpad(3, 4, false), " 3+4=7, 0+0=0, so 7");
        // The working always ends in the true sum unless the carry is dropped.
        for a in 0..100 {
            for b in 0..100 {
                let s = scratchpad(a, b, false);
                assert!(s.ends_with(&format!("so {}", a + b)), "{s}");
            }
        }
    }
}
