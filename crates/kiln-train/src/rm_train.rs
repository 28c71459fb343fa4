//! Reward-model training (`kiln rm-train`): the Bradley-Terry loss on preference pairs,
//! `-log sigmoid(r(chosen) - r(rejected) - margin)`, averaged over each batch of pairs, with
//! AdamW, and the pair accuracy (`r(chosen) > r(rejected)`) on held-out pairs.
//!
//! A run writes `<output>/model/` (a `*ForSequenceClassification` checkpoint with its tokenizer,
//! rewritten at every evaluation so a stopped run keeps its last evaluated model),
//! `metrics.jsonl` with plots, and `report.json`. Runs are short, so a stopped one is started
//! again rather than resumed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use kiln_data::{
    EpochSampler, InstructionConfig, InstructionPairGenerator, PreferencePair, derive_seed,
    load_preferences,
};
use kiln_model::{Model, SequenceClassifier, parse_device};
use kiln_optim::hook::{NamedParams, accumulate};
use kiln_optim::loss::bradley_terry_loss;
use kiln_optim::{AdamWSettings, LrSchedule, Optimizer};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::metrics::MetricsSink;
use crate::recipe::{ModelInit, ModelSection, RecipeError, load_toml_as};
use crate::reward_model::RewardModel;

/// A reward-model recipe (`recipes/rm-*.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmRecipe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "one")]
    pub seed: u64,
    #[serde(default = "flex")]
    pub device: String,
    /// The trunk: a causal LM (`pretrained` gets a new score head; a directory holding a
    /// `*ForSequenceClassification` checkpoint continues training it) or `init = "random"`.
    pub model: ModelSection,
    pub data: RmData,
    pub train: RmTrain,
    /// Run directory (default `runs/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmData {
    pub train: PairSpec,
    /// Held-out pairs for `eval/rm/accuracy`.
    pub eval: PairSpec,
}

/// Where preference pairs come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PairSpec {
    /// Synthetic instruction-following preferences (kiln-data's `InstructionPairGenerator`).
    InstructionPairs {
        count: u64,
        #[serde(default)]
        generator: InstructionConfig,
        /// Seed label (default `kiln-rm/<role>`: train and eval draw different pairs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<String>,
    },
    /// JSONL in TRL's preference layouts (`prompt`, `chosen`, `rejected`, optional `margin`).
    Jsonl {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmTrain {
    pub steps: usize,
    /// Pairs per optimizer step.
    pub batch_size: usize,
    /// Pairs per forward/backward (default: the whole batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_batch_size: Option<usize>,
    pub lr: f64,
    #[serde(default)]
    pub warmup_steps: usize,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default = "max_grad_norm")]
    pub max_grad_norm: f64,
    /// Evaluate (and save the model) every this many steps, and at the end.
    #[serde(default = "eval_every")]
    pub eval_every: usize,
}

fn one() -> u64 {
    1
}
fn flex() -> String {
    "flex".into()
}
fn max_grad_norm() -> f64 {
    1.0
}
fn eval_every() -> usize {
    50
}

impl RmRecipe {
    /// Loads `path` (with `extends` and `--set` overrides) and validates it.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let recipe: Self = load_toml_as(path, overrides)?;
        recipe.validate(path)?;
        Ok(recipe)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let t = &self.train;
        let mut problems = Vec::new();
        let mut check = |ok: bool, key: &str, msg: String| {
            if !ok {
                problems.push((key.to_string(), msg));
            }
        };
        check(
            t.steps >= 1,
            "train.steps",
            format!("{} must be at least 1", t.steps),
        );
        check(
            t.batch_size >= 1,
            "train.batch_size",
            format!("{} must be at least 1", t.batch_size),
        );
        check(
            t.micro_batch_size.is_none_or(|m| m >= 1),
            "train.micro_batch_size",
            "must be at least 1".into(),
        );
        check(
            t.lr.is_finite() && t.lr > 0.0,
            "train.lr",
            format!("{} must be > 0", t.lr),
        );
        check(
            t.weight_decay.is_finite() && t.weight_decay >= 0.0,
            "train.weight_decay",
            format!("{} must be >= 0", t.weight_decay),
        );
        check(
            t.max_grad_norm.is_finite() && t.max_grad_norm > 0.0,
            "train.max_grad_norm",
            format!("{} must be > 0", t.max_grad_norm),
        );
        check(
            t.eval_every >= 1,
            "train.eval_every",
            "must be at least 1".into(),
        );
        for (key, spec) in [
            ("data.train", &self.data.train),
            ("data.eval", &self.data.eval),
        ] {
            if let PairSpec::InstructionPairs { count: 0, .. } = spec {
                check(false, key, "count must be at least 1".into());
            }
        }
        match problems.into_iter().next() {
            None => Ok(()),
            Some((key, message)) => Err(RecipeError::Key {
                path: path.to_path_buf(),
                key,
                message,
            }
            .into()),
        }
    }

    /// The run directory.
    pub fn run_dir(&self) -> PathBuf {
        self.output
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new("runs").join(&self.name))
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RmReport {
    pub name: String,
    pub steps: usize,
    pub train_pairs: usize,
    pub eval_pairs: usize,
    /// Held-out pair accuracy and loss before the first step.
    pub initial_eval_accuracy: f64,
    pub initial_eval_loss: f64,
    pub eval_accuracy: f64,
    pub eval_loss: f64,
    /// Held-out accuracy per kind of pair (synthetic instruction pairs: the rule the rejected
    /// response breaks).
    pub eval_accuracy_by_group: BTreeMap<String, f64>,
    /// Mean loss of the last 10 steps.
    pub final_train_loss: f64,
    pub seconds: f64,
    pub model_dir: PathBuf,
}

/// Options of a run that are not part of the recipe.
#[derive(Debug, Clone, Default)]
pub struct RmOptions {
    pub progress: bool,
    /// Replace an existing run in the output directory.
    pub overwrite: bool,
}

/// The pairs of a spec; `role` (`train` / `eval`) seeds the generator's default stream.
pub fn load_pairs(
    spec: &PairSpec,
    seed: u64,
    role: &str,
    key: &str,
) -> Result<Vec<PreferencePair>> {
    match spec {
        PairSpec::InstructionPairs {
            count,
            generator,
            stream,
        } => {
            let label = stream.clone().unwrap_or_else(|| format!("kiln-rm/{role}"));
            let g = InstructionPairGenerator::new(generator.clone(), derive_seed(seed, &label))
                .map_err(|e| TrainError::data(key, e))?;
            Ok(g.generate(*count))
        }
        PairSpec::Jsonl { path, limit } => {
            let mut pairs =
                load_preferences(Path::new(path)).map_err(|e| TrainError::data(key, e))?;
            if let Some(l) = limit {
                pairs.truncate(*l);
            }
            Ok(pairs)
        }
    }
}

/// A pair encoded for the reward model.
struct Encoded {
    chosen: Vec<u32>,
    rejected: Vec<u32>,
    margin: f32,
}

fn encode_all(rm: &RewardModel, pairs: &[PreferencePair], key: &str) -> Result<Vec<Encoded>> {
    pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let named = |e: TrainError| TrainError::recipe(key, format!("pair {i}: {e}"));
            Ok(Encoded {
                chosen: rm.encode(&p.prompt, &p.chosen).map_err(named)?,
                rejected: rm.encode(&p.prompt, &p.rejected).map_err(named)?,
                margin: p.margin.unwrap_or(0.0) as f32,
            })
        })
        .collect()
}

/// Loss (weighted by `weight` per pair), whether each pair is ranked right, and the summed
/// margin of one micro-batch; the loss tensor is tracked when the model is.
fn pair_loss(
    rm: &RewardModel,
    net: &SequenceClassifier,
    pairs: &[&Encoded],
    weight: f32,
) -> Result<(Tensor<1>, Vec<bool>, f64)> {
    let m = pairs.len();
    let mut rows: Vec<Vec<u32>> = pairs.iter().map(|p| p.chosen.clone()).collect();
    rows.extend(pairs.iter().map(|p| p.rejected.clone()));
    let scores = rm.scores_with(net, &rows)?;
    let device = scores.device();
    let chosen = scores.clone().slice(0..m);
    let rejected = scores.slice(m..2 * m);
    let margins: Vec<f32> = pairs.iter().map(|p| p.margin).collect();
    let margin = Tensor::<1>::from_floats(margins.as_slice(), &device);
    let weights = Tensor::<1>::ones([m], &device).mul_scalar(weight);
    let diff: Vec<f32> = (chosen.clone() - rejected.clone())
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default();
    let correct = diff.iter().map(|&d| d > 0.0).collect();
    let margin_sum = diff.iter().map(|&d| d as f64).sum();
    Ok((
        bradley_terry_loss(chosen, rejected, margin, weights),
        correct,
        margin_sum,
    ))
}

/// Held-out accuracy and mean loss (no autodiff), into `m` as `eval/rm/accuracy` and
/// `eval/rm/loss`, plus `eval/rm/accuracy/<group>` per group label when pairs have them.
fn evaluate(
    rm: &RewardModel,
    pairs: &[Encoded],
    groups: Option<&[String]>,
    batch: usize,
    m: &mut BTreeMap<String, f64>,
) -> Result<(f64, f64)> {
    let valid = rm.net.clone().valid();
    let (mut loss, mut right) = (0.0, Vec::with_capacity(pairs.len()));
    let refs: Vec<&Encoded> = pairs.iter().collect();
    for chunk in refs.chunks(batch.max(1)) {
        let (l, c, _) = pair_loss(rm, &valid, chunk, 1.0)?;
        loss += l.into_scalar::<f32>() as f64;
        right.extend(c);
    }
    let n = pairs.len().max(1) as f64;
    let acc = right.iter().filter(|&&r| r).count() as f64 / n;
    m.insert("eval/rm/accuracy".to_string(), acc);
    m.insert("eval/rm/loss".to_string(), loss / n);
    if let Some(groups) = groups {
        let mut by: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for (g, &r) in groups.iter().zip(&right) {
            let e = by.entry(g).or_default();
            e.0 += usize::from(r);
            e.1 += 1;
        }
        for (g, (r, k)) in by {
            m.insert(format!("eval/rm/accuracy/{g}"), r as f64 / k as f64);
        }
    }
    Ok((acc, loss / n))
}

/// The rule each synthetic instruction pair breaks (`count`, `word`, `case`, `ending`), for a
/// per-rule accuracy; `None` for other data.
fn pair_groups(spec: &PairSpec, seed: u64, role: &str) -> Option<Vec<String>> {
    let PairSpec::InstructionPairs {
        count,
        generator,
        stream,
    } = spec
    else {
        return None;
    };
    let label = stream.clone().unwrap_or_else(|| format!("kiln-rm/{role}"));
    let g = InstructionPairGenerator::new(generator.clone(), derive_seed(seed, &label)).ok()?;
    Some(
        (0..*count)
            .map(|i| format!("{:?}", g.pair_with_rule(i).1).to_lowercase())
            .collect(),
    )
}

/// Trains a reward model as `recipe` says; returns what it measured.
pub fn train_reward_model(recipe: &RmRecipe, options: &RmOptions) -> Result<RmReport> {
    let t0 = Instant::now();
    let device = parse_device(&recipe.device)
        .map_err(|e| TrainError::recipe("device", e.to_string()))?
        .autodiff();
    let dir = recipe.run_dir();
    let metrics_file = dir.join(crate::metrics::METRICS_FILE);
    if !options.overwrite && std::fs::metadata(&metrics_file).is_ok_and(|m| m.len() > 0) {
        // Before the slow loads: the same refusal MetricsSink::create gives below.
        return Err(crate::metrics::MetricsError::ExistingRun { path: metrics_file }.into());
    }
    let mut rm = load_trunk(recipe, &device)?;
    let train = load_pairs(&recipe.data.train, recipe.seed, "train", "data.train")?;
    let eval = load_pairs(&recipe.data.eval, recipe.seed, "eval", "data.eval")?;
    let train = encode_all(&rm, &train, "data.train")?;
    let eval = encode_all(&rm, &eval, "data.eval")?;
    // The run directory is touched only once the model and the pairs are known good, so a
    // failed start neither leaves an empty run behind nor deletes an earlier run's metrics.
    if options.overwrite && metrics_file.exists() {
        std::fs::remove_file(&metrics_file).map_err(TrainError::io(&dir))?;
    }
    let mut sink = MetricsSink::create(&dir, None)?;
    let t = &recipe.train;
    let micro = t.micro_batch_size.unwrap_or(t.batch_size).min(t.batch_size);
    let settings = AdamWSettings {
        weight_decay: t.weight_decay,
        max_grad_norm: Some(t.max_grad_norm),
        ..AdamWSettings::default()
    };
    let schedule = if t.warmup_steps > 0 {
        LrSchedule::LinearWarmup {
            warmup_steps: t.warmup_steps,
        }
    } else {
        LrSchedule::Constant
    };
    let mut optimizer = Optimizer::new(t.lr, settings, schedule);
    let params = NamedParams::from_module(&rm.net);
    let mut sampler = EpochSampler::new(train.len(), derive_seed(recipe.seed, "kiln-rm/order"))
        .map_err(|e| TrainError::data("data.train", e))?;
    let model_dir = dir.join("model");

    let groups = pair_groups(&recipe.data.eval, recipe.seed, "eval");
    let mut m0 = BTreeMap::new();
    let (initial_acc, initial_loss) = evaluate(&rm, &eval, groups.as_deref(), micro, &mut m0)?;
    sink.log(0, &m0)?;
    let bar = crate::trainer::bar(options.progress, t.steps);
    let say = |line: String| {
        if options.progress {
            crate::trainer::say(&bar, line);
        }
    };
    say(format!(
        "rm-train {}: {} train / {} eval pairs | held-out accuracy {:.1}% before training",
        recipe.name,
        train.len(),
        eval.len(),
        100.0 * initial_acc
    ));
    let (mut acc, mut eval_loss) = (initial_acc, initial_loss);
    let mut recent = Vec::new();
    let mut by_group = BTreeMap::new();
    for step in 1..=t.steps {
        let batch: Vec<&Encoded> = sampler
            .next_indices(t.batch_size)
            .into_iter()
            .map(|i| &train[i])
            .collect();
        let weight = 1.0 / batch.len() as f32;
        let (mut grads, mut loss, mut correct, mut margin) = (GradientsParams::new(), 0.0, 0, 0.0);
        for chunk in batch.chunks(micro) {
            let (l, c, s) = pair_loss(&rm, &rm.net, chunk, weight)?;
            loss += l.clone().into_scalar::<f32>() as f64;
            correct += c.iter().filter(|&&r| r).count();
            margin += s;
            accumulate(
                &mut grads,
                GradientsParams::from_grads(l.backward(), &rm.net),
                &params,
            )?;
        }
        if !loss.is_finite() {
            return Err(TrainError::Diverged {
                step,
                message: format!("the Bradley-Terry loss is {loss}: lower train.lr"),
            });
        }
        let (net, stats) = optimizer.step(rm.net.clone(), grads, &params)?;
        rm.net = net;
        recent.push(loss);
        let mut m = BTreeMap::new();
        m.insert("rm/loss".to_string(), loss);
        m.insert(
            "rm/accuracy".to_string(),
            correct as f64 / batch.len() as f64,
        );
        m.insert("rm/margin".to_string(), margin / batch.len() as f64);
        m.insert("rm/grad_norm".to_string(), stats.grad_norm);
        m.insert("rm/lr".to_string(), stats.lr);
        if step % t.eval_every == 0 || step == t.steps {
            (acc, eval_loss) = evaluate(&rm, &eval, groups.as_deref(), micro, &mut m)?;
            by_group = m
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("eval/rm/accuracy/")?.to_string(), *v)))
                .collect();
            rm.save(&model_dir)?;
            sink.refresh_plots()?;
            say(format!(
                "step {step:>4} | loss {loss:.4} | held-out accuracy {:.1}% | loss {eval_loss:.4}",
                100.0 * acc
            ));
        }
        sink.log(step as u64, &m)?;
        bar.set_position(step as u64);
    }
    bar.finish_and_clear();
    sink.flush()?;
    let tail = &recent[recent.len().saturating_sub(10)..];
    let report = RmReport {
        name: recipe.name.clone(),
        steps: t.steps,
        train_pairs: train.len(),
        eval_pairs: eval.len(),
        initial_eval_accuracy: initial_acc,
        initial_eval_loss: initial_loss,
        eval_accuracy: acc,
        eval_loss,
        eval_accuracy_by_group: by_group,
        final_train_loss: tail.iter().sum::<f64>() / tail.len().max(1) as f64,
        seconds: t0.elapsed().as_secs_f64(),
        model_dir: model_dir.clone(),
    };
    let path = dir.join("report.json");
    let json = serde_json::to_string_pretty(&report).expect("plain data");
    std::fs::write(&path, json).map_err(TrainError::io(&path))?;
    Ok(report)
}

/// The network to train: an existing reward model, or a causal LM's trunk with a new head.
fn load_trunk(recipe: &RmRecipe, device: &Device) -> Result<RewardModel> {
    let path = Path::new(&recipe.model.path);
    let head_seed = derive_seed(recipe.seed, "kiln-rm/head");
    let is_classifier = std::fs::read_to_string(path.join("config.json"))
        .is_ok_and(|c| c.contains("ForSequenceClassification"));
    Ok(match recipe.model.init {
        ModelInit::Pretrained if is_classifier => RewardModel::load(path, device)?,
        ModelInit::Pretrained => {
            let model = Model::load(&recipe.model.path, device)?;
            RewardModel::from_causal_lm(
                model,
                kiln_model::init::DEFAULT_INITIALIZER_RANGE,
                head_seed,
            )
        }
        ModelInit::Random => {
            let model = Model::random(path, device, derive_seed(recipe.seed, "kiln-train/init"))?;
            RewardModel::from_causal_lm(
                model,
                kiln_model::init::DEFAULT_INITIALIZER_RANGE,
                head_seed,
            )
        }
    })
}
