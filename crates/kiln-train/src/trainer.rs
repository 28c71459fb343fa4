//! The RL loop (DESIGN.md, "the data flow of one RL step"):
//! mixer -> engine -> verifiers -> advantages -> PPO epochs over mini- and micro-batches ->
//! AdamW, with evaluation, metrics, plots and checkpoints around it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_data::{Prompt, derive_seed};
use kiln_model::{CausalLm, Model, parse_device};
use kiln_optim::advantages::{outcome_token_advantages, place_on_last_token};
use kiln_optim::hook::{DomainGrads, GradientHook, NamedParams, accumulate};
use kiln_optim::loss::{
    AggMode, GlobalCounts, KlLoss, LossConfig, LossMetrics, PpoClip, TokenBatch as LossBatch,
    agg_weights, apply_kl_reward,
};
use kiln_optim::tree::{TreeLink, rose_token_advantages};
use kiln_optim::{AdamWSettings, ChunkOptions, MgsHook, Optimizer, gae};
use kiln_reward::score_batch;
use kiln_rollout::tree::{TokenEmbeddings, TreeParams, tree_rollouts};
use kiln_rollout::{Engine, FinishReason, Rollout, SamplingParams};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::checkpoint::{self, TrainState};
use crate::error::{Result, TrainError};
use crate::eval::{encode_prompt, evaluate, response_text, reward_reference, sampled_pass_at_k};
use crate::fault::FaultPlan;
use crate::metrics::MetricsSink;
use crate::policy::{Critic, SeqBatch, actor_grads, critic_grads, score};
use crate::recipe::{AdvantageKind, ModelInit, Recipe, to_toml};
use crate::reward_model::{RewardModelScorer, normalize_over_batch};
use crate::sft;
use crate::tasks::TaskSet;

/// How a run is started.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides `logging.run_dir` (default `runs/<name>`).
    pub run_dir: Option<PathBuf>,
    /// Continue from the newest valid checkpoint of the run directory.
    pub resume: bool,
    /// Show the progress bar and per-step lines.
    pub progress: bool,
    /// Stop after this many RL steps in total (as if interrupted; tests use it).
    pub stop_after: Option<usize>,
    /// Faults to inject (reliability tests; `kiln train` reads `KILN_FAULT`).
    pub faults: FaultPlan,
}

/// One sampled response with everything the update needs.
#[derive(Debug, Clone)]
pub struct Sample {
    pub task: usize,
    pub prompt_ids: Vec<u32>,
    pub response_ids: Vec<u32>,
    pub rollout_logp: Vec<f32>,
    pub entropies: Vec<f32>,
    pub reward: f32,
    pub correct: bool,
    /// The learned reward model's raw score, when the task has one.
    pub rm_score: Option<f32>,
    pub finish: FinishReason,
    pub text: String,
    /// Its place in the group's tree (the root for independent samples).
    pub link: TreeLink,
}

/// What a step's rollout produced.
pub struct StepRollout {
    /// The samples to train on: whole groups (with dynamic sampling, only groups whose rewards
    /// differ).
    pub train: Vec<Sample>,
    /// Every sample drawn, dropped groups included (the reward and length metrics).
    pub drawn: Vec<Sample>,
    /// `rollout/...` metrics.
    pub metrics: BTreeMap<String, f64>,
}

impl Sample {
    /// Response tokens the engine sampled (a tree branch copies its first `branch_pos`).
    pub fn generated_tokens(&self) -> usize {
        self.response_ids.len() - self.link.branch_pos.min(self.response_ids.len())
    }

    /// `(prompt, response)` ids, as [`SeqBatch::new`] takes them.
    pub fn row(&self) -> (&[u32], &[u32]) {
        (&self.prompt_ids, &self.response_ids)
    }
}

/// A trainer: the policy, its optimizer, the data and the run directory.
pub struct Trainer {
    pub recipe: Recipe,
    pub run_dir: PathBuf,
    /// The policy (its `net` lives on an autodiff device), tokenizer and rotary tables.
    pub model: Model,
    reference: Option<CausalLm>,
    critic: Option<Critic>,
    /// Each task's learned reward model (index = task), loaded without autodiff.
    reward_models: Vec<Option<RewardModelScorer>>,
    pub tasks: TaskSet,
    optimizer: Optimizer,
    critic_optimizer: Option<Optimizer>,
    params: NamedParams,
    critic_params: Option<NamedParams>,
    /// Gradient surgery between the tasks' gradients (`algorithm.gradient_surgery`).
    surgery: Option<MgsHook>,
    /// RL steps completed.
    pub step: usize,
    consecutive_skips: usize,
    sink: MetricsSink,
    loss_cfg: LossConfig,
    options: RunOptions,
    bar: ProgressBar,
}

/// The run directory of a recipe.
pub fn run_dir_of(recipe: &Recipe, options: &RunOptions) -> PathBuf {
    options
        .run_dir
        .clone()
        .or_else(|| recipe.logging.run_dir.as_ref().map(PathBuf::from))
        .unwrap_or_else(|| Path::new("runs").join(&recipe.name))
}

/// Loads the recipe's policy onto `device` (autodiff added by the caller when training).
pub fn load_policy(recipe: &Recipe, device: &Device) -> Result<Model> {
    Ok(match recipe.model.init {
        ModelInit::Pretrained => Model::load(&recipe.model.path, device)?,
        ModelInit::Random => Model::random(
            Path::new(&recipe.model.path),
            device,
            derive_seed(recipe.seed, "kiln-train/init"),
        )?,
    })
}

/// The learned reward model of every task that has one (`tasks.<name>.reward_model`).
fn load_reward_models(tasks: &TaskSet, device: &Device) -> Result<Vec<Option<RewardModelScorer>>> {
    tasks
        .tasks
        .iter()
        .map(|t| {
            t.section
                .reward_model
                .as_ref()
                .map(|spec| {
                    RewardModelScorer::load(Path::new(&spec.path), device, spec.batch_size).map_err(
                        |e| {
                            TrainError::recipe(
                                &format!("tasks.{}.reward_model.path", t.name),
                                e.to_string(),
                            )
                        },
                    )
                })
                .transpose()
        })
        .collect()
}

/// Fails early when the run directory cannot be written.
fn prepare_run_dir(dir: &Path, resume: bool) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok").map_err(TrainError::io(&probe))?;
    std::fs::remove_file(&probe).map_err(TrainError::io(&probe))?;
    if !resume
        && dir.join("checkpoints").is_dir()
        && !checkpoint::list(&dir.join("checkpoints")).is_empty()
    {
        return Err(TrainError::recipe(
            "logging.run_dir",
            format!(
                "{} already holds checkpoints: pass --resume to continue that run, or choose another run directory",
                dir.display()
            ),
        ));
    }
    Ok(())
}

fn adamw(recipe: &Recipe) -> AdamWSettings {
    let o = &recipe.optim;
    AdamWSettings {
        beta1: o.beta1,
        beta2: o.beta2,
        eps: o.eps,
        weight_decay: o.weight_decay,
        max_grad_norm: o.max_grad_norm,
    }
}

/// The actor loss of a recipe.
pub fn loss_config(recipe: &Recipe) -> LossConfig {
    let a = &recipe.algorithm;
    LossConfig {
        ppo: PpoClip {
            clip_low: a.clip_low,
            clip_high: a.clip_high,
            dual_clip: a.dual_clip,
        },
        agg: a.loss_agg,
        kl_loss: (a.kl_loss_coef > 0.0).then_some(KlLoss {
            estimator: a.kl_estimator,
            coef: a.kl_loss_coef,
        }),
        entropy: a.entropy,
        baseline: Default::default(),
    }
}

pub(crate) fn bar(progress: bool, steps: usize) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(steps as u64);
    b.set_style(
        ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{bar:30}] {elapsed_precise} ETA {eta_precise} {msg}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    b
}

impl Trainer {
    /// Sets up a run: the run directory (checked writable), the resolved recipe, the policy
    /// (with the SFT stage run or reloaded), reference and critic, optimizers; on `resume`, the
    /// newest valid checkpoint.
    pub fn new(recipe: Recipe, options: RunOptions) -> Result<Self> {
        let run_dir = run_dir_of(&recipe, &options);
        prepare_run_dir(&run_dir, options.resume)?;
        let recipe_path = run_dir.join("recipe.toml");
        std::fs::write(&recipe_path, to_toml(&recipe)).map_err(TrainError::io(&recipe_path))?;
        let device = parse_device(&recipe.device)
            .map_err(|e| TrainError::recipe("device", e.to_string()))?
            .autodiff();
        let tasks = TaskSet::from_recipe(&recipe)?;
        let reward_models = load_reward_models(&tasks, &device.clone().without_autodiff())?;
        let mut model = load_policy(&recipe, &device)?;
        let kl_on = recipe.algorithm.kl_loss_coef > 0.0 || recipe.algorithm.kl_reward_coef > 0.0;
        checkpoint::ensure_free_space(
            &run_dir,
            checkpoint::bytes_needed(
                model.net.num_params(),
                checkpoint::checkpoints_at_once(
                    recipe.train.steps,
                    recipe.checkpoint.every,
                    recipe.checkpoint.keep_last,
                ),
                recipe.critic.is_some(),
                usize::from(kl_on) + usize::from(recipe.sft.is_some()),
            ),
        )?;
        let bar = bar(options.progress, recipe.train.steps);
        if let Some(sft) = &recipe.sft {
            sft::warm_start(&mut model, &recipe, sft, &tasks, &run_dir, &bar, &options)?;
        }
        let params = NamedParams::from_module(&model.net);
        // The reference is the policy RL starts from (after SFT), frozen.
        let reference = kl_on.then(|| model.net.clone().valid());
        let critic = recipe
            .critic
            .as_ref()
            .map(|_| Critic::from_policy(&model.net));
        let critic_params = critic.as_ref().map(NamedParams::from_module);
        let optimizer = Optimizer::new(recipe.optim.lr, adamw(&recipe), recipe.optim.schedule);
        let critic_optimizer = recipe
            .critic
            .as_ref()
            .map(|c| Optimizer::new(c.lr, adamw(&recipe), Default::default()));
        let resume_from = if options.resume {
            checkpoint::latest_valid(&run_dir.join("checkpoints"))
        } else {
            None
        };
        if options.resume && resume_from.is_none() {
            // Nothing to continue from: start over, keeping no stale metrics.
            let stale = run_dir.join(crate::metrics::METRICS_FILE);
            if stale.exists() {
                std::fs::remove_file(&stale).map_err(TrainError::io(&stale))?;
            }
        }
        let sink = MetricsSink::create(&run_dir, resume_from.as_ref().map(|(_, s)| s.step as u64))?;
        let surgery = recipe.algorithm.gradient_surgery.map(|g| {
            MgsHook::new(
                g.granularity(),
                derive_seed(recipe.seed, "kiln-train/gradient-surgery"),
            )
        });
        let mut trainer = Self {
            loss_cfg: loss_config(&recipe),
            sink,
            recipe,
            run_dir,
            model,
            reference,
            critic,
            reward_models,
            tasks,
            optimizer,
            critic_optimizer,
            params,
            critic_params,
            surgery,
            step: 0,
            consecutive_skips: 0,
            options,
            bar,
        };
        if let Some((dir, state)) = resume_from {
            trainer.load_checkpoint(&dir, &state)?;
            tracing::info!("resumed from {} (step {})", dir.display(), state.step);
        }
        Ok(trainer)
    }

    fn checkpoint_root(&self) -> PathBuf {
        self.run_dir.join("checkpoints")
    }

    fn load_checkpoint(&mut self, dir: &Path, state: &TrainState) -> Result<()> {
        self.model.net = checkpoint::load_module(self.model.net.clone(), &dir.join("policy.bpk"))?;
        self.optimizer = Optimizer::load(dir.join("optimizer.bpk"))?;
        if let Some(c) = self.critic.take() {
            self.critic = Some(checkpoint::load_module(c, &dir.join("critic.bpk"))?);
            self.critic_optimizer = Some(Optimizer::load(dir.join("critic_optimizer.bpk"))?);
        }
        if self.reference.is_some() {
            let path = self.run_dir.join("reference.bpk");
            self.reference = Some(checkpoint::load_module(self.model.net.clone(), &path)?.valid());
        }
        self.tasks.restore(&state.data)?;
        self.params = NamedParams::from_module(&self.model.net);
        self.critic_params = self.critic.as_ref().map(NamedParams::from_module);
        if let Some(h) = &mut self.surgery {
            // One combine per optimizer step: the hook's random orders continue where they were.
            h.set_step(self.optimizer.steps() as u64);
        }
        self.step = state.step;
        self.consecutive_skips = state.consecutive_skips;
        Ok(())
    }

    /// Writes a checkpoint of the current state.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let state = TrainState {
            step: self.step,
            data: self.tasks.state(),
            consecutive_skips: self.consecutive_skips,
        };
        checkpoint::write(
            &self.checkpoint_root(),
            &state,
            self.recipe.checkpoint.keep_last,
            &self.options.faults,
            |dir| {
                checkpoint::save_module(&self.model.net, &dir.join("policy.bpk"))?;
                self.options.faults.point("checkpoint-files", self.step);
                self.optimizer.save(dir.join("optimizer.bpk"))?;
                if let (Some(c), Some(o)) = (&self.critic, &self.critic_optimizer) {
                    checkpoint::save_module(c, &dir.join("critic.bpk"))?;
                    o.save(dir.join("critic_optimizer.bpk"))?;
                }
                Ok(())
            },
        )
    }

    fn max_context(&self) -> usize {
        self.recipe
            .model
            .max_context
            .unwrap_or(self.model.config.max_position_embeddings)
    }

    fn engine(&self) -> Engine<'_> {
        let mut e = Engine::new(&self.model.net, &self.model.rope, self.max_context())
            .with_tokenizer(&self.model.tokenizer);
        if let Some(t) = self.recipe.rollout.max_batch_tokens {
            e = e.with_max_batch_tokens(t);
        }
        e
    }

    fn chunk_options(&self, temperature: f64) -> ChunkOptions {
        ChunkOptions {
            chunk_size: self.recipe.train.chunk_size,
            temperature,
            ..ChunkOptions::default()
        }
    }

    /// Held-out accuracy of every task with an eval set.
    pub fn evaluate(&self) -> Result<BTreeMap<String, f64>> {
        let engine = self.engine();
        let ev = &self.recipe.eval;
        let params = SamplingParams {
            n: 1,
            temperature: ev.temperature as f32,
            max_new_tokens: ev
                .max_new_tokens
                .unwrap_or(self.recipe.rollout.max_new_tokens),
            stop_strings: self.recipe.rollout.stop.clone(),
            seed: derive_seed(self.recipe.seed, &format!("kiln-train/eval/{}", self.step)),
            ..SamplingParams::default()
        };
        let mut out = BTreeMap::new();
        for (ti, task) in self.tasks.tasks.iter().enumerate() {
            if task.eval.is_empty() {
                continue;
            }
            let r = evaluate(
                &engine,
                &task.name,
                &task.eval,
                task.verifier.as_ref(),
                &params,
                self.recipe.rollout.include_stop,
            )?;
            self.options.faults.point("eval", self.step);
            r.metrics(&mut out);
            if let Some(scorer) = &self.reward_models[ti] {
                let pairs: Vec<(&Prompt, &str)> = task
                    .eval
                    .iter()
                    .zip(&r.responses)
                    .map(|(e, text)| (&e.prompt, text.as_str()))
                    .collect();
                let scores = scorer.score(&pairs)?;
                let mean =
                    scores.iter().map(|&x| x as f64).sum::<f64>() / scores.len().max(1) as f64;
                out.insert(format!("eval/{}/rm_score", task.name), mean);
            }
            if ev.pass_k > 0 {
                let sampled = SamplingParams {
                    n: ev.pass_k,
                    temperature: ev.pass_temperature as f32,
                    top_p: ev.pass_top_p as f32,
                    seed: derive_seed(params.seed, "pass@k"),
                    ..params.clone()
                };
                let p = sampled_pass_at_k(
                    &engine,
                    &task.eval,
                    task.verifier.as_ref(),
                    &sampled,
                    ev.pass_k,
                    self.recipe.rollout.include_stop,
                )?;
                out.insert(format!("eval/{}/pass@{}", task.name, ev.pass_k), p);
            }
        }
        Ok(out)
    }

    fn eval_due(&self) -> bool {
        let every = self.recipe.eval.every;
        self.step == self.recipe.train.steps || (every > 0 && self.step.is_multiple_of(every))
    }

    /// Runs the remaining RL steps (evaluation, plots and checkpoints included).
    pub fn run(&mut self) -> Result<BTreeMap<String, f64>> {
        let total = self.recipe.train.steps;
        self.bar.set_position(self.step as u64);
        if self.step == 0 {
            self.bar.set_message("eval");
            let m = self.evaluate()?;
            self.print_eval(&m);
            self.sink.log(0, &m)?;
            if self.reference.is_some() {
                let path = self.run_dir.join("reference.bpk");
                checkpoint::save_module_atomically(&self.model.net, &path)?;
            }
        }
        let mut last = BTreeMap::new();
        while self.step < total {
            if self.options.stop_after.is_some_and(|s| self.step >= s) {
                return Ok(last);
            }
            let mut m = self.step_once()?;
            if self.eval_due() {
                self.bar.set_message("eval");
                let e = self.evaluate()?;
                self.print_eval(&e);
                m.extend(e);
            }
            self.sink.log(self.step as u64, &m)?;
            self.options.faults.point("metrics", self.step);
            self.bar.set_position(self.step as u64);
            self.print_step(&m);
            let plot_every = self.recipe.logging.plot_every.max(1);
            if self.step.is_multiple_of(plot_every) || self.step == total {
                self.sink.refresh_plots()?;
            }
            let every = self.recipe.checkpoint.every;
            if self.step == total || (every > 0 && self.step.is_multiple_of(every)) {
                self.bar.set_message("checkpoint");
                self.save_checkpoint()?;
            }
            last = m;
        }
        self.sink.flush()?;
        self.bar.finish_and_clear();
        Ok(last)
    }

    /// Writes the policy as a Hugging Face directory (`kiln eval --model <dir>` reads it).
    pub fn export(&self, dir: &Path) -> Result<()> {
        Ok(self.model.save_hf(dir)?)
    }

    fn print_eval(&self, m: &BTreeMap<String, f64>) {
        if !self.options.progress {
            return;
        }
        let parts: Vec<String> = m
            .iter()
            .filter(|(k, _)| k.ends_with("/accuracy"))
            .map(|(k, v)| format!("{} {:.1}%", k.trim_end_matches("/accuracy"), 100.0 * v))
            .collect();
        say(
            &self.bar,
            format!("step {:>4} | eval | {}", self.step, parts.join(" | ")),
        );
    }

    fn print_step(&self, m: &BTreeMap<String, f64>) {
        if !self.options.progress {
            return;
        }
        let g = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
        say(
            &self.bar,
            format!(
                "step {:>4} | reward {:.3} | correct {:.1}% | len {:.1} | entropy {:.3} | kl {:.4} | grad {:.3} | lp-gap {:.1e} | {:.1}s",
                self.step,
                g("reward/mean"),
                100.0 * g("reward/correct"),
                g("response_length/mean"),
                g("actor/entropy"),
                g("actor/ppo_kl"),
                g("actor/grad_norm"),
                g("rollout/logprob_abs_diff"),
                g("time/step_s"),
            ),
        );
    }

    /// Samples the responses of one step and scores them.
    pub fn rollout(&mut self) -> Result<StepRollout> {
        let n = self.recipe.rollout.n;
        let want = self.recipe.train.prompts_per_step;
        let dynamic = self.recipe.train.dynamic_sampling;
        let rounds = if dynamic {
            self.recipe.train.max_sampling_rounds
        } else {
            1
        };
        let (mut kept, mut all, mut m) =
            (Vec::with_capacity(want * n), Vec::new(), BTreeMap::new());
        let (mut dropped, mut used_rounds, mut generated) = (0usize, 0usize, 0usize);
        for round in 0..rounds {
            let missing = want - kept.len() / n;
            if missing == 0 {
                break;
            }
            used_rounds += 1;
            let batch = self.sample_groups(missing, round)?;
            generated += batch.iter().map(Sample::generated_tokens).sum::<usize>();
            for group in batch.chunks(n) {
                // Equal rewards give every response of the group a zero advantage.
                if dynamic && group.iter().all(|s| s.reward == group[0].reward) {
                    dropped += 1;
                } else {
                    kept.extend_from_slice(group);
                }
            }
            all.extend(batch);
        }
        m.insert("rollout/generated_tokens".into(), generated as f64);
        if dynamic {
            m.insert("rollout/dropped_groups".into(), dropped as f64);
            m.insert("rollout/sampling_rounds".into(), used_rounds as f64);
            m.insert("rollout/kept_groups".into(), (kept.len() / n) as f64);
        }
        Ok(StepRollout {
            train: kept,
            drawn: all,
            metrics: m,
        })
    }

    /// Draws `prompts` prompts, samples `rollout.n` responses for each (independently, or as a
    /// tree with `rollout.tree`) and scores them. `round` > 0 is a dynamic-sampling refill.
    fn sample_groups(&mut self, prompts: usize, round: usize) -> Result<Vec<Sample>> {
        let drawn = self.tasks.next_prompts(prompts)?;
        let prompts = drawn
            .iter()
            .map(|d| encode_prompt(&self.model.tokenizer, &d.example.prompt))
            .collect::<Result<Vec<_>>>()?;
        let r = &self.recipe.rollout;
        let label = match round {
            0 => format!("kiln-train/rollout/{}", self.step),
            _ => format!("kiln-train/rollout/{}/{round}", self.step),
        };
        let params = SamplingParams {
            n: r.n,
            temperature: r.temperature as f32,
            top_k: r.top_k,
            top_p: r.top_p as f32,
            min_p: r.min_p as f32,
            max_new_tokens: r.max_new_tokens,
            stop_strings: r.stop.clone(),
            seed: derive_seed(self.recipe.seed, &label),
            ..SamplingParams::default()
        };
        // Each group's rollouts with their place in the tree (all roots without a tree).
        let groups: Vec<Vec<(Rollout, TreeLink)>> = match &r.tree {
            None => self
                .engine()
                .generate(&prompts, &params)?
                .into_iter()
                .map(|g| {
                    g.rollouts
                        .into_iter()
                        .map(|ro| (ro, TreeLink::ROOT))
                        .collect()
                })
                .collect(),
            Some(tree) => {
                let tree = TreeParams {
                    n: r.n,
                    epsilon: tree.epsilon,
                    metric: tree.metric,
                };
                let embeddings = TokenEmbeddings::from_net(&self.model.net)?;
                tree_rollouts(&self.engine(), &prompts, &params, &tree, &embeddings)?
                    .into_iter()
                    .map(|g| {
                        let links = g.links.iter().map(|l| TreeLink {
                            parent: l.parent,
                            branch_pos: l.branch_pos,
                        });
                        g.rollouts.into_iter().zip(links).collect()
                    })
                    .collect()
            }
        };
        self.options.faults.point("rollout", self.step + 1);
        self.bar.set_message("score");
        let mut samples = Vec::with_capacity(prompts.len() * r.n);
        for (g, d) in groups.into_iter().zip(&drawn) {
            for (ro, link) in g {
                samples.push(Sample {
                    task: d.task,
                    text: response_text(&ro, r.include_stop),
                    prompt_ids: ro.prompt_ids,
                    response_ids: ro.response_ids,
                    rollout_logp: ro.logprobs,
                    entropies: ro.entropies,
                    reward: 0.0,
                    correct: false,
                    rm_score: None,
                    finish: ro.finish_reason,
                    link,
                });
            }
        }
        // Score task by task (each has its verifier), in parallel inside a task.
        for (ti, task) in self.tasks.tasks.iter().enumerate() {
            let idx: Vec<usize> = (0..samples.len())
                .filter(|&i| samples[i].task == ti)
                .collect();
            if idx.is_empty() {
                continue;
            }
            let refs: Vec<_> = idx
                .iter()
                .map(|&i| {
                    let d = &drawn[i / r.n];
                    (
                        samples[i].text.clone(),
                        reward_reference(&d.example.reference),
                    )
                })
                .collect();
            let verdicts = score_batch(task.verifier.as_ref(), &refs);
            let rm = match (&self.reward_models[ti], &task.section.reward_model) {
                (Some(scorer), Some(spec)) => {
                    let pairs: Vec<(&Prompt, &str)> = idx
                        .iter()
                        .map(|&i| (&drawn[i / r.n].example.prompt, samples[i].text.as_str()))
                        .collect();
                    let raw = scorer.score(&pairs)?;
                    let mut used = raw.clone();
                    if spec.normalize {
                        normalize_over_batch(&mut used);
                    }
                    Some((raw, used, spec.weight))
                }
                _ => None,
            };
            let vw = task.section.verifier_weight;
            for (k, (&i, v)) in idx.iter().zip(verdicts).enumerate() {
                let mut reward = vw * v.score;
                if let Some((raw, used, weight)) = &rm {
                    samples[i].rm_score = Some(raw[k]);
                    reward += weight * used[k] as f64;
                }
                samples[i].reward = reward as f32;
                samples[i].correct = v.correct;
            }
        }
        Ok(samples)
    }

    /// One RL step: rollout, scoring, advantages, PPO epochs, optimizer steps. Returns the
    /// step's metrics.
    pub fn step_once(&mut self) -> Result<BTreeMap<String, f64>> {
        let t0 = Instant::now();
        self.bar.set_message("rollout");
        let StepRollout {
            train: samples,
            drawn,
            metrics: rollout_metrics,
        } = self.rollout()?;
        let t_rollout = t0.elapsed().as_secs_f64();
        if self.options.progress {
            for s in samples.iter().take(self.recipe.logging.print_samples) {
                let mark = if s.correct { "right" } else { "wrong" };
                say(
                    &self.bar,
                    format!("  sample ({mark}, reward {:.2}): {:?}", s.reward, s.text),
                );
            }
        }
        let t1 = Instant::now();
        self.bar.set_message("update");
        let mut m = if samples.is_empty() {
            // Dynamic sampling found no group whose rewards differ: nothing to learn from.
            say(
                &self.bar,
                format!(
                    "step {}: every group had equal rewards after {} rollouts; no update",
                    self.step + 1,
                    self.recipe.train.max_sampling_rounds
                ),
            );
            BTreeMap::from([("actor/updates".to_string(), 0.0)])
        } else {
            self.update(&samples)?
        };
        m.extend(rollout_metrics);
        let t_update = t1.elapsed().as_secs_f64();
        self.step += 1;
        summarize_samples(&drawn, &self.tasks, &mut m);
        if !self.recipe.schedule.is_empty() {
            m.insert("data/phase".into(), self.tasks.phase() as f64);
        }
        m.insert("time/rollout_s".into(), t_rollout);
        m.insert("time/update_s".into(), t_update);
        m.insert("time/step_s".into(), t0.elapsed().as_secs_f64());
        let new_tokens: usize = drawn.iter().map(|s| s.response_ids.len()).sum();
        m.insert("rollout/new_tokens".into(), new_tokens as f64);
        m.insert(
            "rollout/tokens_per_s".into(),
            new_tokens as f64 / t_rollout.max(1e-9),
        );
        Ok(m)
    }

    fn pad_id(&self) -> u32 {
        self.model.tokenizer.pad_id.unwrap_or(0)
    }

    /// `per_token` of every micro-batch of `samples` (no autodiff), split back into one
    /// vector per sample.
    fn per_sample(
        &self,
        samples: &[Sample],
        mut per_token: impl FnMut(&SeqBatch) -> Result<Vec<f32>>,
    ) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(samples.len());
        for chunk in samples.chunks(self.recipe.train.micro_batch_size.max(1)) {
            let rows: Vec<_> = chunk.iter().map(Sample::row).collect();
            let batch = SeqBatch::new(&rows, self.pad_id())?;
            split_rows(&per_token(&batch)?, &batch.response_lens, &mut out);
        }
        Ok(out)
    }

    /// Log-probs of every sample's response tokens under `net`.
    fn score_all(
        &self,
        net: &CausalLm,
        samples: &[Sample],
        temperature: f64,
    ) -> Result<Vec<Vec<f32>>> {
        let opts = self.chunk_options(temperature);
        self.per_sample(samples, |batch| {
            Ok(score(net, &self.model.rope, batch, &opts, false)?.0)
        })
    }

    /// The critic's value at every response token.
    fn values_all(&self, critic: &Critic, samples: &[Sample]) -> Result<Vec<Vec<f32>>> {
        let critic = critic.clone().valid();
        self.per_sample(samples, |batch| {
            Ok(critic.values_host(&self.model.rope, batch))
        })
    }

    /// Advantages, then the PPO epochs. Returns loss / gradient metrics.
    fn update(&mut self, samples: &[Sample]) -> Result<BTreeMap<String, f64>> {
        let recipe = self.recipe.clone();
        let n = recipe.rollout.n;
        let temperature = recipe.rollout.temperature;
        let b = samples.len();
        let t = samples
            .iter()
            .map(|s| s.response_ids.len())
            .max()
            .unwrap_or(1)
            .max(1);
        let mut m = BTreeMap::new();

        // Old log-probs on the training path, and their gap to the rollout's.
        let policy_valid = self.model.net.clone().valid();
        let old = self.score_all(&policy_valid, samples, temperature)?;
        let (mut gap_sum, mut gap_max, mut gap_n) = (0.0f64, 0.0f64, 0usize);
        for (s, o) in samples.iter().zip(&old) {
            for (a, b) in s.rollout_logp.iter().zip(o) {
                let d = (*a as f64 - *b as f64).abs();
                gap_sum += d;
                gap_max = gap_max.max(d);
                gap_n += 1;
            }
        }
        m.insert(
            "rollout/logprob_abs_diff".into(),
            gap_sum / gap_n.max(1) as f64,
        );
        m.insert("rollout/logprob_max_abs_diff".into(), gap_max);
        let reference = match &self.reference {
            Some(r) => Some(self.score_all(r, samples, temperature)?),
            None => None,
        };

        // [B, T] host arrays.
        let pad = |rows: &[Vec<f32>]| -> Vec<f32> {
            let mut out = vec![0.0f32; b * t];
            for (i, r) in rows.iter().enumerate() {
                out[i * t..i * t + r.len()].copy_from_slice(r);
            }
            out
        };
        let mask = pad(&samples
            .iter()
            .map(|s| vec![1.0; s.response_ids.len()])
            .collect::<Vec<_>>());
        let old_p = pad(&old);
        let ref_p = reference.as_ref().map(|r| pad(r));
        if let Some(rp) = &ref_p {
            let kl: f64 = old_p
                .iter()
                .zip(rp)
                .zip(&mask)
                .map(|((l, r), mk)| (*mk as f64) * (*l as f64 - *r as f64))
                .sum::<f64>()
                / mask.iter().map(|&x| x as f64).sum::<f64>().max(1.0);
            m.insert("actor/kl_to_ref".into(), kl);
        }
        let rewards: Vec<f32> = samples.iter().map(|s| s.reward).collect();
        let (adv, returns, old_values) = match recipe.algorithm.advantage.outcome() {
            Some(est) => (
                outcome_token_advantages(est, &rewards, n, &mask, t)?,
                None,
                None,
            ),
            None if recipe.algorithm.advantage == AdvantageKind::Rose => {
                let links: Vec<TreeLink> = samples.iter().map(|s| s.link).collect();
                let correct: Vec<bool> = samples.iter().map(|s| s.correct).collect();
                let out = rose_token_advantages(
                    &rewards,
                    &links,
                    &correct,
                    n,
                    &mask,
                    t,
                    &recipe.algorithm.rose,
                )?;
                let calibrated = out
                    .responses
                    .iter()
                    .filter(|r| r.calibration.is_some())
                    .count();
                m.insert("actor/rose_calibrated".into(), calibrated as f64);
                (out.advantages, None, None)
            }
            None => {
                let critic = self.critic.as_ref().ok_or_else(|| {
                    TrainError::recipe("critic", "advantage = \"gae\" needs a [critic] section")
                })?;
                let values = pad(&self.values_all(critic, samples)?);
                let mut token_rewards = place_on_last_token(&rewards, &mask, t)?;
                if let (Some(rp), true) = (&ref_p, recipe.algorithm.kl_reward_coef > 0.0) {
                    let kl = apply_kl_reward(
                        &mut token_rewards,
                        &old_p,
                        rp,
                        &mask,
                        t,
                        recipe.algorithm.kl_reward_coef,
                        recipe.algorithm.kl_estimator,
                    )?;
                    m.insert("actor/kl_in_reward".into(), kl);
                }
                let out = gae(
                    &token_rewards,
                    &values,
                    &mask,
                    t,
                    recipe.algorithm.gamma,
                    recipe.algorithm.lam,
                )?;
                let vmean = masked_mean(&values, &mask);
                m.insert("critic/values_mean".into(), vmean);
                (out.advantages, Some(out.returns), Some(values))
            }
        };
        let mut adv = adv;
        if self.options.faults.poisons("advantages", self.step + 1) {
            adv.fill(f32::NAN);
        }
        m.insert("actor/advantage_abs_mean".into(), {
            let s: f64 = adv
                .iter()
                .zip(&mask)
                .map(|(a, mk)| (a.abs() * mk) as f64)
                .sum();
            s / mask.iter().map(|&x| x as f64).sum::<f64>().max(1.0)
        });

        let mini = recipe.train.mini_batch_size.unwrap_or(b).min(b).max(1);
        let micro = recipe.train.micro_batch_size.max(1);
        let opts = self.chunk_options(temperature);
        let actor_on = recipe
            .critic
            .as_ref()
            .is_none_or(|c| self.step >= c.warmup_steps);
        let mut loss_sum = LossMetrics::default();
        let (mut grad_norms, mut skipped, mut n_updates) = (Vec::new(), 0usize, 0usize);
        let (mut critic_loss, mut critic_norms) = (0.0f64, Vec::new());
        let mut surgery_sums: BTreeMap<String, f64> = BTreeMap::new();
        for epoch in 0..recipe.train.ppo_epochs {
            let mut order: Vec<usize> = (0..b).collect();
            let mut rng = rand::rngs::StdRng::seed_from_u64(derive_seed(
                recipe.seed,
                &format!("kiln-train/minibatch/{}/{epoch}", self.step),
            ));
            order.shuffle(&mut rng);
            for mb_rows in order.chunks(mini) {
                let rows_mask: Vec<f32> = mb_rows
                    .iter()
                    .flat_map(|&i| mask[i * t..(i + 1) * t].iter().copied())
                    .collect();
                let counts = GlobalCounts::from_mask(&rows_mask, t, recipe.rollout.max_new_tokens);
                // Actor gradients by domain (the task) when surgery compares them; else one sum.
                let by_task = self.surgery.is_some();
                let mut actor_acc: BTreeMap<usize, GradientsParams> = BTreeMap::new();
                let mut critic_acc = GradientsParams::new();
                for micro_rows in micro_batches(mb_rows, micro, by_task.then_some(samples)) {
                    let micro_rows = micro_rows.as_slice();
                    let domain = if by_task {
                        samples[micro_rows[0]].task
                    } else {
                        0
                    };
                    let rows: Vec<_> = micro_rows.iter().map(|&i| samples[i].row()).collect();
                    let batch = SeqBatch::new(&rows, self.pad_id())?;
                    // Flat real-token arrays of this micro-batch, weights from global counts.
                    let sel = |a: &[f32]| -> Vec<f32> {
                        micro_rows
                            .iter()
                            .flat_map(|&i| {
                                a[i * t..i * t + samples[i].response_ids.len()]
                                    .iter()
                                    .copied()
                            })
                            .collect()
                    };
                    let mmask: Vec<f32> = micro_rows
                        .iter()
                        .flat_map(|&i| mask[i * t..(i + 1) * t].iter().copied())
                        .collect();
                    let real = |w: Vec<f32>| -> Vec<f32> {
                        w.into_iter()
                            .zip(&mmask)
                            .filter(|(_, mk)| **mk > 0.0)
                            .map(|(x, _)| x)
                            .collect()
                    };
                    let pg_w = real(agg_weights(&mmask, t, recipe.algorithm.loss_agg, &counts)?);
                    let tok_w = real(agg_weights(&mmask, t, AggMode::TokenMean, &counts)?);
                    if actor_on {
                        let device = self.model.net.device();
                        let f = |v: &[f32]| Tensor::<1>::from_floats(v, &device);
                        let loss_batch = LossBatch {
                            targets: Tensor::<1, Int>::from_ints(batch.targets.as_slice(), &device),
                            old_logp: f(&sel(&old_p)),
                            advantages: f(&sel(&adv)),
                            ref_logp: ref_p.as_ref().map(|r| f(&sel(r))),
                            pg_weight: f(&pg_w),
                            token_weight: f(&tok_w),
                            pg_token_mask: None,
                            kl_cov_mask: None,
                        };
                        let g = actor_grads(
                            &self.model.net,
                            &self.model.rope,
                            &batch,
                            &loss_batch,
                            &self.loss_cfg,
                            &opts,
                        )?;
                        loss_sum += g.metrics;
                        let acc = actor_acc.entry(domain).or_default();
                        accumulate(acc, g.grads, &self.params)?;
                    }
                    if let (Some(critic), Some(ret), Some(ov)) =
                        (&self.critic, &returns, &old_values)
                    {
                        let clip = recipe.critic.as_ref().map(|c| c.value_clip).unwrap_or(0.5);
                        let (g, l) = critic_grads(
                            critic,
                            &self.model.rope,
                            &batch,
                            &sel(ov),
                            &sel(ret),
                            &tok_w,
                            clip,
                        );
                        critic_loss += l;
                        accumulate(
                            &mut critic_acc,
                            g,
                            self.critic_params.as_ref().expect("critic params"),
                        )?;
                    }
                }
                if actor_on {
                    let grads = self.combine_domains(actor_acc, &mut surgery_sums)?;
                    let net = self.model.net.clone();
                    let (net, stats) = self.optimizer.step(net, grads, &self.params)?;
                    self.model.net = net;
                    self.options.faults.point("update", self.step + 1);
                    grad_norms.push(stats.grad_norm);
                    n_updates += 1;
                    if stats.skipped {
                        skipped += 1;
                        self.consecutive_skips += 1;
                        if self.consecutive_skips > recipe.train.max_consecutive_skips {
                            return Err(TrainError::Diverged {
                                step: self.step + 1,
                                message: format!(
                                    "{} consecutive optimizer steps had a non-finite gradient (train.max_consecutive_skips = {}): the run stops rather than train on garbage; lower optim.lr or check the rewards",
                                    self.consecutive_skips, recipe.train.max_consecutive_skips
                                ),
                            });
                        }
                    } else {
                        self.consecutive_skips = 0;
                    }
                    m.insert("actor/lr".into(), stats.lr);
                }
                if let (Some(critic), Some(opt)) =
                    (self.critic.take(), self.critic_optimizer.as_mut())
                {
                    let params = self.critic_params.as_ref().expect("critic params");
                    let (critic, stats) = opt.step(critic, critic_acc, params)?;
                    critic_norms.push(stats.grad_norm);
                    self.critic = Some(critic);
                }
            }
        }
        let updates = (recipe.train.ppo_epochs * b.div_ceil(mini)).max(1) as f64;
        if actor_on {
            // LossMetrics are sums over a mini-batch's micro-batches: average over mini-batches.
            let l = loss_sum;
            for (k, v) in [
                ("actor/loss", l.loss),
                ("actor/pg_loss", l.pg_loss),
                ("actor/kl", l.kl),
                ("actor/entropy_term", l.entropy),
                ("actor/clip_frac", l.clip_frac),
                ("actor/ppo_kl", l.ppo_kl),
            ] {
                m.insert(k.into(), v / updates);
            }
            m.insert("actor/grad_norm".into(), mean(&grad_norms));
            m.insert("actor/skipped_steps".into(), skipped as f64);
            m.insert("actor/updates".into(), n_updates as f64);
        }
        for (k, v) in surgery_sums {
            // Hook summaries (conflict fractions) averaged over the step's optimizer steps.
            m.insert(format!("surgery/{k}"), v / updates);
        }
        if self.critic.is_some() {
            m.insert("critic/loss".into(), critic_loss / updates);
            m.insert("critic/grad_norm".into(), mean(&critic_norms));
        }
        Ok(m)
    }
}

impl Trainer {
    /// The actor gradient of one mini-batch from its per-domain parts: their plain sum, or what
    /// the gradient surgery makes of them (its summaries are added into `summary_sums`).
    fn combine_domains(
        &mut self,
        mut by_domain: BTreeMap<usize, GradientsParams>,
        summary_sums: &mut BTreeMap<String, f64>,
    ) -> Result<GradientsParams> {
        let Some(hook) = self.surgery.as_mut() else {
            return Ok(by_domain.remove(&0).unwrap_or_default());
        };
        // Domains in task order (a fixed order: the hook's random orders are keyed by position).
        let domains: Vec<DomainGrads> = by_domain
            .into_iter()
            .map(|(task, grads)| DomainGrads {
                domain: self.tasks.tasks[task].name.clone(),
                grads,
            })
            .collect();
        let out = hook.combine(&domains, &self.params)?;
        for (k, v) in out.telemetry.summary {
            *summary_sums.entry(k).or_default() += v;
        }
        Ok(out.grads)
    }
}

/// The micro-batches of a mini-batch's rows: consecutive chunks of `micro` rows, or, with
/// `by_task`, chunks of each task's rows (domain-pure, tasks in index order).
fn micro_batches(rows: &[usize], micro: usize, by_task: Option<&[Sample]>) -> Vec<Vec<usize>> {
    let Some(samples) = by_task else {
        return rows.chunks(micro).map(<[usize]>::to_vec).collect();
    };
    let mut tasks: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &r in rows {
        tasks.entry(samples[r].task).or_default().push(r);
    }
    tasks
        .values()
        .flat_map(|rows| rows.chunks(micro).map(<[usize]>::to_vec))
        .collect()
}

/// A console line: above the progress bar on a terminal, plain stderr otherwise (indicatif
/// draws nothing, `println` included, when stderr is not a terminal).
pub(crate) fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn masked_mean(x: &[f32], mask: &[f32]) -> f64 {
    let s: f64 = x.iter().zip(mask).map(|(a, m)| (*a * *m) as f64).sum();
    s / mask.iter().map(|&m| m as f64).sum::<f64>().max(1.0)
}

fn split_rows(flat: &[f32], lens: &[usize], out: &mut Vec<Vec<f32>>) {
    let mut start = 0;
    for &l in lens {
        out.push(flat[start..start + l].to_vec());
        start += l;
    }
}

/// Reward, accuracy, length and entropy statistics of a step's samples.
fn summarize_samples(samples: &[Sample], tasks: &TaskSet, m: &mut BTreeMap<String, f64>) {
    let n = samples.len().max(1) as f64;
    m.insert(
        "reward/mean".into(),
        samples.iter().map(|s| s.reward as f64).sum::<f64>() / n,
    );
    m.insert(
        "reward/correct".into(),
        samples.iter().filter(|s| s.correct).count() as f64 / n,
    );
    let lens: Vec<f64> = samples
        .iter()
        .map(|s| s.response_ids.len() as f64)
        .collect();
    m.insert("response_length/mean".into(), lens.iter().sum::<f64>() / n);
    m.insert(
        "response_length/max".into(),
        lens.iter().cloned().fold(0.0, f64::max),
    );
    m.insert(
        "response_length/clip_frac".into(),
        samples
            .iter()
            .filter(|s| s.finish == FinishReason::Length)
            .count() as f64
            / n,
    );
    let (es, en) = samples
        .iter()
        .flat_map(|s| s.entropies.iter())
        .fold((0.0f64, 0usize), |(a, c), &e| (a + e as f64, c + 1));
    m.insert("actor/entropy".into(), es / en.max(1) as f64);
    if tasks.tasks.len() > 1 {
        for (ti, task) in tasks.tasks.iter().enumerate() {
            let of: Vec<&Sample> = samples.iter().filter(|s| s.task == ti).collect();
            if of.is_empty() {
                continue;
            }
            let k = of.len() as f64;
            m.insert(
                format!("reward/{}/mean", task.name),
                of.iter().map(|s| s.reward as f64).sum::<f64>() / k,
            );
            m.insert(
                format!("reward/{}/correct", task.name),
                of.iter().filter(|s| s.correct).count() as f64 / k,
            );
        }
    }
    // The learned reward models' raw scores (before weighting and normalisation).
    for (ti, task) in tasks.tasks.iter().enumerate() {
        let scores: Vec<f64> = samples
            .iter()
            .filter(|s| s.task == ti)
            .filter_map(|s| s.rm_score.map(f64::from))
            .collect();
        if !scores.is_empty() {
            m.insert(
                format!("reward/{}/rm_score", task.name),
                scores.iter().sum::<f64>() / scores.len() as f64,
            );
        }
    }
}

/// Runs only the recipe's `[sft]` stage and writes the result as a Hugging Face directory
/// (`<run>/sft/final`), which it returns.
pub fn sft_only(recipe: Recipe, options: RunOptions) -> Result<PathBuf> {
    let sft = recipe
        .sft
        .clone()
        .ok_or_else(|| TrainError::recipe("sft", "the recipe has no [sft] section"))?;
    let run_dir = run_dir_of(&recipe, &options);
    prepare_run_dir(&run_dir, true)?;
    let device = parse_device(&recipe.device)
        .map_err(|e| TrainError::recipe("device", e.to_string()))?
        .autodiff();
    let tasks = TaskSet::from_recipe(&recipe)?;
    let mut model = load_policy(&recipe, &device)?;
    let bar = bar(options.progress, sft.steps);
    sft::warm_start(&mut model, &recipe, &sft, &tasks, &run_dir, &bar, &options)?;
    bar.finish_and_clear();
    let out = run_dir.join("sft").join("final");
    model.save_hf(&out)?;
    Ok(out)
}
