//! Optimizer state round trip, non-finite step skipping, parameter naming and the identity hook.

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use kiln_optim::hook::{DomainGrads, GradientHook, IdentityHook, NamedParams, grad_flat};
use kiln_optim::{AdamWSettings, LrSchedule, Optimizer};

#[derive(Module, Debug)]
struct Block {
    w: Param<Tensor<2>>,
}

#[derive(Module, Debug)]
struct Model {
    blocks: Vec<Block>,
    b: Param<Tensor<1>>,
}

fn model(dev: &Device) -> Model {
    Model {
        blocks: (0..2)
            .map(|i| Block {
                w: Param::from_tensor(
                    Tensor::<1>::from_floats([0.1 * i as f32, -0.2, 0.3, 0.4, -0.5, 0.6], dev)
                        .reshape([2, 3]),
                ),
            })
            .collect(),
        b: Param::from_tensor(Tensor::<1>::from_floats([1.0, -1.0, 0.5], dev)),
    }
}

fn grads(m: &Model, k: f32, nan: bool) -> GradientsParams {
    let dev = Device::flex();
    let mut g = GradientsParams::new();
    for (i, bl) in m.blocks.iter().enumerate() {
        let x = k * (i as f32 + 1.0);
        let v = if nan && i == 1 { f32::NAN } else { -0.3 * x };
        g.register(
            bl.w.id,
            Tensor::<1>::from_floats([x, -x, 0.5 * x, v, 0.1 * k, 0.2 * k], &dev).reshape([2, 3]),
        );
    }
    g.register(m.b.id, Tensor::<1>::from_floats([k, 0.0, -k], &dev));
    g
}

fn flat(m: &Model) -> Vec<f32> {
    let mut v = Vec::new();
    for b in &m.blocks {
        v.extend(b.w.val().into_data().try_into_vec_as::<f32>().unwrap());
    }
    v.extend(m.b.val().into_data().try_into_vec_as::<f32>().unwrap());
    v
}

#[test]
fn named_params_paths() {
    let m = model(&Device::flex().autodiff());
    let p = NamedParams::from_module(&m);
    let paths: Vec<_> = p
        .iter()
        .map(|p| (p.path.clone(), p.shape.clone()))
        .collect();
    assert_eq!(
        paths,
        vec![
            ("blocks.0.w".to_string(), vec![2, 3]),
            ("blocks.1.w".to_string(), vec![2, 3]),
            ("b".to_string(), vec![3]),
        ]
    );
}

#[test]
fn optimizer_state_round_trip() {
    let ad = Device::flex().autodiff();
    let mut m = model(&ad);
    let params = NamedParams::from_module(&m);
    let sched = LrSchedule::LinearWarmup { warmup_steps: 2 };
    let mut opt = Optimizer::new(0.05, AdamWSettings::default(), sched);
    for s in 0..3 {
        let g = grads(&m, 0.5 + s as f32, false);
        m = opt.step(m, g, &params).unwrap().0;
    }
    let dir = std::env::temp_dir().join(format!("kiln-optim-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("optim.bpk");
    opt.save(&path).unwrap();
    let mut loaded = Optimizer::load(&path).unwrap();
    assert_eq!(loaded.steps(), 3);
    assert_eq!(loaded.current_lr(), opt.current_lr());
    let m2 = m.clone();
    let g = grads(&m, 2.0, false);
    let (a, sa) = opt.step(m, g, &params).unwrap();
    let g = grads(&m2, 2.0, false);
    let (b, sb) = loaded.step(m2.clone(), g, &params).unwrap();
    assert_eq!(sa, sb);
    assert_eq!(flat(&a), flat(&b));
    // A fresh optimizer (no moments) gives a different update: the state mattered.
    let mut fresh = Optimizer::new(0.05, AdamWSettings::default(), sched);
    for _ in 0..3 {
        fresh
            .step(model(&ad), GradientsParams::new(), &params)
            .unwrap();
    }
    let g = grads(&m2, 2.0, false);
    let (c, _) = fresh.step(m2, g, &params).unwrap();
    assert_ne!(flat(&c), flat(&a));
    std::fs::remove_dir_all(&dir).ok();
    assert!(Optimizer::load(dir.join("missing.bpk")).is_err());
}

#[test]
fn non_finite_step_is_skipped_and_counted() {
    let ad = Device::flex().autodiff();
    let m = model(&ad);
    let params = NamedParams::from_module(&m);
    let mut opt = Optimizer::new(0.1, AdamWSettings::default(), LrSchedule::Constant);
    let before = flat(&m);
    let g = grads(&m, 1.0, true);
    let (m, st) = opt.step(m, g, &params).unwrap();
    assert!(st.skipped && st.grad_norm.is_nan());
    assert_eq!(opt.skipped_steps(), 1);
    assert_eq!(flat(&m), before);
    let g = grads(&m, 1.0, false);
    let (m, st) = opt.step(m, g, &params).unwrap();
    assert!(!st.skipped);
    assert_eq!(st.total_skipped, 1);
    assert_ne!(flat(&m), before);
    // First real AdamW step moves each weight by about lr (sign of the gradient) + decay.
    let after = flat(&m);
    let d = (after[0] - before[0]).abs() as f64;
    assert!((d - 0.1).abs() < 0.01, "{d}");
}

#[test]
fn global_clip_scales_all_tensors_by_one_factor() {
    let m = model(&Device::flex().autodiff());
    let params = NamedParams::from_module(&m);
    let mut g = grads(&m, 3.0, false);
    let norm_before = kiln_optim::optim::global_grad_norm(&g, &params).unwrap();
    let (norm, coef) = kiln_optim::clip_grad_norm(&mut g, &params, 1.0).unwrap();
    assert_eq!(norm, norm_before);
    assert!((coef - 1.0 / (norm + 1e-6)).abs() < 1e-12);
    let after = kiln_optim::optim::global_grad_norm(&g, &params).unwrap();
    assert!((after - 1.0).abs() < 1e-5, "{after}");
    // Hand value: block 0 grad [3,-3,1.5,-0.9,.3,.6], block 1 [6,-6,3,-1.8,.3,.6], b [3,0,-3].
    let ss: f64 = [
        3.0, 3.0, 1.5, 0.9, 0.3, 0.6, 6.0, 6.0, 3.0, 1.8, 0.3, 0.6, 3.0, 0.0, 3.0,
    ]
    .iter()
    .map(|x: &f64| x * x)
    .sum();
    assert!((norm_before - ss.sqrt()).abs() < 1e-4);
}

#[test]
fn identity_hook_sums_domains() {
    let m = model(&Device::flex().autodiff());
    let params = NamedParams::from_module(&m);
    let domains = vec![
        DomainGrads {
            domain: "math".into(),
            grads: grads(&m, 1.0, false),
        },
        DomainGrads {
            domain: "chat".into(),
            grads: grads(&m, 2.0, false),
        },
    ];
    let mut hook = IdentityHook;
    assert!(!hook.needs_domains());
    let out = hook.combine(&domains, &params).unwrap();
    assert!(out.telemetry.pairs.is_empty());
    let want = grads(&m, 3.0, false);
    for p in params.iter() {
        let a: Vec<f32> = grad_flat(&out.grads, p)
            .unwrap()
            .unwrap()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        let b: Vec<f32> = grad_flat(&want, p)
            .unwrap()
            .unwrap()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-6, "{}: {x} vs {y}", p.path);
        }
    }
}
