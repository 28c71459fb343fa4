//! Learned reward models: the Bradley-Terry loss and its gradients against PyTorch
//! (tests/fixtures/bradley_terry.safetensors, written by
//! benchmarks/reference/bradley_terry_fixture.py), `kiln rm-train` learning a preference, the
//! scorer, and PPO with a reward-model task in the trainer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::optim::GradientsParams;
use burn::prelude::*;
use kiln_data::Prompt;
use kiln_model::classifier::last_token_index;
use kiln_model::{Model, SequenceClassifier, TokenBatch};
use kiln_optim::loss::bradley_terry_loss;
use kiln_train::metrics::read_metrics_jsonl;
use kiln_train::recipe::load_recipe;
use kiln_train::reward_model::{RewardModel, RewardModelScorer};
use kiln_train::rm_train::{RmOptions, RmRecipe, train_reward_model};
use kiln_train::{RunOptions, Trainer};
use safetensors::SafeTensors;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shared() -> PathBuf {
    std::env::var_os("KILN_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared"))
}

/// `(shape, values)` of a fixture tensor as f64.
fn fixture(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f64>) {
    let t = st.tensor(name).unwrap();
    let values = match t.dtype() {
        safetensors::Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        safetensors::Dtype::I64 => t
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("{name}: unexpected dtype {other:?}"),
    };
    (t.shape().to_vec(), values)
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// The gradient of the HF-named parameter `name` of `rm`, in HF layout.
fn grad_of(rm: &SequenceClassifier, grads: &GradientsParams, name: &str) -> Vec<f32> {
    let linear_t = |w: &burn::module::Param<Tensor<2>>| {
        let g: Tensor<2> = grads.get(w.id).unwrap();
        host(g.transpose())
    };
    match name {
        "score.weight" => linear_t(&rm.score.weight),
        "model.norm.weight" => host(grads.get::<1>(rm.model.norm.gamma.id).unwrap()),
        "model.embed_tokens.weight" => {
            host(grads.get::<2>(rm.model.embed_tokens.weight.id).unwrap())
        }
        "model.layers.0.self_attn.q_proj.weight" => {
            linear_t(&rm.model.layers[0].self_attn.q_proj.weight)
        }
        "model.layers.1.mlp.down_proj.weight" => linear_t(&rm.model.layers[1].mlp.down_proj.weight),
        other => panic!("no accessor for {other}"),
    }
}

#[test]
fn bradley_terry_loss_and_gradients_match_pytorch() {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bradley_terry.safetensors"),
    )
    .unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (shape, ids) = fixture(&st, "input_ids");
    let (_, mask) = fixture(&st, "attention_mask");
    let (_, margins) = fixture(&st, "margins");
    let device = Device::flex().autodiff();
    let (cfg, _, rm, rope) =
        SequenceClassifier::load(&shared().join("fixtures/tiny-llama-rm"), &device).unwrap();
    let batch = TokenBatch {
        ids: ids.iter().map(|&x| x as u32).collect(),
        batch: shape[0],
        seq: shape[1],
        mask: Some(mask.iter().map(|&m| m == 1.0).collect()),
        positions: None,
    };
    // Rows are chosen, rejected, chosen, ... of different lengths, right-padded.
    assert!(
        last_token_index(&batch, cfg.pad_token_id)
            .windows(2)
            .any(|w| w[0] != w[1])
    );
    let pairs = shape[0] / 2;
    for (case, m) in [
        ("plain", vec![0.0f32; pairs]),
        ("margin", margins.iter().map(|&x| x as f32).collect()),
    ] {
        let scores = rm
            .sequence_scores(&rope, &batch, cfg.pad_token_id)
            .reshape([shape[0]]);
        let idx = |start: i64| {
            let v: Vec<i64> = (0..pairs as i64).map(|i| 2 * i + start).collect();
            Tensor::<1, Int>::from_ints(v.as_slice(), &device)
        };
        let chosen = scores.clone().select(0, idx(0));
        let rejected = scores.clone().select(0, idx(1));
        let weights = Tensor::<1>::ones([pairs], &device).div_scalar(pairs as f64);
        let margin = Tensor::<1>::from_floats(m.as_slice(), &device);
        let loss = bradley_terry_loss(chosen, rejected, margin, weights);
        let got_scores = host(scores.clone());
        let got_loss = loss.clone().into_scalar::<f32>() as f64;
        let grads = GradientsParams::from_grads(loss.backward(), &rm);
        let (_, want_scores) = fixture(&st, &format!("{case}.scores"));
        let (_, want_loss) = fixture(&st, &format!("{case}.loss"));
        for (g, w) in got_scores.iter().zip(&want_scores) {
            assert!((*g as f64 - w).abs() < 1e-5, "{case}: score {g} vs {w}");
        }
        assert!(
            (got_loss - want_loss[0]).abs() < 1e-5,
            "{case}: loss {got_loss} vs {}",
            want_loss[0]
        );
        for name in [
            "score.weight",
            "model.norm.weight",
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.1.mlp.down_proj.weight",
        ] {
            let got = grad_of(&rm, &grads, name);
            let (_, want) = fixture(&st, &format!("{case}.grad.{name}"));
            assert_eq!(got.len(), want.len(), "{name}");
            let err = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (*g as f64 - w).abs())
                .fold(0.0, f64::max);
            let scale = want.iter().map(|w| w.abs()).fold(0.0, f64::max);
            println!("{case} {name}: max |diff| {err:.2e} (max |grad| {scale:.2e})");
            assert!(scale > 0.0, "{name}: the fixture's gradient is zero");
            // 1e-5 on the scale of the gradient (f32 sums over tokens: the embedding's entries
            // reach 5, where one f32 ulp is 5e-7).
            assert!(
                err < 1e-5 * scale.max(1.0),
                "{case} {name}: gradients differ by {err}"
            );
        }
    }
}

/// A preference a tiny model can learn in a few dozen steps: the chosen reply is in upper case.
fn write_case_pairs(path: &Path, n: usize, offset: usize) {
    let words = ["cat", "dog", "fox", "owl", "bee", "cow", "hen", "pig"];
    let mut text = String::new();
    for i in 0..n {
        let w = words[(i + offset) % words.len()];
        let k = 1 + (i + offset) % 3;
        let reply = vec![w; k].join(" ");
        text.push_str(
            &serde_json::json!({
                "prompt": format!("shout {w}:"),
                "chosen": format!(" {}", reply.to_uppercase()),
                "rejected": format!(" {reply}"),
            })
            .to_string(),
        );
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn rm_recipe(dir: &Path, extra: &[&str]) -> RmRecipe {
    let (train, eval) = (dir.join("train.jsonl"), dir.join("eval.jsonl"));
    write_case_pairs(&train, 256, 0);
    write_case_pairs(&eval, 64, 5);
    let text = format!(
        r#"name = "rm-test"
seed = 3
output = {out:?}
[model]
path = {model:?}
init = "random"
[data]
train = {{ kind = "jsonl", path = {train:?} }}
eval = {{ kind = "jsonl", path = {eval:?} }}
[train]
steps = 30
batch_size = 16
micro_batch_size = 8
lr = 3e-3
warmup_steps = 5
weight_decay = 0.0
eval_every = 15
"#,
        out = dir.join("run"),
        model = root().join("recipes/models/tiny-arith"),
    );
    let path = dir.join("rm.toml");
    std::fs::write(&path, text).unwrap();
    let sets: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    RmRecipe::load(&path, &sets).unwrap()
}

#[test]
fn rm_train_learns_a_preference_and_its_model_scores_the_same_after_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = rm_recipe(tmp.path(), &[]);
    let report = train_reward_model(&recipe, &RmOptions::default()).unwrap();
    println!("{report:?}");
    assert!(report.initial_eval_accuracy < 0.8, "{report:?}");
    assert!(report.eval_accuracy >= 0.95, "{report:?}");
    assert!(report.eval_loss < report.initial_eval_loss, "{report:?}");
    // The metrics hold the curve, with held-out accuracy at 0, 15 and 30.
    let m = read_metrics_jsonl(&tmp.path().join("run/metrics.jsonl")).unwrap();
    let evals: Vec<u64> = m
        .iter()
        .filter(|(_, x)| x.contains_key("eval/rm/accuracy"))
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(evals, vec![0, 15, 30]);
    // The saved checkpoint is a LlamaForSequenceClassification with its tokenizer, and the
    // scorer reads it back: upper case beats lower case for unseen words.
    let dir = &report.model_dir;
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(config.contains("LlamaForSequenceClassification"));
    let scorer = RewardModelScorer::load(dir, &Device::flex(), 1).unwrap();
    let p = Prompt::Text("shout yak:".into());
    let s = scorer.score(&[(&p, " YAK YAK"), (&p, " yak yak")]).unwrap();
    assert!(s[0] > s[1], "{s:?}");
    // Batching does not change a score.
    let wide = RewardModelScorer::load(dir, &Device::flex(), 32).unwrap();
    let t = wide
        .score(&[(&p, " YAK YAK"), (&p, " yak yak yak yak"), (&p, " yak")])
        .unwrap();
    assert!((t[0] - s[0]).abs() < 1e-5, "{t:?} vs {s:?}");
    // A second run into the same directory is refused unless asked to overwrite.
    let again = train_reward_model(&recipe, &RmOptions::default())
        .unwrap_err()
        .to_string();
    assert!(again.contains("metrics.jsonl"), "{again}");
}

#[test]
fn rm_recipes_and_reward_models_fail_with_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    rm_recipe(tmp.path(), &[]);
    let path = tmp.path().join("rm.toml");
    let err = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        RmRecipe::load(&path, &sets).unwrap_err().to_string()
    };
    assert!(err(&["train.lr=0.0"]).contains("train.lr"));
    assert!(err(&["train.steps=0"]).contains("train.steps"));
    assert!(err(&["train.batch=3"]).contains("train.batch"));
    assert!(err(&["data.train.kind=\"pairs\""]).contains("data.train"));
    // A data file that is not preference pairs names the file and line.
    std::fs::write(
        tmp.path().join("train.jsonl"),
        "{\"prompt\": \"x\", \"chosen\": \"y\"}\n",
    )
    .unwrap();
    let recipe = RmRecipe::load(&path, &[]).unwrap();
    let e = train_reward_model(&recipe, &RmOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train.jsonl") && e.contains("line 1") && e.contains("rejected"),
        "{e}"
    );
    // A failed start leaves no run directory behind.
    assert!(!tmp.path().join("run").exists());
    // A causal LM is not a reward model; a missing directory says how to make one.
    let e = RewardModel::load(&shared().join("fixtures/tiny-llama"), &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(e.contains("score.weight"), "{e}");
    let e = RewardModel::load(&tmp.path().join("nope"), &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(e.contains("kiln rm-train"), "{e}");
    // A reward model that returns NaN is an error naming it, not a NaN reward.
    let model = Model::random(
        &root().join("recipes/models/tiny-arith"),
        &Device::flex(),
        1,
    )
    .unwrap();
    let mut rm = RewardModel::from_causal_lm(model, 0.02, 1);
    let w = rm.net.score.weight.val();
    rm.net.score.weight = burn::module::Param::from_tensor(w.mul_scalar(f64::NAN));
    let nan_dir = tmp.path().join("nan-rm");
    rm.save(&nan_dir).unwrap();
    let scorer = RewardModelScorer::load(&nan_dir, &Device::flex(), 8).unwrap();
    let p = Prompt::Text("shout cat:".into());
    let e = scorer.score(&[(&p, " CAT")]).unwrap_err().to_string();
    assert!(e.contains("nan-rm") && e.contains("NaN"), "{e}");
}

/// The shipped chat-ppo-tre recipe, shortened, against a reward model trained here.
#[test]
fn ppo_against_a_reward_model_rewards_its_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let report = train_reward_model(
        &rm_recipe(tmp.path(), &["train.steps=4", "train.eval_every=4"]),
        &RmOptions::default(),
    )
    .unwrap();
    let sets = |extra: &[String]| {
        let mut s = vec![
            format!(
                "model.path={:?}",
                root()
                    .join("recipes/models/tiny-arith")
                    .display()
                    .to_string()
            ),
            format!(
                "tasks.chat.reward_model.path={:?}",
                report.model_dir.display().to_string()
            ),
            "sft.steps=4".into(),
            "sft.batch_size=16".into(),
            "train.steps=2".into(),
            "train.prompts_per_step=8".into(),
            "train.mini_batch_size=8".into(),
            "train.micro_batch_size=8".into(),
            "eval.limit=4".into(),
            "eval.every=2".into(),
            "checkpoint.every=2".into(),
        ];
        s.extend_from_slice(extra);
        s
    };
    let recipe = load_recipe(&root().join("recipes/chat-ppo-tre.toml"), &sets(&[])).unwrap();
    let run = tmp.path().join("ppo");
    let opts = RunOptions {
        run_dir: Some(run.clone()),
        progress: false,
        ..Default::default()
    };
    Trainer::new(recipe, opts).unwrap().run().unwrap();
    let m: Vec<(u64, BTreeMap<String, f64>)> =
        read_metrics_jsonl(&run.join("metrics.jsonl")).unwrap();
    let step = |s: u64| {
        m.iter()
            .filter(|(k, _)| *k == s)
            .flat_map(|(_, x)| x.clone())
            .collect::<BTreeMap<_, _>>()
    };
    for s in [1, 2] {
        let x = step(s);
        // verifier_weight = 0 and weight 1, not normalised: the reward IS the reward model's score.
        let (reward, rm) = (x["reward/mean"], x["reward/chat/rm_score"]);
        assert!(
            (reward - rm).abs() < 1e-5,
            "step {s}: reward {reward} vs rm score {rm}"
        );
        assert!(
            x.contains_key("critic/loss") || x.keys().any(|k| k.starts_with("critic/")),
            "{x:?}"
        );
    }
    assert!(step(2).contains_key("eval/chat/rm_score"));
    assert!(step(2).contains_key("eval/chat/accuracy"));
    // A recipe pointing at a missing reward model fails before training, naming the key.
    let bad = load_recipe(
        &root().join("recipes/chat-ppo-tre.toml"),
        &sets(&["tasks.chat.reward_model.path=\"/nonexistent/rm\"".into()]),
    )
    .unwrap();
    let e = Trainer::new(
        bad,
        RunOptions {
            run_dir: Some(tmp.path().join("bad")),
            progress: false,
            ..Default::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("tasks.chat.reward_model.path") && e.contains("kiln rm-train"),
        "{e}"
    );
    let invalid = load_recipe(
        &root().join("recipes/chat-ppo-tre.toml"),
        &sets(&["tasks.chat.verifier_weight=-1.0".into()]),
    )
    .unwrap_err()
    .to_string();
    assert!(invalid.contains("tasks.chat.verifier_weight"), "{invalid}");
}
