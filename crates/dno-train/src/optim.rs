//! AdamW set-up and global gradient-norm clipping.
//!
//! burn's `GradientClipping::Norm` clips each parameter's gradient by its own norm; PyTorch's
//! `clip_grad_norm_` (what TRL uses) clips the *global* norm over all parameters, which keeps
//! the update direction. That is implemented here over burn's `GradientsParams`.

use anyhow::{bail, Result};
use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;
use dno_model::Llama;

/// AdamW with β = (0.9, 0.999), ε = 1e-8 (burn's default is 1e-5), decoupled weight decay on
/// matrices only: rank-1 parameters (RMSNorm weights, biases) get none, as in HF Trainer.
pub fn adamw(model: &Llama, weight_decay: f64) -> ModuleOptimizer {
    let base = AdamWConfig::new().with_epsilon(1e-8).with_weight_decay(weight_decay as f32);
    let mut optim = base.init();
    if weight_decay > 0.0 {
        let mut v = RankOneIds(Vec::new());
        model.visit(&mut v);
        if !v.0.is_empty() {
            let no_decay = AdamWConfig::new().with_epsilon(1e-8).with_weight_decay(0.0).build();
            optim = optim.with_group(ParamGroup::from_ids(v.0), no_decay, None);
        }
    }
    optim
}

struct RankOneIds(Vec<ParamId>);

impl ModuleVisitor for RankOneIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D < 2 {
            self.0.push(param.id);
        }
    }
}

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: f64,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let sq: f32 = g.square().sum().into_scalar();
            self.total += sq as f64;
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register::<D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The global L2 norm of `grads` over `model`'s parameters, before clipping; when
/// `max_norm > 0` and the norm exceeds it, every gradient is scaled by `max_norm / norm`.
pub fn clip_global_norm(model: &Llama, mut grads: GradientsParams, max_norm: f64) -> Result<(GradientsParams, f64)> {
    let mut sq = SquaredNorm { grads: &grads, total: 0.0 };
    model.visit(&mut sq);
    let norm = sq.total.sqrt();
    if !norm.is_finite() {
        bail!("gradient norm is {norm}: the loss diverged (lower lr or check the data)");
    }
    if max_norm > 0.0 && norm > max_norm {
        let mut scale = Scale { grads: &mut grads, factor: max_norm / (norm + 1e-6) };
        model.visit(&mut scale);
    }
    Ok((grads, norm))
}
