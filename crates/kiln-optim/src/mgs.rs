//! Modular Gradient Surgery (MGS) and global PCGrad (`docs/ALGORITHMS.md` section 4).
//!
//! Each domain d brings its own gradient g_d. The model is cut into modules (every parameter
//! tensor, every {attention, mlp, norm} part of a layer, or the whole model). Within a module
//! m, with originals h_d = g_d[m], each domain's g_i is visited against the other domains j in a
//! random order, and whenever `<g_i, h_j> < 0` (running g_i, ORIGINAL h_j) and
//! `||h_j||^2 > 1e-12`, the conflicting component is removed:
//! `g_i <- g_i - <g_i, h_j> / ||h_j||^2 * h_j`. The module's gradient is `sum_i g_i`.
//! A conflict in one module therefore leaves the other modules' gradients untouched, unlike
//! global PCGrad ([`Granularity::Global`]).
//!
//! # How it is computed
//!
//! Every projection subtracts a multiple of an original h_j, so each running g_i stays a linear
//! combination `g_i = sum_k c_ik h_k` and `<g_i, h_j> = sum_k c_ik G_kj`, where G is the Gram
//! matrix of the originals. So per module only the K(K+1)/2 dot products of the originals are
//! computed on the device (one per tensor and domain pair, all read back at once and summed per
//! module in f64); the projections run on host on the K x K coefficients; and each
//! tensor's output is one weighted sum `sum_k w_k h_k` with `w_k = sum_i c_ik`. This equals
//! concatenating a module's tensors, projecting, summing and splitting back, without the copies.
//! A module where nothing was projected gets the plain sum, bit for bit the identity hook's.
//!
//! # Random order
//!
//! Domains are numbered by their position in the `domains` slice (pass them in a fixed order,
//! e.g. sorted by name). Modules are numbered by the position of their first parameter in
//! [`NamedParams`]. For step s (the hook's counter, starting at 0, +1 per `combine`; restore it
//! with [`MgsHook::set_step`] on resume) and module number m, the RNG is
//! `StdRng::from_seed(seed.to_le_bytes() ++ s.to_le_bytes() ++ m.to_le_bytes() ++ [0; 8])`
//! (rand 0.9, ChaCha12). From it, `(0..K)` is shuffled into the outer order, then for each i in
//! that order the other domains `(0..K) \ {i}` (ascending) are shuffled into i's inner order,
//! all with `SliceRandom::shuffle`. (The outer order cannot change the result, because every
//! g_i is projected against originals only; it is drawn to keep the spec's procedure literal.)

use std::collections::HashMap;

use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};
use crate::hook::{
    DomainGrads, GradientHook, HookOutput, HookTelemetry, NamedParams, PairTelemetry, grad_flat,
    register_flat,
};

/// Below this squared norm an original h_j is treated as zero and never projected onto.
const MIN_SQ_NORM: f64 = 1e-12;

/// What counts as one module for the conflict test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Granularity {
    /// Every parameter tensor is a module (the MGS default).
    #[default]
    Tensor,
    /// Per transformer layer, the attention, mlp and norm parameters form one module each; the
    /// embeddings, the final norm and the LM head are modules of their own (see [`group_of`]).
    Block,
    /// The whole model is one module: global PCGrad.
    Global,
}

/// In which order each domain visits the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Order {
    /// Drawn per step and module from the hook's seed (see the module docs). The default.
    #[default]
    Seeded,
    /// A fixed permutation of the domain indices, for tests: domains are visited in this order,
    /// and domain i visits the others in this order with i left out.
    Fixed(Vec<usize>),
}

/// One module of a partition: the parameters whose gradients are projected together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MgsModule {
    /// Name used in telemetry: the parameter path ([`Granularity::Tensor`]), the group
    /// ([`Granularity::Block`]) or `model` ([`Granularity::Global`]).
    pub name: String,
    /// The heatmap group ([`group_of`]) all its parameters share; `None` for the whole model.
    pub group: Option<String>,
    /// Indices into [`NamedParams::params`].
    pub params: Vec<usize>,
}

/// The heatmap group of a parameter path: `layer.{i}/{attention|mlp|norm}` inside decoder layer
/// i (`other` if none fits), `embed`, `final_norm` and `lm_head` outside, else the path's first
/// segment.
///
/// kiln-model names parameters `embed_tokens.weight`, `layers.{i}.input_layernorm.gamma`,
/// `layers.{i}.self_attn.{q,k,v,o}_proj.{weight,bias}`, `layers.{i}.self_attn.{q,k}_norm.gamma`
/// (Qwen3; grouped with the norms), `layers.{i}.post_attention_layernorm.gamma`,
/// `layers.{i}.mlp.{gate,up,down}_proj.weight`, `norm.gamma` and `lm_head.weight` (absent when
/// tied). Matching is by keyword (`norm`; `attn` / `attention`; `mlp` / `ffn` / `feed_forward`;
/// `layers.{i}` / `layer.{i}` / `blocks.{i}` / `h.{i}`), so similar naming schemes work too.
pub fn group_of(path: &str) -> String {
    let segs: Vec<&str> = path.split('.').collect();
    // The module names between a layer index and the parameter's own name.
    let layer = segs.windows(2).position(|w| {
        matches!(w[0], "layers" | "layer" | "blocks" | "h") && w[1].parse::<usize>().is_ok()
    });
    if let Some(p) = layer {
        let modules = &segs[p + 2..segs.len().saturating_sub(1)];
        let has = |keys: &[&str]| modules.iter().any(|s| keys.iter().any(|k| s.contains(k)));
        // Norms first: a Qwen3 q_norm sits under self_attn but is a norm.
        let kind = if has(&["norm"]) {
            "norm"
        } else if has(&["attn", "attention"]) {
            "attention"
        } else if has(&["mlp", "ffn", "feed_forward"]) {
            "mlp"
        } else {
            "other"
        };
        return format!("layer.{}/{kind}", segs[p + 1]);
    }
    match segs[0] {
        s if s.contains("embed") => "embed".into(),
        "lm_head" | "head" | "output" => "lm_head".into(),
        s if s.contains("norm") => "final_norm".into(),
        s => s.into(),
    }
}

/// Cut `params` into modules. Modules are ordered by their first parameter.
pub fn partition(params: &NamedParams, granularity: Granularity) -> Vec<MgsModule> {
    match granularity {
        Granularity::Tensor => params
            .iter()
            .enumerate()
            .map(|(i, p)| MgsModule {
                name: p.path.clone(),
                group: Some(group_of(&p.path)),
                params: vec![i],
            })
            .collect(),
        Granularity::Block => {
            let mut out: Vec<MgsModule> = Vec::new();
            let mut index: HashMap<String, usize> = HashMap::new();
            for (i, p) in params.iter().enumerate() {
                let g = group_of(&p.path);
                let m = *index.entry(g.clone()).or_insert_with(|| {
                    out.push(MgsModule {
                        name: g.clone(),
                        group: Some(g),
                        params: Vec::new(),
                    });
                    out.len() - 1
                });
                out[m].params.push(i);
            }
            out
        }
        Granularity::Global => vec![MgsModule {
            name: "model".into(),
            group: None,
            params: (0..params.len()).collect(),
        }],
    }
}

/// Result of PCGrad on one module, in coefficients of the originals.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// The module's output is `sum_k weights[k] * h_k`.
    pub weights: Vec<f64>,
    /// `projected[i][j]`: g_i was projected onto the normal plane of h_j.
    pub projected: Vec<Vec<bool>>,
}

impl Projection {
    /// Whether any projection happened.
    pub fn any(&self) -> bool {
        self.projected.iter().flatten().any(|&p| p)
    }
}

/// PCGrad on a module given the Gram matrix `gram[k][l] = <h_k, h_l>` of its original domain
/// gradients and the visiting order (`(i, inner order of i)` per domain). Pure host math.
pub fn project(gram: &[Vec<f64>], order: &[(usize, Vec<usize>)]) -> Projection {
    let k = gram.len();
    // Row i holds the coefficients of g_i in the basis of the originals; g_i starts as h_i.
    let mut c = vec![vec![0.0f64; k]; k];
    for (i, row) in c.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    let mut projected = vec![vec![false; k]; k];
    for (i, inner) in order {
        let i = *i;
        for &j in inner {
            // <g_i, h_j> with the running g_i and the ORIGINAL h_j.
            let dot: f64 = (0..k).map(|l| c[i][l] * gram[l][j]).sum();
            let sq = gram[j][j];
            if dot < 0.0 && sq > MIN_SQ_NORM {
                c[i][j] -= dot / sq;
                projected[i][j] = true;
            }
        }
    }
    let weights = (0..k).map(|l| (0..k).map(|i| c[i][l]).sum()).collect();
    Projection { weights, projected }
}

/// `<x, y>` as a one-element tensor. A `[1, n] x [n, 1]` matmul reads both operands once;
/// `(x * y).sum()` writes and re-reads an n-element temporary (about 5x slower on flex).
fn dot(x: &Tensor<1>, y: &Tensor<1>) -> Tensor<1> {
    let n = x.dims()[0];
    x.clone()
        .reshape([1, n])
        .matmul(y.clone().reshape([n, 1]))
        .reshape([1])
}

/// `sum_k w_k g_k`, evaluated as `w_K (... ((g_1 w_1/w_2 + g_2) w_2/w_3 + g_3) ...)` so that only
/// the first operation allocates and the rest run in place (flex reuses a uniquely owned
/// buffer). MGS weights are >= 1 (projections only add positive multiples of originals), so the
/// ratios are finite.
fn weighted_sum<'a>(terms: impl Iterator<Item = (&'a Tensor<1>, f64)>) -> Option<Tensor<1>> {
    let scale = |t: Tensor<1>, r: f64| if r == 1.0 { t } else { t.mul_scalar(r) };
    let mut acc: Option<(Tensor<1>, f64)> = None;
    for (g, w) in terms {
        acc = Some(match acc {
            None => (g.clone(), w),
            Some((a, wa)) => (scale(a, wa / w) + g.clone(), w),
        });
    }
    acc.map(|(a, w)| scale(a, w))
}

/// The MGS gradient hook (global PCGrad with [`Granularity::Global`]).
#[derive(Debug, Clone)]
pub struct MgsHook {
    granularity: Granularity,
    seed: u64,
    step: u64,
    order: Order,
}

impl MgsHook {
    /// MGS at `granularity` with the recipe seed; seeded random orders; step 0.
    pub fn new(granularity: Granularity, seed: u64) -> Self {
        Self {
            granularity,
            seed,
            step: 0,
            order: Order::Seeded,
        }
    }

    /// Global PCGrad.
    pub fn pcgrad(seed: u64) -> Self {
        Self::new(Granularity::Global, seed)
    }

    /// Replace the visiting order (tests use [`Order::Fixed`]).
    pub fn with_order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// The granularity.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The step the next `combine` uses.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Set the step counter (on resume, to the number of completed optimizer steps), so the
    /// random orders continue exactly as in an uninterrupted run.
    pub fn set_step(&mut self, step: u64) {
        self.step = step;
    }

    /// The visiting order for `k` domains in module number `module` at the current step:
    /// `(i, inner order of i)` in outer order.
    pub fn visit_order(&self, module: usize, k: usize) -> Result<Vec<(usize, Vec<usize>)>> {
        let others = |i: usize, order: &[usize]| -> Vec<usize> {
            order.iter().copied().filter(|&j| j != i).collect()
        };
        match &self.order {
            Order::Fixed(v) => {
                let mut sorted = v.clone();
                sorted.sort_unstable();
                if sorted != (0..k).collect::<Vec<_>>() {
                    return Err(OptimError::Config {
                        field: "mgs.order",
                        reason: format!("{v:?} is not a permutation of 0..{k}"),
                    });
                }
                Ok(v.iter().map(|&i| (i, others(i, v))).collect())
            }
            Order::Seeded => {
                let mut key = [0u8; 32];
                key[..8].copy_from_slice(&self.seed.to_le_bytes());
                key[8..16].copy_from_slice(&self.step.to_le_bytes());
                key[16..24].copy_from_slice(&(module as u64).to_le_bytes());
                let mut rng = StdRng::from_seed(key);
                let mut outer: Vec<usize> = (0..k).collect();
                outer.shuffle(&mut rng);
                let all: Vec<usize> = (0..k).collect();
                Ok(outer
                    .into_iter()
                    .map(|i| {
                        let mut inner = others(i, &all);
                        inner.shuffle(&mut rng);
                        (i, inner)
                    })
                    .collect())
            }
        }
    }
}

/// Per (module, pair) counts for the summaries.
#[derive(Default)]
struct Counts {
    pairs: usize,
    conflicts: usize,
    projected: usize,
}

impl Counts {
    fn add(&mut self, cosine: f64, projected: bool) {
        self.pairs += 1;
        self.conflicts += usize::from(cosine < 0.0);
        self.projected += usize::from(projected);
    }
}

impl GradientHook for MgsHook {
    fn name(&self) -> &str {
        match self.granularity {
            Granularity::Global => "pcgrad",
            Granularity::Tensor | Granularity::Block => "mgs",
        }
    }

    fn needs_domains(&self) -> bool {
        true
    }

    fn combine(&mut self, domains: &[DomainGrads], params: &NamedParams) -> Result<HookOutput> {
        let k = domains.len();
        let modules = partition(params, self.granularity);

        // flats[p][d]: parameter p's gradient in domain d (None = zero).
        let mut flats: Vec<Vec<Option<Tensor<1>>>> = Vec::with_capacity(params.len());
        for p in params.iter() {
            let mut row = Vec::with_capacity(k);
            for d in domains {
                row.push(grad_flat(&d.grads, p)?);
            }
            flats.push(row);
        }

        // Gram matrices of the originals per module: one device dot per tensor and domain pair,
        // read back in one transfer, accumulated in f64.
        let mut grams = vec![vec![vec![0.0f64; k]; k]; modules.len()];
        if k >= 2 {
            let mut dots = Vec::new();
            let mut slots = Vec::new();
            for (m, module) in modules.iter().enumerate() {
                for &p in &module.params {
                    for a in 0..k {
                        for b in a..k {
                            if let (Some(x), Some(y)) = (&flats[p][a], &flats[p][b]) {
                                dots.push(dot(x, y));
                                slots.push((m, a, b));
                            }
                        }
                    }
                }
            }
            if !dots.is_empty() {
                let vals = Tensor::cat(dots, 0)
                    .into_data()
                    .try_into_vec_as::<f64>()
                    .map_err(|e| OptimError::Config {
                        field: "mgs gradients",
                        reason: format!("cannot read dot products: {e:?}"),
                    })?;
                for ((m, a, b), v) in slots.into_iter().zip(vals) {
                    grams[m][a][b] += v;
                    if a != b {
                        grams[m][b][a] += v;
                    }
                }
            }
        }

        let mut out = GradientsParams::new();
        let mut telemetry = HookTelemetry::default();
        let mut total = Counts::default();
        let mut by_group: HashMap<String, Counts> = HashMap::new();
        for (m, module) in modules.iter().enumerate() {
            let gram = &grams[m];
            let proj = if k >= 2 {
                Some(project(gram, &self.visit_order(m, k)?))
            } else {
                None
            };
            for a in 0..k {
                for b in a + 1..k {
                    let denom = (gram[a][a] * gram[b][b]).sqrt();
                    let cosine = if denom > 0.0 { gram[a][b] / denom } else { 0.0 };
                    let projected = proj
                        .as_ref()
                        .is_some_and(|p| p.projected[a][b] || p.projected[b][a]);
                    telemetry.pairs.push(PairTelemetry {
                        module: module.name.clone(),
                        domain_a: domains[a].domain.clone(),
                        domain_b: domains[b].domain.clone(),
                        cosine,
                        projected,
                    });
                    total.add(cosine, projected);
                    if let Some(g) = &module.group {
                        by_group
                            .entry(g.clone())
                            .or_default()
                            .add(cosine, projected);
                    }
                }
            }

            // The module's output, tensor by tensor: the plain sum (bit for bit the identity
            // hook's) where nothing was projected, else sum_k w_k h_k.
            let weights = proj.as_ref().filter(|p| p.any()).map(|p| &p.weights);
            for &p in &module.params {
                let present = flats[p]
                    .iter()
                    .enumerate()
                    .filter_map(|(d, g)| g.as_ref().map(|g| (d, g)));
                let acc = match weights {
                    None => present.map(|(_, g)| g.clone()).reduce(|a, g| a + g),
                    Some(w) => weighted_sum(present.map(|(d, g)| (g, w[d]))),
                };
                if let Some(a) = acc {
                    register_flat(&mut out, &params.params[p], a)?;
                }
            }
        }

        let frac = |num: usize, den: usize| {
            if den == 0 {
                0.0
            } else {
                num as f64 / den as f64
            }
        };
        let s = &mut telemetry.summary;
        s.insert("conflict_frac".into(), frac(total.conflicts, total.pairs));
        s.insert("projected_frac".into(), frac(total.projected, total.pairs));
        for (g, c) in by_group {
            s.insert(format!("conflict_frac/{g}"), frac(c.conflicts, c.pairs));
        }

        self.step += 1;
        Ok(HookOutput {
            grads: out,
            telemetry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_of_kiln_model_paths() {
        // Paths as NamedParams::from_module names a kiln-model CausalLm (checked on the
        // tiny-arith random model; lm_head, biases and q/k norms from the other architectures).
        let cases = [
            ("embed_tokens.weight", "embed"),
            ("layers.0.input_layernorm.gamma", "layer.0/norm"),
            ("layers.0.self_attn.q_proj.weight", "layer.0/attention"),
            ("layers.0.self_attn.q_proj.bias", "layer.0/attention"),
            ("layers.11.self_attn.o_proj.weight", "layer.11/attention"),
            ("layers.2.self_attn.q_norm.gamma", "layer.2/norm"),
            ("layers.3.post_attention_layernorm.gamma", "layer.3/norm"),
            ("layers.3.mlp.gate_proj.weight", "layer.3/mlp"),
            ("layers.29.mlp.down_proj.weight", "layer.29/mlp"),
            ("norm.gamma", "final_norm"),
            ("lm_head.weight", "lm_head"),
            ("layers.3.attn.q_proj.weight", "layer.3/attention"),
            ("head.weight", "lm_head"),
            ("value_head.weight", "value_head"),
            ("scale", "scale"),
        ];
        for (path, group) in cases {
            assert_eq!(group_of(path), group, "{path}");
        }
    }

    #[test]
    fn granularity_serde_is_kebab_case_with_tensor_default() {
        assert_eq!(Granularity::default(), Granularity::Tensor);
        for (g, s) in [
            (Granularity::Tensor, "\"tensor\""),
            (Granularity::Block, "\"block\""),
            (Granularity::Global, "\"global\""),
        ] {
            assert_eq!(serde_json::to_string(&g).unwrap(), s);
            assert_eq!(serde_json::from_str::<Granularity>(s).unwrap(), g);
        }
    }

    #[test]
    fn project_in_coefficients_k2() {
        // h1 = (1, 0), h2 = (-1, 1): G = [[1, -1], [-1, 2]].
        // g1' = h1 + 1/2 h2, g2' = h2 + h1: weights (2, 1.5) -> (0.5, 1.5).
        let gram = vec![vec![1.0, -1.0], vec![-1.0, 2.0]];
        let p = project(&gram, &[(0, vec![1]), (1, vec![0])]);
        assert_eq!(p.weights, vec![2.0, 1.5]);
        assert_eq!(p.projected, vec![vec![false, true], vec![true, false]]);
    }

    #[test]
    fn seeded_orders_are_permutations_and_depend_on_step_and_module() {
        let mut hook = MgsHook::new(Granularity::Tensor, 7);
        let mut seen = std::collections::HashSet::new();
        for step in 0..8 {
            hook.set_step(step);
            for m in 0..8 {
                let o = hook.visit_order(m, 3).unwrap();
                let mut outer: Vec<usize> = o.iter().map(|(i, _)| *i).collect();
                outer.sort_unstable();
                assert_eq!(outer, vec![0, 1, 2]);
                for (i, inner) in &o {
                    let mut s = inner.clone();
                    s.sort_unstable();
                    assert_eq!(s, (0..3).filter(|j| j != i).collect::<Vec<_>>());
                }
                assert_eq!(o, hook.visit_order(m, 3).unwrap());
                seen.insert(o);
            }
        }
        assert!(seen.len() > 1);
        let bad = MgsHook::new(Granularity::Tensor, 0).with_order(Order::Fixed(vec![0, 0, 2]));
        assert!(bad.visit_order(0, 3).is_err());
    }
}
