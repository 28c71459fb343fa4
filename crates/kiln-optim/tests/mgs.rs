//! MGS / PCGrad hook against hand-derived numbers (docs/ALGORITHMS.md section 4).
//!
//! Vectors are written 1-based in the comments (h1, h2, h3 = domains 0, 1, 2).

use burn::module::ParamId;
use burn::optim::GradientsParams;
use burn::prelude::*;
use kiln_optim::hook::{
    DomainGrads, GradientHook, HookOutput, IdentityHook, NamedParam, NamedParams, grad_flat,
};
use kiln_optim::mgs::{Granularity, MgsHook, Order};

/// Parameters with the given paths and shapes and fresh ids.
fn params(spec: &[(&str, &[usize])]) -> NamedParams {
    NamedParams {
        params: spec
            .iter()
            .map(|(path, shape)| NamedParam {
                path: path.to_string(),
                id: ParamId::new(),
                shape: shape.to_vec(),
            })
            .collect(),
    }
}

/// One domain's gradients: `values[p]` is parameter p's flat gradient (`None` = missing).
fn domain(name: &str, params: &NamedParams, values: &[Option<&[f32]>]) -> DomainGrads {
    let dev = Device::flex();
    let mut grads = GradientsParams::new();
    for (p, v) in params.iter().zip(values) {
        let Some(v) = v else { continue };
        let t = Tensor::<1>::from_floats(*v, &dev);
        match p.shape.len() {
            1 => grads.register::<1>(p.id, t),
            2 => grads.register::<2>(p.id, t.reshape([p.shape[0], p.shape[1]])),
            r => panic!("rank {r} not used here"),
        }
    }
    DomainGrads {
        domain: name.to_string(),
        grads,
    }
}

fn flat(out: &HookOutput, params: &NamedParams, path: &str) -> Vec<f32> {
    let p = params.by_path(path).unwrap();
    grad_flat(&out.grads, p)
        .unwrap()
        .unwrap()
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap()
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (*g as f64 - w).abs() < 1e-6,
            "{what}: got {got:?}, want {want:?}"
        );
    }
}

/// A single parameter `w` of shape [n] and one domain per vector.
fn one_param(vectors: &[&[f32]]) -> (NamedParams, Vec<DomainGrads>) {
    let ps = params(&[("w", &[vectors[0].len()])]);
    let names = ["math", "chat", "code"];
    let ds = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| domain(names[i], &ps, &[Some(*v)]))
        .collect();
    (ps, ds)
}

fn run(hook: &mut MgsHook, ps: &NamedParams, ds: &[DomainGrads]) -> HookOutput {
    hook.combine(ds, ps).unwrap()
}

// h1 = (1, 0), h2 = (-1, 1): <h1, h2> = -1, |h1|^2 = 1, |h2|^2 = 2.
const K2: [&[f32]; 2] = [&[1.0, 0.0], &[-1.0, 1.0]];

#[test]
fn k2_closed_form_any_order() {
    // g1' = h1 - (-1 / 2) h2 = (0.5, 0.5); g2' = h2 - (-1 / 1) h1 = (0, 1); sum (0.5, 1.5).
    // With K = 2 each g_i has a single partner, so every order gives the same answer.
    let (ps, ds) = one_param(&K2);
    let orders = [Order::Fixed(vec![0, 1]), Order::Fixed(vec![1, 0])];
    for order in orders {
        let mut hook = MgsHook::new(Granularity::Tensor, 0).with_order(order.clone());
        assert_close(
            &flat(&run(&mut hook, &ps, &ds), &ps, "w"),
            &[0.5, 1.5],
            &format!("{order:?}"),
        );
    }
    for seed in 0..8 {
        for g in [Granularity::Tensor, Granularity::Block, Granularity::Global] {
            let mut hook = MgsHook::new(g, seed);
            assert_close(
                &flat(&run(&mut hook, &ps, &ds), &ps, "w"),
                &[0.5, 1.5],
                "seeded",
            );
        }
    }
}

// h1 = (1, 0), h2 = (-1, 1), h3 = (0, -1).
// Originals: <h1,h2> = -1, <h1,h3> = 0, <h2,h3> = -1; |h1|^2 = 1, |h2|^2 = 2, |h3|^2 = 1.
const K3: [&[f32]; 3] = [&[1.0, 0.0], &[-1.0, 1.0], &[0.0, -1.0]];

#[test]
fn k3_fixed_order_by_hand() {
    // Order [0, 1, 2]: domain i visits the others in this order.
    // g1: vs h2: <(1,0),(-1,1)> = -1 < 0  -> g1 = (1,0) + 1/2 (-1,1)      = (0.5, 0.5)
    //     vs h3: <(0.5,0.5),(0,-1)> = -0.5 -> g1 = (0.5,0.5) + 0.5 (0,-1) = (0.5, 0)
    //     (the running g1 conflicts with h3 although the original h1 is orthogonal to it)
    // g2: vs h1: <(-1,1),(1,0)> = -1       -> g2 = (-1,1) + 1 (1,0)        = (0, 1)
    //     vs h3: <(0,1),(0,-1)> = -1       -> g2 = (0,1) + 1 (0,-1)        = (0, 0)
    // g3: vs h1: <(0,-1),(1,0)> = 0        -> unchanged
    //     vs h2: <(0,-1),(-1,1)> = -1      -> g3 = (0,-1) + 1/2 (-1,1)     = (-0.5, -0.5)
    // sum = (0.5, 0) + (0, 0) + (-0.5, -0.5) = (0, -0.5)
    let (ps, ds) = one_param(&K3);
    let mut hook = MgsHook::new(Granularity::Tensor, 0).with_order(Order::Fixed(vec![0, 1, 2]));
    assert_close(
        &flat(&run(&mut hook, &ps, &ds), &ps, "w"),
        &[0.0, -0.5],
        "[0,1,2]",
    );

    // Order [2, 0, 1]: inner orders g1: h3, h2; g2: h3, h1; g3: h1, h2.
    // g1: vs h3: 0 -> unchanged; vs h2: -1 -> (0.5, 0.5)
    // g2: vs h3: <(-1,1),(0,-1)> = -1 -> (-1,1) + (0,-1) = (-1, 0);
    //     vs h1: <(-1,0),(1,0)> = -1  -> (-1,0) + (1,0)  = (0, 0)
    // g3: vs h1: 0 -> unchanged; vs h2: -1 -> (-0.5, -0.5)
    // sum = (0.5, 0.5) + (0, 0) + (-0.5, -0.5) = (0, 0)
    let mut hook = MgsHook::new(Granularity::Tensor, 0).with_order(Order::Fixed(vec![2, 0, 1]));
    assert_close(
        &flat(&run(&mut hook, &ps, &ds), &ps, "w"),
        &[0.0, 0.0],
        "[2,0,1]",
    );
}

#[test]
fn conflict_test_uses_original_h_j() {
    // K = 2, h1 = (1, 0), h2 = (-1, 1), order [0, 1].
    // Right (PCGrad): g2 is tested against the ORIGINAL h1: <h2, h1> = -1 < 0 -> g2' = (0, 1),
    //   sum = (0.5, 0.5) + (0, 1) = (0.5, 1.5).
    // Wrong (against the already projected g1' = (0.5, 0.5)): <h2, g1'> = 0, no projection,
    //   g2' = h2, sum = (0.5, 0.5) + (-1, 1) = (-0.5, 1.5).
    let (ps, ds) = one_param(&K2);
    let mut hook = MgsHook::new(Granularity::Tensor, 0).with_order(Order::Fixed(vec![0, 1]));
    let out = run(&mut hook, &ps, &ds);
    assert_close(&flat(&out, &ps, "w"), &[0.5, 1.5], "original h_j");
    assert!(out.telemetry.pairs[0].projected);

    // K = 3 (k3_fixed_order_by_hand, order [0, 1, 2]): g3 tests h2. The original h2 = (-1, 1)
    // conflicts with g3 = (0, -1); the already projected g2' = (0, 0) would not (zero norm),
    // which would give g3 = (0, -1) and the sum (0.5, 0) + (0, 0) + (0, -1) = (0.5, -1).
    let (ps, ds) = one_param(&K3);
    let mut hook = MgsHook::new(Granularity::Tensor, 0).with_order(Order::Fixed(vec![0, 1, 2]));
    assert_close(
        &flat(&run(&mut hook, &ps, &ds), &ps, "w"),
        &[0.0, -0.5],
        "K=3",
    );
}

#[test]
fn no_conflict_is_the_plain_sum_exactly() {
    // All pairwise dots >= 0 in every module and overall (one pair exactly orthogonal), values
    // that are not exact in binary, one parameter missing from one domain.
    let ps = params(&[("a", &[3]), ("layers.0.mlp.up_proj.weight", &[2, 2])]);
    let ds = vec![
        domain(
            "math",
            &ps,
            &[Some(&[0.1, 0.2, 0.0]), Some(&[0.3, 0.7, 1.1, 0.13])],
        ),
        domain("chat", &ps, &[Some(&[0.0, 0.0, 0.3]), None]),
        domain(
            "code",
            &ps,
            &[Some(&[0.7, 0.9, 0.11]), Some(&[0.01, 0.0, 0.3, 0.9])],
        ),
    ];
    let plain = IdentityHook.combine(&ds, &ps).unwrap();
    for g in [Granularity::Tensor, Granularity::Block, Granularity::Global] {
        for seed in 0..4 {
            let out = MgsHook::new(g, seed).combine(&ds, &ps).unwrap();
            for p in ["a", "layers.0.mlp.up_proj.weight"] {
                assert_eq!(flat(&out, &ps, p), flat(&plain, &ps, p), "{g:?} {p}");
            }
            assert_eq!(out.telemetry.summary["conflict_frac"], 0.0);
            assert_eq!(out.telemetry.summary["projected_frac"], 0.0);
        }
    }
}

#[test]
fn tensor_granularity_projects_only_the_conflicting_tensor() {
    // Tensor a: h1a = (1, 0), h2a = (-1, 1)   (<.,.> = -1: conflict)
    // Tensor b: h1b = (1, 0), h2b = (0.5, 0)  (<.,.> = 0.5: no conflict), shape [2, 1]
    // Tensor granularity: a -> (0.5, 1.5) as in k2_closed_form; b -> plain sum (1.5, 0).
    // Global: h1 = (1, 0, 1, 0), h2 = (-1, 1, 0.5, 0): <h1,h2> = -0.5, |h1|^2 = 2, |h2|^2 = 2.25.
    //   g1' = h1 + (0.5 / 2.25) h2 = h1 + 2/9 h2 = (7/9, 2/9, 10/9, 0)
    //   g2' = h2 + (0.5 / 2) h1    = h2 + 1/4 h1 = (-3/4, 1, 3/4, 0)
    //   sum = (1/36, 11/9, 67/36, 0): both tensors change.
    let a = "layers.0.self_attn.q_proj.weight";
    let setup = |b: &str| {
        let ps = params(&[(a, &[2]), (b, &[2, 1])]);
        let ds = vec![
            domain("math", &ps, &[Some(&[1.0, 0.0]), Some(&[1.0, 0.0])]),
            domain("chat", &ps, &[Some(&[-1.0, 1.0]), Some(&[0.5, 0.0])]),
        ];
        (ps, ds)
    };
    let per_tensor = [0.5, 1.5, 1.5, 0.0];
    let global = [1.0 / 36.0, 11.0 / 9.0, 67.0 / 36.0, 0.0];
    let both = |out: &HookOutput, ps: &NamedParams, b: &str| {
        let mut v = flat(out, ps, a);
        v.extend(flat(out, ps, b));
        v
    };

    // b in another block (mlp): Block behaves like Tensor.
    let b = "layers.0.mlp.up_proj.weight";
    let (ps, ds) = setup(b);
    for (g, want) in [
        (Granularity::Tensor, per_tensor),
        (Granularity::Block, per_tensor),
        (Granularity::Global, global),
    ] {
        let out = MgsHook::new(g, 3).combine(&ds, &ps).unwrap();
        assert_close(&both(&out, &ps, b), &want, &format!("{g:?}"));
    }
    // b in the same block (attention): Block behaves like Global.
    let b = "layers.0.self_attn.k_proj.weight";
    let (ps, ds) = setup(b);
    let out = MgsHook::new(Granularity::Block, 3)
        .combine(&ds, &ps)
        .unwrap();
    assert_close(&both(&out, &ps, b), &global, "Block, same block");
}

#[test]
fn seeded_orders_are_reproducible_and_matter_for_k3() {
    // For K3 the result depends only on the inner orders of g1 and g3 (g2 ends at (0, 0) either
    // way, see k3_fixed_order_by_hand):
    //   g1: [h2, h3] -> (0.5, 0);      [h3, h2] -> (0.5, 0.5)
    //   g3: [h1, h2] -> (-0.5, -0.5);  [h2, h1] -> vs h2: (-0.5, -0.5), then
    //       <(-0.5,-0.5),(1,0)> = -0.5 -> (-0.5,-0.5) + 0.5 (1,0) = (0, -0.5)
    // so the sum is one of (0, -0.5), (0.5, -0.5), (0, 0), (0.5, 0).
    let (ps, ds) = one_param(&K3);
    let possible = [[0.0, -0.5], [0.5, -0.5], [0.0, 0.0], [0.5, 0.0]];
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..32 {
        let a = flat(
            &MgsHook::new(Granularity::Tensor, seed)
                .combine(&ds, &ps)
                .unwrap(),
            &ps,
            "w",
        );
        let b = flat(
            &MgsHook::new(Granularity::Tensor, seed)
                .combine(&ds, &ps)
                .unwrap(),
            &ps,
            "w",
        );
        assert_eq!(a, b, "same seed, same result");
        let i = possible
            .iter()
            .position(|p| p.iter().zip(&a).all(|(p, a)| (p - *a as f64).abs() < 1e-6))
            .unwrap_or_else(|| panic!("seed {seed}: {a:?} is no possible order's result"));
        seen.insert(i);
    }
    assert!(
        seen.len() >= 2,
        "different seeds should give different orders: {seen:?}"
    );

    // The step counter: the n-th combine of one hook equals a fresh hook set to step n.
    let mut hook = MgsHook::new(Granularity::Tensor, 5);
    for step in 0..6 {
        let a = flat(&hook.combine(&ds, &ps).unwrap(), &ps, "w");
        let mut fresh = MgsHook::new(Granularity::Tensor, 5);
        fresh.set_step(step);
        assert_eq!(a, flat(&fresh.combine(&ds, &ps).unwrap(), &ps, "w"));
    }
    assert_eq!(hook.step(), 6);
}

#[test]
fn telemetry_cosines_and_projections() {
    // K2: cos(h1, h2) = -1 / (1 * sqrt 2); projected both ways.
    let (ps, ds) = one_param(&K2);
    let mut hook = MgsHook::new(Granularity::Tensor, 0);
    assert_eq!(hook.name(), "mgs");
    assert!(hook.needs_domains());
    let t = run(&mut hook, &ps, &ds).telemetry;
    assert_eq!(t.pairs.len(), 1);
    let p = &t.pairs[0];
    assert_eq!(
        (p.module.as_str(), p.domain_a.as_str(), p.domain_b.as_str()),
        ("w", "math", "chat")
    );
    assert!((p.cosine + 1.0 / 2f64.sqrt()).abs() < 1e-6, "{}", p.cosine);
    assert!(p.projected);
    assert_eq!(t.summary["conflict_frac"], 1.0);
    assert_eq!(t.summary["projected_frac"], 1.0);
    assert_eq!(t.summary["conflict_frac/w"], 1.0);

    // Two tensors (as in tensor_granularity_...): attention conflicts (cos -1/sqrt 2), mlp not
    // (cos 0.5 / (1 * 0.5) = 1).
    let a = "layers.0.self_attn.q_proj.weight";
    let b = "layers.0.mlp.up_proj.weight";
    let ps = params(&[(a, &[2]), (b, &[2, 1])]);
    let ds = vec![
        domain("math", &ps, &[Some(&[1.0, 0.0]), Some(&[1.0, 0.0])]),
        domain("chat", &ps, &[Some(&[-1.0, 1.0]), Some(&[0.5, 0.0])]),
    ];
    let t = MgsHook::new(Granularity::Tensor, 0)
        .combine(&ds, &ps)
        .unwrap()
        .telemetry;
    assert_eq!(t.pairs.len(), 2);
    assert_eq!(
        (t.pairs[0].module.as_str(), t.pairs[0].projected),
        (a, true)
    );
    assert_eq!(
        (t.pairs[1].module.as_str(), t.pairs[1].projected),
        (b, false)
    );
    assert!((t.pairs[1].cosine - 1.0).abs() < 1e-6);
    assert_eq!(t.summary["conflict_frac"], 0.5);
    assert_eq!(t.summary["projected_frac"], 0.5);
    assert_eq!(t.summary["conflict_frac/layer.0/attention"], 1.0);
    assert_eq!(t.summary["conflict_frac/layer.0/mlp"], 0.0);

    // Global PCGrad: one module `model`, cos = -0.5 / (sqrt 2 * 1.5); no per-group keys.
    let mut pc = MgsHook::pcgrad(0);
    assert_eq!(pc.name(), "pcgrad");
    let t = pc.combine(&ds, &ps).unwrap().telemetry;
    assert_eq!(t.pairs.len(), 1);
    assert_eq!(t.pairs[0].module, "model");
    assert!((t.pairs[0].cosine + 0.5 / (2f64.sqrt() * 1.5)).abs() < 1e-6);
    assert_eq!(t.summary.len(), 2, "{:?}", t.summary);
}

/// SmolLM2-135M-sized gradients (embed 49152 x 576, 30 layers), K = 3, Tensor granularity.
/// `cargo test --release -p kiln-optim --test mgs -- --ignored --nocapture timing`
#[test]
#[ignore]
fn timing_smollm2_sized() {
    let (d, f, kv, v, layers) = (576usize, 1536usize, 192usize, 49152usize, 30usize);
    let mut spec: Vec<(String, Vec<usize>)> = vec![("embed_tokens.weight".into(), vec![v, d])];
    for l in 0..layers {
        let p = |s: &str| format!("layers.{l}.{s}");
        spec.push((p("input_layernorm.gamma"), vec![d]));
        spec.push((p("self_attn.q_proj.weight"), vec![d, d]));
        spec.push((p("self_attn.k_proj.weight"), vec![d, kv]));
        spec.push((p("self_attn.v_proj.weight"), vec![d, kv]));
        spec.push((p("self_attn.o_proj.weight"), vec![d, d]));
        spec.push((p("post_attention_layernorm.gamma"), vec![d]));
        spec.push((p("mlp.gate_proj.weight"), vec![d, f]));
        spec.push((p("mlp.up_proj.weight"), vec![d, f]));
        spec.push((p("mlp.down_proj.weight"), vec![f, d]));
    }
    spec.push(("norm.gamma".into(), vec![d]));
    let spec_ref: Vec<(&str, &[usize])> = spec
        .iter()
        .map(|(p, s)| (p.as_str(), s.as_slice()))
        .collect();
    let ps = params(&spec_ref);
    let total: usize = ps.iter().map(|p| p.numel()).sum();
    let dev = Device::flex();
    let ds: Vec<DomainGrads> = ["math", "chat", "code"]
        .iter()
        .map(|name| {
            let mut grads = GradientsParams::new();
            for p in ps.iter() {
                let t = Tensor::<1>::random(
                    [p.numel()],
                    burn::tensor::Distribution::Uniform(-1.0, 1.0),
                    &dev,
                );
                kiln_optim::hook::register_flat(&mut grads, p, t).unwrap();
            }
            DomainGrads {
                domain: name.to_string(),
                grads,
            }
        })
        .collect();
    for g in [Granularity::Tensor, Granularity::Block, Granularity::Global] {
        let mut hook = MgsHook::new(g, 0);
        for _ in 0..3 {
            let t0 = std::time::Instant::now();
            let out = hook.combine(&ds, &ps).unwrap();
            let dt = t0.elapsed();
            println!(
                "{g:?}: {} tensors, {total} elements, K=3: combine {:.3} s (projected_frac {:.2})",
                ps.len(),
                dt.as_secs_f64(),
                out.telemetry.summary["projected_frac"]
            );
        }
    }
    let t0 = std::time::Instant::now();
    IdentityHook.combine(&ds, &ps).unwrap();
    println!(
        "identity hook (plain sum): {:.3} s",
        t0.elapsed().as_secs_f64()
    );
}
