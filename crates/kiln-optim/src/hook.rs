//! Gradient hooks: how per-domain gradients are combined before clipping and the optimizer step
//! (MGS and PCGrad plug in here; the identity hook ships here).
//!
//! Parameters are named with burn's `ModuleVisitor` ([`NamedParams::from_module`]); gradients
//! of any rank are handled as flat vectors through [`grad_flat`] / [`register_flat`], so a hook
//! can work per parameter tensor, per group of tensors (a module) or on the whole model.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};

/// A named float parameter of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedParam {
    /// Dotted path, e.g. `layers.3.attn.q_proj.weight`.
    pub path: String,
    /// burn's id (the key of `GradientsParams`).
    pub id: ParamId,
    /// Shape.
    pub shape: Vec<usize>,
}

impl NamedParam {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// All float parameters of a model in visiting order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NamedParams {
    /// The parameters.
    pub params: Vec<NamedParam>,
}

struct Namer {
    stack: Vec<String>,
    out: Vec<NamedParam>,
}

impl ModuleVisitor for Namer {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.out.push(NamedParam {
            path: self.stack.join("."),
            id: param.id,
            shape: param.lazy_shape().to_vec(),
        });
    }
}

impl NamedParams {
    /// Name every float parameter of `module`.
    pub fn from_module<M: Module>(module: &M) -> Self {
        let mut v = Namer {
            stack: Vec::new(),
            out: Vec::new(),
        };
        module.visit(&mut v);
        Self { params: v.out }
    }
    /// Iterate.
    pub fn iter(&self) -> std::slice::Iter<'_, NamedParam> {
        self.params.iter()
    }
    /// Find by path.
    pub fn by_path(&self, path: &str) -> Option<&NamedParam> {
        self.params.iter().find(|p| p.path == path)
    }
    /// Number of parameter tensors.
    pub fn len(&self) -> usize {
        self.params.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
}

macro_rules! by_rank {
    ($rank:expr, $path:expr, $D:ident => $body:expr) => {
        match $rank {
            1 => {
                const $D: usize = 1;
                $body
            }
            2 => {
                const $D: usize = 2;
                $body
            }
            3 => {
                const $D: usize = 3;
                $body
            }
            4 => {
                const $D: usize = 4;
                $body
            }
            5 => {
                const $D: usize = 5;
                $body
            }
            6 => {
                const $D: usize = 6;
                $body
            }
            r => {
                return Err(OptimError::Rank {
                    path: $path.to_string(),
                    rank: r,
                })
            }
        }
    };
}

/// The gradient of `p` flattened to 1-D, if present.
pub fn grad_flat(grads: &GradientsParams, p: &NamedParam) -> Result<Option<Tensor<1>>> {
    let n = p.numel();
    Ok(by_rank!(p.shape.len(), p.path, D => grads.get::<D>(p.id).map(|t| t.reshape([n]))))
}

/// Remove the gradient of `p`, flattened to 1-D.
pub fn remove_flat(grads: &mut GradientsParams, p: &NamedParam) -> Result<Option<Tensor<1>>> {
    let n = p.numel();
    Ok(by_rank!(p.shape.len(), p.path, D => grads.remove::<D>(p.id).map(|t| t.reshape([n]))))
}

/// Register a flat gradient for `p`, reshaped to the parameter's shape.
pub fn register_flat(grads: &mut GradientsParams, p: &NamedParam, flat: Tensor<1>) -> Result<()> {
    by_rank!(p.shape.len(), p.path, D => {
        let shape: [usize; D] = std::array::from_fn(|i| p.shape[i]);
        grads.register::<D>(p.id, flat.reshape(shape));
    });
    Ok(())
}

/// One domain's accumulated gradient (`g_d`, normalised by the global mini-batch counts).
#[derive(Debug)]
pub struct DomainGrads {
    /// Domain name (`math`, `chat`, ...).
    pub domain: String,
    /// The gradients.
    pub grads: GradientsParams,
}

/// One (module, domain pair) record of a hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairTelemetry {
    /// Module (a parameter path or a group name).
    pub module: String,
    /// First domain.
    pub domain_a: String,
    /// Second domain.
    pub domain_b: String,
    /// Cosine of the ORIGINAL gradients.
    pub cosine: f64,
    /// Whether a projection happened for this ordered pair.
    pub projected: bool,
}

/// What a hook reports each step. The identity hook leaves it empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HookTelemetry {
    /// Per module and domain pair.
    pub pairs: Vec<PairTelemetry>,
    /// Summaries (e.g. `conflict_frac`, `conflict_frac/layer.3/mlp`).
    pub summary: BTreeMap<String, f64>,
}

/// Output of a hook.
#[derive(Debug)]
pub struct HookOutput {
    /// The combined gradient (what the optimizer step sees).
    pub grads: GradientsParams,
    /// Telemetry.
    pub telemetry: HookTelemetry,
}

/// Combines per-domain gradients into one. Implemented by the identity hook (here), PCGrad
/// and MGS.
pub trait GradientHook: Send {
    /// Name for logs.
    fn name(&self) -> &str;
    /// Whether the trainer must keep micro-batches domain-pure and gradients per domain.
    fn needs_domains(&self) -> bool {
        true
    }
    /// Combine. `params` names every parameter; a parameter missing from a domain's gradients
    /// has zero gradient for that domain.
    fn combine(&mut self, domains: &[DomainGrads], params: &NamedParams) -> Result<HookOutput>;
}

/// Sums the domains' gradients (the ordinary mixed gradient).
#[derive(Debug, Clone, Copy, Default)]
pub struct IdentityHook;

impl GradientHook for IdentityHook {
    fn name(&self) -> &str {
        "identity"
    }
    fn needs_domains(&self) -> bool {
        false
    }
    fn combine(&mut self, domains: &[DomainGrads], params: &NamedParams) -> Result<HookOutput> {
        let mut out = GradientsParams::new();
        for p in params.iter() {
            let mut acc: Option<Tensor<1>> = None;
            for d in domains {
                if let Some(g) = grad_flat(&d.grads, p)? {
                    acc = Some(match acc {
                        Some(a) => a + g,
                        None => g,
                    });
                }
            }
            if let Some(a) = acc {
                register_flat(&mut out, p, a)?;
            }
        }
        Ok(HookOutput {
            grads: out,
            telemetry: HookTelemetry::default(),
        })
    }
}

/// Add `src` into `acc` for every named parameter (accumulating micro-batch gradients).
pub fn accumulate(
    acc: &mut GradientsParams,
    src: GradientsParams,
    params: &NamedParams,
) -> Result<()> {
    let mut src = src;
    for p in params.iter() {
        if let Some(g) = remove_flat(&mut src, p)? {
            let sum = match remove_flat(acc, p)? {
                Some(a) => a + g,
                None => g,
            };
            register_flat(acc, p, sum)?;
        }
    }
    Ok(())
}
