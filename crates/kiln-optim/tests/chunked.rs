//! The chunked lm_head pass equals the un-chunked autodiff path, and the same mini-batch split
//! into 1, 2 and 4 micro-batches accumulates the same gradient.

mod common;

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use common::{assert_close, assert_close_scale};
use kiln_optim::hook::{NamedParams, accumulate, grad_flat};
use kiln_optim::loss::{
    AggMode, GlobalCounts, KlEstimator, KlLoss, LossConfig, PpoClip, TokenBatch,
};
use kiln_optim::{
    ChunkOptions, EntropyReg, Selection, chunked_policy_loss, chunked_score, policy_loss,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn randn(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            // Box-Muller
            let u1: f32 = rng.random::<f32>().max(1e-7);
            let u2: f32 = rng.random::<f32>();
            scale * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect()
}

fn v1(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}
fn v2(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

fn configs() -> Vec<(&'static str, LossConfig)> {
    let base = LossConfig {
        ppo: PpoClip {
            clip_low: 0.2,
            clip_high: 0.28,
            dual_clip: Some(3.0),
        },
        kl_loss: Some(KlLoss {
            estimator: KlEstimator::K3,
            coef: 0.3,
        }),
        ..LossConfig::default()
    };
    vec![
        (
            "plain",
            LossConfig {
                kl_loss: None,
                ..base.clone()
            },
        ),
        (
            "global",
            LossConfig {
                entropy: EntropyReg::Global { coef: 0.3 },
                ..base.clone()
            },
        ),
        (
            "tre-k2",
            LossConfig {
                entropy: EntropyReg::TreK { k: 2, coef: 0.3 },
                ..base.clone()
            },
        ),
        (
            "tre-p0.99",
            LossConfig {
                entropy: EntropyReg::TreP {
                    p: 0.99,
                    max_region: 256,
                    coef: 0.3,
                },
                agg: AggMode::SeqMeanTokenMean,
                ..base.clone()
            },
        ),
    ]
}

#[test]
fn chunked_lm_head_pass_equals_unchunked_autodiff() {
    let dev = Device::flex();
    let ad = dev.clone().autodiff();
    let mut rng = StdRng::seed_from_u64(7);
    let (b, l, d, v) = (4usize, 9usize, 16usize, 8500usize); // two vocabulary blocks of dW
    let n = b * l;
    let temp = 0.7;
    let h = randn(&mut rng, n * d, 1.0);
    let w = randn(&mut rng, d * v, 0.6);
    let targets: Vec<i64> = (0..n).map(|_| rng.random_range(0..v as i64)).collect();
    let mut mask = vec![0.0f32; n];
    for (row, len) in [9usize, 4, 7, 1].iter().enumerate() {
        for t in 0..*len {
            mask[row * l + t] = 1.0;
        }
    }
    let adv = randn(&mut rng, n, 1.0);
    let hd = Tensor::<1>::from_floats(h.as_slice(), &dev).reshape([n, d]);
    let wd = Tensor::<1>::from_floats(w.as_slice(), &dev).reshape([d, v]);
    let tgt = Tensor::<1, Int>::from_ints(targets.as_slice(), &dev);
    let opts = ChunkOptions {
        chunk_size: 5,
        temperature: temp,
        selection: Selection::Auto,
    };
    let score = chunked_score(&hd, &wd, &tgt, true, &opts).unwrap();
    let lp = v1(score.logp);
    // Scoring entropy equals the plain log-softmax entropy.
    let z_full = hd.clone().matmul(wd.clone()).mul_scalar(1.0 / temp);
    assert_close(
        "score entropy",
        &v1(score.entropy.clone().unwrap()),
        &v1(kiln_optim::entropy::full_entropy(z_full)),
        1e-5,
    );
    let noise = randn(&mut rng, n, 0.4);
    let old: Vec<f32> = lp.iter().zip(&noise).map(|(a, b)| a + b).collect();
    let rf: Vec<f32> = lp.iter().zip(&noise).map(|(a, b)| a - 0.5 * b).collect();
    let counts = GlobalCounts::from_mask(&mask, l, 12);
    for (name, cfg) in configs() {
        let batch = TokenBatch::from_host(
            &dev,
            &targets,
            &old,
            &adv,
            Some(&rf),
            &mask,
            l,
            cfg.agg,
            &counts,
        )
        .unwrap();
        // Reference: full logits under autodiff.
        let ha = Tensor::<1>::from_floats(h.as_slice(), &ad)
            .reshape([n, d])
            .require_grad();
        let wa = Tensor::<1>::from_floats(w.as_slice(), &ad)
            .reshape([d, v])
            .require_grad();
        let z = ha.clone().matmul(wa.clone()).mul_scalar(1.0 / temp);
        let out = policy_loss(z, &batch, &cfg, Selection::Device).unwrap();
        let want_loss = out.metrics.loss;
        let grads = out.loss.backward();
        let gh_ref = v2(ha.grad(&grads).unwrap());
        let gw_ref = v2(wa.grad(&grads).unwrap());
        for chunk in [1usize, 5, 16, n] {
            let opts = ChunkOptions {
                chunk_size: chunk,
                ..opts
            };
            let g = chunked_policy_loss(&hd, &wd, &batch, &cfg, &opts).unwrap();
            assert!(
                (g.metrics.loss - want_loss).abs() <= 1e-5 * want_loss.abs().max(1e-3),
                "{name} chunk {chunk}: loss {} vs {}",
                g.metrics.loss,
                want_loss
            );
            assert_close_scale(
                &format!("{name} chunk {chunk} dh"),
                &v2(g.grad_hidden.clone()),
                &gh_ref,
                1e-5,
            );
            assert_close_scale(
                &format!("{name} chunk {chunk} dW"),
                &v2(g.grad_weight.clone()),
                &gw_ref,
                1e-5,
            );
            assert_close(
                &format!("{name} chunk {chunk} logp"),
                &v1(g.logp.clone()),
                &lp,
                1e-5,
            );
            if chunk == 5 {
                // Scoring and training share the kernel: identical log-probs at equal chunking.
                assert_eq!(v1(g.logp.clone()), lp, "{name}: scoring vs training logp");
                // The surrogate injects exactly these gradients.
                let ha = Tensor::<1>::from_floats(h.as_slice(), &ad)
                    .reshape([n, d])
                    .require_grad();
                let wa = Tensor::<1>::from_floats(w.as_slice(), &ad)
                    .reshape([d, v])
                    .require_grad();
                let s = g.surrogate(ha.clone(), Some(wa.clone()));
                let gr = s.backward();
                assert_close_scale("surrogate dh", &v2(ha.grad(&gr).unwrap()), &gh_ref, 1e-5);
                assert_close_scale("surrogate dW", &v2(wa.grad(&gr).unwrap()), &gw_ref, 1e-5);
            }
        }
    }
}

#[derive(Module, Debug)]
struct Net {
    trunk: Linear,
    head: Param<Tensor<2>>,
}

struct Data {
    x: Vec<f32>,
    targets: Vec<i64>,
    old: Vec<f32>,
    rf: Vec<f32>,
    adv: Vec<f32>,
    mask: Vec<f32>,
}

const B: usize = 8;
const L: usize = 6;
const DIN: usize = 8;
const D: usize = 16;
const V: usize = 50;

fn grads_for_split(
    net: &Net,
    data: &Data,
    cfg: &LossConfig,
    parts: usize,
    chunked: bool,
    params: &NamedParams,
) -> GradientsParams {
    let dev = Device::flex();
    let ad = dev.clone().autodiff();
    let counts = GlobalCounts::from_mask(&data.mask, L, 8);
    let rows = B / parts;
    let mut acc = GradientsParams::new();
    for p in 0..parts {
        let tok = p * rows * L..(p + 1) * rows * L;
        let n = tok.len();
        let batch = TokenBatch::from_host(
            &dev,
            &data.targets[tok.clone()],
            &data.old[tok.clone()],
            &data.adv[tok.clone()],
            Some(&data.rf[tok.clone()]),
            &data.mask[tok.clone()],
            L,
            cfg.agg,
            &counts,
        )
        .unwrap();
        let x =
            Tensor::<1>::from_floats(&data.x[p * rows * L * DIN..(p + 1) * rows * L * DIN], &ad)
                .reshape([n, DIN]);
        let hidden = net.trunk.forward(x);
        let loss = if chunked {
            let g = chunked_policy_loss(
                &hidden,
                &net.head.val(),
                &batch,
                cfg,
                &ChunkOptions {
                    chunk_size: 7,
                    temperature: 1.0,
                    selection: Selection::Auto,
                },
            )
            .unwrap();
            g.surrogate(hidden, Some(net.head.val()))
        } else {
            let z = hidden.matmul(net.head.val());
            policy_loss(z, &batch, cfg, Selection::Auto).unwrap().loss
        };
        let g = GradientsParams::from_grads(loss.backward(), net);
        accumulate(&mut acc, g, params).unwrap();
    }
    acc
}

#[test]
fn microbatch_splits_accumulate_the_same_gradient() {
    let ad = Device::flex().autodiff();
    let mut rng = StdRng::seed_from_u64(11);
    let net = Net {
        trunk: LinearConfig::new(DIN, D).init(&ad),
        head: Param::from_tensor(
            Tensor::<1>::from_floats(randn(&mut rng, D * V, 0.5).as_slice(), &ad).reshape([D, V]),
        ),
    };
    let params = NamedParams::from_module(&net);
    assert_eq!(
        params.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
        vec!["trunk.weight", "trunk.bias", "head"]
    );
    let n = B * L;
    let mut mask = vec![0.0f32; n];
    for (row, len) in [6usize, 1, 3, 5, 2, 6, 4, 3].iter().enumerate() {
        for t in 0..*len {
            mask[row * L + t] = 1.0;
        }
    }
    let data = Data {
        x: randn(&mut rng, n * DIN, 1.0),
        targets: (0..n).map(|_| rng.random_range(0..V as i64)).collect(),
        old: randn(&mut rng, n, 0.5).iter().map(|x| x - 4.0).collect(),
        rf: randn(&mut rng, n, 0.5).iter().map(|x| x - 4.0).collect(),
        adv: randn(&mut rng, n, 1.0),
        mask,
    };
    for agg in [
        AggMode::TokenMean,
        AggMode::SeqMeanTokenMean,
        AggMode::SeqMeanTokenSum,
        AggMode::SeqMeanTokenSumNorm,
    ] {
        let cfg = LossConfig {
            agg,
            kl_loss: Some(KlLoss {
                estimator: KlEstimator::K3,
                coef: 0.1,
            }),
            entropy: EntropyReg::TreK { k: 2, coef: 0.1 },
            ..LossConfig::default()
        };
        for chunked in [true, false] {
            let one = grads_for_split(&net, &data, &cfg, 1, chunked, &params);
            for parts in [2, 4] {
                let split = grads_for_split(&net, &data, &cfg, parts, chunked, &params);
                for p in params.iter() {
                    let a = v1(grad_flat(&one, p).unwrap().unwrap());
                    let b = v1(grad_flat(&split, p).unwrap().unwrap());
                    assert!(a.iter().any(|x| x.abs() > 1e-6), "{} grad is zero", p.path);
                    assert_close_scale(
                        &format!("{agg:?} chunked={chunked} {parts} parts {}", p.path),
                        &b,
                        &a,
                        1e-5,
                    );
                }
            }
        }
    }
}
