//! A recipe's tasks made concrete: each task's prompt source, held-out set and verifier, and
//! the schedule that draws the prompts of every RL step (the tasks mixed by weight, or the
//! recipe's `[[schedule]]` phases).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_data::{
    ArithmeticConfig, ArithmeticGenerator, CountdownGenerator, Example, ExampleSource, FieldMap,
    InstructionGenerator, JsonlLoader, MixSource, Phase, PhaseLength, PromptTemplate, Schedule,
    ScheduleState, default_data_dir, derive_seed,
};
use kiln_reward::{
    AnswerExtraction, CountdownVerifier, Gsm8kVerifier, InstructionVerifier, MathVerifier, Verifier,
};

use crate::error::{Result, TrainError};
use crate::recipe::{DataSpec, MathAnswer, Recipe, Split, TaskSection, VerifierKind};

/// One task: name (= domain), training source, held-out examples, verifier.
pub struct Task {
    pub name: String,
    pub section: TaskSection,
    pub train: Arc<dyn ExampleSource>,
    pub eval: Vec<Example>,
    pub verifier: Box<dyn Verifier>,
}

/// The tasks of a recipe and the schedule over their training sources.
pub struct TaskSet {
    pub tasks: Vec<Task>,
    mixer: Schedule,
}

/// A prompt drawn for a step, with the index of its task.
#[derive(Debug, Clone)]
pub struct Drawn {
    pub task: usize,
    pub example: Example,
}

impl TaskSet {
    /// Loads every task of `recipe` (datasets read, generators built) and the mixer.
    pub fn from_recipe(recipe: &Recipe) -> Result<Self> {
        let mut tasks = Vec::new();
        for (name, section) in &recipe.tasks {
            let key = format!("tasks.{name}");
            let train = build_source(
                &section.train,
                name,
                recipe.seed,
                "train",
                &format!("{key}.train"),
            )?;
            let eval = match &section.eval {
                Some(spec) => {
                    let src =
                        build_source(spec, name, recipe.seed, "eval", &format!("{key}.eval"))?;
                    let n = src
                        .num_examples()
                        .unwrap_or(recipe.eval.limit as u64)
                        .min(recipe.eval.limit as u64);
                    (0..n)
                        .map(|i| src.get(i))
                        .collect::<kiln_data::Result<Vec<_>>>()
                        .map_err(|e| TrainError::data(&format!("{key}.eval"), e))?
                }
                None => Vec::new(),
            };
            tasks.push(Task {
                name: name.clone(),
                section: section.clone(),
                train,
                eval,
                verifier: verifier(section),
            });
        }
        let sources = tasks
            .iter()
            .map(|t| MixSource::new(t.name.clone(), t.train.clone()))
            .collect();
        let phases = if recipe.schedule.is_empty() {
            // One phase at the tasks' weights, for the whole run.
            let weights = tasks.iter().map(|t| (t.name.clone(), t.section.weight));
            vec![Phase::mix(weights, None)]
        } else {
            recipe
                .schedule
                .iter()
                .map(|p| Phase {
                    weights: p.weights.clone(),
                    length: p.steps.map(|s| PhaseLength::Batches(s as u64)),
                })
                .collect()
        };
        let mixer = Schedule::new(sources, phases, derive_seed(recipe.seed, "kiln-train/mix"))
            .map_err(|e| TrainError::data("schedule", e))?;
        Ok(Self { tasks, mixer })
    }

    /// The schedule phase the next draw comes from (0 without `[[schedule]]`).
    pub fn phase(&self) -> usize {
        self.mixer.phase()
    }

    /// The next `n` training prompts (one RL step's: a step never straddles two phases).
    pub fn next_prompts(&mut self, n: usize) -> Result<Vec<Drawn>> {
        self.mixer
            .next_draws(n)
            .into_iter()
            .map(|d| {
                let example = self.tasks[d.source]
                    .train
                    .get(d.index)
                    .map_err(|e| TrainError::data(&self.tasks[d.source].name, e))?;
                Ok(Drawn {
                    task: d.source,
                    example,
                })
            })
            .collect()
    }

    /// The data cursor (saved with checkpoints).
    pub fn state(&self) -> ScheduleState {
        self.mixer.state()
    }

    /// Continue from a saved cursor.
    pub fn restore(&mut self, state: &ScheduleState) -> Result<()> {
        self.mixer
            .restore(state)
            .map_err(|e| TrainError::data("data cursor", e))
    }

    /// Index of the task named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.name == name)
    }
}

fn verifier(section: &TaskSection) -> Box<dyn Verifier> {
    match section.verifier {
        VerifierKind::Countdown => Box::new(CountdownVerifier {
            format_score: section.format_score,
            ..CountdownVerifier::default()
        }),
        VerifierKind::Math => Box::new(MathVerifier::with_extraction(match section.math_answer {
            MathAnswer::Boxed => AnswerExtraction::Boxed,
            MathAnswer::Lenient => AnswerExtraction::Lenient,
        })),
        VerifierKind::Gsm8k => Box::new(Gsm8kVerifier::default()),
        VerifierKind::Instructions => Box::new(InstructionVerifier::default()),
    }
}

/// The arithmetic generator of a spec (also used by SFT demonstrations).
pub fn arithmetic_generator(
    spec: &DataSpec,
    task: &str,
    seed: u64,
    role: &str,
) -> Option<ArithmeticGenerator> {
    let DataSpec::Arithmetic {
        min_digits,
        max_digits,
        ops,
        allow_negative,
        template,
        stream,
        ..
    } = spec
    else {
        return None;
    };
    let config = ArithmeticConfig {
        min_digits: *min_digits,
        max_digits: *max_digits,
        ops: ops.clone(),
        allow_negative: *allow_negative,
        template: *template,
    };
    ArithmeticGenerator::new(config, stream_seed(seed, stream, task, role)).ok()
}

/// The seed of a generator: from its `stream` label, else from the task and role (`train`,
/// `eval`, `sft`: different streams, so held-out problems are new draws).
fn stream_seed(seed: u64, stream: &Option<String>, task: &str, role: &str) -> u64 {
    let label = stream
        .clone()
        .unwrap_or_else(|| format!("kiln-train/{task}/{role}"));
    derive_seed(seed, &label)
}

/// The Countdown generator of a `countdown-synthetic` spec.
pub fn countdown_generator(
    spec: &DataSpec,
    task: &str,
    seed: u64,
    role: &str,
) -> Option<kiln_data::Result<CountdownGenerator>> {
    let DataSpec::CountdownSynthetic {
        generator, stream, ..
    } = spec
    else {
        return None;
    };
    Some(CountdownGenerator::new(
        generator.clone(),
        stream_seed(seed, stream, task, role),
    ))
}

/// The instruction generator of an `instructions` spec.
pub fn instruction_generator(
    spec: &DataSpec,
    task: &str,
    seed: u64,
    role: &str,
) -> Option<kiln_data::Result<InstructionGenerator>> {
    let DataSpec::Instructions {
        generator, stream, ..
    } = spec
    else {
        return None;
    };
    Some(InstructionGenerator::new(
        generator.clone(),
        stream_seed(seed, stream, task, role),
    ))
}

impl Split {
    /// `train` or `test`, whichever this split is.
    fn pick<T>(self, train: T, test: T) -> T {
        match self {
            Split::Train => train,
            Split::Test => test,
        }
    }
}

fn data_file(path: &Option<String>, default: &str, key: &str) -> Result<PathBuf> {
    match path {
        Some(p) => Ok(PathBuf::from(p)),
        None => Ok(default_data_dir()
            .map_err(|e| TrainError::data(key, e))?
            .join(default)),
    }
}

fn limited(mut v: Vec<Example>, limit: Option<usize>) -> Vec<Example> {
    if let Some(l) = limit {
        v.truncate(l);
    }
    v
}

fn build_source(
    spec: &DataSpec,
    task: &str,
    seed: u64,
    role: &str,
    key: &str,
) -> Result<Arc<dyn ExampleSource>> {
    use kiln_data::datasets::files;
    let load = |path: &Path, map: FieldMap| {
        JsonlLoader::new(map)
            .load(path)
            .map_err(|e| TrainError::data(key, e))
    };
    let source: Arc<dyn ExampleSource> = match spec {
        DataSpec::Arithmetic { count, .. } => {
            let generator = arithmetic_generator(spec, task, seed, role)
                .ok_or_else(|| TrainError::recipe(key, "invalid arithmetic generator settings"))?;
            match count {
                Some(n) => Arc::new(generator.generate(*n)),
                None => Arc::new(generator),
            }
        }
        DataSpec::CountdownSynthetic { count, .. } => {
            let generator = countdown_generator(spec, task, seed, role)
                .expect("countdown-synthetic spec")
                .map_err(|e| TrainError::data(key, e))?;
            match count {
                Some(n) => Arc::new(
                    generator
                        .generate(*n)
                        .map_err(|e| TrainError::data(key, e))?,
                ),
                None => Arc::new(generator),
            }
        }
        DataSpec::Instructions { count, .. } => {
            let generator = instruction_generator(spec, task, seed, role)
                .expect("instructions spec")
                .map_err(|e| TrainError::data(key, e))?;
            match count {
                Some(n) => Arc::new(generator.generate(*n)),
                None => Arc::new(generator),
            }
        }
        DataSpec::Countdown {
            split,
            path,
            template,
            limit,
        } => {
            let file = data_file(
                path,
                split.pick(files::COUNTDOWN_TRAIN, files::COUNTDOWN_TEST),
                key,
            )?;
            Arc::new(limited(
                load(&file, FieldMap::countdown(*template))?,
                *limit,
            ))
        }
        DataSpec::Math {
            split,
            path,
            template,
            levels,
            limit,
        } => {
            let (default, map) = match split {
                Split::Train => (files::MATH_TRAIN, FieldMap::math_train(*template)),
                Split::Test => (files::MATH500, FieldMap::math500(*template)),
            };
            let file = data_file(path, default, key)?;
            let mut all = load(&file, map)?;
            if let Some(levels) = levels {
                all.retain(|e| {
                    let level = e.meta.get("level").and_then(|v| {
                        v.as_u64().or_else(|| {
                            v.as_str()
                                .and_then(|s| s.trim_start_matches("Level ").parse().ok())
                        })
                    });
                    level.is_some_and(|l| levels.contains(&(l as u8)))
                });
            }
            Arc::new(limited(all, *limit))
        }
        DataSpec::Gsm8k {
            split,
            path,
            template,
            limit,
        } => {
            let file = data_file(path, split.pick(files::GSM8K_TRAIN, files::GSM8K_TEST), key)?;
            Arc::new(limited(load(&file, FieldMap::gsm8k(*template))?, *limit))
        }
        DataSpec::Jsonl {
            path,
            prompt_field,
            answer_field,
            limit,
        } => {
            let map = FieldMap::new(task, prompt_field, answer_field, PromptTemplate::Raw);
            Arc::new(limited(load(Path::new(path), map)?, *limit))
        }
    };
    if source.num_examples() == Some(0) {
        return Err(TrainError::recipe(key, "the data set is empty"));
    }
    Ok(source)
}
