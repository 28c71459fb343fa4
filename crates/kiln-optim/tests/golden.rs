//! Golden tests against PyTorch (benchmarks/reference/optim_reference.py): losses and their
//! gradients w.r.t. the logits, on both the autodiff path and the analytic (chunked) path;
//! advantages; value loss; AdamW with global clipping and a cosine schedule.

mod common;

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use common::{Fixtures, assert_close, assert_scalar, load};
use kiln_optim::advantages;
use kiln_optim::entropy::{EntropyReg, Selection, full_entropy, select_trust_region};
use kiln_optim::loss::{
    AggMode, GlobalCounts, KlEstimator, KlLoss, LossConfig, PgBaseline, PpoClip, TokenBatch,
    clipped_value_loss, forking_token_mask, kl_cov_mask,
};
use kiln_optim::{
    AdamWSettings, LrSchedule, NamedParams, Optimizer, loss_and_grad_from_logits, policy_loss,
};
use serde_json::Value;

const RTOL: f64 = 1e-5;

fn agg_mode(s: &str) -> AggMode {
    match s {
        "token-mean" => AggMode::TokenMean,
        "seq-mean-token-mean" => AggMode::SeqMeanTokenMean,
        "seq-mean-token-sum" => AggMode::SeqMeanTokenSum,
        "seq-mean-token-sum-norm" => AggMode::SeqMeanTokenSumNorm,
        _ => panic!("mode {s}"),
    }
}

fn loss_config(cfg: &Value) -> LossConfig {
    let ppo = &cfg["ppo"];
    let mut c = LossConfig {
        ppo: PpoClip {
            clip_low: ppo["clip_low"].as_f64().unwrap(),
            clip_high: ppo["clip_high"].as_f64().unwrap(),
            dual_clip: ppo["dual_clip"].as_f64(),
        },
        agg: agg_mode(cfg["agg"].as_str().unwrap_or("token-mean")),
        ..LossConfig::default()
    };
    if let Some(kl) = cfg.get("kl") {
        c.kl_loss = Some(KlLoss {
            estimator: match kl["est"].as_str().unwrap() {
                "k1" => KlEstimator::K1,
                "k2" => KlEstimator::K2,
                _ => KlEstimator::K3,
            },
            coef: kl["coef"].as_f64().unwrap(),
        });
    }
    if let Some(e) = cfg.get("entropy") {
        let coef = e["coef"].as_f64().unwrap();
        c.entropy = match e["type"].as_str().unwrap() {
            "global" => EntropyReg::Global { coef },
            "tre-k" => EntropyReg::TreK {
                k: e["k"].as_u64().unwrap() as usize,
                coef,
            },
            _ => EntropyReg::TreP {
                p: e["p"].as_f64().unwrap(),
                max_region: 256,
                coef,
            },
        };
    }
    match cfg.get("baseline").and_then(|b| b.as_str()) {
        Some("forking") => {
            c.baseline = PgBaseline::ForkingTokens {
                top_frac: cfg["top_frac"].as_f64().unwrap(),
            }
        }
        Some("kl_cov") => {
            c.baseline = PgBaseline::KlCov {
                ratio: cfg["ratio"].as_f64().unwrap(),
                coef: cfg["kl_cov_coef"].as_f64().unwrap(),
            }
        }
        _ => {}
    }
    c
}

struct Case {
    name: String,
    cfg: LossConfig,
    loss: f64,
    big: bool,
}

fn cases(fx: &Fixtures) -> Vec<Case> {
    fx.meta["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap().to_string();
            Case {
                big: name.ends_with("_big"),
                cfg: loss_config(&c["cfg"]),
                loss: c["loss"].as_f64().unwrap(),
                name,
            }
        })
        .collect()
}

fn to_vec(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}
fn to_vec1(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

/// Inputs of a case: logits `[N, V]` (host) and the batch with masks computed by kiln.
fn case_inputs(fx: &Fixtures, case: &Case, dev: &Device) -> (Vec<f32>, [usize; 2], TokenBatch) {
    let (lname, tname) = if case.big {
        ("in.big_logits", "in.big_targets")
    } else {
        ("in.logits", "in.targets")
    };
    let shape = fx.shape(lname);
    let (n, v) = (shape[0], shape[1]);
    let l = fx.meta["L"].as_u64().unwrap() as usize;
    let l_max = fx.meta["L_max"].as_u64().unwrap() as usize;
    let mask = fx.f("in.mask");
    let counts = GlobalCounts::from_mask(mask, l, l_max);
    let mut batch = TokenBatch::from_host(
        dev,
        fx.i(tname),
        fx.f("in.old_logp"),
        fx.f("in.adv"),
        Some(fx.f("in.ref_logp")),
        mask,
        l,
        case.cfg.agg,
        &counts,
    )
    .unwrap();
    let logits = fx.f(lname).to_vec();
    let z = Tensor::<1>::from_floats(logits.as_slice(), dev).reshape([n, v]);
    match case.cfg.baseline {
        PgBaseline::ForkingTokens { top_frac } => {
            let h = to_vec1(full_entropy(z.clone()));
            let m = forking_token_mask(&h, mask, top_frac).unwrap();
            assert_eq!(
                m,
                fx.f(&format!("case.{}.forking_mask", case.name)),
                "forking mask"
            );
            assert!(m.iter().sum::<f32>() >= 3.0);
            batch = batch.with_pg_token_mask(&m);
        }
        PgBaseline::KlCov { ratio, .. } => {
            let s = kiln_optim::score_logits(z.clone(), batch.targets.clone(), false);
            let m = kl_cov_mask(&to_vec1(s.logp), fx.f("in.adv"), mask, ratio).unwrap();
            assert_eq!(
                m,
                fx.f(&format!("case.{}.kl_cov_mask", case.name)),
                "kl-cov mask"
            );
            batch = batch.with_kl_cov_mask(&m);
        }
        PgBaseline::None => {}
    }
    (logits, [n, v], batch)
}

#[test]
fn golden_losses_autodiff_path() {
    let fx = load();
    let dev = Device::flex();
    let ad = dev.clone().autodiff();
    let cs = cases(&fx);
    assert!(cs.len() >= 20, "expected all cases, got {}", cs.len());
    for case in &cs {
        let (logits, [n, v], batch) = case_inputs(&fx, case, &dev);
        for sel in [Selection::Host, Selection::Device] {
            let z = Tensor::<1>::from_floats(logits.as_slice(), &ad)
                .reshape([n, v])
                .require_grad();
            let out = policy_loss(z.clone(), &batch, &case.cfg, sel).unwrap();
            let loss: f32 = out.loss.clone().into_scalar();
            assert_scalar(&format!("{} loss", case.name), loss as f64, case.loss, RTOL);
            assert_scalar(
                &format!("{} metrics.loss", case.name),
                out.metrics.loss,
                case.loss,
                RTOL,
            );
            let grads = out.loss.backward();
            let g = z.grad(&grads).expect("logits grad");
            assert_close(
                &format!("{} grad ({sel:?})", case.name),
                &to_vec(g),
                fx.f(&format!("case.{}.grad", case.name)),
                RTOL,
            );
        }
    }
}

#[test]
fn golden_losses_analytic_path() {
    let fx = load();
    let dev = Device::flex();
    for case in &cases(&fx) {
        let (logits, [n, v], batch) = case_inputs(&fx, case, &dev);
        for sel in [Selection::Host, Selection::Device] {
            let z = Tensor::<1>::from_floats(logits.as_slice(), &dev).reshape([n, v]);
            let out = loss_and_grad_from_logits(z, &batch, &case.cfg, sel).unwrap();
            assert_scalar(
                &format!("{} loss (analytic)", case.name),
                out.metrics.loss,
                case.loss,
                RTOL,
            );
            assert_close(
                &format!("{} grad (analytic, {sel:?})", case.name),
                &to_vec(out.grad),
                fx.f(&format!("case.{}.grad", case.name)),
                RTOL,
            );
        }
    }
}

#[test]
fn golden_tre_p_region_sizes_hit_cap_and_one() {
    let fx = load();
    let dev = Device::flex();
    let shape = fx.shape("in.big_logits");
    let z = Tensor::<1>::from_floats(fx.f("in.big_logits"), &dev).reshape([shape[0], shape[1]]);
    for p in ["0.9", "0.99"] {
        let want = fx.f(&format!("case.tre_p{p}_big.region_size"));
        let reg = EntropyReg::tre_p(p.parse().unwrap());
        for sel in [Selection::Host, Selection::Device] {
            let r = select_trust_region(&z, None, &reg, sel).unwrap();
            assert_eq!(to_vec1(r.size), want, "TRE-P {p} sizes ({sel:?})");
        }
        if p == "0.99" {
            assert!(want.contains(&256.0), "cap exercised");
        }
        assert!(want.contains(&1.0), "|S| = 1 exercised");
    }
}

#[test]
fn golden_value_loss() {
    let fx = load();
    let ad = Device::flex().autodiff();
    let l = fx.meta["L"].as_u64().unwrap() as usize;
    let mask = fx.f("in.mask");
    let counts = GlobalCounts::from_mask(mask, l, 0);
    let w = kiln_optim::loss::agg_weights(mask, l, AggMode::TokenMean, &counts).unwrap();
    let t = |name: &str| Tensor::<1>::from_floats(fx.f(name), &ad);
    let values = t("in.values").require_grad();
    let loss = clipped_value_loss(
        values.clone(),
        t("in.old_values"),
        t("in.returns"),
        Tensor::<1>::from_floats(w.as_slice(), &ad),
        fx.meta["value_clip"].as_f64().unwrap(),
    );
    let lv: f32 = loss.clone().into_scalar();
    assert_scalar(
        "value loss",
        lv as f64,
        fx.meta["value_loss"].as_f64().unwrap(),
        RTOL,
    );
    let g = values.grad(&loss.backward()).unwrap();
    assert_close("value grad", &to_vec1(g), fx.f("value.grad"), RTOL);
}

#[test]
fn golden_advantages() {
    let fx = load();
    let g = fx.meta["group_size"].as_u64().unwrap() as usize;
    let r = fx.f("adv.rewards");
    assert_close(
        "grpo",
        &advantages::grpo(r, g, true).unwrap(),
        fx.f("adv.grpo"),
        RTOL,
    );
    assert_close(
        "dr_grpo",
        &advantages::dr_grpo(r, g).unwrap(),
        fx.f("adv.dr_grpo"),
        RTOL,
    );
    assert_close(
        "rloo",
        &advantages::rloo(r, g).unwrap(),
        fx.f("adv.rloo"),
        RTOL,
    );
    let la = fx.meta["adv_seq_len"].as_u64().unwrap() as usize;
    let rpp = advantages::reinforce_pp_baseline(r, g, fx.f("adv.mask"), la).unwrap();
    assert_close("reinforce++ baseline", &rpp, fx.f("adv.rpp"), RTOL);
    let lg = fx.shape("gae.rewards")[1];
    for (tag, gamma, lam) in [("g1", 1.0, 1.0), ("g099", 0.99, 0.95)] {
        let out = advantages::gae(
            fx.f("gae.rewards"),
            fx.f("gae.values"),
            fx.f("gae.mask"),
            lg,
            gamma,
            lam,
        )
        .unwrap();
        assert_close(
            &format!("gae {tag} adv"),
            &out.advantages,
            fx.f(&format!("gae.{tag}.adv")),
            RTOL,
        );
        assert_close(
            &format!("gae {tag} returns"),
            &out.returns,
            fx.f(&format!("gae.{tag}.returns")),
            RTOL,
        );
    }
}

#[derive(Module, Debug)]
struct Tiny {
    w: Param<Tensor<2>>,
    b: Param<Tensor<1>>,
}

#[test]
fn golden_adamw_10_steps_with_global_clip_and_cosine() {
    let fx = load();
    let ad = Device::flex().autodiff();
    let meta = &fx.meta["adamw"];
    let mut model = Tiny {
        w: Param::from_tensor(Tensor::<1>::from_floats(fx.f("adamw.w0"), &ad).reshape([5, 4])),
        b: Param::from_tensor(Tensor::<1>::from_floats(fx.f("adamw.b0"), &ad)),
    };
    let params = NamedParams::from_module(&model);
    assert_eq!(
        params.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
        vec!["w", "b"]
    );
    let warm = meta["warmup"].as_u64().unwrap() as usize;
    let total = meta["total"].as_u64().unwrap() as usize;
    let mut opt = Optimizer::new(
        meta["lr"].as_f64().unwrap(),
        AdamWSettings {
            max_grad_norm: Some(meta["max_norm"].as_f64().unwrap()),
            ..AdamWSettings::default()
        },
        LrSchedule::Cosine {
            warmup_steps: warm,
            total_steps: total,
            min_lr_ratio: 0.0,
        },
    );
    let norms = meta["grad_norms"].as_array().unwrap();
    assert_eq!(norms.len(), 10);
    let mut clipped = 0;
    for (step, want_norm) in norms.iter().enumerate() {
        let dev = Device::flex();
        let mut grads = GradientsParams::new();
        grads.register(
            model.w.id,
            Tensor::<1>::from_floats(fx.f(&format!("adamw.gw.{step}")), &dev).reshape([5, 4]),
        );
        grads.register(
            model.b.id,
            Tensor::<1>::from_floats(fx.f(&format!("adamw.gb.{step}")), &dev),
        );
        let (m, stats) = opt.step(model, grads, &params).unwrap();
        model = m;
        assert_scalar(
            &format!("grad norm {step}"),
            stats.grad_norm,
            want_norm.as_f64().unwrap(),
            1e-5,
        );
        if stats.clip_coef < 1.0 {
            clipped += 1;
        }
        let w = to_vec(model.w.val());
        let b = to_vec1(model.b.val());
        for (got, want, what) in [
            (w, fx.f(&format!("adamw.w.{step}")), "w"),
            (b, fx.f(&format!("adamw.b.{step}")), "b"),
        ] {
            for (i, (g, x)) in got.iter().zip(want).enumerate() {
                assert!(
                    (g - x).abs() <= 1e-6,
                    "adamw step {step} {what}[{i}]: {g} vs torch {x}"
                );
            }
        }
    }
    assert!((3..10).contains(&clipped), "clipping exercised: {clipped}");
}
